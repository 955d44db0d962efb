"""Inclusion proofs: one record, its Merkle audit path, and the signed checkpoint it is under.

A proof file is small JSON that anyone with the public key can check without the trail::

    {"format": "auditor-proof/1", "chain_id": ..., "seq": N,
     "record": "<base64 Avro bytes>", "leaf_hash": "<hex>", "audit_path": ["<hex>", ...],
     "checkpoint": {<signed checkpoint>}}
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import TrailError
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import recompute_hash
from auditor.trail.checkpoint import Checkpoint, signature_problem
from auditor.trail.keys import Verifier
from auditor.trail.merkle import PathBuilder, root_from_inclusion
from auditor.trail.record import AuditRecord
from auditor.trail.segment import list_segments, scan_segment
from auditor.trail.store import read_checkpoint_lines

FORMAT = "auditor-proof/1"


@dataclass(frozen=True)
class InclusionProof:
    chain_id: str
    seq: int
    record_bytes: bytes
    audit_path: tuple[bytes, ...]
    checkpoint: Checkpoint

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "chain_id": self.chain_id, "seq": self.seq,
            "record": base64.b64encode(self.record_bytes).decode(),
            "leaf_hash": recompute_hash(self.record_bytes).hex(),
            "audit_path": [h.hex() for h in self.audit_path],
            "checkpoint": json.loads(self.checkpoint.to_json()),
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> InclusionProof:
        try:
            m = json.loads(text)
            if m.get("format") != FORMAT:
                raise ValueError(f"format {m.get('format')!r}")
            return cls(str(m["chain_id"]), int(m["seq"]), base64.b64decode(m["record"], validate=True),
                       tuple(bytes.fromhex(h) for h in m["audit_path"]),
                       Checkpoint.from_json(json.dumps(m["checkpoint"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise TrailError(f"not a proof file: {exc}") from exc


def _choose_checkpoint(trail_dir: Path, chain_id: str, seq: int, verifier: Verifier | None) -> Checkpoint:
    best: Checkpoint | None = None
    for line in read_checkpoint_lines(trail_dir)[0]:
        cp = Checkpoint.from_json(line)
        if cp.chain_id != chain_id or cp.size <= seq:
            continue
        if verifier is not None and signature_problem(cp, verifier):
            continue
        if best is None or cp.size > best.size:
            best = cp
    if best is None:
        raise TrailError(f"no signed checkpoint of chain {chain_id} covers seq {seq} yet")
    return best


def chain_ids(trail_dir: Path) -> list[str]:
    return sorted({Checkpoint.from_json(line).chain_id for line in read_checkpoint_lines(trail_dir)[0]})


def make_proof(trail_dir: Path, seq: int, chain_id: str | None = None,
               verifier: Verifier | None = None) -> InclusionProof:
    """Stream the chain once to build the audit path of ``seq`` under its latest checkpoint."""
    if chain_id is None:
        ids = chain_ids(trail_dir)
        if len(ids) != 1:
            raise TrailError(f"the trail has {len(ids)} chains; name one with --chain "
                             f"({', '.join(ids[:10])})")
        chain_id = ids[0]
    cp = _choose_checkpoint(trail_dir, chain_id, seq, verifier)
    builder = PathBuilder(seq, cp.size)
    record: bytes | None = None
    for index, path in list_segments(trail_dir):
        scan = scan_segment(path, index)
        for _, f in scan.frames():
            if f.chain_id != chain_id or f.seq >= cp.size:
                continue
            builder.add(f.record_hash)
            if f.seq == seq:
                record = scan.buf[f.start:f.end]
        if builder.complete:
            break
    if record is None or not builder.complete:
        raise TrailError(f"chain {chain_id} does not hold seq {seq} and all {cp.size} checkpointed "
                         "records; run `auditor verify`")
    return InclusionProof(chain_id, seq, record, tuple(builder.path()), cp)


def verify_proof(proof: InclusionProof, verifier: Verifier) -> tuple[list[str], AuditRecord | None]:
    """Problems with the proof (empty when it holds) and the decoded record."""
    problems: list[str] = []
    sig = signature_problem(proof.checkpoint, verifier)
    if sig:
        problems.append(f"checkpoint: {sig}")
    record: AuditRecord | None = None
    try:
        record = record_from_bytes(proof.record_bytes)
    except TrailError as exc:
        problems.append(str(exc))
    leaf = recompute_hash(proof.record_bytes)
    if leaf != proof.record_bytes[-32:]:
        problems.append(f"the record was modified: it hashes to {leaf.hex()}, "
                        f"it claims {proof.record_bytes[-32:].hex()}")
    if record is not None and (record.chain_id != proof.chain_id or record.seq != proof.seq):
        problems.append(f"the record is {record.chain_id} seq {record.seq}, the proof claims "
                        f"{proof.chain_id} seq {proof.seq}")
    if proof.checkpoint.chain_id != proof.chain_id:
        problems.append("the checkpoint is for another chain")
    root = root_from_inclusion(proof.seq, proof.checkpoint.size, leaf, proof.audit_path)
    if root != proof.checkpoint.merkle_root:
        problems.append("the audit path does not lead to the checkpoint's Merkle root"
                        + (f" (expected {proof.checkpoint.merkle_root.hex()}, actual {root.hex()})"
                           if root else " (malformed path)"))
    return problems, record
