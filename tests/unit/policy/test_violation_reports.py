"""The plain path's violation reports (engine: the fails test, a plan's judged bit sets and the
reports kept per value of the facts the failed tests' reasons read) give exactly what the
interpreted rule-by-rule loop gives: on every seed pack's example table and on the events
bench/policy_eval.py times, the decision (verdict, every violation with its rule, kind, reason and
failed conditions, the permit, held rules, considered permits), its JSON report and the bytes the
audit record stores for it, whether the report is written or taken from what was kept."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from auditor.events.model import Event
from auditor.policy import engine, load_pack
from auditor.policy.decision import Decision, Verdict, decision_to_dict
from auditor.policy.engine import compile_pack, evaluate, evaluate_interpreted, evaluate_plain
from auditor.policy.examples import examples_path, load_examples
from auditor.stream.generate import stream
from auditor.trail.canonical import _encode_decision
from auditor.trail.record import decision_facts

SEED_PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]


@pytest.fixture(autouse=True)
def _compile_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    """Plans are compiled at their first evaluation here (normally at their 8th)."""
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)


def _events(pack_id: str) -> list[Event]:
    """The example table, then the demo stream bench/policy_eval.py times (seed 3)."""
    compiled = load_pack(pack_id)
    events = [ex.event for ex in load_examples(examples_path(pack_id))]
    demo = itertools.islice(stream([compiled], seed=3, malformed_rate=0.0), 2000)
    events += [e for e in demo if isinstance(e, Event)]
    return events


def _report(d: Decision) -> tuple[Decision, str, bytes]:
    return d, json.dumps(decision_to_dict(d), sort_keys=True), _encode_decision(decision_facts(d))


@pytest.mark.parametrize("pack_id", SEED_PACKS)
def test_plain_reports_equal_the_interpreted_ones(pack_id):
    events = _events(pack_id)
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    memo = load_pack(pack_id)
    reference = compile_pack(load_pack(pack_id).pack, memo_bytes=0)   # shares no cache with the others
    want = [_report(evaluate_interpreted(e, reference)) for e in events]
    assert sum(d.verdict is Verdict.VIOLATION for d, _, _ in want) >= 20
    for rnd in range(2):   # first: reports written (and kept); then: reports taken from what was kept
        for e, w in zip(events, want, strict=True):
            assert _report(evaluate_plain(e, plain)) == w, (rnd, e)
            assert _report(evaluate(e, memo)) == w, (rnd, e)


@pytest.mark.parametrize("pack_id", SEED_PACKS)
def test_a_kept_report_is_not_given_to_an_event_whose_reasons_differ(pack_id):
    """Each violating event again with other ids and each reason-bearing fact varied: the kept
    reports (keyed on the facts the failed tests' reasons read) never answer for different facts."""
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    reference = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    base = [e for e in _events(pack_id) if evaluate_interpreted(e, reference).verdict is Verdict.VIOLATION]
    variants: list[Event] = []
    for i, e in enumerate(base):
        s, a, k, t = e.subject, e.actor, e.consent, e.transfer
        variants += [
            dataclasses.replace(e, event_id=f"v{i}a", subject=dataclasses.replace(s, age=None if s.age else 15)),
            dataclasses.replace(e, event_id=f"v{i}b", actor=dataclasses.replace(a, role=(a.role or "") + "x")),
            dataclasses.replace(e, event_id=f"v{i}c", consent=dataclasses.replace(
                k, third_party_sharing=not k.third_party_sharing, guardian=not k.guardian)),
            dataclasses.replace(e, event_id=f"v{i}d", legal_basis=None if e.legal_basis else "consent"),
            dataclasses.replace(e, event_id=f"v{i}e", transfer=dataclasses.replace(
                t, destination_country=None if t.destination_country else "US", cross_border=True)),
            dataclasses.replace(e, event_id=f"v{i}f", subject=dataclasses.replace(
                s, region=None if s.region else "DE")),
        ]
        if e.recipient is not None:
            variants.append(dataclasses.replace(e, event_id=f"v{i}g", recipient=dataclasses.replace(
                e.recipient, on_our_behalf=not e.recipient.on_our_behalf, country="JP")))
    for e in [*base, *variants, *base]:
        assert _report(evaluate_plain(e, plain)) == _report(evaluate_interpreted(e, reference)), e
