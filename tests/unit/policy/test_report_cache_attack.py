"""A hostile mix against the plain path's kept reports and the memo (att10).

The plain path judges a violating event by its plan's fails bit set and keeps the report per value of
the facts its failed tests' reasons read; the memo keeps whole decisions per value of the facts the
plan reads. An event that shares the plan (kind, recipient type, purpose, categories) but differs in
one of those facts must never be answered with another event's report. Here every example of every
seed pack is followed by variants that change one fact its plan reads (each value of a hostile list:
attribute texts in other cases, over-long texts the caches refuse, lower-case countries, the actor
being the subject, ages and minority flags, every legal request, safeguard and identifiability), each
variant followed by the example again, so allowed and violating events of one plan alternate. Each
decision, its JSON report and the audit record's decision bytes are compared with the interpreted
reference, twice (reports written, then taken from what was kept), through the engine and through
`auditor check` with a trail. ``test_the_mix_catches_a_key_without_attributes`` shows the mix fails
when the kept reports are keyed on too few facts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.events.codec import event_to_json
from auditor.events.model import (
    ActorOrganisation,
    ActorType,
    Event,
    Identifiability,
    LegalRequest,
    LegalRequestType,
    Safeguard,
    Transfer,
)
from auditor.policy import engine, load_pack
from auditor.policy.decision import Decision, Verdict, decision_to_dict
from auditor.policy.engine import compile_pack, evaluate, evaluate_interpreted, evaluate_plain
from auditor.policy.examples import examples_path, load_examples
from auditor.trail.canonical import _encode_decision
from auditor.trail.record import decision_facts

SEED_PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]
LONG = "q" * 70   # over the 64 characters the caches keep
#: bound of the mix per pack (pairs of variant and example), to keep the test short
MAX_EVENTS = 3000


def _values(fact: str, e: Event) -> list[Event]:
    """Variants of ``e`` that change the fact ``fact`` (as the plan's key function names it)."""
    s, a, k, r = e.subject, e.actor, e.consent, e.recipient
    rep = dataclasses.replace
    if fact.startswith("attributes."):
        name = fact.removeprefix("attributes.")
        out = []
        for v in (None, "true", "True", "TRUE", "false", "FALSE", "yes", "", "merger", LONG):
            attrs = {key: val for key, val in e.attributes.items() if key != name}
            if v is not None:
                attrs[name] = v
            out.append(rep(e, attributes=attrs))
        return out
    if fact == "recipient.id" and r is not None:
        return [rep(e, recipient=rep(r, id=v)) for v in ("acme", LONG, r.id + "x")]
    if fact in ("recipient.country", "recipient.abroad") and r is not None:
        return [rep(e, recipient=rep(r, country=v)) for v in (None, "US", "us", "DE", "de", "CH", "MY", "CN", LONG)]
    if fact == "recipient.on_our_behalf" and r is not None:
        return [rep(e, recipient=rep(r, on_our_behalf=v)) for v in (None, True, False)]
    if fact == "identifiability":
        return [rep(e, identifiability=v) for v in Identifiability]
    if fact == "legal_request.type":
        return [rep(e, legal_request=LegalRequest(v)) for v in LegalRequestType]
    if fact == "legal_basis":
        return [rep(e, legal_basis=v) for v in (None, "legal_obligation", "Legal Obligation", "LEGITIMATE_INTEREST",
                                                 "contract", LONG)]
    if fact == "actor.type":
        return [rep(e, actor=rep(a, type=v)) for v in ActorType]
    if fact == "actor.organisation":
        return [rep(e, actor=rep(a, organisation=v)) for v in ActorOrganisation]
    if fact == "actor.role":
        return [rep(e, actor=rep(a, role=v)) for v in (None, "legal", "marketing", LONG)]
    if fact == "actor.is_subject":
        return [rep(e, actor=rep(a, id=s.id)), rep(e, actor=rep(a, id=s.id + "x"))]
    if fact == "subject.minor":
        return [rep(e, subject=rep(s, age=age, is_minor=m)) for age in (None, 17, 18, 40) for m in (None, True, False)]
    if fact == "subject.region":
        return [rep(e, subject=rep(s, region=v)) for v in (None, "DE", "de", "US", "MY", "CN", "CH", LONG)]
    if fact.startswith("transfer."):
        return [rep(e, transfer=Transfer(cb, dest, sg)) for cb in (False, True) for dest in (None, "US", "de", "CH")
                for sg in (Safeguard.NONE, Safeguard.CONSENT, Safeguard.STANDARD_CONTRACTUAL_CLAUSES)]
    if fact.startswith("consent."):
        flag = fact.removeprefix("consent.")
        return [rep(e, consent=rep(k, **{flag: not getattr(k, flag)}))]
    return []


def _mix(pack_id: str) -> list[Event]:
    """Each example, then (variant, example) pairs over every fact its plan reads, and over pairs of
    its first and last fact; the pairs spread evenly over the examples up to MAX_EVENTS events."""
    compiled = load_pack(pack_id)
    per_example: list[list[Event]] = []
    for ex in load_examples(examples_path(pack_id)):
        e = ex.event
        plan = compiled.plan(e)
        facts: tuple[str, ...] = getattr(plan.key_of, "facts", ()) if plan.key_of is not None else ()
        variants = [v for fact in facts for v in _values(fact, e)]
        if len(facts) >= 2:
            variants += [v2 for v1 in _values(facts[0], e)[:4] for v2 in _values(facts[-1], v1)[:4]]
        per_example.append([e, *(x for v in variants for x in (v, e))])
    budget = MAX_EVENTS // max(1, len(per_example))
    out = [x for seq in per_example for x in seq[:max(3, budget | 1)]]
    return [dataclasses.replace(e, event_id=f"{pack_id}-mix-{i}") for i, e in enumerate(out)]


def _report(d: Decision) -> tuple[Decision, str, bytes]:
    return d, json.dumps(decision_to_dict(d), sort_keys=True), _encode_decision(decision_facts(d))


def _differences(pack_id: str, events: list[Event]) -> list[str]:
    plain = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    memo = load_pack(pack_id)
    reference = compile_pack(load_pack(pack_id).pack, memo_bytes=0)   # shares no cache with the others
    want = [_report(evaluate_interpreted(e, reference)) for e in events]
    out = []
    for rnd in range(2):   # first: reports written (and kept); then: reports taken from what was kept
        for e, w in zip(events, want, strict=True):
            for path, got in (("plain", evaluate_plain(e, plain)), ("memo", evaluate(e, memo))):
                if _report(got) != w:
                    out.append(f"round {rnd} {path} {e.event_id}: {_report(got)[1]} != {w[1]}")
    return out


@pytest.mark.parametrize("compile_after", [1, 8])
@pytest.mark.parametrize("pack_id", SEED_PACKS)
def test_alternating_reason_facts_give_the_interpreted_reports(pack_id, compile_after, monkeypatch):
    monkeypatch.setattr(engine, "_COMPILE_AFTER", compile_after)
    events = _mix(pack_id)
    reference = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    verdicts = [evaluate_interpreted(e, reference).verdict for e in events]
    # the mix really alternates: many violations and many allowed events, also within one plan
    assert verdicts.count(Verdict.VIOLATION) >= 200 and verdicts.count(Verdict.ALLOW) >= 200
    assert _differences(pack_id, events) == []


def test_the_mix_catches_a_key_without_attributes(monkeypatch):
    """The same mix fails when the kept reports and the memo are keyed without the event's
    attributes (a report written for service_active 'false' then answers 'true')."""
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    original = engine._key_function

    def blind(facts, has_recipient, minor_age):  # type: ignore[no-untyped-def]
        return original([f for f in facts if not f.startswith("attributes.")], has_recipient, minor_age)

    monkeypatch.setattr(engine, "_key_function", blind)
    assert len(_differences("thisproduct", _mix("thisproduct"))) > 50


def test_auditor_check_with_a_trail_gives_the_interpreted_decisions(tmp_path):
    """The same mix (a slice per pack, twice) through `auditor check --format jsonl --trail`: each
    printed decision and each audit record's decision bytes equal the interpreted reference's."""
    from auditor.trail.replay import iter_records

    refs: dict[str, Decision] = {}
    lines: list[str] = []
    for pack_id in SEED_PACKS:
        reference = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
        events = _mix(pack_id)[:500]
        events += [dataclasses.replace(e, event_id=e.event_id + "-again") for e in events]
        for e in events:
            refs[e.event_id] = evaluate_interpreted(e, reference)
            lines.append(event_to_json(e))
    src = tmp_path / "mix.jsonl"
    src.write_text("\n".join(lines) + "\n")
    env_python = sys.executable
    subprocess.run([env_python, "-m", "auditor", "keys", "generate", "--out", str(tmp_path / "keys")],
                   check=True, capture_output=True)
    p = subprocess.run([env_python, "-m", "auditor", "check", "--format", "jsonl", "--trail", str(tmp_path / "trail"),
                        "--keys", str(tmp_path / "keys"), str(src)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    seen = 0
    for line in p.stdout.splitlines():
        doc = json.loads(line)
        if "event_id" not in doc:
            assert "error" not in doc, doc
            continue
        doc.pop("source")
        assert doc == json.loads(json.dumps(decision_to_dict(refs[doc["event_id"]], quote=False))), doc["event_id"]
        seen += 1
    assert seen == len(lines)
    records = 0
    for rec in iter_records(Path(tmp_path / "trail")):
        if rec.decision is None:
            continue
        assert rec.event_id is not None
        assert _encode_decision(rec.decision) == _encode_decision(decision_facts(refs[rec.event_id])), rec.event_id
        records += 1
    assert records == len(lines)
