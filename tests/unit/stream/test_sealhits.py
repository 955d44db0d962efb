"""seal: the shadow of the decision memo seals its hits in compiled code (FactMemo.decide and
FactMemo.seal), with the records of the batch's other events in input order. Whole batches (hits,
fact-path and full-path events, rejections, records over the audit budget, faults, several chains)
against the same processor without the shadow and the Python reference: the same outputs, records,
chain heads and signed checkpoints, byte for byte. And when the shadow learns: from an event's
first sighting, and not again for what it already knows or cannot mirror."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, TOPIC, StubMessage, compliant, native, processor, violating, wire
from test_factpath_rounds import POOL, outputs

from auditor.native import FACT_MEMO_BUILT, SHADOW_VIOLATIONS, FactMemo
from auditor.stream import factpath
from auditor.stream.budget import OutputBudget
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.keys import KeyRing

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

PARTITIONS = 3
#: what the shadowed processors of this module did: hits decided, hits over the audit budget
SEEN: Counter[str] = Counter()
#: 2300-01-01: past 2**53 microseconds (the shadow knows such an event's key but leaves it to Python)
FAR = datetime(2300, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count what every shadowed processor's seal calls saw."""
    real = FactMemo.seal

    def seal(hits: Any, *args: Any) -> tuple[Any, ...]:
        got = real(hits, *args)
        SEEN["hits"] += len(hits)
        SEEN["over"] += len(got[1])
        return got

    monkeypatch.setattr(FactMemo, "seal", staticmethod(seal))


def trio() -> tuple[BatchProcessor, BatchProcessor, BatchProcessor]:
    """The Python reference, the compiled fact path without the shadow, and with it."""
    return processor(), native(False), native(True)


def checkpointers(keys: KeyRing, n: int) -> list[Checkpointer]:
    return [Checkpointer(keys.signer, keys.verifier, "audit.checkpoints", audit_partitions=3, partitions=3,
                         clock=lambda: NOW) for _ in range(n)]


def set_budget(procs: tuple[BatchProcessor, ...], audit: int) -> None:
    for p in procs:
        p.budget = OutputBudget(audit=audit, violations=p.budget.violations, dead_letter=p.budget.dead_letter)


def same(procs: tuple[BatchProcessor, ...], batch: list[Any], cps: list[Checkpointer] | None = None,
         commit: bool = True) -> list[BatchResult]:
    """``batch`` through every processor: the same outputs, records and signed checkpoints."""
    results = [p.process(batch) for p in procs]
    for r in results[1:]:
        assert outputs(r) == outputs(results[0])
        assert list(r.records) == list(results[0].records)
        assert [s[0].chain_id for s in r.sealed] == [s[0].chain_id for s in results[0].sealed]
    assert len(results[-1].sealed) == len(batch)
    if cps is not None:
        signed = [cp.seal(r) for cp, r in zip(cps, results, strict=True)]
        assert all(s == signed[0] for s in signed)
    if commit:
        for p in procs:
            p.commit_heads()
        if cps is not None:
            for cp in cps:
                cp.commit()
        assert all(p.heads == procs[0].heads for p in procs)
    return results


def batch_of(values: list[bytes | None], parts: list[int], offsets: dict[int, int]) -> list[StubMessage]:
    out = []
    for i, v in enumerate(values):
        p = parts[i % len(parts)]
        out.append(StubMessage(TOPIC, p, offsets.get(p, 0), v))
        offsets[p] = offsets.get(p, 0) + 1
    return out


def _sized(i: int, n: int) -> bytes:
    """A compliant event whose record grows with ``n`` (an attribute the rules do not read)."""
    e = compliant(PACK_IDS[i % len(PACK_IDS)], i)
    return wire(replace(e, event_id=f"sz{i}-{n}", attributes={**(e.attributes or {}), "note": "n" * n}))


#: the module's pool: the fact-path rounds' pool (generated, violations, refusals, a long input)
#: and events of a few record sizes (so that a budget puts some hits over it and not others)
SEAL_POOL: list[bytes | None] = [*POOL, *(_sized(i, n) for i in range(5) for n in (0, 150, 300, 450))]

STEP = st.tuples(
    st.lists(st.integers(0, len(SEAL_POOL) - 1), min_size=1, max_size=40),
    st.lists(st.integers(0, PARTITIONS - 1), min_size=1, max_size=6),
    st.sampled_from([700, 900, 1000, 1100, 1300, 1 << 20]),
    st.sampled_from(["commit", "retry"]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=3, max_size=6))
def test_whole_batches_with_shadow_hits_are_the_shadow_off_batches(tmp_path_factory, steps):
    """Hits, fact-path and full-path events, refusals and records over the audit budget, on three
    chains, batch after batch (the first rounds teach the shadow): the same bytes with and without
    the shadow, and as the Python reference; a batch processed again after an abort too."""
    procs = trio()
    cps = checkpointers(keys(tmp_path_factory), len(procs))
    offsets: dict[int, int] = {}
    same(procs, batch_of(SEAL_POOL, [0, 1, 2], offsets), cps)  # the shadow learns (and the memos)
    for picks, parts, audit, action in steps:
        set_budget(procs, audit)
        batch = batch_of([SEAL_POOL[i] for i in picks], parts, offsets)
        if action == "retry":  # the transaction aborted: the same batch again gives the same bytes
            first = same(procs, batch, commit=False)
            for p, r in zip(procs, first, strict=True):
                p.discard_heads()
                again = p.process(batch)
                assert outputs(again) == outputs(r)
                p.commit_heads()
            for cp, r in zip(cps, first, strict=True):
                cp.seal(r)
                cp.commit()
        else:
            same(procs, batch, cps)
    assert procs[0].heads == procs[1].heads == procs[2].heads


def test_the_sequences_above_seal_hits_and_hits_over_the_budget():
    """The batches of the property above do decide hits in the shadow, some over the budget."""
    procs = trio()
    offsets: dict[int, int] = {}
    before = SEEN.copy()
    for audit in (1 << 20, 1 << 20, 700):
        set_budget(procs, audit)
        same(procs, batch_of(SEAL_POOL, [0, 1, 2], offsets))
    assert SEEN["hits"] - before["hits"] > len(SEAL_POOL)
    assert SEEN["over"] - before["over"] >= 5


_KEYS: list[KeyRing] = []


def keys(tmp_path_factory: Any) -> KeyRing:
    if not _KEYS:
        _KEYS.append(KeyRing.generate(tmp_path_factory.mktemp("sealhits") / "keys"))
    return _KEYS[0]


@pytest.mark.skipif(not SHADOW_VIOLATIONS, reason="auditor._native was built before the shadow decided violations")
def test_a_hit_over_the_audit_budget_between_others_is_rejected_in_its_place(tmp_path_factory):
    """A hit whose record is over the audit budget, between hits and violations of its chain: its
    rejection takes its place and the records after it link to the rejection. The violations are
    hits too (rust2): each record over the budget was a hit."""
    procs = trio()
    cps = checkpointers(keys(tmp_path_factory), len(procs))
    offsets: dict[int, int] = {}
    values: list[bytes | None] = []
    for i in range(5):
        values += [_sized(i, 0), wire(violating(PACK_IDS[i], i)), _sized(i, 450), _sized(i, 0)]
    for _ in range(2):
        same(procs, batch_of(values, [0], offsets), cps)
    set_budget(procs, 900)
    before = SEEN.copy()
    r = same(procs, batch_of(values, [0], offsets), cps)[-1]
    over = SEEN["over"] - before["over"]
    assert over >= 5 and SEEN["hits"] - before["hits"] >= 20
    assert r.dead_letters.count("record_too_large") == over


def test_a_miss_that_faults_between_hits_is_rejected_and_its_chain_relinked(monkeypatch: pytest.MonkeyPatch):
    """A fault routing an event audited the full way, between hits of its chain: its rejection
    (route_failed) takes its place, the batch is sealed again, the hits after it link to it."""
    # violating(p, 0) names what its pack does not declare: kept from the fact path (its refusal
    # not kept), so that it is audited the full way here (rust, session 9)
    monkeypatch.setattr(factpath, "REFUSAL_MAX_TEXT", 0)
    procs = trio()
    offsets: dict[int, int] = {}
    values: list[bytes | None] = [wire(violating(p, 0, event_id=f"v-{p}")) for p in PACK_IDS]
    values += [wire(compliant(p, i)) for p in PACK_IDS for i in range(3)]
    values = [x for pair in zip(values, reversed(values), strict=True) for x in pair]
    for _ in range(2):
        same(procs, batch_of(values, [0, 1], offsets))
    poisoned = "v-ipmart"

    def poison(real: Any, event_id: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if event_id(args) == poisoned:
                raise RuntimeError("a bug routing this one")
            return real(*args, **kwargs)
        return call

    for p in procs:  # these violations are audited the full way (the memo keeps no template for them)
        monkeypatch.setattr(p, "_violations", poison(p._violations, lambda a: a[3].event_id))
    before = SEEN.copy()
    r = same(procs, batch_of(values, [0, 1], offsets))[-1]
    assert r.dead_letters.count("route_failed") == 2
    assert SEEN["hits"] - before["hits"] >= 2 * 15


def test_a_miss_the_compiled_sealer_cannot_build_is_audited_the_full_way(monkeypatch: pytest.MonkeyPatch):
    """An item of the fact path the compiled call cannot encode (as a layout bug would): that record
    alone is built in Python and sealed again, between the hits. (Violations past 2**53 us: the
    shadow leaves them to the fact path; other violations are its hits, rust2.)"""
    procs = trio()
    offsets: dict[int, int] = {}
    values: list[bytes | None] = [wire(replace(violating(p, i), occurred_at=FAR)) for p in PACK_IDS for i in range(2)]
    values += [wire(compliant(p, i)) for p in PACK_IDS for i in range(3)]
    for _ in range(2):
        same(procs, batch_of(values, [0, 1, 2], offsets))
    real, broken = FactMemo.seal, [0]

    def seal(hits: Any, sealer: Any, layout: Any, batch: Any, misses: Any, records: list[Any], *rest: Any) -> Any:
        bad = [r if type(r) is not tuple else (r[0][:-1], *r[1:]) for r in records]  # a facts tuple cut short
        broken[0] += sum(type(r) is tuple for r in records)
        return real(hits, sealer, layout, batch, misses, bad, *rest)

    monkeypatch.setattr(FactMemo, "seal", staticmethod(seal))
    r = same(procs, batch_of(values, [0, 1, 2], offsets))[-1]
    assert broken[0] >= 5 and not r.dead_letters


def test_a_failed_seal_call_seals_the_batch_without_the_shadow(monkeypatch: pytest.MonkeyPatch):
    procs = trio()
    offsets: dict[int, int] = {}
    values: list[bytes | None] = [wire(compliant(p, i)) for p in PACK_IDS for i in range(3)]
    values += [wire(violating(p, 0)) for p in PACK_IDS] + [b"\x00bad", None]
    for _ in range(2):
        same(procs, batch_of(values, [0, 1], offsets))

    def seal(*args: Any) -> Any:
        raise SystemError("a bug in the compiled call")

    monkeypatch.setattr(FactMemo, "seal", staticmethod(seal))
    same(procs, batch_of(values, [0, 1], offsets))


def learnt(p: BatchProcessor) -> Counter[bool]:
    """What the shadow of ``p`` is taught from now on: a count of learn()'s answers."""
    shadow = p._shadow
    assert shadow is not None
    taught: Counter[bool] = Counter()
    real = shadow.learn

    def learn(*args: Any) -> bool:
        ok = real(*args)
        taught[ok] += 1
        return ok

    shadow.learn = learn  # type: ignore[method-assign]
    return taught


def test_hits_of_many_source_partitions_and_two_topics_keep_their_chains():
    """One batch over two topics and 20 partitions each (more source partitions than the shadow
    compares before it hashes, rust2): every hit is sealed into the chain of its own topic and
    partition, as without the shadow."""
    procs = trio()
    values: list[bytes | None] = [wire(compliant(p, i)) for p in PACK_IDS for i in range(2)]
    values += [wire(violating(p, i)) for p in PACK_IDS for i in range(2)]
    offsets: dict[tuple[str, int], int] = {}

    def batch(k: int) -> list[StubMessage]:
        out = []
        for part in range(20):
            for topic in (TOPIC, TOPIC + "-b"):
                v = values[(part + k) % len(values)]
                at = offsets.get((topic, part), 0)
                out.append(StubMessage(topic, part, at, v))
                offsets[(topic, part)] = at + 1
        return out

    before = SEEN.copy()
    for k in range(4):
        r = same(procs, batch(k))[-1]
        assert len({rec.chain_id for rec, *_ in r.sealed}) == 40
    assert SEEN["hits"] - before["hits"] >= 40


def test_the_shadow_decides_a_key_from_its_second_sighting():
    """Each key is learnt from the event audited the full way (its first sighting): the second
    batch is decided by the shadow (before: it learnt from the fact path's hit, the second
    sighting, and decided from the third)."""
    values: list[bytes | None] = [wire(compliant(p, i)) for p in PACK_IDS for i in range(4)]
    procs = trio()[::-1]  # the shadowed one first: the memos (shared by the three) are its own
    offsets: dict[int, int] = {}
    for e in procs[0].evaluators.values():  # nothing seen before this test
        e.compiled.clear_memo()
    same(procs, batch_of(values, [0, 1], offsets))
    before = SEEN.copy()
    same(procs, batch_of(values, [0, 1], offsets))
    assert SEEN["hits"] - before["hits"] == len(values)


class _Partition(int):
    """An int of another type (as a client library might return): the shadow leaves it to Python."""


class OddPartition(StubMessage):
    def partition(self) -> int | None:
        return _Partition(self._partition)


@pytest.mark.parametrize("left", ["far-time", "odd-partition"])
def test_what_the_shadow_knows_but_leaves_to_python_is_not_taught_again(left):
    """An event of a key the shadow knows but leaves to Python (a time past 2**53 us, a message it
    does not mirror): the fact path's hit does not teach the shadow again (before: one learn() call
    per such event, about 1 us each, each answered as the last)."""
    base = [wire(replace(compliant(p, i), event_id=f"t-{p}-{i}")) for p in PACK_IDS for i in range(3)]
    procs = trio()
    offsets: dict[int, int] = {}
    for _ in range(2):
        same(procs, batch_of(base, [0], offsets))
    taught = learnt(procs[2])
    for k in range(3):
        events = [replace(compliant(p, i), event_id=f"t{k}-{p}-{i}") for p in PACK_IDS for i in range(3)]
        if left == "far-time":
            batch = batch_of([wire(replace(e, occurred_at=FAR)) for e in events], [0], offsets)
        else:
            batch = [OddPartition(TOPIC, 0, 100 * (k + 1) + i, wire(e)) for i, e in enumerate(events)]
        same(procs, batch)
    assert procs[2].facts is not None and procs[2].facts.hits >= 3 * len(base)  # the fact path decided them
    assert sum(taught.values()) == 0
