"""attlg: withdrawals followed by re-grants, on the opt-out question (97c5b00 attacked).

97c5b00 let a later withdrawal of all consent end an old marketing grant on the opt-out question, by
looking for the latest covering withdrawal after the grant; it never looked past that withdrawal. A
subject who consented to marketing in January, withdrew all consent in February and consented to
everything again in March (re-registration, "I agree to all") had consent for marketing (the consent
question) and was "opted out" (the opt-out question) at once: ipasar, which reads both, reported her
March marketing as a violation, and the opt-out answer cited a withdrawal the person had undone.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.model import Entry, FactType, Scope
from auditor.policy.decision import Verdict, ViolationKind
from tests.unit.ledger.ledgerkit import at, entry
from tests.unit.ledger.test_ledger_join import MKT, judge

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN


def view(*entries: Entry, minutes: float = 30) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


@pytest.mark.parametrize("again", [None, Scope(recipient_type="business_partner"), Scope(recipient_id="acme")],
                         ids=["all-consent", "all-partners", "partner-acme"])
def test_a_grant_after_a_broad_withdrawal_restores_the_marketing_grant_on_the_opt_out_question_too(
        again: Scope | None) -> None:
    """Jan: marketing consent; Feb: all consent withdrawn; Mar: consent again (all, all partners, acme).
    For acme the consent question says granted; the opt-out question said "opted out" (Feb) on main."""
    jan = entry(G, -900, offset=3, scope=Scope("marketing"))
    feb = entry(W, -600, offset=5)
    mar = entry(G, -300, offset=8, scope=again)
    v = view(jan, feb, mar)
    assert v.consent("marketing", "business_partner", "acme").value is True
    r = v.opted_out("marketing", "business_partner", "acme")
    assert r.value is False
    assert r.refs == (jan.ref, mar.ref)  # the marketing grant, and the grant that restored it
    # our own marketing: restored only by a grant that covers it
    assert v.consent("marketing").value is (again is None)
    assert v.opted_out("marketing").value is (again is not None)


def test_a_grant_of_all_consent_after_a_withdrawn_marketing_consent_is_the_latest_word_on_both() -> None:
    feb = entry(W, -600, offset=5, scope=Scope("marketing"))
    mar = entry(G, -300, offset=8)
    v = view(feb, mar)
    assert v.consent("marketing").value is True
    assert v.opted_out("marketing").value is False
    # a grant for another purpose does not cover marketing: still withdrawn, on both
    v = view(feb, entry(G, -300, offset=8, scope=Scope("analytics")))
    assert (v.consent("marketing").value, v.opted_out("marketing").value) == (False, True)


def test_a_re_grant_never_lifts_an_opt_out() -> None:
    """9272054's reading kept: an explicit opt-out is lifted only by an opt-in or a marketing consent."""
    jan = entry(G, -900, offset=3, scope=Scope("marketing"))
    out = entry(FactType.MARKETING_OPT_OUT, -700, offset=4)
    feb = entry(W, -600, offset=5)
    mar = entry(G, -300, offset=8)
    assert view(jan, out, feb, mar).opted_out("marketing").value is True
    assert view(out, mar).opted_out("marketing").value is True


def test_at_a_tie_the_withdrawal_still_wins_on_both_questions() -> None:
    jan = entry(G, -900, offset=3, scope=Scope("marketing"))
    feb = entry(W, -600, offset=9)
    mar = entry(G, -600, offset=8)  # same effective time as the withdrawal, logged before it
    v = view(jan, feb, mar)
    assert (v.consent("marketing").value, v.opted_out("marketing").value) == (False, True)
    assert v.opted_out("marketing").refs == (feb.ref,)


def test_ipasar_marketing_after_a_re_grant_of_all_consent_is_allowed() -> None:
    """ipasar 2.7 needs consent and no opt-out. Jan marketing consent, Feb all withdrawn, Mar all granted:
    a marketing send in April is consented to. On main: VIOLATION (not_opted_out failed, and the event's
    own 'not opted out' claim 'contradicted' by the February withdrawal)."""
    e = replace(MKT, occurred_at=at(30))
    jan = entry(G, -900, offset=3, scope=Scope("marketing"))
    feb = entry(W, -600, offset=5)
    mar = entry(G, -300, offset=8)
    j = judge("ipasar", e, jan, feb, mar)
    assert j.decision.verdict is Verdict.ALLOW, j.decision.violations
    # without the re-grant it is a violation, reported once as the consent claim
    j = judge("ipasar", e, jan, feb)
    assert j.decision.verdict is Verdict.VIOLATION
    claims = [v for v in j.decision.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED]
    assert [v.failed for v in claims] == [("consent.marketing",)]
