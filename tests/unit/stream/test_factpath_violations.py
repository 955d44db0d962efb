"""Violations the memo's shadow decides: their messages are built in compiled code (HitBatch.seal,
native/src/violation.rs) with the bytes of BatchProcessor._fact_violation, the Python reference.

Each test runs the same batches through the Python reference, the compiled path without the
shadow (its fact path builds each violation message in Python) and with it, and compares every
output byte for byte: the examples of the five packs, and generated violations whose message
values are hostile (control characters, non-BMP characters, quotes and backslashes in the event
id, the purpose, the recipient type and the topic; times from year 1 to 9999; a violations budget
that truncates the message). It also checks that the shadow did build them (else the comparison
would say nothing about the compiled path)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from streamkit import PACK_IDS, TOPIC, StubMessage, compliant, native, packs, processor, violating, wire
from structlog.testing import capture_logs
from test_factpath_rounds import outputs

from auditor import _native
from auditor import native as native_module
from auditor.events.codec import _EPOCH, MAX_MICROS, MIN_MICROS
from auditor.events.model import Recipient
from auditor.native import SHADOW_VIOLATIONS
from auditor.policy.decision import Verdict
from auditor.policy.examples import load_examples
from auditor.stream.budget import OutputBudget
from auditor.stream.processor import BatchProcessor, BatchResult
from auditor.trail.record import MAX_TEXT, AuditRecord

pytestmark = pytest.mark.skipif(not SHADOW_VIOLATIONS,
                                reason="auditor._native was built before the shadow built violations: rebuild it")

EXAMPLES = Path(__file__).resolve().parents[3] / "tests" / "data" / "examples"


def trio(violations_budget: int | None = None) -> tuple[BatchProcessor, BatchProcessor, BatchProcessor]:
    procs = processor(), native(False), native(True)
    if violations_budget is not None:
        for p in procs:
            p.budget = OutputBudget(audit=p.budget.audit, violations=violations_budget,
                                    dead_letter=p.budget.dead_letter)
    return procs


def same(procs: tuple[BatchProcessor, ...], batch: list[Any]) -> BatchResult:
    """``batch`` through each processor: the same outputs; returns the shadowed one's."""
    results = [p.process(batch) for p in procs]
    for r in results[1:]:
        assert outputs(r) == outputs(results[0])
        assert list(r.records) == list(results[0].records)
    for p in procs:
        p.commit_heads()
    return results[-1]


def built_by_shadow(p: BatchProcessor, r: BatchResult, before: int) -> int:
    """Violation messages of ``r`` the shadow built (not the fact path's Python, not the full way)."""
    return sum(o.topic == "violations" for o in r.outgoing) - (p.python_violations - before) - full_way(r)


def full_way(r: BatchResult) -> int:
    return sum(type(rec) is AuditRecord and rec.decision is not None and rec.decision.verdict is Verdict.VIOLATION
               for rec, *_ in r.sealed)


# ---------------------------------------------------------------- the compiled pieces against Python's

HOSTILE = st.text(st.characters(codec=None, exclude_categories=["Cs"]) | st.sampled_from(
    ["\x00", "\x1f", "\x7f", "\x80", "\u2028", "\ufeff", "\U0001f600", "\U0010ffff", '"', "\\", "\b", "\f", "\n",
     "\r", "\t", "/", "<", "é"]), max_size=60)


@settings(max_examples=400, deadline=None)
@given(HOSTILE)
@example("")
@example('"\\\x00\x1f\x7f\x80\U0001f600\U0010ffff\ud7ff\ue000\uffff')
def test_json_strings_are_json_dumps_ascii(s):
    assert _native.json_ascii(s) == json.dumps(s) == json.encoder.encode_basestring_ascii(s)  # type: ignore[attr-defined]


def test_a_lone_surrogate_never_reaches_the_compiled_escaper():
    """Python escapes a lone surrogate (\\udXXX); no &str holds one: the compiled call refuses it
    (the shadow reads its strings from UTF-8 it validated, or leaves the event to Python)."""
    with pytest.raises(UnicodeEncodeError):
        _native.json_ascii("a\ud800b")


@settings(max_examples=400, deadline=None)
@given(st.integers(MIN_MICROS, MAX_MICROS) | st.sampled_from([0, -1, 1, 999_999, 1_000_000, -1_000_000,
                                                              -62_135_596_800_000_000, 253_402_300_799_999_999]))
def test_times_are_isoformat(us):
    assert _native.iso_micros(us) == (_EPOCH + timedelta(microseconds=us)).isoformat()


@pytest.mark.parametrize("us", [-62_135_596_800_000_001, 253_402_300_800_000_000, -(1 << 62), 1 << 62])
def test_a_time_outside_years_1_to_9999_is_refused(us):
    with pytest.raises(ValueError):
        _native.iso_micros(us)


# ---------------------------------------------------------------- whole batches

def examples(pack: str) -> list[Any]:
    return [e.event for e in load_examples(EXAMPLES / f"{pack}.yaml", pack)]


@pytest.mark.parametrize("budget", [None, 600, 1])
def test_the_examples_violations_built_by_the_shadow_are_pythons(budget):
    """Every example event of the five packs, three rounds (the first teaches the shadow), the
    event ids changed each round; a violations budget that truncates some messages, or all."""
    procs = trio(budget)
    events = [e for p in PACK_IDS for e in examples(p)]
    shadowed = procs[2]
    built = 0
    for k in range(3):
        batch = [StubMessage(TOPIC, i % 3, k * len(events) + i, wire(replace(e, event_id=f"{e.event_id}~{k}")))
                 for i, e in enumerate(events)]
        before = shadowed.python_violations
        r = same(procs, batch)
        built += built_by_shadow(shadowed, r, before)
    violations = sum(procs[0].evaluators[e.policy_id](e)[0].verdict is Verdict.VIOLATION for e in events)
    assert built >= violations  # rounds 2 and 3 at least


def hostile_event(pack: int, i: int, eid: str, purpose: str | None, rtype: str | None, us: int) -> Any:
    e = violating(PACK_IDS[pack], i)
    e = replace(e, event_id=eid, occurred_at=_EPOCH + timedelta(microseconds=us))
    if purpose is not None:
        e = replace(e, purpose=purpose)
    if rtype is not None and e.recipient is not None:
        e = replace(e, recipient=Recipient(rtype, e.recipient.id, e.recipient.country))
    return e


NAME = HOSTILE.filter(lambda s: s != "")
TIME = st.integers(MIN_MICROS, MAX_MICROS) | st.sampled_from([0, -1, 1, MIN_MICROS, MAX_MICROS, 1 << 53, -(1 << 53)])
TOPICS = st.sampled_from([TOPIC, 'ev"ents', "ev\\ents", "évents", "ev\x00nts", "ev\U0001f600"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from([None, 700, 1]))
def test_hostile_values_in_shadow_built_violations_are_pythons(data, budget):
    """Violations of every pack taught, then events of the same keys (and of undeclared purposes or
    recipient types: the fact path's refusals) whose message values are hostile."""
    procs = trio(budget)
    base = [(p, i) for p in range(len(PACK_IDS)) for i in range(3)]
    topic = data.draw(TOPICS, label="topic")
    teach = [StubMessage(topic, k % 2, k, wire(violating(PACK_IDS[p], i, event_id=f"t{k}")))
             for k, (p, i) in enumerate(base)]
    same(procs, teach)
    same(procs, [StubMessage(topic, m.partition() or 0, 100 + k, m.value()) for k, m in enumerate(teach)])
    shadowed = procs[2]
    rounds = data.draw(st.lists(st.lists(st.tuples(st.sampled_from(base), NAME, st.none() | NAME,
                                                   st.none() | NAME, TIME), min_size=1, max_size=8),
                                min_size=1, max_size=3), label="rounds")
    offset, built, mirrored = 1000, 0, 0
    for events in rounds:
        values = [wire(hostile_event(p, i, eid, purpose, rtype, us)) for (p, i), eid, purpose, rtype, us in events]
        # what the shadow decides (and so builds the violation of) from the second time on
        mirrored += sum(len(v) <= MAX_TEXT and abs(e[4]) <= 1 << 53 for v, e in zip(values, events, strict=True))
        for _ in range(2):  # the second time, the refusals the first taught are hits too
            batch = [StubMessage(topic, k % 2, offset + k, v) for k, v in enumerate(values)]
            offset += len(batch)
            before = shadowed.python_violations
            r = same(procs, batch)
            built += built_by_shadow(shadowed, r, before)
    assert built >= mirrored


def test_a_violation_over_the_budget_is_truncated_as_python_truncates_it():
    procs = trio(1)
    values = [wire(violating(p, i, event_id=f"v{p}{i}")) for p in PACK_IDS for i in range(2)]
    same(procs, [StubMessage(TOPIC, 0, k, v) for k, v in enumerate(values)])
    shadowed = procs[2]
    before = shadowed.python_violations
    r = same(procs, [StubMessage(TOPIC, 0, 100 + k, v) for k, v in enumerate(values)])
    assert built_by_shadow(shadowed, r, before) == len(values)
    for o in r.outgoing:
        if o.topic == "violations":
            doc = json.loads(o.value)
            assert doc["truncated"] is True and "reason" not in json.dumps(doc["violations"])


def test_the_shadow_builds_the_violations_of_a_steady_stream():
    """The bench's stream: after the first batch no violation message is built in Python."""
    from itertools import islice

    from auditor.stream.generate import stream
    from auditor.stream.produce import encode
    pool = [v if isinstance(v, bytes) else encode(v) for v in islice(stream(list(packs().values()), seed=3), 1500)]
    procs = trio()
    shadowed = procs[2]
    for k in range(3):
        before = shadowed.python_violations
        r = same(procs, [StubMessage(TOPIC, i % 3, k * len(pool) + i, v) for i, v in enumerate(pool)])
        if k:
            assert shadowed.python_violations == before
            assert built_by_shadow(shadowed, r, before) == sum(o.topic == "violations" for o in r.outgoing) > 0


def test_a_module_built_before_violation_hits_leaves_violations_to_python(monkeypatch: pytest.MonkeyPatch):
    """Python with a compiled module of an older build (SHADOW_VIOLATIONS false): no violation is
    taught, seal is called as before; the same outputs, every violation message built in Python."""
    monkeypatch.setattr(native_module, "SHADOW_VIOLATIONS", False)
    procs = trio()
    values = [wire(violating(p, i, event_id=f"o{p}{i}")) for p in PACK_IDS for i in range(2)]
    values += [wire(compliant(p, i)) for p in PACK_IDS for i in range(2)]
    shadowed = procs[2]
    for k in range(3):
        before = shadowed.python_violations
        with capture_logs() as logs:
            r = same(procs, [StubMessage(TOPIC, i % 2, k * len(values) + i, v) for i, v in enumerate(values)])
        assert shadowed.python_violations - before == sum(o.topic == "violations" for o in r.outgoing) > 0
        assert not [e for e in logs if e["log_level"] == "error"]  # the shadow's seal did not fail
    assert shadowed._shadow is not None and len(shadowed._shadow) > 0  # the compliant ones it decides
