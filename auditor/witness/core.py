"""The witness's decision on one C2SP tlog-witness ``add-checkpoint`` request: pure, no HTTP.

Request body::

    old <size>\\n                 the size of the checkpoint the client believes the witness holds
    <base64 hash>\\n ...          zero to 63 consistency proof lines (RFC 9162) from it
    \\n
    <signed checkpoint note>

Decisions, in the spec's order and with its status codes:

====  ==================================================================================
404   the origin is not a log this witness follows
403   no signature of a trusted log key verifies (or a trusted key's signature is bad)
400   malformed request, or the old size is larger than the checkpoint's size
409   the old size is not the size of the latest checkpoint cosigned for that origin (the
      body is that size and a newline, ``Content-Type: text/x.tlog.size``), or the sizes are
      equal and the roots differ
422   the consistency proof does not verify (the checkpoint does not extend the last one)
200   cosigned: the body is the witness's cosignature line(s); the state is persisted first
====  ==================================================================================
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Callable, Sequence

from auditor.errors import TrailCorruption
from auditor.trail.hashing import HASH_SIZE
from auditor.trail.merkle import verify_consistency
from auditor.trail.note import Ed25519Verifier, Note, NoteSigner, open_note
from auditor.witness.state import Cosigned, WitnessState

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class TrustedLog:
    """A log the witness follows: its key, and the origins it signs (``<prefix>...``)."""

    key: Ed25519Verifier
    origin_prefix: str

    def follows(self, origin: str) -> bool:
        return origin.startswith(self.origin_prefix)


def _error(status: int, message: str) -> Reply:
    return Reply(status, (message + "\n").encode())


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """(old size, proof, note bytes); ValueError when malformed."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise ValueError("no empty line between the proof and the checkpoint")
    lines = head.split(b"\n")
    first = lines[0].decode("ascii", "replace")
    if not first.startswith("old ") or not first[4:].isdigit() or (first[4:] != "0" and first[4:].startswith("0")):
        raise ValueError("the first line must be 'old <size>' with no leading zeros")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a proof line is not base64") from exc
        if len(h) != HASH_SIZE:
            raise ValueError("a proof line is not a 32-byte hash")
        proof.append(h)
    return int(first[4:]), proof, note


def parse_body(text: str) -> tuple[str, int, bytes]:
    """Origin, size and root of any C2SP checkpoint body (extension lines ignored)."""
    lines = text.split("\n")
    if len(lines) < 4 or not all(lines[:3]):
        raise ValueError("a checkpoint has an origin, a size and a root hash line")
    size_text = lines[1]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise ValueError("the checkpoint size is not a decimal without leading zeros")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the checkpoint root is not base64") from exc
    if len(root) != HASH_SIZE:
        raise ValueError("the checkpoint root is not 32 bytes")
    return lines[0], int(size_text), root


class Witness:
    """Cosigns checkpoints that extend what it cosigned before, one origin at a time."""

    def __init__(self, signer: NoteSigner, logs: Sequence[TrustedLog], state: WitnessState,
                 on_refusal: Callable[[str, int, str], None] | None = None) -> None:
        if not signer.cosign:
            raise ValueError("a witness signs cosignatures (cosign=True)")
        self.signer, self.logs, self.state = signer, list(logs), state
        self.on_refusal = on_refusal

    def add_checkpoint(self, body: bytes) -> Reply:
        try:
            old, proof, note_bytes = parse_request(body)
            note = Note.parse(note_bytes)
            origin, size, root = parse_body(note.text)
        except (ValueError, TrailCorruption) as exc:
            return _error(400, f"bad request: {exc}")
        keys = [log.key for log in self.logs if log.follows(origin)]
        if not keys:
            return _error(404, f"unknown origin {origin[:100]}")
        try:
            open_note(note, keys)
        except TrailCorruption as exc:
            return _error(403, f"no valid signature of a trusted log key: {exc}")
        if old > size:
            return _error(400, f"old size {old} is larger than the checkpoint size {size}")
        with self.state.locked() as current:
            last = current.get(origin)
            last_size = last.size if last else 0
            if old != last_size:
                return Reply(409, f"{last_size}\n".encode(), SIZE_CONTENT_TYPE)
            if last is not None and size == last.size and root != last.root:
                return self._refuse(origin, 409, f"checkpoint of size {size} has another root than the one "
                                                 "cosigned before: the log forked")
            if old == 0 and proof:
                return self._refuse(origin, 422, "the proof must be empty when the old size is 0")
            if last is not None and not verify_consistency(last.size, size, last.root, root, proof):
                return self._refuse(origin, 422, f"the consistency proof from size {last.size} to {size} does not "
                                                 "verify: the checkpoint does not extend the last one cosigned")
            signature = self.signer.sign(note.text)
            current[origin] = Cosigned(size, root, note.with_signatures([signature]).to_bytes().decode())
        return Reply(200, signature.line().encode())

    def _refuse(self, origin: str, status: int, message: str) -> Reply:
        if self.on_refusal is not None:
            self.on_refusal(origin, status, message)
        return _error(status, message)
