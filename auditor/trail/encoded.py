"""Records sealed elsewhere, checked and chained one batch at a time (``TrailWriter.append_encoded``).

Each record must be one whole record that hashes to its record_hash and links to its chain's
head; the batch advances each chain's head and RFC 6962 compact range and joins the accepted
records' bytes for the next segment block. Nothing here writes: the writer applies the result.

:func:`chain_encoded` is the compiled step (``native/src/trail.rs``, one call per batch);
:func:`chain_encoded_py` is the reference it is tested against, byte for byte. Both return an
:class:`EncodedBatch`; both stop at the first record that does not frame, hash or link and give
its index, and :func:`check_encoded` then raises the error that names it.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from auditor import _native
from auditor.errors import TrailCorruption
from auditor.trail.canonical import Frame, iter_frames
from auditor.trail.chain import ChainHead
from auditor.trail.hashing import leaf_hash
from auditor.trail.merkle import MerkleRange


class ChainAdvance(NamedTuple):
    """Where a batch leaves one chain: its head, its compact range, and the leaves it added."""

    chain_id: str
    size: int
    head_hash: bytes
    range_size: int
    roots: tuple[bytes, ...]
    leaves: list[bytes]


class EncodedBatch(NamedTuple):
    """The first ``accepted`` records joined in ``data``; the chains they advanced, in order of first
    appearance; and the index of the first refused record (None when none was)."""

    data: bytes
    accepted: int
    chains: list[ChainAdvance]
    bad: int | None


def check_encoded(data: bytes, head: ChainHead | None = None) -> Frame:
    """The frame of one sealed record, checked to hash to its record_hash and, given the chain's
    ``head``, to link to it; raises TrailCorruption naming the chain and seq otherwise."""
    (f,) = iter_frames(data, 1)
    chain_id = f.chain_id
    if f.end != len(data) or leaf_hash(data[:-32]) != f.record_hash:
        raise TrailCorruption(f"chain {chain_id} seq {f.seq}: the record's bytes do not hash to its record "
                              "hash", chain=chain_id, seq=f.seq)
    if head is not None and (f.seq != head.size or f.prev_hash != head.head_hash):
        raise TrailCorruption(f"chain {chain_id} seq {f.seq} does not link to the trail's head (size "
                              f"{head.size})", chain=chain_id, seq=f.seq, expected=head.head_hash.hex(),
                              actual=f.prev_hash.hex())
    return f


def chain_encoded_py(records: Sequence[bytes], heads: Mapping[str, ChainHead],
                     ranges: Mapping[str, MerkleRange]) -> EncodedBatch:
    """The reference: record by record, as the writer did before the compiled step."""
    work: dict[str, tuple[ChainHead, MerkleRange, list[bytes]]] = {}
    accepted: list[bytes] = []
    for data in records:
        try:
            (f,) = iter_frames(data, 1)
        except TrailCorruption:
            break
        chain_id = f.chain_id
        if chain_id not in work:
            rng = ranges.get(chain_id)
            work[chain_id] = (heads.get(chain_id) or ChainHead.genesis(chain_id),
                              rng.copy() if rng is not None else MerkleRange(), [])
        head, rng, leaves = work[chain_id]
        try:
            check_encoded(data, head)
        except TrailCorruption:
            break
        work[chain_id] = (ChainHead(chain_id, head.size + 1, f.record_hash), rng, leaves)
        rng.append(f.record_hash)
        leaves.append(f.record_hash)
        accepted.append(data)
    chains = [ChainAdvance(c, h.size, h.head_hash, r.size, r.subtree_roots, leaves)
              for c, (h, r, leaves) in work.items() if leaves]
    n = len(accepted)
    return EncodedBatch(b"".join(accepted), n, chains, n if n < len(records) else None)


def chain_encoded_native(records: Sequence[bytes], heads: Mapping[str, ChainHead],
                         ranges: Mapping[str, MerkleRange]) -> EncodedBatch:
    """The compiled step: what :func:`chain_encoded_py` returns, in one call per batch."""
    data, n, chains, bad = _native.chain_encoded(records, heads, ranges)
    return EncodedBatch(data, n, [ChainAdvance(*c) for c in chains], bad)


#: the writer's step; the reference only while a checkout's compiled module predates it (rebuild:
#: ``pip install -e .``; tests/unit/native/test_native_trail.py fails until then)
chain_encoded = chain_encoded_native if hasattr(_native, "chain_encoded") else chain_encoded_py
