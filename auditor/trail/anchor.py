"""Does the trail extend a checkpoint trusted from elsewhere? Answered from checkpoints alone.

A verifier that saved a checkpoint yesterday (or a witness) holds ``(size M, root)``. The trail
holds its own signed checkpoints, each stored with an RFC 9162 consistency proof from the
chain's previous checkpoint. When the trail has a checkpoint of size M, its root must equal the
trusted root, and the stored proofs M -> ... -> N must each verify: then the latest checkpoint
extends the trusted one, and not one record was read. When the trail has no checkpoint of size
M, :func:`proof_from_leaves` builds the proof from the chain's record hashes instead.

The findings:

* ``rollback``  the trail's latest checkpoint is smaller than the trusted one;
* ``fork``      the trail's history differs from the trusted one: its checkpoint of the same
                size has another root, or no consistency proof verifies. The first diverging
                size is the smallest trusted size the trail does not extend (and, when other
                trusted checkpoints pass, the histories agree up to the largest of those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from auditor.trail.checkpoint import SignedCheckpoint, StoredCheckpoint
from auditor.trail.merkle import consistency_proof, list_nodes, verify_consistency
from auditor.trail.source import Issue, TrailSource


@dataclass(frozen=True)
class Anchored:
    """The outcome for one trusted checkpoint."""

    trusted: SignedCheckpoint
    ok: bool
    latest: int  # the trail's latest checkpoint size for the chain (0: none)
    how: str     # a sentence for the report
    needs_records: bool = False


def check_extends(trusted: SignedCheckpoint, history: Sequence[SignedCheckpoint],
                  entries: dict[int, StoredCheckpoint]) -> Anchored:
    """Use the stored checkpoints and proofs of one chain only (no records)."""
    m = trusted.size
    if not history:
        return Anchored(trusted, False, 0, f"the trail has no valid checkpoint of chain {trusted.chain_id}, "
                                           f"a trusted checkpoint signs {m} records")
    latest = history[-1]
    if m > latest.size:
        return Anchored(trusted, False, latest.size, f"the trail's latest checkpoint signs {latest.size} records, "
                                                     f"a trusted checkpoint signs {m}: rolled back or truncated")
    by_size = {cp.size: cp for cp in history}
    same = by_size.get(m)
    if same is None:
        return Anchored(trusted, False, latest.size, f"the trail has no checkpoint of size {m}", needs_records=True)
    if same.root != trusted.root:
        return Anchored(trusted, False, latest.size,
                        f"the trail's checkpoint of size {m} has root {same.root.hex()[:16]}…, the trusted one "
                        f"{trusted.root.hex()[:16]}…: the histories diverge at or before size {m}")
    current = same
    for cp in history:
        if cp.size <= m:
            continue
        entry = entries.get(cp.size)
        if entry is None or entry.prev_size != current.size:
            return Anchored(trusted, False, latest.size, f"no stored proof links size {current.size} to {cp.size}",
                            needs_records=True)
        if not verify_consistency(current.size, cp.size, current.root, cp.root, entry.proof):
            return Anchored(trusted, False, latest.size,
                            f"the consistency proof from size {current.size} to {cp.size} does not verify: "
                            f"the history after size {current.size} was rewritten")
        current = cp
    return Anchored(trusted, True, latest.size,
                    f"the latest checkpoint (size {latest.size}) extends the trusted one (size {m}): "
                    f"{sum(1 for cp in history if cp.size > m)} consistency proof(s) verified, no record read")


def chain_leaves(source: TrailSource, chain_id: str, size: int) -> list[bytes]:
    """The first ``size`` record hashes of a chain, in seq order (reads the source)."""
    leaves: list[bytes] = []
    for chunk in source.chunks():
        if isinstance(chunk, Issue):
            continue
        for f in chunk.frames:
            if f.chain_id == chain_id and f.seq == len(leaves) and f.seq < size:
                leaves.append(f.record_hash)
        if len(leaves) >= size:
            break
    return leaves


def proof_from_leaves(trusted: SignedCheckpoint, latest: SignedCheckpoint, leaves: Sequence[bytes]) -> Anchored:
    """The fallback: a consistency proof built from the trail's record hashes."""
    if len(leaves) < latest.size:
        return Anchored(trusted, False, latest.size, f"the chain holds only {len(leaves)} of the {latest.size} "
                                                     "records its checkpoint signs")
    proof = consistency_proof(trusted.size, latest.size, list_nodes(leaves[:latest.size]))
    if verify_consistency(trusted.size, latest.size, trusted.root, latest.root, proof):
        return Anchored(trusted, True, latest.size, f"the latest checkpoint (size {latest.size}) extends the trusted "
                                                    f"one (size {trusted.size}): proof built from the records")
    return Anchored(trusted, False, latest.size, f"no consistency proof from the trusted size {trusted.size} to "
                                                 f"{latest.size} verifies: the histories diverge at or before size "
                                                 f"{trusted.size}")


def findings(results: Iterable[Anchored]) -> list[Issue]:
    """One issue per failing chain, naming the first diverging size (and where they agree)."""
    by_chain: dict[str, list[Anchored]] = {}
    for r in results:
        by_chain.setdefault(r.trusted.chain_id, []).append(r)
    issues = []
    for chain, rs in by_chain.items():
        bad = sorted((r for r in rs if not r.ok), key=lambda r: r.trusted.size)
        if not bad:
            continue
        first = bad[0]
        agree = max((r.trusted.size for r in rs if r.ok and r.trusted.size < first.trusted.size), default=None)
        kind = "rollback" if first.trusted.size > first.latest else "fork"
        extra = f"; first diverging size: {first.trusted.size}" if kind == "fork" else ""
        if agree is not None:
            extra += f" (the trail agrees with the trusted checkpoint of size {agree})"
        issues.append(Issue(kind, first.how + extra, chain, first.trusted.size - 1 if kind == "fork" else first.latest))
    return issues
