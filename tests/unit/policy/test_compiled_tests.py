"""The compiled tests (auditor/policy/codegen.py) agree with the interpreted ``holds`` of every test
of every pack, and the engine's compiled plain path gives exactly the decision of the interpreted
one (verdict, violations with their reasons and failed conditions, permit, held, considered)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from auditor.events.model import ActorOrganisation, LegalRequestType
from auditor.policy import conditions as c
from auditor.policy import engine, load_pack
from auditor.policy.codegen import compile_tests
from auditor.policy.conditions import Derived
from auditor.policy.engine import compile_pack, evaluate_interpreted, evaluate_plain
from tests.unit.policy.test_lookup_equals_scan import _one_fact_changed, random_event

DATA = Path(__file__).resolve().parents[2] / "data" / "packs"
PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct", str(DATA / "features.yaml"),
         str(DATA / "hostile_attributes.yaml")]


def _tests(t: c.Condition):  # type: ignore[no-untyped-def]
    """A test and every test inside it."""
    yield t
    if isinstance(t, c.Not):
        yield from _tests(t.inner)
    for inner in getattr(t, "options", ()) or getattr(t, "parts", ()):
        yield from _tests(inner)


def _events(pack, seed: str, n: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    events = [random_event(rng, pack, i) for i in range(n)]
    events += [_one_fact_changed(rng, rng.choice(events), i) for i in range(n)]
    # facts the random events leave out: an empty country, an organisation stated as UNKNOWN
    events += [dataclasses.replace(e, subject=dataclasses.replace(e.subject, region=""),
                                   actor=dataclasses.replace(e.actor, organisation=ActorOrganisation.UNKNOWN))
               for e in events[:50]]
    return events


@pytest.mark.parametrize("pack_id", PACKS)
def test_every_compiled_test_agrees_with_its_holds(pack_id):
    pack = load_pack(pack_id).pack
    tests = {id(t): t for rule in pack.rules for top in (*rule.scope.tests, *rule.conditions) for t in _tests(top)}
    compiled = [(t, compile_tests((t,))) for t in tests.values()]
    checked = 0
    for e in _events(pack, pack_id, 400):
        atoms = frozenset().union(*(pack.atoms[cat] for cat in e.data_categories))
        x = Derived(atoms, e.subject.minor(pack.minor_age), pack.minor_age)
        for t, fn in compiled:
            assert fn is not None
            assert bool(fn(e, x)) == t.holds(e, x), (t.source, fn.__source__, e)  # type: ignore[attr-defined]
            checked += 1
    assert checked > 0


@pytest.fixture(autouse=True)
def _compile_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    """Plans are compiled at their first evaluation here (normally at their 8th)."""
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)


@pytest.mark.parametrize("pack_id", PACKS)
def test_compiled_plain_path_gives_the_interpreted_decision(pack_id):
    compiled = compile_pack(load_pack(pack_id).pack, memo_bytes=0)
    for e in _events(compiled.pack, pack_id + "/decisions", 1500):
        assert evaluate_plain(e, compiled) == evaluate_interpreted(e, compiled), e


def test_an_event_with_plain_strings_for_enums_is_judged_by_the_interpreted_tests():
    """A hand-built Event (strings where the model has enums) has no ``_value_``: the compiled tests
    raise AttributeError and the engine judges it with the interpreted ones, as before."""
    compiled = compile_pack(load_pack("inper").pack, memo_bytes=0)
    for e in _events(compiled.pack, "strings", 300):
        hand = dataclasses.replace(e, legal_request=dataclasses.replace(
            e.legal_request, type=str(e.legal_request.type.value)),  # type: ignore[arg-type]
            identifiability=str(e.identifiability.value))  # type: ignore[arg-type]
        assert evaluate_plain(hand, compiled) == evaluate_interpreted(e, compiled)


def test_legal_request_sets_compile_by_value():
    t = c.FactIn("legal_request", "legal_request.type", frozenset({LegalRequestType.COURT_ORDER}), "x")
    fn = compile_tests((t,))
    assert fn is not None and "_value_" in fn.__source__  # type: ignore[attr-defined]


def test_a_plan_is_compiled_at_its_eighth_plain_evaluation(monkeypatch):
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 8)
    compiled = compile_pack(load_pack("ipmart").pack, memo_bytes=0)
    e = next(e for e in _events(compiled.pack, "compile", 200) if not compiled.plan(e).undeclared)
    want = evaluate_interpreted(e, compiled)
    plan = compiled.plan(e)
    for _ in range(7):
        assert evaluate_plain(e, compiled) == want
        assert plan.allow is None
    assert evaluate_plain(e, compiled) == want
    assert plan.allow is not None
