"""attn: HitBatch.seal (the memo's shadow sealing its hits in compiled code) attacked with mixed
batch sequences: hits, fact-path and full-path events, refusals, records over the audit budget,
several topics and partitions (several chains), messages the shadow does not mirror, batches
aborted and processed again or dropped, a batch processed on the working heads of one not yet
committed, pseudonymisation keys rotated, memos dropped, a seal call that fails. Against the same
compiled processor without the shadow and the Python reference: every output, record, chain head
and signed checkpoint byte for byte.

The example count is small by default (the suite's budget); ATTN_SEAL_EXAMPLES=2000 runs it long."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import PACK_IDS, TOPIC, StubMessage, compliant, packs, violating, wire
from test_factpath_rounds import outputs
from test_sealhits import FAR, SEAL_POOL, OddPartition, checkpointers, keys, set_budget, trio

from auditor.native import FACT_MEMO_BUILT, FactMemo
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.keys import Pseudonymizer

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

EXAMPLES = int(os.environ.get("ATTN_SEAL_EXAMPLES", "6"))
TOPICS = (TOPIC, "events-b")
#: the pool: the seal module's, plus events past 2**53 us (known keys the shadow leaves to Python)
#: and the same subjects under many event ids (the shadow's hits)
ATTN_POOL: list[bytes | None] = [
    *SEAL_POOL,
    *(wire(replace(compliant(p, i), event_id=f"far-{p}-{i}", occurred_at=FAR)) for p in PACK_IDS for i in range(2)),
    *(wire(compliant(p, i, event_id=f"rep-{p}-{i}-{k}")) for p in PACK_IDS for i in range(3) for k in range(3)),
    *(wire(violating(p, i, event_id=f"vrep-{p}-{i}")) for p in PACK_IDS for i in range(2)),
]
KEYS = [bytes([65 + i]) * (32 + 17 * i) for i in range(4)]  # 32, 49, 66 (> a block: hashed), 83 bytes

#: half the picks from the events the shadow decides once taught (compliant, of a few record sizes)
HOT = [i for i, v in enumerate(ATTN_POOL) if i >= len(SEAL_POOL) - 20 and i < len(SEAL_POOL) + 10 or
       (v is not None and b"rep-" in v and b"vrep-" not in v)]
MSG = st.tuples(st.one_of(st.integers(0, len(ATTN_POOL) - 1), st.sampled_from(HOT)), st.sampled_from(TOPICS),
                st.integers(0, 3), st.integers(0, 15))
STEP = st.tuples(
    st.lists(MSG, min_size=8, max_size=60),
    st.sampled_from([650, 800, 900, 1000, 1100, 1300, 1 << 20]),
    st.sampled_from(["commit", "commit", "commit", "retry", "abort", "pipeline", "rotate", "drop", "sealfail"]),
    st.integers(0, 1 << 16),
)


def make_batch(msgs: list[tuple[int, str, int, int]], offsets: dict[tuple[str, int], int]) -> list[Any]:
    out: list[Any] = []
    for pick, topic, part, odd in msgs:
        at = offsets.get((topic, part), 0)
        offsets[(topic, part)] = at + 1
        cls = OddPartition if odd == 0 else StubMessage  # one in 16: a partition the shadow does not mirror
        out.append(cls(topic, part, at, ATTN_POOL[pick]))
    return out


def alike(procs: tuple[BatchProcessor, ...], batch: list[Any]) -> list[BatchResult]:
    results = [p.process(batch) for p in procs]
    for r in results[1:]:
        assert outputs(r) == outputs(results[0])
        assert list(r.records) == list(results[0].records)
    assert len(results[0].sealed) == len(batch)
    return results


def signed_alike(cps: list[Checkpointer], results: list[BatchResult]) -> None:
    signed = [cp.seal(r) for cp, r in zip(cps, results, strict=True)]
    assert all(s == signed[0] for s in signed)


def commit(procs: tuple[BatchProcessor, ...], cps: list[Checkpointer]) -> None:
    for p in procs:
        p.commit_heads()
    for cp in cps:
        cp.commit()
    assert all(p.heads == procs[0].heads for p in procs)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
@given(st.lists(STEP, min_size=3, max_size=8))
def test_mixed_batch_sequences_seal_as_without_the_shadow(tmp_path_factory, monkeypatch_module, steps):
    procs = trio()
    cps = checkpointers(keys(tmp_path_factory), len(procs))
    offsets: dict[tuple[str, int], int] = {}
    teach = [(i, TOPIC, 0, 1) for i in range(len(ATTN_POOL))]
    signed_alike(cps, alike(procs, make_batch(teach, offsets)))  # the shadow learns
    commit(procs, cps)
    for msgs, audit, action, n in steps:
        set_budget(procs, audit)
        if action == "rotate":  # a new pseudonymisation key, for every processor alike
            for p in procs:
                p.pseudonymizer = Pseudonymizer(KEYS[n % len(KEYS)])
        elif action == "drop":  # one pack's memo dropped (the shadow must drop its copy)
            packs()[PACK_IDS[n % len(PACK_IDS)]].clear_memo()
        batch = make_batch(msgs, offsets)
        if action == "sealfail":
            with monkeypatch_module.context() as m:
                m.setattr(FactMemo, "seal", staticmethod(_failing))
                results = alike(procs, batch)
        else:
            results = alike(procs, batch)
        if action == "retry":  # the transaction aborted: the same batch again, the same bytes
            for p, r in zip(procs, results, strict=True):
                p.discard_heads()
                assert outputs(p.process(batch)) == outputs(r)
        elif action == "pipeline":  # the next batch processed on this one's working heads, before it commits
            later = alike(procs, make_batch(msgs[::-1], offsets))
            signed_alike(cps, results)
            for cp in cps:
                cp.commit()
            results = later
        elif action == "abort":  # aborted and not retried: the next batch follows the old heads
            for p in procs:
                p.discard_heads()
            for cp in cps:
                cp.discard()
            continue
        signed_alike(cps, results)
        commit(procs, cps)


def _failing(*args: Any) -> Any:
    raise SystemError("a bug in the compiled call")


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as m:
        yield m
