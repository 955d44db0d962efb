"""attled: attacks on 9272054 (a consent scoped to marketing answers the opt-out question too).

The commit counts a consent fact for the opt-out question only when its scope names purpose
marketing. A later, broader withdrawal (all consent, or all consent to partners) covers marketing
by the scope filter's own rule, but was not counted: the old marketing grant stayed "the latest
word" and said "not opted out", overriding even the event's own "opted out" claim.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from auditor.events.model import ConsentState
from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.join import PackJoin, RecordedView
from auditor.ledger.late import DecisionIndex
from auditor.ledger.model import Entry, FactRef, Family, Scope
from auditor.ledger.store import LedgerStore
from auditor.policy import evaluate
from auditor.policy.decision import Verdict
from tests.unit.ledger.ledgerkit import at, entry, fact
from tests.unit.ledger.test_ledger_join import PACKS, judge, sample
from tests.unit.ledger.test_ledger_late import KEY, U1, audit

G, W = "CONSENT_GRANTED", "CONSENT_WITHDRAWN"


def view(*entries: Entry, minutes: float = 30) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


@pytest.mark.parametrize("broad", [None, Scope(recipient_type="business_partner"), Scope(recipient_id="acme")],
                         ids=["all-consent", "all-partners", "partner-acme"])
def test_a_later_broader_withdrawal_ends_an_old_marketing_grant_on_the_opt_out_question(broad: Scope | None) -> None:
    """Jan: consent to marketing; Feb: consent withdrawn, all of it (or all to partners, or all to acme).
    The consent question says withdrawn; the opt-out question said "not opted out" (the January grant)."""
    grant = entry(G, -600, offset=3, scope=Scope("marketing"))
    withdrawn = entry(W, -300, offset=5, scope=broad)
    v = view(grant, withdrawn)
    assert v.consent("marketing", "business_partner", "acme").value is False
    r = v.opted_out("marketing", "business_partner", "acme")
    assert r.value is True and r.refs == (withdrawn.ref,)


def test_a_broad_withdrawal_that_does_not_cover_the_question_says_nothing() -> None:
    grant = entry(G, -600, offset=3, scope=Scope("marketing"))
    for other in (Scope("analytics"), Scope(recipient_type="business_partner"), Scope(recipient_id="acme")):
        v = view(grant, entry(W, -300, scope=other))
        assert v.opted_out("marketing").value is False  # our own marketing: the partner scopes do not cover it
    v = view(grant, entry(W, -300, scope=Scope(recipient_id="acme")))
    assert v.opted_out("marketing", "business_partner", "other").value is False  # partner Y: acme's withdrawal


def test_an_unscoped_grant_still_says_nothing_of_marketing() -> None:
    out = entry("MARKETING_OPT_OUT", -600)
    assert view(out, entry(G, -300)).opted_out("marketing").value is True


def test_ipmart_an_old_grant_does_not_undo_the_events_own_opt_out_after_a_withdrawal_of_all_consent() -> None:
    """ipmart's marketing is opt-out. The event itself says the subject opted out; the ledger holds a
    January marketing consent and a February withdrawal of all consent. On main the January grant
    answered "not opted out", the overlay replaced the event's true claim with it: ALLOW."""
    e = sample("ipmart", "ipmart-mkt-noconsent")
    e = replace(e, consent=ConsentState(marketing_opt_out=True), occurred_at=at(30))
    assert evaluate(e, PACKS["ipmart"]).verdict is Verdict.VIOLATION  # on its own word
    grant = entry(G, -600, offset=3, scope=Scope("marketing"))
    withdrawn = entry(W, -300, offset=5)
    j = judge("ipmart", e, grant, withdrawn)
    assert j.decision.verdict is Verdict.VIOLATION
    assert ("opt_out", True, (5,)) in {(r.question, r.value, r.fact_offsets) for r in j.ledger.reads}
    # and the record's own reads reproduce it
    compiled = PACKS["ipmart"]
    again = PackJoin(compiled).judge(e, RecordedView(j.ledger, e.occurred_at), lambda ev: evaluate(ev, compiled))
    assert again.decision == j.decision


def test_ipmart_marketing_after_a_withdrawal_of_all_consent_that_ended_a_marketing_grant() -> None:
    """The event claims nothing (not opted out): the February withdrawal of all consent ended the
    January grant; ipmart's mailer keeps sending on main (ALLOW, the grant cited as 'not opted out')."""
    e = replace(sample("ipmart", "ipmart-mkt-noconsent"), occurred_at=at(30))
    grant = entry(G, -600, offset=3, scope=Scope("marketing"))
    j = judge("ipmart", e, grant, entry(W, -300, offset=5))
    assert j.decision.verdict is Verdict.VIOLATION


def test_a_late_withdrawal_of_all_consent_corrects_the_opt_out_answer_of_a_decision(tmp_path: Path) -> None:
    """The late-fact index asks the opt-out question again: a withdrawal of all consent that arrives
    after a marketing decision (read 'not opted out' from the marketing grant) changes that answer."""
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(G, 0, scope=Scope("marketing")))], KEY)
        audit(store, index, U1, 30, seq=7)
        late = store.apply(0, [(1, fact(W, 10, recorded=40))], KEY)
        (c,) = index.affected(late.applied).corrections
        changed = {ch.query.family: (ch.before, ch.after.value, ch.after.refs) for ch in c.changes}
        assert changed[Family.CONSENT] == (True, False, (FactRef(0, 1),))
        assert changed[Family.OPT_OUT] == (False, True, (FactRef(0, 1),))


def test_a_grant_to_one_partner_or_one_recipient_type_lifts_the_opt_out_for_it_alone() -> None:
    """Opted out of all marketing in January; in March a consent to travel-partner-cn's offers (its id spelled
    otherwise than the events spell it), or to affiliates' offers. Neither lifts the opt-out for another
    partner, another recipient type, or the company's own marketing (no recipient)."""
    out = entry("MARKETING_OPT_OUT", -600)
    to_x = entry(G, -300, scope=Scope("marketing", recipient_id="Travel_Partner_CN"))
    v = view(out, to_x)
    assert v.opted_out("marketing", "business_partner", "travel-partner-cn").value is False
    assert v.opted_out("marketing", "affiliate", "TRAVEL PARTNER CN").value is False  # an id under any type
    assert v.opted_out("marketing", "business_partner", "other-partner").value is True
    assert v.opted_out("marketing", "business_partner", None).value is True
    assert v.opted_out("marketing").value is True
    to_affiliates = entry(G, -300, scope=Scope("Marketing", recipient_type="affiliate"))
    v = view(out, to_affiliates)
    assert v.opted_out("marketing", "Affiliate", "any").value is False
    assert v.opted_out("marketing", "business_partner", "any").value is True
    assert v.opted_out("marketing").value is True
