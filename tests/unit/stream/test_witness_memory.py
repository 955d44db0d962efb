"""The witness pusher's per-chain record hashes stay within MAX_LEAF_BYTES of real memory (atkE)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest

from auditor.stream import witnessing


def test_the_hashes_kept_per_chain_stay_within_max_leaf_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix a chain kept len(leaves) * 32 <= MAX_LEAF_BYTES, but each 32-byte hash costs 74 B
    (the bytes object and its list slot): the "32 MiB per chain" bound was really about 74 MB."""
    bound = 1 << 20
    monkeypatch.setattr(witnessing, "MAX_LEAF_BYTES", bound)
    chain = witnessing._Chain(0, ())
    size = 0
    for _ in range(100):
        leaves = tuple(os.urandom(32) for _ in range(1000))
        chain.add(SimpleNamespace(stored=SimpleNamespace(prev_size=size), prev_roots=(), leaves=leaves,  # type: ignore[arg-type]
                                  partition=0))
        size += len(leaves)
        kept = sys.getsizeof(chain.leaves) + sum(sys.getsizeof(h) for h in chain.leaves)
        assert kept <= bound, f"a chain keeps {kept} bytes of record hashes for a bound of {bound}"
    assert chain.size == size and chain.leaves   # the newest are kept, and the chain still adds up
