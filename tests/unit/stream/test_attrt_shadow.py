"""attrt: the memo's shadow in Rust (auditor.native.FactMemo) against the same compiled processor
without it, as a hostile producer and over a run.

The oracle is the daemon's own compiled path with the shadow switched off (``NoShadow``: the fact
path and the full path, the same decoder and sealer), on packs of its own, so that encodings the
Python reference refuses by design (arrays and maps in blocks, negative block counts) are compared
too. Per batch: the same audit records byte for byte, the same outputs (audit, violations, dead
letters, with their partitions and keys), the same metric labels and as many decision timings;
and across the run the memo hits counted the same. Between batches a pack's memo may be dropped,
the pseudonymisation key rotated, the audit topic's budget changed."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import NOW, PACK_IDS, ROUTING, TOPIC, StubMessage, wire
from test_attmemo import TEMPLATES, mutated, own_packs
from test_factpath_rounds import outputs

from auditor.events.codec import _EPOCH, MAX_MICROS, MIN_MICROS, event_to_mapping, schema_path, strip_logical
from auditor.events.model import Event
from auditor.events.wire import SINGLE_OBJECT_MAGIC, SchemaAllowList, schema_fingerprint
from auditor.native import FACT_MEMO_BUILT, NativeEventDecoder, NativeSealer
from auditor.stream.budget import OutputBudget
from auditor.stream.hotpath import NativePath
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import MAX_TEXT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "native"))
from nativekit import RAW_EVENT_SCHEMA, blocked, sort_maps  # noqa: E402
from nativekit import plain as _plain  # noqa: E402

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

FP = SchemaAllowList().reader_fp
#: occurred_at at the edges: the schema's bounds, 2**53 us (past it the shadow leaves it to Python), the epoch
TIMES = [MIN_MICROS, MIN_MICROS + 1, -(2**53) - 1, -(2**53), -1, 0, 1, 2**53 - 1, 2**53, 2**53 + 1, MAX_MICROS - 1,
         MAX_MICROS]


class NoShadow(BatchProcessor):
    """The compiled path as the daemon runs it, with the memo's shadow switched off."""

    def _shadow_ready(self, hot: NativePath) -> None:
        return None


def pair(key: bytes) -> tuple[BatchProcessor, BatchProcessor]:
    def make(cls: type[BatchProcessor]) -> BatchProcessor:
        return cls(NativeEventDecoder(), own_packs(memo=True), Pseudonymizer(key), ROUTING, "unit-1",
                   clock=lambda: NOW, sealer=NativeSealer())
    return make(NoShadow), make(BatchProcessor)


@lru_cache(maxsize=1)
def _rev1() -> tuple[Any, Any, bytes]:
    raw = json.loads(schema_path("privacy_event.1.avsc").read_text())
    return raw, strip_logical(raw), schema_fingerprint(fastavro.parse_schema(raw, named_schemas={}))


def encoded(e: Event, form: int) -> bytes:
    """``e`` on the wire: 0 the plain encoding, -1 the earlier writer schema's (privacy_event.1.avsc: no
    actor.organisation), else arrays and maps in random blocks (seeded by ``form``)."""
    if form == 0:
        return wire(e)
    if form == -1:
        raw, plain, fp = _rev1()
        mapping = event_to_mapping(e)
        datum = {f["name"]: mapping[f["name"]] for f in raw["fields"]}
        datum["occurred_at"] = (e.occurred_at - _EPOCH) // timedelta(microseconds=1)
        return SINGLE_OBJECT_MAGIC + fp + blocked(plain, sort_maps(plain, datum), random.Random(0)) \
            if len(e.data_categories) > 1 else SINGLE_OBJECT_MAGIC + fp + _plain(datum, plain)
    datum = event_to_mapping(e)
    datum["occurred_at"] = (e.occurred_at - _EPOCH) // timedelta(microseconds=1)
    datum = sort_maps(RAW_EVENT_SCHEMA, datum)
    return SINGLE_OBJECT_MAGIC + FP + blocked(RAW_EVENT_SCHEMA, datum, random.Random(form))


def padded(e: Event, over: int) -> Event:
    """``e`` with an attribute no rule reads, so that its plain encoding is MAX_TEXT + ``over`` bytes."""
    attrs = dict(e.attributes or {})
    attrs["zz-pad"] = ""
    n = max(0, MAX_TEXT + over - len(wire(replace(e, attributes=attrs))))
    for _ in range(4):  # the length's varint may grow by a byte or two
        attrs["zz-pad"] = "p" * n
        short = MAX_TEXT + over - len(wire(replace(e, attributes=attrs)))
        if short == 0 or n + short < 0:
            break
        n += short
    return replace(e, attributes=attrs)


@st.composite
def hostile(draw: st.DrawFn, e: Event) -> tuple[Event, int]:
    """``e`` varied as a producer may vary it (attmemo's neighbours, times at the edges, a length at
    MAX_TEXT, the ids' case and edges), and the form it is written in."""
    e = draw(mutated(e, 0, 2))
    if draw(st.integers(0, 3)) == 0:
        e = replace(e, occurred_at=_EPOCH + timedelta(microseconds=draw(st.sampled_from(TIMES))))
    if draw(st.integers(0, 5)) == 0:
        e = padded(e, draw(st.integers(-2, 2)))
    if draw(st.integers(0, 5)) == 0:
        sid = draw(st.sampled_from(["S-1", "s-1", "s-1 ", " s-1", "s\u00ad1", "\u0130d", "x" * 1024, "x" * 1025]))
        e = replace(e, subject=replace(e.subject, id=sid))
    return e, draw(st.sampled_from([0, 0, 1, 2, 3, -1]))


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[tuple[Event, int]], list[list[tuple[int, int]]], list[str]]:
    """Events (several packs), batches of them over three partitions, and what happens between batches."""
    seeds = draw(st.lists(st.sampled_from(TEMPLATES), min_size=1, max_size=4))
    events = [draw(hostile(s)) for s in seeds for _ in range(draw(st.integers(1, 4)))]
    picks = st.tuples(st.integers(0, len(events) - 1), st.integers(0, 2))
    batches = draw(st.lists(st.lists(picks, min_size=1, max_size=12), min_size=4, max_size=7))
    between = draw(st.lists(st.sampled_from(["-", "-", "-", "drop-memo", "rotate", "budget"]),
                            min_size=len(batches), max_size=len(batches)))
    return events, batches, between


def memo_counts(p: BatchProcessor) -> list[tuple[int, int]]:
    return [(e.compiled.memo_hits, e.compiled.memo_misses) for e in p.evaluators.values()]


def compare(a: BatchResult, b: BatchResult) -> None:
    assert outputs(b) == outputs(a)
    assert list(b.records) == list(a.records)
    assert len(b.decision_seconds) == len(a.decision_seconds)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(runs(), st.data())
def test_a_run_with_the_shadow_is_the_run_without_it(run, data):
    events, batches, between = run
    values = [encoded(e, form) for e, form in events]
    ref, p = pair(b"k" * 32)
    offsets = [0, 0, 0]
    for k, (picks, then) in enumerate(zip(batches, between, strict=True)):
        batch = []
        for i, part in picks:
            batch.append(StubMessage(TOPIC, part, offsets[part], values[i]))
            offsets[part] += 1
        compare(ref.process(batch), p.process(batch))
        ref.commit_heads()
        p.commit_heads()
        assert memo_counts(p) == memo_counts(ref)
        shadow = p._shadow
        if shadow is not None:  # it never holds more than the memo it mirrors (and the refusals taught, rust2)
            assert len(shadow) <= sum(e.compiled.memo_entries() for e in p.evaluators.values()) + p._refusals_taught
        if then == "drop-memo":
            pid = data.draw(st.sampled_from(PACK_IDS))
            ref.evaluators[pid].compiled.clear_memo()
            p.evaluators[pid].compiled.clear_memo()
        elif then == "rotate":
            key = bytes([k + 1]) * data.draw(st.sampled_from([32, 64, 65, 100]))
            ref.pseudonymizer, p.pseudonymizer = Pseudonymizer(key), Pseudonymizer(key)
        elif then == "budget":
            audit = data.draw(st.sampled_from([700, 900, 1100, 1 << 20]))
            for q in (ref, p):
                q.budget = OutputBudget(audit, q.budget.violations, q.budget.dead_letter)


def test_the_run_above_has_the_shadow_decide():
    """The comparison means something: on a plain run of learnt events the shadow decides most of them."""
    ref, p = pair(b"k" * 32)
    values = [wire(replace(e, event_id=f"h{i}")) for i, e in enumerate(TEMPLATES)]
    values += [encoded(replace(e, event_id=f"b{i}"), 1 + i % 3) for i, e in enumerate(TEMPLATES)]
    values += [encoded(replace(e, event_id=f"r{i}"), -1) for i, e in enumerate(TEMPLATES)]
    decided = 0
    ready = p._shadow_ready

    def shadow_ready(hot: Any) -> Any:  # counts the hits of the shadow's decide (misses, results, teach, hits)
        shadow = ready(hot)
        if shadow is not None and "decide" not in vars(shadow):
            real = shadow.decide

            def decide(*args: Any, **kwargs: Any) -> Any:
                nonlocal decided
                got = real(*args, **kwargs)
                decided += len(got[3])
                return got

            shadow.decide = decide  # type: ignore[method-assign]
        return shadow

    p._shadow_ready = shadow_ready  # type: ignore[method-assign]
    for k in range(4):
        batch = [StubMessage(TOPIC, i % 3, 1000 * k + i, v) for i, v in enumerate(values)]
        compare(ref.process(batch), p.process(batch))
        ref.commit_heads()
        p.commit_heads()
    assert decided > len(values)
    assert p.facts is not None and p.facts.hits > len(values)

