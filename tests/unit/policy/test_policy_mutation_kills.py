"""Tests that kill the mutants the second mutation run found alive in auditor/policy
(docs/mutation.md, "Second run"). Each test names the function and the change it pins."""

from __future__ import annotations

import pytest

from auditor.policy import Verdict, evaluate
from auditor.policy.engine import evaluate_interpreted, evaluate_plain
from tests.unit.policy.policykit import TINY, make_event

# ---------------------------------------------------------------- engine.evaluate_plain / evaluate_interpreted:
# the decision for an event with an undeclared category (each argument of the Decision mutated).

@pytest.mark.parametrize("judge", [evaluate_plain, evaluate_interpreted])
def test_the_plain_and_interpreted_paths_judge_an_undeclared_category_in_full(pack, judge):
    e = make_event(event_id="u-7", data_categories=["contact", "tattoos"], consent={"marketing": True})
    d = judge(e, pack)
    assert d == evaluate(e, pack)
    assert (d.event_id, d.verdict, d.permitted_by, d.pack_id) == ("u-7", Verdict.VIOLATION, None, "tiny")
    assert d.pack_hash == pack.pack.content_hash and d.pack_hash.startswith("sha256:")
    assert d.violated_rule_ids == ("tiny.undeclared-category",) and "tattoos" in d.violations[0].reason


# ---------------------------------------------------------------- engine.decide: the shared decision of the
# undeclared path carries the event id, pack id and hash; the paths without a memo judge the event itself
# (`_decide(e, compiled, plan)` with each argument mutated to None).

def test_decide_keeps_every_field_of_an_undeclared_category_decision(pack):
    from auditor.policy.engine import decide

    e = make_event(event_id="u-8", data_categories=["tattoos"])
    d = decide(e, pack)
    assert (d.event_id, d.verdict, d.permitted_by, d.pack_id, d.pack_hash) == (
        "u-8", Verdict.VIOLATION, None, "tiny", pack.pack.content_hash)
    assert d.violated_rule_ids == ("tiny.undeclared-category",)


def test_an_event_whose_plan_is_not_cached_is_still_judged(pack):
    from auditor.policy.engine import decide

    many = make_event(event_id="m-1", data_categories=["contact"] * 200, consent={"marketing": True})
    assert decide(many, pack).verdict is Verdict.ALLOW
    assert evaluate(many, pack).verdict is Verdict.ALLOW
    refused = make_event(event_id="m-2", data_categories=["contact"] * 200)
    assert decide(refused, pack).violated_rule_ids == ("tiny.use.marketing",)


def test_an_event_built_by_hand_with_a_plain_string_enum_is_judged(pack):
    import dataclasses

    from auditor.policy.engine import decide

    e = make_event(event_id="h-1", consent={"marketing": True})
    by_hand = dataclasses.replace(e, actor=dataclasses.replace(e.actor, type="EMPLOYEE"))
    assert decide(by_hand, pack).verdict is Verdict.ALLOW
    no = dataclasses.replace(make_event(event_id="h-2"), actor=dataclasses.replace(e.actor, type="EMPLOYEE"))
    assert decide(no, pack).violated_rule_ids == ("tiny.use.marketing",)


# ---------------------------------------------------------------- conditions.recipient_abroad: unknown when
# either country is unknown (`or` -> `and` would call a disclosure abroad when one side is unknown).

@pytest.mark.parametrize("country, region, abroad", [
    ("SG", "MY", True), ("my", "MY", False), (None, "MY", None), ("SG", None, None), (None, None, None),
])
def test_a_recipient_is_abroad_only_when_both_countries_are_known_and_differ(country, region, abroad):
    from auditor.policy.conditions import recipient_abroad

    recipient = {"type": "bank", "id": "b-1"} | ({"country": country} if country else {})
    subject = {"id": "s-1", "age": 30} | ({"region": region} if region else {})
    e = make_event(kind="DISCLOSURE", recipient=recipient, subject=subject, purpose="billing")
    assert recipient_abroad(e) is abroad


# ---------------------------------------------------------------- third run (docs/mutation.md, "Third run")
# engine.decide: the key of a memoised plan that reads an enum's value (here transfer.safeguard) raises
# AttributeError for an Event built by hand with a plain string; the event is then judged without the
# memo (`_decide(e, compiled, plan)` with each argument mutated to None crashed or misjudged).

def test_a_hand_built_transfer_with_a_plain_string_safeguard_is_judged_without_the_memo(pack):
    import dataclasses

    from auditor.policy.engine import decide

    e = make_event(event_id="h-3", kind="DISCLOSURE", purpose="support",
                   recipient={"type": "service_provider", "id": "p-1", "country": "DE", "on_our_behalf": True},
                   transfer={"cross_border": True, "destination_country": "US",
                             "safeguard": "STANDARD_CONTRACTUAL_CLAUSES"})
    assert decide(e, pack).verdict is Verdict.ALLOW
    scc = dataclasses.replace(e, transfer=dataclasses.replace(e.transfer, safeguard="STANDARD_CONTRACTUAL_CLAUSES"))
    with pytest.raises(AttributeError):
        pack.plan(scc).key_of(scc)   # the memo key cannot be made: the path under test
    assert decide(scc, pack).verdict is Verdict.ALLOW
    not_ours = dataclasses.replace(scc, event_id="h-4", recipient=dataclasses.replace(e.recipient, on_our_behalf=False))
    d = decide(not_ours, pack)
    assert d.violated_rule_ids == ("tiny.disclose.processor",) and d.event_id == "h-4"


def test_keepable_bounds_text_by_characters_and_category_lists_by_length():
    """engine._keepable: `>` -> `>=`, the two bounds swapped (`and False`/`or True`), and either return
    flipped, changed what the memo may keep."""
    from auditor.policy.engine import _CACHEABLE_CATEGORIES, _MEMO_MAX_TEXT, _keepable

    assert _MEMO_MAX_TEXT != _CACHEABLE_CATEGORIES
    assert _keepable(("x" * _MEMO_MAX_TEXT, ("c",) * _CACHEABLE_CATEGORIES, 7, None))
    assert not _keepable(("x" * (_MEMO_MAX_TEXT + 1),))
    assert not _keepable((("c",) * (_CACHEABLE_CATEGORIES + 1),))


# codegen.compile_plan: a permit's test (12) or a constraint's conditions (44) written as `None`: the allow
# test said "not allowed" for an allowed event; the fails path then reached the same verdict, so only the
# allow test's own result shows it.

@pytest.mark.parametrize("over", [
    {"consent": {"marketing": True}},
    {"consent": {"marketing": True, "guardian": True}, "subject": {"id": "s-2", "age": 9}},
])
def test_the_allow_test_of_a_plan_is_non_zero_for_an_allowed_event(pack, over):
    e = make_event(event_id="a-1", **over)
    assert evaluate(e, pack).verdict is Verdict.ALLOW
    plan = pack.plan(e)
    assert pack.compile_plan(plan).test(e, plan.atoms) != 0


# ---------------------------------------------------------------- fourth run (docs/mutation.md, "Fourth run")
# engine._decide: a plan compiled, a hand-built event (plain string for transfer.safeguard) failing the
# safeguard condition: the key of the failed test's report raises AttributeError, and the event is judged
# by the interpreted tests (`_decide_interpreted(None, ...)` crashed). Before 40796a5 fixed
# SafeguardIfCrossBorder.reason (`.value` of a str), every path crashed on this event.

def test_a_hand_built_event_failing_the_safeguard_is_judged_on_every_path(monkeypatch):
    import dataclasses

    from auditor.policy import engine
    from auditor.policy.engine import compile_pack, decide, evaluate_interpreted, evaluate_plain, load_pack

    e = make_event(event_id="h-5", kind="DISCLOSURE", purpose="support",
                   recipient={"type": "service_provider", "id": "p-1", "country": "DE", "on_our_behalf": True},
                   transfer={"cross_border": True, "destination_country": "US", "safeguard": "NONE"})
    by_hand = dataclasses.replace(e, transfer=dataclasses.replace(e.transfer, safeguard="NONE"))
    want = evaluate_interpreted(e, load_pack(TINY))
    assert want.violated_rule_ids == ("tiny.disclose.processor",)
    assert "relies on safeguard 'none'" in want.violations[0].reason
    assert evaluate_interpreted(by_hand, load_pack(TINY)) == want
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)   # the plan's tests are compiled at once
    for judge in (decide, evaluate_plain):
        compiled = compile_pack(load_pack(TINY).pack)
        assert judge(by_hand, compiled) == want
        assert compiled.plan(by_hand).allow is not None   # the compiled tests ran (and then the key raised)


def _tiny_variant(tmp_path, old: str, new: str, memo_bytes: int = 0):  # type: ignore[no-untyped-def]
    from auditor.policy import parse_pack
    from auditor.policy.engine import compile_pack

    text = TINY.read_text()
    assert old in text
    p = tmp_path / "variant.yaml"
    p.write_text(text.replace(old, new))
    return compile_pack(parse_pack(p), memo_bytes=memo_bytes)


_MARKETING_REQUIRES = "    require: [{consent: marketing}, not_opted_out, {only_categories: [contact]}]"


# engine._violation: a failed permit's reason is its failed conditions' reasons alone, or the rule's
# `explain` followed by them in brackets (`if rule.explain` -> `and False` / `or True`). Checked on the
# interpreted path and on the compiled one (CompiledPack.report writes the reason through _violation).

@pytest.mark.parametrize("explain", [None, "Offers need the subject's consent"])
def test_a_failed_permits_reason_is_its_explanation_then_the_failed_conditions(tmp_path, monkeypatch, explain):
    from auditor.policy import engine
    from auditor.policy.engine import evaluate_plain

    line = f"    explain: \"{explain}\"\n" if explain else ""
    compiled = _tiny_variant(tmp_path, _MARKETING_REQUIRES, line + _MARKETING_REQUIRES)
    why = "the subject has not given marketing consent"
    want = f"{explain} ({why})" if explain else why
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    for judge in (evaluate_interpreted, evaluate_plain):
        (v,) = judge(make_event(event_id="x-1"), compiled).violations
        assert (v.rule_id, v.reason) == ("tiny.use.marketing", want), judge


# CompiledPack.report: the reasons of a compiled plan's report read the subject's minority
# (`if plan.needs_minor` -> `and False` wrote "age unknown" for a child).

def test_a_compiled_report_states_the_minority_its_failed_condition_read(tmp_path, monkeypatch):
    from auditor.policy import engine

    compiled = _tiny_variant(tmp_path, _MARKETING_REQUIRES,
                             "    require: [{consent: marketing}, {minor: false}]")
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    child = make_event(event_id="c-1", subject={"id": "s-9", "age": 9}, consent={"marketing": True, "guardian": True})
    d = evaluate_plain(child, compiled)
    assert compiled.plan(child).allow is not None   # the compiled path wrote the report
    assert d == evaluate_interpreted(child, compiled)
    (v,) = d.violations
    assert v.rule_id == "tiny.use.marketing" and v.reason == "the subject is a minor (under 18)"


# engine._decide, its last branch: a failed test reads a fact no key function knows (here the key table
# without consent.marketing and subject.minor stands for such a test), so the report is kept per tuple of
# its reasons' texts. The mutants crashed there (`if tail is not None`, `why = None`, `tuple(None)`,
# `_new_decision(None, ...)`) or wrote the minority's reason without the minority (`needs_minor and False`).

def test_a_report_whose_failed_test_no_key_function_knows_is_the_interpreted_one(tmp_path, monkeypatch):
    from auditor.policy import engine

    monkeypatch.delitem(engine._KEY_EXPR, "consent.marketing")
    monkeypatch.delitem(engine._KEY_EXPR, "subject.minor")
    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    requires = "    require: [{consent: marketing}, {minor: false}]"
    compiled = _tiny_variant(tmp_path, _MARKETING_REQUIRES, requires)
    reference = _tiny_variant(tmp_path, _MARKETING_REQUIRES, requires)
    child = {"id": "s-9", "age": 9}
    events = [make_event(event_id="k-1"),
              make_event(event_id="k-2", subject=child, consent={"marketing": True, "guardian": True}),
              make_event(event_id="k-3", subject=child, consent={"guardian": True})]
    for _ in range(2):   # the report written, then the one kept under the same reasons
        for e in events:
            assert evaluate_plain(e, compiled) == evaluate_interpreted(e, reference), e.event_id
    plan = compiled.plan(events[1])
    assert plan.allow is not None and plan.judged and all(j.key_of is None for j in plan.judged.values())
    assert evaluate_plain(events[1], compiled).violations[0].reason == "the subject is a minor (under 18)"


# CompiledPack._make_plan: a test reading exactly the plan's key facts (kind, purpose, recipient type,
# categories: STATIC_FACTS) is decided when the plan is made. `t.reads <= STATIC_FACTS` -> `<` left such a
# scope test unchecked (38: the constraint applied to every event) or such a condition unchecked (51: the
# permit held) or checked twice (47: the condition listed twice among the failed).

_ON_THE_KEY = "[{kinds: [ACCESS]}, {purposes: [support]}, {recipients: [law_enforcement]}, {categories: [card]}]"


def test_a_test_on_exactly_the_plans_key_facts_is_decided_once(tmp_path, monkeypatch):
    from auditor.policy import engine
    from auditor.policy.engine import evaluate_plain

    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)
    as_condition = _tiny_variant(tmp_path, _MARKETING_REQUIRES,
                                 f"    require: [{{consent: marketing}}, {{any_of: {_ON_THE_KEY}}}]")
    rule = next(r for r in as_condition.pack.rules if r.id == "tiny.use.marketing")
    assert rule.conditions[1].reads == engine.STATIC_FACTS
    as_scope = _tiny_variant(tmp_path, "    when: {minor: true}", f"    when: {{minor: true, any_of: {_ON_THE_KEY}}}")
    child = make_event(event_id="k-4", subject={"id": "s-9", "age": 9}, consent={"marketing": True})
    for judge in (evaluate_interpreted, evaluate_plain, evaluate):
        (v,) = judge(make_event(event_id="k-3", consent={"marketing": True}), as_condition).violations
        assert (v.rule_id, v.failed) == ("tiny.use.marketing", (rule.conditions[1].source,)), judge
        assert judge(child, as_scope).verdict is Verdict.ALLOW, judge   # tiny.minors not in scope


# engine._key_function: the memo key of a plan for events without a recipient skips the recipient facts
# (`continue` -> `break` dropped every fact sorted after the first of them: subject.minor here, so a child
# was given an adult's remembered ALLOW).

def test_the_memo_key_of_an_event_without_a_recipient_keeps_the_facts_after_the_recipients(tmp_path):
    requires = "    require: [{consent: marketing}, {on_our_behalf: [true, unknown]}]"
    compiled = _tiny_variant(tmp_path, _MARKETING_REQUIRES, requires, memo_bytes=1 << 20)
    adult = make_event(event_id="m-1", consent={"marketing": True})
    child = make_event(event_id="m-2", subject={"id": "s-1", "age": 9}, consent={"marketing": True})
    assert "recipient.on_our_behalf" in compiled.reads and compiled.plan(adult).memo is not None
    assert evaluate(adult, compiled).verdict is Verdict.ALLOW
    assert evaluate(child, compiled).violated_rule_ids == ("tiny.minors",)
    assert compiled.plan(child).key_of.facts == ("consent.guardian", "consent.marketing", "subject.minor")


# CompiledPack.plan: a plan gets a memo only when the pack has a memo budget and the plan a key function.
# `and` -> `or` gave a plan whose facts no key function knows a memo (decide then called None: a crash);
# `> 0` -> `>= 0` kept decisions with the memo turned off (memo_bytes=0).

def test_a_plan_has_a_memo_only_with_a_budget_and_a_key_function(tmp_path, monkeypatch):
    from auditor.policy import engine

    off = _tiny_variant(tmp_path, "", "", memo_bytes=0)
    on = _tiny_variant(tmp_path, "", "", memo_bytes=1 << 20)
    e = make_event(event_id="p-1", consent={"marketing": True})
    for compiled in (off, on):
        assert evaluate(e, compiled).verdict is Verdict.ALLOW
    assert (off.plan(e).memo, off.memo_entries()) == (None, 0)
    assert on.memo_entries() == 1
    monkeypatch.delitem(engine._KEY_EXPR, "consent.marketing")   # a fact no key function knows
    unkeyed = _tiny_variant(tmp_path, "", "", memo_bytes=1 << 20)
    assert evaluate(e, unkeyed).verdict is Verdict.ALLOW
    assert unkeyed.plan(e).key_of is None and unkeyed.plan(e).memo is None


# conditions.AttributeEquals.__post_init__: an attribute test whose values leave out `~` (absent) says the
# absent case is unhandled (lint warns); `None not in` -> `None in` swapped the two.

def test_an_attribute_test_without_absent_among_its_values_leaves_the_absent_case_unhandled():
    from auditor.policy.conditions import AttributeEquals

    assert AttributeEquals("tier", frozenset({"gold"}), "t").unknown_unhandled == {"attributes.tier"}
    assert AttributeEquals("tier", frozenset({"gold", None}), "t").unknown_unhandled == frozenset()


# CompiledPack.report: what a plan's judged bit set keeps of its reports (memory, not verdicts): a report
# keyed by facts is kept when no text in its key is over _MEMO_MAX_TEXT characters, one keyed by its
# reasons' texts (no key function) when they are at most _MEMO_MAX_ENTRY characters in all, and at most
# _REASONS_MAX per bit set. The mutants kept nothing (69), judged a keyed report by its reasons' length or
# the reverse (70, 71, 73), kept over-long keys (80) or one report more (81).

def test_a_judged_bit_set_keeps_reports_within_its_bounds(tmp_path, monkeypatch):
    from auditor.policy import engine
    from auditor.policy.engine import _MEMO_MAX_TEXT, _REASONS_MAX, evaluate_plain

    monkeypatch.setattr(engine, "_COMPILE_AFTER", 1)

    def kept(compiled, role: str) -> int:  # type: ignore[no-untyped-def]
        e = make_event(kind="ACCESS", purpose="support", actor={"role": role})
        assert evaluate_plain(e, compiled).violated_rule_ids == ("tiny.access.support",)
        return sum(len(j.tails) for j in compiled.plan(e).judged.values())

    keyed = _tiny_variant(tmp_path, "", "")
    assert kept(keyed, "intern") == 1
    assert kept(keyed, "x" * (_MEMO_MAX_TEXT + 1)) == 1   # an over-long role is judged, not kept
    for i in range(_REASONS_MAX + 8):
        kept(keyed, f"r{i}")
    assert kept(keyed, "intern") == _REASONS_MAX
    monkeypatch.delitem(engine._KEY_EXPR, "actor.role")   # the role's test: no key function knows it
    unkeyed = _tiny_variant(tmp_path, "", "")
    role = "y" * (_MEMO_MAX_TEXT - 4)   # a reason text over _MEMO_MAX_TEXT characters, far below _MEMO_MAX_ENTRY
    assert kept(unkeyed, role) == 1 and kept(unkeyed, "y" * 5000) == 1


# codegen: "a test class this module does not know is called through its own holds". The generated plan and
# fails tests then build the derived facts `x` (`_Writer.expr` 91, 92: `self.holds = None/False` left `x`
# undefined: NameError), and only an all_of with parts is written inline (82: `isinstance(t, AllOf) or
# t.parts` read `.parts` of any other class). The loader refuses empty any_of/all_of, so for the seed packs
# these paths are unreachable; a hand-built or future test class reaches them.

class _Odd:
    """A test class codegen does not know: holds for a minor whose data holds a card number."""

    source = "odd"
    reads = frozenset({"subject.minor", "data_categories"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e, x):  # type: ignore[no-untyped-def]
        return x.minor is True and "card" in x.atoms

    def reason(self, e, x):  # type: ignore[no-untyped-def]
        return "odd"


def test_a_test_class_codegen_does_not_know_is_called_through_its_holds():
    from auditor.policy.codegen import compile_fails, compile_plan, compile_tests
    from auditor.policy.conditions import Derived

    odd = _Odd()
    permits = [((), (odd,), False, False)]
    plan = compile_plan(permits, [], 18)
    fails, layout = compile_fails(permits, [], 18)
    tests = compile_tests([odd], "odd_only")
    assert tests is not None and layout == ((1, (2,)),)
    for age, atoms, holds in ((9, {"card"}, True), (30, {"card"}, False), (9, {"contact"}, False)):
        e = make_event(subject={"id": "s-1", "age": age})
        assert plan(e, frozenset(atoms)) == (1 if holds else 0), (age, atoms)
        assert fails(e, frozenset(atoms)) == (1 if holds else 3), (age, atoms)
        assert bool(tests(e, Derived(frozenset(atoms), age < 18, 18))) is holds


# engine.compile_pack: the facts a pack reads (the ledger's join asks them: ledger.join.needs_of).

def test_a_compiled_pack_knows_every_fact_its_rules_read(pack):
    assert pack.reads == {
        "actor.role", "consent.guardian", "consent.marketing", "consent.marketing_opt_out", "data_categories",
        "legal_request.type", "recipient.on_our_behalf", "subject.minor", "subject.region",
        "transfer.cross_border", "transfer.destination_country", "transfer.safeguard"}


# ---------------------------------------------------------------- fourth run, tier 2 (numbers, arithmetic)
# codegen._Writer.expr 51: a second attribute test on an attribute the function already reads took its
# expression from `facts[name][2]` (IndexError: compiling the plan crashed). Two tests on one attribute
# are an ordinary pack (an any_of of two values, or a scope and a condition).

def test_two_attribute_tests_on_one_attribute_compile_to_what_they_hold():
    from auditor.policy.codegen import compile_plan, compile_tests
    from auditor.policy.conditions import AttributeEquals, Derived

    gold, silver = (AttributeEquals("tier", frozenset({v}), f"attribute: {{tier: {v}}}") for v in ("gold", "silver"))
    tests = compile_tests([gold, silver]), compile_tests([gold]), compile_tests([silver])
    plan = compile_plan([((gold,), (), False, False), ((silver,), (), False, False)], [], 18)
    for tier, bits in (("gold", 1), ("silver", 2), ("bronze", 0), (None, 0)):
        e = make_event(attributes={"tier": tier} if tier else {})
        x = Derived(frozenset(), None, 18)
        assert plan(e, frozenset()) == bits, tier
        assert [bool(f(e, x)) for f in tests] == [False, tier == "gold", tier == "silver"]   # type: ignore[misc]


# engine.decide: the memo's hit and miss counters count one per decision (`+= 1` -> `+= 2`);
# CompiledPack._remember: the memo never holds more than its budget (`memo_bytes + size` -> `-`).

def test_the_memo_counts_hits_and_misses_and_stays_within_its_budget(tmp_path):
    compiled = _tiny_variant(tmp_path, "", "", memo_bytes=1 << 20)
    e = make_event(event_id="c-1", consent={"marketing": True})
    evaluate(e, compiled)
    evaluate(e, compiled)
    assert (compiled.memo_hits, compiled.memo_misses) == (1, 1)
    small = _tiny_variant(tmp_path, "", "", memo_bytes=600)
    for i in range(40):
        evaluate(make_event(event_id=f"c-{i}", actor={"role": f"role-{i}"}, kind="ACCESS", purpose="support"), small)
        assert 0 < small.memo_bytes <= 600, i


# CompiledPack.plan 27: the plan cache never holds more than its budget when a plan is added
# (`plan_bytes + size` -> `-`). Allowed events only: a violation's judged bit sets and reports are counted
# in plan_bytes when they are made, and the budget is enforced at the next plan.

def test_the_plan_cache_stays_within_its_budget():
    from itertools import product

    from auditor.policy.engine import compile_pack, load_pack

    compiled = compile_pack(load_pack(TINY).pack, plan_bytes=3000)
    for n in range(1, 5):
        for cats in product(["contact", "card"], repeat=n):
            e = make_event(kind="ACCESS", purpose="support", data_categories=list(cats))
            assert evaluate(e, compiled).verdict is Verdict.ALLOW
            assert 0 < compiled.plan_bytes <= 3000, cats
