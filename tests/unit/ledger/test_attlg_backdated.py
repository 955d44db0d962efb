"""attlg: a permissive fact backdated by its producer (session 7's open question (b)).

A fact was in force from its ``effective_at`` whatever its ``recorded_at``. A consent platform (or
anyone who can write to the facts topic) that records today a consent "effective" last year turned
every violation the auditor had found since into an ALLOW: each decision in the correction window got a
CORRECTION to ALLOW naming the backdated grant as the late fact, and an event audited later (or judged
again by ``check --ledger``) was allowed outright. No processing was consented to when it happened:
the systems of record held no such consent then. The seeds ask for consent *before* the processing
(thisproduct 2.C "the latter requires your prior consent", 3.A "with your prior consent", its preamble
"without your prior permission"; ipasar 2.7 "Obtain your consent ... to be able to use" Marketing
Data), while a withdrawal binds from when the person made it (ipmart: "At all times, we will offer you
the opportunity to unsubscribe ... if you change your mind"; inper: "you may unsubscribe at any time"),
however late the system recorded it.

Now a permissive fact (a grant, an opt-in, a reopening, a cancelled deletion, a service started) is in
force at t only if it was also recorded by t; a restrictive one from its effective time, as before.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.late import DecisionIndex
from auditor.ledger.model import Entry, FactRef, FactType, Scope
from auditor.ledger.store import LedgerStore
from auditor.policy.decision import Verdict
from tests.unit.ledger.ledgerkit import at, entry, fact
from tests.unit.ledger.test_ledger_join import MKT, judge
from tests.unit.ledger.test_ledger_late import KEY, U1, audit

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN
DAY = 24 * 60


def view(*entries: Entry, minutes: float) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


def test_a_grant_is_not_in_force_before_it_was_recorded() -> None:
    g = entry(G, -365 * DAY, recorded=60, scope=Scope("marketing"))
    assert view(g, minutes=30).consent("marketing").value is None
    assert view(g, minutes=60).consent("marketing").value is True
    w = entry(W, -400 * DAY, scope=Scope("marketing"))
    assert view(w, g, minutes=30).consent("marketing").value is False  # the withdrawal still stands
    assert view(w, g, minutes=30).opted_out("marketing").value is True


def test_a_withdrawal_recorded_late_binds_from_its_effective_time() -> None:
    g = entry(G, -600, scope=Scope("marketing"))
    w = entry(W, -300, recorded=60, scope=Scope("marketing"))
    assert view(g, w, minutes=30).consent("marketing").value is False


def test_every_permissive_kind_waits_for_its_record() -> None:
    out = entry(FactType.MARKETING_OPT_OUT, -600)
    opt_in = entry(FactType.MARKETING_OPT_IN, -300, recorded=60)
    assert view(out, opt_in, minutes=30).opted_out("marketing").value is True
    closed = entry(FactType.ACCOUNT_CLOSED, -600)
    reopened = entry(FactType.ACCOUNT_REOPENED, -300, recorded=60)
    assert view(closed, reopened, minutes=30).account_closed().value is True
    asked = entry(FactType.DELETION_REQUESTED, -600)
    cancelled = entry(FactType.DELETION_CANCELLED, -300, recorded=60)
    assert view(asked, cancelled, minutes=30).deletion_requested().value is True
    g = entry(FactType.GUARDIAN_CONSENT_GRANTED, -300, recorded=60)
    assert view(g, minutes=30).guardian_consent("registration").value is None
    start = entry(FactType.SERVICE_STARTED, -300, recorded=60, service="joint", scope=Scope(recipient_id="acme"))
    assert view(start, minutes=30).service_active(None, "business_partner", "acme").value is None
    assert view(start, minutes=61).service_active(None, "business_partner", "acme").value is True
    marketing = entry(G, -300, recorded=60, scope=Scope("marketing"))  # lifts an opt-out only once recorded
    assert view(out, marketing, minutes=30).opted_out("marketing").value is True
    assert view(out, marketing, minutes=61).opted_out("marketing").value is False


def test_a_grant_recorded_before_the_event_but_read_late_still_corrects_it(tmp_path: Path) -> None:
    """The consent platform's lag is not backdating: recorded at minute 20, read after the minute-30 event."""
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(W, -600, scope=Scope("marketing")))], KEY)
        audit(store, index, U1, 30, seq=7)
        (c,) = index.affected(store.apply(0, [(1, fact(G, 10, recorded=20))], KEY).applied).corrections
        assert c.cause == (FactRef(0, 1),)


def test_a_backdated_grant_does_not_turn_a_past_violation_into_allow(tmp_path: Path) -> None:
    """Withdrawn 400 days ago; a marketing send at minute 30 (judged: withdrawn); an hour later the platform
    records a grant 'effective' a year ago. On main: a CORRECTION, consent granted, citing it."""
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(W, -400 * DAY, scope=Scope("marketing")))], KEY)
        audit(store, index, U1, 30, seq=7)
        report = index.affected(store.apply(0, [(1, fact(G, -365 * DAY, recorded=90))], KEY).applied)
        assert report.corrections == ()
        assert store.view(0, U1, at(30)).consent("marketing").value is False   # check --ledger agrees
        assert store.view(0, U1, at(91)).consent("marketing").value is True    # from its record on


def test_ipasar_judges_a_marketing_send_by_the_consent_on_record_then() -> None:
    e = replace(MKT, occurred_at=at(30))
    w = entry(W, -400 * DAY, offset=3, scope=Scope("marketing"))
    backdated = entry(G, -365 * DAY, offset=9, recorded=90)
    assert judge("ipasar", e, w, backdated).decision.verdict is Verdict.VIOLATION
    assert judge("ipasar", replace(e, occurred_at=at(91)), w, backdated).decision.verdict is Verdict.ALLOW
