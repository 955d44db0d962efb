"""The evaluator on a small hand-written pack: each outcome kind, and the lookup index."""

from __future__ import annotations

import pytest

from auditor.policy import Verdict, ViolationKind, evaluate, load_pack
from auditor.policy.examples import deep_merge
from tests.unit.policy.policykit import TINY, make_event


def test_permit_with_all_conditions_allows_and_names_the_rule(pack):
    d = evaluate(make_event(consent={"marketing": True}), pack)
    assert d.verdict is Verdict.ALLOW
    assert d.permitted_by is not None and d.permitted_by.rule_id == "tiny.use.marketing"
    assert d.permitted_by.clause == "3" and d.permitted_by.quote == "only with your consent"
    assert d.pack_id == "tiny" and d.pack_hash.startswith("sha256:")


def test_failed_condition_cites_rule_clause_and_plain_reason(pack):
    d = evaluate(make_event(), pack)
    assert d.verdict is Verdict.VIOLATION
    (v,) = d.violations
    assert v.rule_id == "tiny.use.marketing" and v.kind is ViolationKind.CONDITION_FAILED
    assert v.rule.quote == "only with your consent"
    assert "marketing consent" in v.reason


def test_opt_out_beats_consent(pack):
    d = evaluate(make_event(consent={"marketing": True, "marketing_opt_out": True}), pack)
    assert d.violated_rule_ids == ("tiny.use.marketing",)
    assert "opted out" in d.violations[0].reason


def test_category_outside_rule_is_named(pack):
    d = evaluate(make_event(consent={"marketing": True}, data_categories=["contact", "card"]), pack)
    assert d.verdict is Verdict.VIOLATION
    assert "card" in d.violations[0].reason


def test_constraint_applies_even_when_permitted_and_names_the_failed_condition(pack):
    d = evaluate(make_event(consent={"marketing": True}, subject={"age": 12}), pack)
    assert d.permitted_by is not None
    assert d.violated_rule_ids == ("tiny.minors",)
    assert d.violations[0].kind is ViolationKind.CONSTRAINT_FAILED
    assert d.violations[0].failed == ("consent: guardian",)


def test_prohibition_exception_holds_records_rule_as_held(pack):
    d = evaluate(make_event(consent={"marketing": True, "guardian": True}, subject={"age": 12}), pack)
    assert d.verdict is Verdict.ALLOW
    assert "tiny.minors" in d.held


def test_is_minor_flag_counts_without_age(pack):
    d = evaluate(make_event(consent={"marketing": True}, subject={"age": None, "is_minor": True}), pack)
    assert d.violated_rule_ids == ("tiny.minors",)


def test_age_under_minor_age_wins_over_is_minor_false(pack):
    """age 16 with is_minor false: the strict reading, a minor if either says so (was judged adult)."""
    d = evaluate(make_event(consent={"marketing": True}, subject={"age": 16, "is_minor": False}), pack)
    assert d.violated_rule_ids == ("tiny.minors",)
    adult = evaluate(make_event(consent={"marketing": True}, subject={"age": 30, "is_minor": False}), pack)
    assert adult.verdict is Verdict.ALLOW
    flagged = evaluate(make_event(consent={"marketing": True}, subject={"age": 30, "is_minor": True}), pack)
    assert flagged.violated_rule_ids == ("tiny.minors",)


def test_default_deny_when_no_permit_covers(pack):
    d = evaluate(make_event(kind="DISCLOSURE", recipient={"type": "law_enforcement", "id": "pd"}), pack)
    assert d.violated_rule_ids == ("tiny.default-deny",)
    assert d.violations[0].kind is ViolationKind.DEFAULT_DENY
    assert d.violations[0].rule.quote == "We only do what this policy says."


@pytest.mark.parametrize(("over", "rule"), [
    ({"data_categories": ["health"]}, "tiny.undeclared-category"),
    ({"purpose": "resale"}, "tiny.undeclared-purpose"),
    ({"kind": "DISCLOSURE", "recipient": {"type": "acquirer", "id": "bigco"}}, "tiny.undeclared-recipient"),
])
def test_undeclared_processing_is_its_own_violation(pack, over, rule):
    d = evaluate(make_event(**over), pack)
    assert d.verdict is Verdict.VIOLATION
    assert rule in d.violated_rule_ids
    assert all(v.kind is ViolationKind.UNDECLARED for v in d.violations)


def test_legal_request_binding_excludes_a_voluntary_authority_request(pack):
    ev = {"kind": "DISCLOSURE", "purpose": "legal", "recipient": {"type": "law_enforcement", "id": "pd"}}
    assert evaluate(make_event(**ev), pack).verdict is Verdict.VIOLATION
    voluntary = evaluate(make_event(**ev, legal_request={"type": "AUTHORITY_REQUEST"}), pack)
    assert voluntary.verdict is Verdict.VIOLATION and "authority request" in voluntary.violations[0].reason
    d = evaluate(make_event(**ev, legal_request={"type": "COURT_ORDER", "reference": "C-1"}), pack)
    assert d.verdict is Verdict.ALLOW and d.permitted_by.rule_id == "tiny.disclose.police"


def test_on_our_behalf_and_cross_border_safeguard(pack):
    ev = {"kind": "DISCLOSURE", "purpose": "support",
          "recipient": {"type": "service_provider", "id": "helpdesk", "on_our_behalf": True}}
    assert evaluate(make_event(**ev), pack).verdict is Verdict.ALLOW
    own = deep_merge(ev, {"recipient": {"on_our_behalf": False}})
    assert "own purposes" in evaluate(make_event(**own), pack).violations[0].reason
    abroad = deep_merge(ev, {"transfer": {"cross_border": True, "safeguard": "NONE"}})
    assert evaluate(make_event(**abroad), pack).verdict is Verdict.VIOLATION
    scc = deep_merge(abroad, {"transfer": {"safeguard": "STANDARD_CONTRACTUAL_CLAUSES"}})
    assert evaluate(make_event(**scc), pack).verdict is Verdict.ALLOW


def test_roles_restrict_access(pack):
    ev = {"kind": "ACCESS", "purpose": "support"}
    assert evaluate(make_event(**ev), pack).verdict is Verdict.ALLOW
    d = evaluate(make_event(**ev, actor={"role": "intern"}), pack)
    assert d.verdict is Verdict.VIOLATION and "intern" in d.violations[0].reason


def test_candidates_come_from_the_index_not_a_scan(pack):
    permits, prohibitions = pack.candidates(make_event().kind, "*", "marketing")
    assert [r.id for r in permits] == ["tiny.use.marketing"]
    assert [r.id for r in prohibitions] == ["tiny.minors"]


def test_unknown_age_is_not_silently_adult_or_minor(pack):
    unknown = make_event(consent={"marketing": True}, subject={"age": None})
    assert unknown.subject.minor(18) is None
    assert evaluate(unknown, pack).verdict is Verdict.ALLOW  # tiny's 'absent' reading: not a child


def test_regions_scope_and_purposes_condition(tmp_path):
    from auditor.policy import parse_pack
    from auditor.policy.engine import compile_pack

    text = TINY.read_text().replace(
        "    when: {minor: true}\n    require: [{consent: guardian}]",
        "    when: {minor: true, regions: [EEA]}\n    require: [{consent: guardian}]",
    ).replace("require: [{roles: [support_agent]}]", "require: [{roles: [support_agent]}, {purposes: [support]}]"
              ).replace("  actor.role:", "  subject.region: not in the EEA\n  actor.role:")
    p = tmp_path / "p.yaml"
    p.write_text(text)
    pack = compile_pack(parse_pack(p))
    def child(region=None):
        return make_event(consent={"marketing": True}, subject={"age": 12, "region": region})

    assert evaluate(child("DE"), pack).violated_rule_ids == ("tiny.minors",)
    assert evaluate(child("SG"), pack).verdict is Verdict.ALLOW
    assert evaluate(child(), pack).verdict is Verdict.ALLOW  # no region stated: not in scope
    access = make_event(kind="ACCESS", purpose="support")
    assert evaluate(access, pack).verdict is Verdict.ALLOW


def test_memo_evaluator_agrees_with_evaluate_on_every_example_and_mutation():
    """The memo key covers every fact rules read: memoised and fresh decisions never differ."""
    import dataclasses

    from auditor.policy.engine import MemoEvaluator
    from auditor.policy.examples import examples_path, load_examples
    from auditor.policy.probe import single_changes
    from auditor.stream.generate import MUTATIONS

    for pack_id in ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct"):
        pack = load_pack(pack_id)
        memo = MemoEvaluator(pack)
        events = [ex.event for ex in load_examples(examples_path(pack_id))]
        events += [mutate(e) for e in events for mutate in MUTATIONS.values()]
        events += [changed for e in events[:40] for _, changed in single_changes(e, pack.pack)]
        events += [dataclasses.replace(e, event_id=e.event_id + "-again") for e in events]  # memo hits
        for e in events:
            got, _ = memo(e)
            assert got == evaluate(e, pack), e.event_id


def test_caches_do_not_grow_with_hostile_events(pack):
    """The plan cache and the memo are bounded in entries, so they must not keep huge entries:
    events with undeclared or oversized facts are judged but not kept."""
    from auditor.policy.engine import MemoEvaluator

    memo = MemoEvaluator(pack)
    # the shapes the loop uses, met once with ordinary facts: their plans may exist, hostile facts add none
    memo(make_event(event_id="warm-access", kind="ACCESS", purpose="support", actor={"role": "support_agent"}))
    memo(make_event(event_id="warm-use", consent={"marketing": True}))
    pack.clear_memo()
    before = len(pack._plans)
    kept, kept_bytes = pack.memo_entries(), pack.memo_bytes
    for i in range(50):
        junk = make_event(event_id=f"j{i}", data_categories=[f"x{i}" * 10_000])
        assert evaluate(junk, pack).violated_rule_ids == ("tiny.undeclared-category",)
        assert memo(junk)[0].violated_rule_ids == ("tiny.undeclared-category",)
        long_role = make_event(event_id=f"r{i}", kind="ACCESS", purpose="support", actor={"role": "r" * 5000 + str(i)})
        assert memo(long_role)[0].verdict is Verdict.VIOLATION
        repeats = make_event(event_id=f"c{i}", data_categories=["contact"] * (20 + i), consent={"marketing": True})
        assert memo(repeats)[0].verdict is Verdict.ALLOW
    assert len(pack._plans) == before
    assert (pack.memo_entries(), pack.memo_bytes) == (kept, kept_bytes)
    pack.clear_memo()
    normal = make_event(consent={"marketing": True})
    memo(normal)
    assert pack.memo_entries() == 1 and 0 < pack.memo_bytes < 4096
