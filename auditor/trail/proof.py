"""Inclusion proofs: one record, its Merkle audit path, and the signed checkpoint it is under.

A proof file is small JSON that anyone with the public key can check without the trail::

    {"format": "auditor-proof/2", "chain_id": ..., "seq": N, "tree_size": S,
     "record": "<base64 Avro bytes>", "leaf_hash": "<hex>", "audit_path": ["<hex>", ...],
     "checkpoint": "<the C2SP signed note, with any witness cosignatures>"}
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import TrailCorruption, TrailError
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import recompute_hash
from auditor.trail.checkpoint import Checkpoint, SignedCheckpoint, chain_of, open_checkpoint
from auditor.trail.keys import Verifier
from auditor.trail.merkle import PathBuilder, root_from_inclusion
from auditor.trail.note import Note
from auditor.trail.record import AuditRecord
from auditor.trail.source import Issue, TrailSource, as_source

FORMAT = "auditor-proof/2"


@dataclass(frozen=True)
class InclusionProof:
    chain_id: str
    seq: int
    record_bytes: bytes
    audit_path: tuple[bytes, ...]
    checkpoint: bytes  # the signed note
    tree_size: int

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "chain_id": self.chain_id, "seq": self.seq, "tree_size": self.tree_size,
            "record": base64.b64encode(self.record_bytes).decode(),
            "leaf_hash": recompute_hash(self.record_bytes).hex(),
            "audit_path": [h.hex() for h in self.audit_path],
            "checkpoint": self.checkpoint.decode(),
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> InclusionProof:
        try:
            m = json.loads(text)
            if m.get("format") != FORMAT:
                raise ValueError(f"format {m.get('format')!r}, not {FORMAT}")
            return cls(str(m["chain_id"]), int(m["seq"]), base64.b64decode(m["record"], validate=True),
                       tuple(bytes.fromhex(h) for h in m["audit_path"]), str(m["checkpoint"]).encode(),
                       int(m["tree_size"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrailError(f"not a proof file: {exc}") from exc


def unverified_checkpoint(note_bytes: bytes) -> tuple[str, Checkpoint] | None:
    """(chain id, checkpoint) read without checking the signature (to pick one; verify later)."""
    try:
        note = Note.parse(note_bytes)
        cp = Checkpoint.parse(note.text)
    except TrailCorruption:
        return None
    for sig in note.signatures:
        chain = chain_of(cp.origin, sig.name)
        if chain is not None:
            return chain, cp
    return None


def choose_checkpoint(source: TrailSource, chain_id: str, seq: int, verifier: Verifier | None) -> bytes:
    """The note of the latest checkpoint of ``chain_id`` that covers ``seq`` (verified if a key is given)."""
    best: tuple[int, bytes] | None = None
    for loc in source.checkpoints():
        if loc.entry is None:
            continue
        if verifier is not None:
            try:
                signed = loc.entry.open(verifier)
            except TrailCorruption:
                continue
            chain, size = signed.chain_id, signed.size
        else:
            found = unverified_checkpoint(loc.entry.note)
            if found is None:
                continue
            chain, size = found[0], found[1].size
        if chain == chain_id and size > seq and (best is None or size > best[0]):
            best = (size, loc.entry.note)
    if best is None:
        raise TrailError(f"no signed checkpoint of chain {chain_id} covers seq {seq} yet")
    return best[1]


def chain_ids(source: TrailSource) -> list[str]:
    found = (unverified_checkpoint(loc.entry.note) for loc in source.checkpoints() if loc.entry is not None)
    return sorted({f[0] for f in found if f is not None})


def make_proof(trail: TrailSource | Path | str, seq: int, chain_id: str | None = None,
               verifier: Verifier | None = None) -> InclusionProof:
    """Stream the chain once to build the audit path of ``seq`` under its latest checkpoint."""
    source = as_source(trail)
    if chain_id is None:
        ids = chain_ids(source)
        if len(ids) != 1:
            raise TrailError(f"the trail has {len(ids)} chains; name one with --chain "
                             f"({', '.join(ids[:10])})")
        chain_id = ids[0]
    note = choose_checkpoint(source, chain_id, seq, verifier)
    found = unverified_checkpoint(note)
    assert found is not None
    size = found[1].size
    builder = PathBuilder(seq, size)
    record: bytes | None = None
    for chunk in source.chunks():
        if isinstance(chunk, Issue):
            continue
        for f in chunk.frames:
            if f.chain_id != chain_id or f.seq >= size:
                continue
            builder.add(f.record_hash)
            if f.seq == seq:
                record = chunk.buf[f.start:f.end]
        if builder.complete:
            break
    if record is None or not builder.complete:
        raise TrailError(f"chain {chain_id} does not hold seq {seq} and all {size} checkpointed "
                         "records; run `auditor verify`")
    return InclusionProof(chain_id, seq, record, tuple(builder.path()), note, size)


def verify_proof(proof: InclusionProof, verifier: Verifier) -> tuple[list[str], AuditRecord | None]:
    """Problems with the proof (empty when it holds) and the decoded record."""
    problems: list[str] = []
    signed: SignedCheckpoint | None = None
    try:
        signed = open_checkpoint(proof.checkpoint, verifier)
    except TrailCorruption as exc:
        problems.append(f"checkpoint: {exc}")
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
    if signed is not None:
        if signed.chain_id != proof.chain_id:
            problems.append(f"the checkpoint is for chain {signed.chain_id}, the proof claims {proof.chain_id}")
        if signed.size != proof.tree_size:
            problems.append(f"the checkpoint signs size {signed.size}, the proof claims {proof.tree_size}")
        root = root_from_inclusion(proof.seq, signed.size, leaf, proof.audit_path)
        if root != signed.root:
            detail = f" (expected {signed.root.hex()}, actual {root.hex()})" if root else " (malformed path)"
            problems.append("the audit path does not lead to the checkpoint's Merkle root" + detail)
    return problems, record
