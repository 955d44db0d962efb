"""Attacks on the violations the memo's shadow decides and HitBatch.seal builds (rust2's
6cfdfde/6e34399/0e4d050, atv): the compiled path with the shadow against the Python reference and
the compiled path without it, byte for byte (messages, keys, records, heads, violation labels).

- a topic that is a str subclass: Python's f-strings of the chain id and the source call its
  ``__format__``; the shadow read the str's data, so its records went to another chain (fixed:
  the shadow mirrors an exact str only);
- many source partitions interleaved in one batch (more than the shadow's recent window), on
  topics that share prefixes or differ in case only, the same partition numbers on each;
- a violations budget exactly at a message's size and one byte under it;
- occurred_at at the edges (zero and non-zero microseconds, before 1970, years 1 and 9999);
- the collector run from inside seal (the audit partition callback) while it builds the messages.
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from streamkit import PACK_IDS, TOPIC, StubMessage, compliant, native, processor, violating, wire
from test_factpath_rounds import outputs

from auditor import _native
from auditor.events.codec import _EPOCH, MAX_MICROS, MIN_MICROS
from auditor.native import FACT_MEMO_BUILT
from auditor.stream import processor as processor_module
from auditor.stream.budget import OutputBudget
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.chainid import chain_id

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT or not hasattr(_native, "json_ascii"),
                                reason="auditor._native was built before the shadow built violations: rebuild it")


def trio(violations_budget: int | None = None) -> tuple[BatchProcessor, BatchProcessor, BatchProcessor]:
    procs = processor(), native(False), native(True)
    if violations_budget is not None:
        for p in procs:
            p.budget = OutputBudget(audit=p.budget.audit, violations=violations_budget,
                                    dead_letter=p.budget.dead_letter)
    return procs


def same(procs: tuple[BatchProcessor, ...], batch: list[Any]) -> BatchResult:
    results = [p.process(batch) for p in procs]
    for r in results[1:]:
        assert outputs(r) == outputs(results[0])
        assert list(r.records) == list(results[0].records)
        assert Counter(r.violations) == Counter(results[0].violations)
    heads = [dict(p._working) for p in procs]
    assert heads[1] == heads[0] == heads[2]
    for p in procs:
        p.commit_heads()
    return results[-1]


def shadow_built(p: BatchProcessor, r: BatchResult, before: int) -> int:
    """Violation messages of ``r`` not built in Python (the shadow's; no full-way violations here)."""
    return sum(o.topic == "violations" for o in r.outgoing) - (p.python_violations - before)


def events(k: int, tag: str = "") -> list[bytes]:
    """Violating and compliant events of every pack (ids unique per round ``k``)."""
    return [wire(ev(p, i, event_id=f"{tag}{p}{i}~{k}")) for p in PACK_IDS for i in range(2)
            for ev in (violating, compliant)]


class Topic(str):
    """A topic whose format differs from its data (what an f-string of it gives)."""

    def __format__(self, spec: str) -> str:
        return "fmt-" + str.__format__(self, spec)


def test_a_topic_that_is_a_str_subclass_is_chained_as_python_chains_it():
    """Before the fix the shadow's hits of round 2 went to chain "events/0" while Python's (and
    the shadow-off path's) went to "fmt-events/0": a forked chain, and another source text."""
    procs = trio()
    for k in range(3):
        r = same(procs, [StubMessage(Topic(TOPIC), 0, 100 * k + j, v) for j, v in enumerate(events(k))])
        assert {rec.chain_id for rec in r.records} == {"fmt-events/0"}


TOPICS = ["events", "events-b", "event", "Events", "EVENTS", "e", "events.b", "events_b"]


def test_many_source_partitions_interleaved_keep_their_chains_and_seqs():
    """8 topics sharing prefixes or differing in case x 5 partitions (the same numbers on each):
    40 source partitions, more than the shadow's window of recent ones, visited round robin (each
    lookup misses the window) and then in runs; every record on its source's chain, in order."""
    procs = trio()
    sources = [(t, part) for part in range(5) for t in TOPICS]
    offsets: Counter[tuple[str, int]] = Counter()
    before, built = procs[2].python_violations, 0
    for k in range(4):
        vals = events(k)
        order = (sources * 2) if k % 2 == 0 else [s for s in sources for _ in range(2)]
        batch = []
        for j, src in enumerate(order):
            batch.append(StubMessage(src[0], src[1], offsets[src], vals[j % len(vals)]))
            offsets[src] += 1
        r = same(procs, batch)
        if k:
            built += shadow_built(procs[2], r, before)
        before = procs[2].python_violations
        seqs: dict[str, list[int]] = {}
        for (rec, seq, *_), msg in zip(r.sealed, batch, strict=True):
            assert rec.chain_id == chain_id(msg.topic(), msg.partition())
            seqs.setdefault(rec.chain_id, []).append(seq)
        for c, s in seqs.items():
            assert s == list(range(s[0], s[0] + len(s))), c
        for o in r.outgoing:
            if o.topic == "violations" and not json.loads(o.value).get("truncated"):
                doc = json.loads(o.value)
                topic, _, rest = doc["source"].rpartition("/")
                assert doc["chain_id"] == chain_id(topic, int(rest.split("@")[0]))
    assert built > 0


@pytest.mark.parametrize("under", [0, 1])
def test_a_violations_budget_at_a_messages_size_truncates_only_one_byte_under(under):
    """The message and key exactly at the budget is whole; one byte over it is truncated (both
    paths); every violation of the second round is one the shadow built."""
    vals = [wire(violating(p, 0, event_id=f"{p}-{'x' * 40}")) for p in PACK_IDS]
    ref = processor()
    r = ref.process([StubMessage(TOPIC, 0, 50 + j, v) for j, v in enumerate(vals)])  # as round 2's
    sizes = {len(o.value) + len(o.key or b"") for o in r.outgoing if o.topic == "violations"}
    for size in sorted(sizes)[:2]:
        procs = trio(size - under)
        same(procs, [StubMessage(TOPIC, 0, 10 + j, v) for j, v in enumerate(vals)])
        before = procs[2].python_violations
        r2 = same(procs, [StubMessage(TOPIC, 0, 50 + j, v) for j, v in enumerate(vals)])
        assert shadow_built(procs[2], r2, before) == len(vals)
        cut = [json.loads(o.value).get("truncated", False) for o in r2.outgoing if o.topic == "violations"
               and len(o.value) + len(o.key or b"") == size]
        wholes = [o for o in r2.outgoing if o.topic == "violations" and not json.loads(o.value).get("truncated")]
        if under:
            assert not cut  # the one exactly this size before is truncated now
        else:
            assert cut and not any(cut) and wholes


EDGE_TIMES = [0, 1, -1, 999_999, 1_000_000, -1_000_000, -1_000_001, -86_400_000_000, 951_782_400_000_000,
              951_868_799_999_999, MIN_MICROS, MIN_MICROS + 1, MAX_MICROS, MAX_MICROS - 999_999]


def test_violations_at_the_edges_of_time_are_pythons():
    """occurred_at at zero and non-zero microseconds, around the epoch, a leap day, years 1 and
    9999 (isoformat drops ".000000"; days before 1970 count down)."""
    procs = trio()
    assert all(abs(us) <= 1 << 53 for us in EDGE_TIMES[:10])
    built = 0
    for k in range(3):
        vals = [wire(replace(violating(p, 1, event_id=f"t{p}{us}~{k}"),
                             occurred_at=_EPOCH + timedelta(microseconds=us))) for p in PACK_IDS for us in EDGE_TIMES]
        before = procs[2].python_violations
        r = same(procs, [StubMessage(TOPIC, j % 2, 100 * k + j, v) for j, v in enumerate(vals)])
        if k:
            built += shadow_built(procs[2], r, before)
    assert built >= 2 * len(PACK_IDS) * 10  # at least those within 2**53 us, rounds 2 and 3


def test_the_collector_run_inside_seal_keeps_every_violation(monkeypatch):
    """The audit partition callback (Python, called by HitBatch.seal while it builds the outputs)
    runs a full collection every 8th call: the messages and labels come out whole and in order."""
    real = processor_module._audit_partition
    calls = [0]

    def collecting(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] % 8 == 1:
            gc.collect()
        return real(*args, **kw)

    monkeypatch.setattr(processor_module, "_audit_partition", collecting)
    procs = trio()
    for k in range(2):
        r = same(procs, [StubMessage(TOPIC if j % 3 else "events-b", j % 4, 100 * k + j, v)
                         for j, v in enumerate(events(k))])
    gc.collect()
    assert calls[0] > 0
    assert all(json.loads(o.value)["verdict"] == "VIOLATION" for o in r.outgoing if o.topic == "violations")
