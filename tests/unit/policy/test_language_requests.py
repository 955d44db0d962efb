"""The pack authors' language requests of this round (/work/notes/language-requests.md), each shown
on a small pack: who acts (organisation) in `when` and in a constraint over a category, the actor
being the subject, true/false attribute tests, and the strict reading of age against is_minor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.events.codec import event_from_mapping
from auditor.policy import Verdict, evaluate, load_pack
from auditor.policy.examples import deep_merge

PACK = """\
language: 2
pack: req
title: requests
version: 1
default: {clause: "0", quote: "nothing else"}
absent:
  actor.organisation: "an actor of unknown organisation is not the processor"
  attributes.cookies_accepted: "cookies not stated are taken as refused"
vocabulary:
  categories:
    contact: {clause: "1", quote: "name and email"}
    card: {clause: "2", quote: "card number and expiry"}
  purposes:
    payment: {clause: "2", quote: "to take payment"}
    support: {clause: "3", quote: "to answer you"}
    self_service: {clause: "4", quote: "you may see your own data"}
    analytics: {clause: "5", quote: "cookies, unless you refuse them"}
  recipients:
    payment_processor: {clause: "2", quote: "Global Collect"}
permits:
  - {id: req.staff, clause: "3", quote: "our staff", when: {actor_organisations: [OURS]}}
  - {id: req.processor, clause: "2", quote: "Global Collect processes card data",
     when: {actor_organisations: [PROCESSOR], purposes: [payment]}}
  - {id: req.own-data, clause: "4", quote: "you may see your own data",
     when: {kinds: [ACCESS], purposes: [self_service]}, require: [{actor_is_subject: true}]}
  - {id: req.disclose.processor, clause: "2", quote: "to Global Collect",
     when: {kinds: [DISCLOSURE], recipients: [payment_processor]}, require: [{on_our_behalf: [true, unknown]}]}
constraints:
  - id: req.card-only-processor
    clause: "2"
    quote: "Global Collect does not share credit card information with us"
    when: {categories: [card], kinds: [ACCESS, USE]}
    require: [{actor_organisations: [PROCESSOR]}]
  - id: req.cookies
    clause: "5"
    quote: "unless you refuse cookies"
    when: {purposes: [analytics]}
    require: [{attribute: {cookies_accepted: true}}]
"""


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    p = Path(tmp_path_factory.mktemp("req")) / "req.yaml"
    p.write_text(PACK)
    return load_pack(p)


def ev(**over: Any):
    base = {"event_id": "e-1", "occurred_at": "2026-01-01T00:00:00Z", "kind": "USE", "policy_id": "req",
            "source_system": "crm", "actor": {"type": "EMPLOYEE", "id": "a-1", "organisation": "OURS"},
            "subject": {"id": "s-1", "age": 30}, "data_categories": ["contact"], "purpose": "support"}
    return event_from_mapping(deep_merge(base, over))


def test_organisation_in_when_and_a_category_constraint_on_who_acts(pack):
    """'affiliate staff reading card data' (ipmart): a constraint over the card category requiring the
    processor's organisation binds ACCESS and USE whatever permit allows them."""
    assert evaluate(ev(), pack).verdict is Verdict.ALLOW
    staff_card = evaluate(ev(kind="ACCESS", data_categories=["card"]), pack)
    assert staff_card.violated_rule_ids == ("req.card-only-processor",)
    assert "organisation" in staff_card.violations[0].reason
    third = evaluate(ev(kind="ACCESS", data_categories=["card"], actor={"organisation": "THIRD_PARTY"}), pack)
    assert "req.card-only-processor" in third.violated_rule_ids
    gc = evaluate(ev(kind="USE", data_categories=["card"], purpose="payment",
                     actor={"type": "SERVICE", "organisation": "PROCESSOR"}), pack)
    assert gc.verdict is Verdict.ALLOW and gc.permitted_by.rule_id == "req.processor"


def test_actor_is_subject(pack):
    own = ev(kind="ACCESS", purpose="self_service", actor={"type": "OTHER", "id": "s-1", "organisation": "THIRD_PARTY"})
    d = evaluate(own, pack)
    assert d.verdict is Verdict.ALLOW and d.permitted_by.rule_id == "req.own-data"
    other = ev(kind="ACCESS", purpose="self_service", actor={"type": "OTHER", "id": "s-2",
                                                             "organisation": "THIRD_PARTY"})
    d = evaluate(other, pack)
    assert d.verdict is Verdict.VIOLATION
    assert "someone other than the data subject" in d.violations[0].reason
    # the memo keys on the comparison, not on the ids: a later subject reading their own data is allowed
    again = ev(event_id="e-2", kind="ACCESS", purpose="self_service", subject={"id": "s-9"},
               actor={"type": "OTHER", "id": "s-9", "organisation": "THIRD_PARTY"})
    assert evaluate(again, pack).verdict is Verdict.ALLOW


@pytest.mark.parametrize(("value", "verdict"), [
    ("true", Verdict.ALLOW), ("True", Verdict.ALLOW), ("TRUE", Verdict.ALLOW),
    ("false", Verdict.VIOLATION), ("yes", Verdict.VIOLATION), (None, Verdict.VIOLATION),
])
def test_true_false_attribute_test(pack, value, verdict):
    attrs = {} if value is None else {"cookies_accepted": value}
    assert evaluate(ev(purpose="analytics", attributes=attrs), pack).verdict is verdict


@pytest.mark.parametrize("written", ['"true"', '"True"', "'TRUE'"])
@pytest.mark.parametrize(("value", "verdict"), [
    ("true", Verdict.ALLOW), ("True", Verdict.ALLOW), ("TRUE", Verdict.ALLOW),
    ("false", Verdict.VIOLATION), ("yes", Verdict.VIOLATION), (None, Verdict.VIOLATION),
])
def test_a_quoted_true_reads_as_the_boolean_and_lint_warns(tmp_path, written, value, verdict):
    """Adversarial read F8: a pack writing "true" (quoted) compared case-sensitively, so an event's
    'True' broke ipmart's unsubscribe-link and thisproduct's service_active tests. Quoted or not, a
    true/false value is a boolean; the quotes draw a lint warning naming the line."""
    from auditor.policy import parse_pack

    p = tmp_path / "quoted.yaml"
    p.write_text(PACK.replace("{cookies_accepted: true}", f"{{cookies_accepted: [{written}]}}"))
    (w,) = [str(w) for w in parse_pack(p).warnings]
    line = PACK[:PACK.index("cookies_accepted: true")].count("\n") + 1
    assert "'cookies_accepted'" in w and "quoted" in w and f"quoted.yaml:{line}:" in w
    attrs = {} if value is None else {"cookies_accepted": value}
    assert evaluate(ev(purpose="analytics", attributes=attrs), load_pack(p)).verdict is verdict


def test_attribute_values_must_be_plain(tmp_path):
    from auditor.errors import PolicyError
    from auditor.policy import parse_pack

    p = tmp_path / "bad.yaml"
    p.write_text(PACK.replace("{cookies_accepted: true}", "{cookies_accepted: [[true]]}"))
    with pytest.raises(PolicyError, match="plain strings"):
        parse_pack(p)


def test_attribute_and_opt_out_reasons_name_what_was_seen(pack, tmp_path):
    """Mutation survivors (docs/mutation.md): the reasons of `attribute` and `not_opted_out` tests."""
    stated = evaluate(ev(purpose="analytics", attributes={"cookies_accepted": "no"}), pack)
    assert "fact 'cookies_accepted' is 'no', needs true" in stated.violations[0].reason
    absent = evaluate(ev(purpose="analytics"), pack)
    assert "fact 'cookies_accepted' is not stated, needs true" in absent.violations[0].reason
    p = tmp_path / "optout.yaml"
    p.write_text(PACK.replace("require: [{attribute: {cookies_accepted: true}}]", "require: [not_opted_out]"))
    opted = evaluate(ev(purpose="analytics", consent={"marketing_opt_out": True}), load_pack(p))
    assert opted.violations[0].reason.endswith("(the subject has opted out of marketing)")


ABROAD = PACK.replace("""  - id: req.cookies""", """  - id: req.abroad-needs-safeguard
    clause: "6"
    quote: "transfers abroad rely on standard contractual clauses"
    when: {kinds: [DISCLOSURE], recipient_abroad: [true, unknown]}
    require: [{safeguards: [STANDARD_CONTRACTUAL_CLAUSES]}]
  - id: req.cookies""")


@pytest.mark.parametrize(("recipient_country", "region", "safeguard", "broken"), [
    ("US", "DE", "NONE", True),                              # abroad, no safeguard stated
    ("US", "DE", "STANDARD_CONTRACTUAL_CLAUSES", False),     # abroad with the clauses
    ("de", "DE", "NONE", False),                             # same country (case-insensitive)
    (None, "DE", "NONE", True),                              # unknown country: the rule lists unknown
    ("US", None, "NONE", True),
])
def test_recipient_abroad_and_safeguards(tmp_path, recipient_country, region, safeguard, broken):
    """packB (inper cross-border): a disclosure to a recipient in another country than the subject's is
    a transfer even without a transfer block; `safeguards` tests the stated safeguard."""
    p = tmp_path / "abroad.yaml"
    p.write_text(ABROAD)
    pack = load_pack(p)
    e = ev(kind="DISCLOSURE", purpose="payment", subject={"region": region},
           recipient={"type": "payment_processor", "id": "gc", "country": recipient_country},
           transfer={"safeguard": safeguard})
    assert ("req.abroad-needs-safeguard" in evaluate(e, pack).violated_rule_ids) is broken


def test_alternatives_and_accepted_values_are_not_repeated(tmp_path):
    """c13 (issue 13): reasons listed the same alternative twice, and 'legal_obligation' beside
    'legal obligation' after spelling normalisation."""
    from auditor.policy.conditions import words

    assert words(["legal_obligation", "legal obligation", "required_by_law"]) == "legal obligation, required by law"
    p = tmp_path / "dup.yaml"
    p.write_text(PACK.replace("require: [{attribute: {cookies_accepted: true}}]",
                              "require: [{any_of: [{attribute: {cookies_accepted: true}}, "
                              "{attribute: {cookies_accepted: true}}]}]"))
    d = evaluate(ev(purpose="analytics"), load_pack(p))
    assert d.violations[0].reason.count("fact 'cookies_accepted' is not stated") == 1
    assert "none of the alternatives" not in d.violations[0].reason
