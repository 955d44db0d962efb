"""Signed checkpoints: a chain's size, head hash and Merkle root, signed with Ed25519.

The signed message is ``0x02 || canonical JSON`` of every field but the signature (keys sorted,
no spaces, hashes as lowercase hex, time as integer microseconds since the epoch). The 0x02
prefix keeps a checkpoint signature from ever being valid for a record or node hash.
A checkpoint is stored as one JSON line: the same fields plus ``signature`` (hex).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditor.errors import TrailCorruption
from auditor.trail.canonical import micros
from auditor.trail.chain import CHECKPOINT_PREFIX, ChainHead
from auditor.trail.keys import Signer, Verifier

FORMAT = "auditor-checkpoint/1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain_id: str
    size: int
    head_hash: bytes
    merkle_root: bytes
    time: datetime
    key_id: str
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {"format": FORMAT, "chain_id": self.chain_id, "size": self.size,
                "head_hash": self.head_hash.hex(), "merkle_root": self.merkle_root.hex(),
                "time_us": micros(self.time), "key_id": self.key_id}

    def signed_message(self) -> bytes:
        return CHECKPOINT_PREFIX + json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> str:
        return json.dumps({**self.body(), "signature": self.signature.hex()}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        try:
            m = json.loads(text)
            if m.get("format") != FORMAT:
                raise ValueError(f"format {m.get('format')!r}")
            return cls(chain_id=str(m["chain_id"]), size=int(m["size"]),
                       head_hash=bytes.fromhex(m["head_hash"]), merkle_root=bytes.fromhex(m["merkle_root"]),
                       time=datetime.fromtimestamp(int(m["time_us"]) / 1_000_000, tz=UTC),
                       key_id=str(m["key_id"]), signature=bytes.fromhex(m["signature"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrailCorruption(f"unreadable checkpoint ({exc})") from exc


def make_checkpoint(head: ChainHead, merkle_root: bytes, now: datetime, signer: Signer) -> Checkpoint:
    unsigned = Checkpoint(head.chain_id, head.size, head.head_hash, merkle_root, now, signer.key_id)
    return Checkpoint(head.chain_id, head.size, head.head_hash, merkle_root, now, signer.key_id,
                      signer.sign(unsigned.signed_message()))


def signature_problem(cp: Checkpoint, verifier: Verifier) -> str | None:
    """None when the signature holds; otherwise why not ('unknown key' / 'bad signature')."""
    if not verifier.knows(cp.key_id):
        return f"signed by unknown key {cp.key_id}"
    if not verifier.verify(cp.key_id, cp.signed_message(), cp.signature):
        return f"bad signature (key {cp.key_id})"
    return None
