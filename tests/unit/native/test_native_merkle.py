"""The compiled Merkle batch forms (native/src/merkle.rs) against the Python reference
(auditor/trail/merkle.py): a compact range extended by a batch, the root of a list of leaves,
and a daemon chain log extended a batch at a time against one record at a time."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import _native
from auditor.errors import TrailCorruption
from auditor.trail.chainlog import ChainLog
from auditor.trail.hashing import EMPTY_ROOT
from auditor.trail.merkle import MerkleRange, RangeNodes, consistency_proof, leaves_root, list_nodes, root_of


def leaves(n: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(b"%d/%d" % (seed, i)).digest() for i in range(n)]


def reference_range(items: list[bytes]) -> MerkleRange:
    rng = MerkleRange()
    for leaf in items:
        rng.append(leaf)  # the reference: one leaf at a time, in Python
    return rng


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_a_range_extended_by_a_batch_is_the_range_extended_leaf_by_leaf(before, batch):
    items = leaves(before + batch, seed=before)
    start = reference_range(items[:before])
    size, roots = _native.merkle_extend(start.size, list(start.subtree_roots), items[before:])
    whole = reference_range(items)
    assert (size, tuple(roots)) == (whole.size, whole.subtree_roots)
    start.extend(items[before:])  # MerkleRange.extend: the compiled form for 8 leaves or more
    assert (start.size, start.subtree_roots, start.root()) == (whole.size, whole.subtree_roots, whole.root())


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 8, 9, 16, 17, 100, 333, 1000, 1025])
def test_the_root_of_a_list_is_the_reference_root(n: int):
    items = leaves(n, seed=n)
    assert _native.merkle_root(items) == root_of(items) == leaves_root(items)
    assert n or _native.merkle_root([]) == EMPTY_ROOT


def test_roots_that_cannot_be_a_range_and_hashes_of_another_size_are_refused():
    items = leaves(10)
    with pytest.raises(ValueError, match="cannot be a range of 5 leaves"):
        _native.merkle_extend(5, items[:1], items)  # 5 leaves have two perfect subtrees
    with pytest.raises(ValueError, match="32-byte"):
        _native.merkle_extend(0, [], [b"short", *items])
    with pytest.raises(ValueError, match="32-byte"):
        _native.merkle_root([*items, b"\x00" * 33])


def test_consistency_proofs_from_the_compiled_nodes_are_the_reference_proofs():
    rnd = random.Random(3)
    for _ in range(60):
        old, new = sorted((rnd.randrange(0, 400), rnd.randrange(1, 400)))
        items = leaves(new, seed=old)
        start = reference_range(items[:old])
        nodes = RangeNodes(old, start.subtree_roots, items[old:])
        assert consistency_proof(old, new, nodes) == consistency_proof(old, new, list_nodes(items))


def test_a_chain_log_extended_a_batch_at_a_time_is_the_log_extended_record_by_record():
    a, b = ChainLog.genesis("events/0"), ChainLog.genesis("events/0")
    seq = 0
    for size in (1, 7, 8, 333, 0, 64, 5):
        batch = leaves(size, seed=seq)
        for h in batch:
            a.extend(h, seq)
            seq += 1
        b.extend_many(b.head.size, batch)
        assert (b.head, b.range.size, b.range.subtree_roots, b.since) == (a.head, a.range.size,
                                                                          a.range.subtree_roots, a.since)
    with pytest.raises(TrailCorruption, match="does not follow"):
        b.extend_many(seq + 1, leaves(3))
