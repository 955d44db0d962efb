"""memo: the shadow of the decision memo in compiled code (auditor.native.FactMemo, used by the
processor's fact path). An event whose decision the memo holds is decoded, decided and its
record body built in one call, without its facts tuple: the records and outputs must be the
Python reference's, byte for byte, on every example event, the bench's generated stream and
generated events; the shadow must never hold a decision the memo has dropped; pseudonyms of
another making are never mirrored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, TOPIC, StubMessage, compliant, messages, packs, processor, wire
from test_factpath_rounds import POOL, outputs, variations
from test_stream_factseal import events, example_values, generated_values, one_record_each

from auditor.events.wire import encode_single_object
from auditor.native import FACT_MEMO_BUILT, NativeEventDecoder, NativeSealer
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.keys import Pseudonymizer

# an install whose compiled module predates FactMemo (rebuilt by pip install -e .; CI always builds it)
pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")


def shadowed(key: bytes = b"k" * 32, pseudonymizer: Any = None) -> tuple[BatchProcessor, list[int]]:
    """A compiled-path processor, and a list that counts the events its shadow decided."""
    p = BatchProcessor(NativeEventDecoder(), packs(), pseudonymizer or Pseudonymizer(key), processor().routing,
                       "unit-1", clock=lambda: NOW, sealer=NativeSealer())
    decided = [0]
    ready = p._shadow_ready

    def shadow_ready(hot: Any) -> Any:
        shadow = ready(hot)
        if shadow is not None and "decide" not in vars(shadow):
            real = shadow.decide

            def decide(*args: Any, **kwargs: Any) -> Any:
                misses, results, teach, hits = real(*args, **kwargs)
                decided[0] += len(hits)
                return misses, results, teach, hits

            shadow.decide = decide  # type: ignore[method-assign]
        return shadow

    p._shadow_ready = shadow_ready  # type: ignore[method-assign]
    return p, decided


def reference(key: bytes = b"k" * 32) -> BatchProcessor:
    p = processor()
    p.pseudonymizer = Pseudonymizer(key)
    return p


def same(ref: BatchProcessor, p: BatchProcessor, batch: list[Any]) -> BatchResult:
    a, b = ref.process(batch), p.process(batch)
    assert outputs(b) == outputs(a)
    assert list(b.records) == list(a.records)
    assert b.decision_seconds != [] or a.decision_seconds == []
    one_record_each(b, len(batch))
    ref.commit_heads()
    p.commit_heads()
    return b


def rounds(values: list[Any], n: int, key: bytes = b"k" * 32) -> tuple[BatchProcessor, list[int]]:
    """``values`` ``n`` times over three partitions through the reference and a shadowed processor."""
    ref, (p, decided) = reference(key), shadowed(key)
    for k in range(n):
        same(ref, p, messages(values, first_offset=k * len(values)))
    return p, decided


def test_every_example_event_decided_by_the_shadow_is_the_reference_record():
    values: list[Any] = example_values()
    p, decided = rounds(values, 3)
    assert decided[0] > len(values) // 2


def test_the_generated_stream_decided_by_the_shadow_is_the_reference_records():
    values: list[Any] = generated_values(600, seed=3)
    p, decided = rounds(values, 3)
    assert decided[0] > len(values)
    # the memo's hits count the shadow's too: every event of the last two rounds that was not refused
    assert p.facts is not None and p.facts.hits >= decided[0]


def test_a_key_longer_than_a_hash_block_gives_the_reference_pseudonyms():
    """HMAC hashes a key over 64 bytes first (the shadow's HMAC must too)."""
    _, decided = rounds([v for v in POOL if v], 3, key=bytes(range(100)))
    assert decided[0] > 100


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=6))
def test_generated_events_decided_by_the_shadow_are_the_reference_records(mappings):
    """Hostile texts, every enum symbol, optional values present or not: the third time through,
    what the memo knows is decided by the shadow, with the reference's bytes."""
    values = [encode_single_object(m) for m in mappings]
    rounds(values + values[:1], 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(variations(), min_size=1, max_size=8))
def test_varied_template_events_decided_by_the_shadow_are_the_reference_records(values):
    """Events of the memo's plans differing in the facts a rule reads or does not (actor is the
    subject, minors, countries abroad or not, attributes, unicode ids and texts)."""
    rounds(values + values[:1], 3)


def test_events_differing_in_derived_facts_are_decided_by_the_shadow_as_the_reference():
    """Actor is the subject or not, minors by age or flag, countries abroad or not (any case),
    attributes: each combination learnt, then decided by the shadow with the reference's bytes."""
    values = []
    for p in PACK_IDS:
        for i in range(2):
            e = compliant(p, i)
            for j, (age, minor, region, sid) in enumerate([(15, None, "my", "s1"), (40, False, "SG", "s2"),
                                                          (None, True, None, "s3"), (None, None, "MY", "a")]):
                subject = replace(e.subject, id=sid if sid != "a" else e.actor.id, age=age, is_minor=minor,
                                  region=region)
                values.append(wire(replace(e, event_id=f"{p}{i}{j}", subject=subject,
                                           attributes={**(e.attributes or {}), "channel": f"c{j % 2}"})))
    _, decided = rounds(values, 3)
    assert decided[0] > len(values) // 2


def test_a_dropped_memo_drops_the_shadow():
    """The pack's memo dropped between two batches (its byte budget, its plan cache): the shadow
    decides nothing from before; it learns again from the memo as refilled."""
    values = [wire(replace(compliant(p, i), event_id=f"d{i}")) for p in PACK_IDS for i in range(4)]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):
        same(ref, p, messages(values, first_offset=k * len(values)))
    assert decided[0] > 0 and len(p._shadow or ()) > 0
    for e in p.evaluators.values():
        e.compiled.clear_memo()
    before = decided[0]
    same(ref, p, messages(values, first_offset=3 * len(values)))
    assert decided[0] == before  # nothing decided from a dropped memo
    same(ref, p, messages(values, first_offset=4 * len(values)))  # learnt again from the refilled memo
    same(ref, p, messages(values, first_offset=5 * len(values)))
    assert decided[0] > before


def test_a_dropped_plan_cache_drops_the_shadow():
    values = [wire(replace(compliant(p, i), event_id=f"c{i}")) for p in PACK_IDS for i in range(4)]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):
        same(ref, p, messages(values, first_offset=k * len(values)))
    for pid, e in p.evaluators.items():  # a plan not cached yet, over the plan cache's budget
        c, event = e.compiled, compliant(pid, 0)
        plans = list(c._plans.values())  # kept alive: their ids stay theirs
        c.plan_budget = 0
        cats = tuple(event.data_categories)
        rtype = event.recipient.type if event.recipient else "*"
        n = next(n for n in range(2, 17) if len(cats) * n <= 16 and  # a key not cached yet (packs() is shared)
                 (event.kind.value, rtype, event.purpose, cats * n) not in c._plans)
        c.plan(replace(event, data_categories=cats * n))
        c.plan_budget = 1 << 30
        assert plans and not any(q is o for q in c._plans.values() for o in plans)  # the cached plans dropped
    before = decided[0]
    same(ref, p, messages(values, first_offset=3 * len(values)))
    assert decided[0] == before


class CustomPseudonyms(Pseudonymizer):
    """Pseudonyms of another making: the shadow cannot know them."""

    __slots__ = ()

    def __call__(self, identifier: str) -> str:
        return "custom-" + identifier[::-1]


def test_pseudonyms_of_another_making_are_not_mirrored():
    values = [wire(replace(compliant(p, i), event_id=f"p{i}")) for p in PACK_IDS for i in range(4)]
    ref = reference()
    ref.pseudonymizer = CustomPseudonyms(b"k" * 32)
    p, decided = shadowed(pseudonymizer=CustomPseudonyms(b"k" * 32))
    for k in range(3):
        same(ref, p, messages(values, first_offset=k * len(values)))
    assert decided[0] == 0


def test_two_partitions_and_refusals_between_shadow_hits_keep_each_chain_in_order():
    base = [wire(replace(compliant(p, i), event_id=f"o{i}")) for p in PACK_IDS for i in range(3)]
    values: list[bytes | None] = [x for v in base for x in (v, b"\x00bad", None)]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):
        batch = [StubMessage(TOPIC, i % 2, 100 * k + i, v) for i, v in enumerate(values)]
        same(ref, p, batch)
    assert decided[0] >= len(base)


class _Partition(int):
    """An int of another type (as a client library might return): not mirrored by the shadow."""


class OddMessage(StubMessage):
    def partition(self) -> int | None:
        return _Partition(self._partition)

    def offset(self) -> int | None:
        if self._offset == 3:
            raise ValueError("offset unreadable")  # raised again where Python asks (the batch fails)
        return self._offset


def test_messages_the_shadow_does_not_mirror_are_left_to_python():
    values = [wire(replace(compliant(p, i), event_id=f"m{i}")) for p in PACK_IDS for i in range(3)]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):
        same(ref, p, [StubMessage(TOPIC, 1, 100 * k + i, v) for i, v in enumerate(values)])
    before, hits = decided[0], p.facts.hits if p.facts is not None else 0
    same(ref, p, [OddMessage(TOPIC, 1, 400 + i, v) for i, v in enumerate(values)])
    assert decided[0] == before  # nothing decided by the shadow
    assert p.facts is not None and p.facts.hits - hits == len(values)  # the fact path's, counted once
    batch = [OddMessage(TOPIC, 1, i, v) for i, v in enumerate(values)]
    with pytest.raises(ValueError, match="offset unreadable"):
        ref.process(batch)
    with pytest.raises(ValueError, match="offset unreadable"):
        p.process(batch)
    assert decided[0] == before
