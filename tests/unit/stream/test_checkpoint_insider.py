"""Checkpointer.seal against insider edits of a batch's sealed records (atx, session 10).

An insider who can change what reaches the checkpointer (reorder, duplicate, drop, splice two chains'
runs, a seq gap at a run boundary, a record whose chain id changes mid-run) must never get a checkpoint
signed over a chain that does not continue exactly. The oracle here is independent of both code paths
(the per-run fast path and the record-by-record fall-back): a batch is accepted only if, per chain, its
records in batch order have the seqs head.size, head.size + 1, ... and each links to the hash before it;
and when it is accepted the new heads are those records' last hashes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import TrailCorruption
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.processor import BatchResult
from auditor.trail.chainlog import ChainLog
from auditor.trail.keys import KeyRing

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHAINS = ("events/0", "events/1", "events/2")
EDITS = ("reorder", "duplicate", "drop", "splice", "splice-same-seq", "rehash", "gap-at-boundary", "chain-mid-run",
         "swap-runs")


@dataclass(frozen=True)
class Rec:
    chain_id: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


def _digest(chain: str, seq: int) -> bytes:
    return hashlib.sha256(f"{chain}/{seq}".encode()).digest()


def sealed_for(order: list[str], heads: dict[str, tuple[int, bytes]]) -> list[tuple[Rec, int, bytes, bytes]]:
    heads = dict(heads)
    out = []
    for chain in order:
        seq, prev = heads[chain]
        digest = _digest(chain, seq)
        out.append((Rec(chain), seq, prev, digest))
        heads[chain] = (seq + 1, digest)
    return out


def oracle(heads: dict[str, tuple[int, bytes]], sealed: list[tuple[Rec, int, bytes, bytes]]
           ) -> dict[str, tuple[int, bytes]] | None:
    """The chains' heads after the batch, or None when some record does not continue its chain."""
    heads = dict(heads)
    for rec, seq, prev, digest in sealed:
        want_seq, want_prev = heads[rec.chain_id]
        if seq != want_seq or prev != want_prev:
            return None
        heads[rec.chain_id] = (seq + 1, digest)
    return heads


def edit(sealed: list, what: str, at: int, other: int) -> list:
    s = list(sealed)
    if not s:
        return s
    at %= len(s)
    other %= len(s)
    if what == "reorder":
        s[at], s[other] = s[other], s[at]
    elif what == "duplicate":
        s.insert(at, s[at])
    elif what == "drop":
        del s[at]
    elif what == "splice":  # a run of another chain's records carried under this record's chain id
        rec = s[at][0]
        donor = [x for x in s if x[0].chain_id != rec.chain_id]
        if donor:
            s[at:at + 1] = [(rec, *donor[0][1:])]
    elif what == "splice-same-seq":  # another chain's record at this one's seq, under this chain id
        rec, seq = s[at][0], s[at][1]
        donor = [x for x in s if x[0].chain_id != rec.chain_id]
        if donor:
            s[at] = (rec, seq, donor[0][2], donor[0][3])
    elif what == "rehash":  # the record itself replaced (a fork): same seq and link, another hash
        rec, seq, prev, _ = s[at]
        s[at] = (rec, seq, prev, _digest("fork", seq))
    elif what == "gap-at-boundary":  # the first record of a run (chain changes there) one seq on
        starts = [i for i in range(len(s)) if i == 0 or s[i][0].chain_id != s[i - 1][0].chain_id]
        i = starts[at % len(starts)]
        rec, seq, prev, digest = s[i]
        s[i] = (rec, seq + 1, prev, digest)
    elif what == "chain-mid-run":  # one record inside a run names another chain
        rec = s[at][0]
        s[at] = (Rec(CHAINS[(CHAINS.index(rec.chain_id) + 1 + other % 2) % 3]), *s[at][1:])
    else:  # two runs exchanged whole
        starts = [i for i in range(len(s)) if i == 0 or s[i][0].chain_id != s[i - 1][0].chain_id] + [len(s)]
        if len(starts) > 2:
            a = at % (len(starts) - 1)
            b = other % (len(starts) - 1)
            a, b = min(a, b), max(a, b)
            if a != b:
                ra, rb = s[starts[a]:starts[a + 1]], s[starts[b]:starts[b + 1]]
                s = s[:starts[a]] + rb + s[starts[a + 1]:starts[b]] + ra + s[starts[b + 1]:]
    return s


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.sampled_from(CHAINS), min_size=1, max_size=30),
       edits=st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 60), st.integers(0, 60)), min_size=1,
                      max_size=3),
       known=st.sets(st.sampled_from(CHAINS)),
       reference=st.booleans())
def test_no_checkpoint_is_signed_over_an_insider_edit(keys, order, edits, known, reference):
    cp = Checkpointer(keys.signer, keys.verifier, "c", audit_partitions=3, partitions=3, clock=lambda: NOW)
    if reference:
        cp._follow = cp._follow_each  # type: ignore[method-assign]
    heads = {c: (0, ChainLog.genesis(c).head.head_hash) for c in CHAINS}
    for chain in sorted(known):
        pre = sealed_for([chain] * 2, heads)
        cp.seal(BatchResult(sealed=pre))  # type: ignore[arg-type]
        cp.commit()
        heads[chain] = (2, pre[-1][3])
    sealed = sealed_for(order, heads)
    for what, at, other in edits:
        sealed = edit(sealed, what, at, other)
    want = oracle(heads, sealed)
    try:
        out = cp.seal(BatchResult(sealed=sealed))  # type: ignore[arg-type]
    except TrailCorruption:
        assert want is None, "a batch that continues its chains was refused"
        cp.discard()
        assert {c: (log.head.size, log.head.head_hash) for c, log in cp.logs.items()} == \
            {c: heads[c] for c in cp.logs}, "the refused batch left a chain changed"
        return
    assert want is not None, f"a checkpoint was signed over an edited batch: {edits}"
    touched = {r.chain_id for r, *_ in sealed}
    assert len(out) == len(touched)
    for chain in touched:
        assert (cp.logs[chain].head.size, cp.logs[chain].head.head_hash) == want[chain]
