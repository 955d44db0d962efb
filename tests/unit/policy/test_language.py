"""Language 2 on a pack that uses every construct (tests/data/packs/features.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.events.codec import event_from_mapping
from auditor.policy import MemoEvaluator, Verdict, ViolationKind, evaluate, load_pack
from auditor.policy.examples import deep_merge

FEATURES = Path(__file__).resolve().parents[2] / "data" / "packs" / "features.yaml"


@pytest.fixture(scope="module")
def pack():
    return load_pack(FEATURES)


def ev(**over: Any):
    base = {
        "event_id": "e-1", "occurred_at": "2026-01-01T00:00:00Z", "kind": "USE", "policy_id": "features",
        "source_system": "crm", "actor": {"type": "EMPLOYEE", "id": "a-1", "organisation": "OURS"},
        "subject": {"id": "s-1", "age": 30, "region": "MY"}, "data_categories": ["marketing_data"],
        "purpose": "marketing", "consent": {"marketing": True},
    }
    return event_from_mapping(deep_merge(base, over))


def ids(d) -> tuple[str, ...]:
    return d.violated_rule_ids


def test_the_baseline_is_allowed(pack):
    d = evaluate(ev(), pack)
    assert d.verdict is Verdict.ALLOW, d.violations
    assert d.permitted_by.rule_id == "features.staff"
    assert "features.marketing-consent" in d.held


@pytest.mark.parametrize("over", [
    {},                                                        # the marketing label
    {"data_categories": ["registration"]},                     # a label that holds the same elements
    {"data_categories": ["personal_data"]},                    # a category holding that category
    {"kind": "ACCESS"},                                        # another kind
    {"kind": "DISCLOSURE", "recipient": {"type": "processor", "id": "p", "on_our_behalf": True}},
])
def test_a_constraint_binds_whatever_the_label_kind_or_recipient(pack, over):
    d = evaluate(ev(**deep_merge(over, {"consent": {"marketing": False}})), pack)
    assert "features.marketing-consent" in ids(d)
    v = next(v for v in d.violations if v.rule_id == "features.marketing-consent")
    assert v.kind is ViolationKind.CONSTRAINT_FAILED and v.failed == ("consent: marketing",)


def test_categories_with_contents_limit_by_element(pack):
    assert evaluate(ev(data_categories=["marketing_data"]), pack).verdict is Verdict.ALLOW
    d = evaluate(ev(data_categories=["registration"], actor={"organisation": "PROCESSOR"}), pack)
    (v,) = [v for v in d.violations if v.rule_id == "features.marketing"]
    assert "birth_date" in v.reason and "phone" in v.reason
    assert evaluate(ev(data_categories=["email"], actor={"organisation": "PROCESSOR"}), pack).verdict is Verdict.ALLOW


def test_unknown_age_follows_the_stated_reading_and_minor_age(pack):
    assert ids(evaluate(ev(subject={"age": None}), pack)) == ("features.children",)
    assert ids(evaluate(ev(subject={"age": 15}), pack)) == ("features.children",)
    assert evaluate(ev(subject={"age": 16}), pack).verdict is Verdict.ALLOW
    assert evaluate(ev(subject={"age": None}, consent={"guardian": True}), pack).verdict is Verdict.ALLOW


def disclosure(rtype: str, **over: Any):
    return ev(**deep_merge({"kind": "DISCLOSURE", "purpose": "support", "data_categories": ["stats"],
                            "recipient": {"type": rtype, "id": "r-1"}}, over))


def test_binding_legal_request_and_recipient_country(pack):
    police = {"purpose": "legal", "recipient": {"country": "SG"}}
    assert ids(evaluate(disclosure("police", **police), pack)) == ("features.police",)
    d = evaluate(disclosure("police", legal_request={"type": "AUTHORITY_REQUEST"}, **police), pack)
    assert ids(d) == ("features.police",) and d.violations[0].failed == ("legal_request: binding",)
    assert evaluate(disclosure("police", legal_request={"type": "SUBPOENA"}, **police), pack).verdict is Verdict.ALLOW
    abroad = deep_merge(police, {"recipient": {"country": "US"}, "legal_request": {"type": "WARRANT"}})
    assert evaluate(disclosure("police", **abroad), pack).violations[0].failed == ("recipient_countries: [home]",)


@pytest.mark.parametrize(("transfer", "region", "verdict"), [
    ({"cross_border": False}, "DE", Verdict.ALLOW),
    ({"cross_border": True, "destination_country": "FR"}, "DE", Verdict.ALLOW),        # intra-EEA
    ({"cross_border": True, "destination_country": "FR"}, "US", Verdict.VIOLATION),     # not intra-EEA for a US subject
    ({"cross_border": True, "destination_country": "JP"}, "US", Verdict.ALLOW),         # adequacy list
    ({"cross_border": True, "destination_country": "US"}, "DE", Verdict.VIOLATION),
    ({"cross_border": True, "destination_country": "US", "safeguard": "STANDARD_CONTRACTUAL_CLAUSES"}, "DE",
     Verdict.ALLOW),
    ({"cross_border": True}, "DE", Verdict.VIOLATION),                                  # unknown destination
    ({"cross_border": False, "destination_country": "US"}, "DE", Verdict.VIOLATION),    # the flag hides nothing
    ({"cross_border": False, "destination_country": "DE"}, "DE", Verdict.ALLOW),
])
def test_transfer_adequacy_and_intra_region_exemption(pack, transfer, region, verdict):
    e = disclosure("processor", recipient={"on_our_behalf": True}, transfer=transfer, subject={"region": region})
    assert evaluate(e, pack).verdict is verdict


def test_nested_any_of_all_of_not(pack):
    e = disclosure("partner", identifiability="IDENTIFIED")
    assert ids(evaluate(e, pack)) == ("features.partner-stats",)
    assert evaluate(disclosure("partner", identifiability="AGGREGATE"), pack).verdict is Verdict.ALLOW
    consented = disclosure("partner", consent={"third_party_sharing": True})
    assert evaluate(consented, pack).verdict is Verdict.ALLOW
    in_eea = disclosure("partner", consent={"third_party_sharing": True}, subject={"region": "DE"})
    assert evaluate(in_eea, pack).verdict is Verdict.VIOLATION


def test_most_specific_permit_is_reported_the_others_considered(pack):
    d = evaluate(disclosure("partner", recipient={"id": "acme"}), pack)
    assert ids(d) == ("features.partner-stats",)
    assert [v.rule_id for v in d.considered] == ["features.partner-named"]
    assert evaluate(disclosure("partner", recipient={"id": "acme"}, legal_basis="Contract"), pack).verdict \
        is Verdict.ALLOW


def test_forbid_constraint_and_most_specific_first(pack):
    e = ev(kind="DISCLOSURE", purpose="support", data_categories=["payment"], consent={"marketing": False},
           recipient={"type": "processor", "id": "p", "on_our_behalf": True},
           transfer={"cross_border": True, "destination_country": "JP"})
    d = evaluate(e, pack)
    assert ids(d) == ("features.no-cards-abroad",)
    assert d.violations[0].kind is ViolationKind.PROHIBITED
    home = evaluate(ev(kind="DISCLOSURE", purpose="support", data_categories=["payment"],
                       recipient={"type": "processor", "id": "p", "on_our_behalf": True},
                       transfer={"cross_border": True, "destination_country": "SG"}), pack)
    assert home.verdict is Verdict.ALLOW
    flag_cleared = evaluate(ev(kind="DISCLOSURE", purpose="support", data_categories=["payment"],
                               recipient={"type": "processor", "id": "p", "on_our_behalf": True},
                               transfer={"cross_border": False, "destination_country": "US"}), pack)
    # the destination decides, not the flag: the card ban applies, and the processor needs a safeguard
    assert ids(flag_cleared) == ("features.processor", "features.no-cards-abroad")
    both = evaluate(ev(subject={"age": 10}, consent={"marketing": False}), pack)
    assert ids(both) == ("features.marketing-consent", "features.children")  # 3 scope tests before 1


def test_when_scopes_on_attribute_and_organisation(pack):
    base = {"purpose": "support", "data_categories": ["registration"], "actor": {"organisation": "PROCESSOR"},
            "transfer": {"cross_border": True, "destination_country": "US"}}
    d = evaluate(ev(**base), pack)
    assert "features.open-ticket-support" not in ids(d)          # no ticket attribute: out of scope
    d = evaluate(ev(**deep_merge(base, {"attributes": {"ticket_open": "true"}})), pack)
    assert "features.open-ticket-support" in ids(d)


def test_undeclared_names_elements_are_declared_data(pack):
    assert evaluate(ev(data_categories=["email"]), pack).verdict is Verdict.ALLOW
    assert ids(evaluate(ev(data_categories=["iris_scan"]), pack)) == ("features.undeclared-category",)


def test_memo_agrees_with_fresh_evaluation_on_every_single_change(pack):
    from auditor.policy.probe import single_changes

    memo = MemoEvaluator(pack)
    seeds = [ev(), ev(subject={"age": None}), disclosure("partner", recipient={"id": "acme"}),
             disclosure("police", purpose="legal", legal_basis="contract"),
             ev(attributes={"ticket_open": "true", "noise": "x"}, purpose="support")]
    events = [c for e in seeds for _, c in single_changes(e, pack.pack)] + seeds
    for i, e in enumerate(events):
        got, _ = memo(e)
        assert got == evaluate(e, pack), i
        again, _ = memo(e)
        assert again == got
