"""attlg: contradicted claims, counted and cited (session 7's open question (a), and what it showed).

(a) A marketing disclosure that claims both marketing consent and consent to share with its recipient
asks the ledger one question twice: consent for purpose marketing to that recipient is the marketing
question and, the event's purpose being marketing, the sharing question too. One withdrawal was reported
as two contradictions (and counted twice in ``check --ledger``'s ``contradicted_claims``), the second
citing whatever rule reads the sharing flag: under thisproduct 2.A's "after the end of the service, it
will be denied access", for a partner whose service never ended. 9272054 already reports a withdrawn
consent once, as the consent claim, when it also answers the opt-out claim; the sharing claim on the
same question is the same report.

The citation: "the most specific rule in scope that reads it" took every rule indexed under the
event's kind, recipient type and purpose, whether or not the rest of its scope (an attribute, a
category, identifiability) held for the event; thisproduct's 2.A rule (scope: a service that ended)
outranked 3.A's "disclosure to third parties with your prior consent" for every disclosure.
"""

from __future__ import annotations

from dataclasses import replace

from auditor.events.model import ConsentState
from auditor.ledger.model import Scope
from auditor.policy.decision import ViolationKind
from tests.unit.ledger.ledgerkit import at, entry
from tests.unit.ledger.test_ledger_join import judge, sample

W = "CONSENT_WITHDRAWN"


def _claims(j) -> list[tuple[tuple[str, ...], str, str]]:  # type: ignore[no-untyped-def]
    return [(v.failed, v.rule_id, v.rule.clause) for v in j.decision.violations
            if v.kind is ViolationKind.CLAIM_CONTRADICTED]


def _both_claims(pack: str, event_id: str):  # type: ignore[no-untyped-def]
    e = sample(pack, event_id)
    return replace(e, consent=ConsentState(marketing=True, third_party_sharing=True), occurred_at=at(30))


def test_one_withdrawal_of_marketing_consent_is_one_contradiction_of_a_marketing_disclosure() -> None:
    e = _both_claims("thisproduct", "thisproduct-mkt-affiliate-consent")  # marketing, to an affiliate
    for scope in (Scope("marketing"), None, Scope(recipient_id="group-travel-co")):
        j = judge("thisproduct", e, entry(W, 0, offset=7, scope=scope))
        assert _claims(j) == [(("consent.marketing",), "thisproduct.marketing.partner-consent", "2.C")], scope
        assert len(j.contradictions) == 1


def test_two_questions_are_still_two_contradictions() -> None:
    """An analytics disclosure claiming both: the marketing question and the sharing question differ."""
    e = replace(_both_claims("thisproduct", "thisproduct-cookies-disclose"))
    assert e.purpose != "marketing" and e.recipient is not None
    j = judge("thisproduct", e, entry(W, 0, offset=7))
    assert [c[0] for c in _claims(j)] == [("consent.marketing",), ("consent.third_party_sharing",)]
    # two withdrawals, one per question: two contradictions on a marketing disclosure too
    e = _both_claims("thisproduct", "thisproduct-mkt-affiliate-consent")
    j = judge("thisproduct", e, entry(W, 0, offset=7, scope=Scope("marketing")),
              entry(W, 0, offset=8, scope=Scope("marketing", recipient_type="affiliate")))
    assert [c[0] for c in _claims(j)] == [("consent.marketing",)]  # the same question: its latest fact, once


def test_a_contradicted_sharing_claim_cites_a_rule_whose_scope_holds_for_the_event() -> None:
    """thisproduct: a disclosure for personalised service to a third party, no service on record as ended.
    3.A's prior-consent rule is in scope for every disclosure; 2.A's service-ended rule only once the
    service ended. On main the claim cited 2.A."""
    e = sample("thisproduct", "thisproduct-cookies-disclose")
    e = replace(e, consent=ConsentState(third_party_sharing=True), occurred_at=at(30))
    assert e.attributes.get("service_active") != "false"
    j = judge("thisproduct", e, entry(W, 0, offset=7))
    assert _claims(j) == [(("consent.third_party_sharing",), "thisproduct.disclose.prior-consent",
                           "3.A, 2.A, Preamble")]
    ended = replace(e, attributes={**e.attributes, "service_active": "false"})
    j = judge("thisproduct", ended, entry(W, 0, offset=7))
    assert [c[1] for c in _claims(j)] == ["thisproduct.service-ended.denied-access"]  # now in scope: 2.A
