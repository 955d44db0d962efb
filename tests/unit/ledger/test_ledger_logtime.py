"""A fact's Kafka timestamp against its stated ``recorded_at`` (ledger, session 9; attlg's open hole).

99cf102 holds a permissive fact back until its ``recorded_at``, but ``recorded_at`` is the producer's
word: a grant published today saying it was recorded (and effective) a year ago, after a withdrawal,
still turned the year's violations into ALLOW. The store now keeps each fact's Kafka timestamp and whose
clock it is. A broker's ``LogAppendTime`` is not the producer's to choose: a permissive fact is in force
no earlier than its log time less ``LOG_LAG_US`` (the producing system's lag and clock skew). A
``CreateTime`` is the producing client's clock, a claim like ``recorded_at``: kept, not trusted (the
daemon counts such a fact). Restrictive facts are unchanged: a withdrawal binds from its effective time
(ipmart "At all times ... unsubscribe", inper "you may unsubscribe at any time"), the earliest claim.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from auditor.ledger.asof import LOG_LAG_US, SubjectView, known_us, normalise
from auditor.ledger.late import DecisionIndex
from auditor.ledger.model import Entry, FactType, LogTime, Scope
from auditor.ledger.store import LedgerStore, decode_entry, encode_entry, pseudonym_bytes
from auditor.policy.decision import Verdict
from tests.unit.ledger.ledgerkit import at, entry, fact, us
from tests.unit.ledger.test_ledger_join import MKT, judge
from tests.unit.ledger.test_ledger_late import KEY, U1, audit

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN
DAY = 24 * 60
LAG_MIN = LOG_LAG_US / 60_000_000


def logged(e: Entry, minutes: float, by: LogTime = LogTime.APPEND) -> Entry:
    return e._replace(logged_us=us(minutes), logged_by=by)


def view(*entries: Entry, minutes: float) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


def test_a_grant_the_broker_logged_late_is_in_force_only_from_its_log_time() -> None:
    w = entry(W, -400 * DAY, scope=Scope("marketing"))
    g = logged(entry(G, -365 * DAY, recorded=-365 * DAY, scope=Scope("marketing")), 120)
    assert view(w, g, minutes=30).consent("marketing").value is False
    assert view(w, g, minutes=120 - LAG_MIN - 1).consent("marketing").value is False
    assert view(w, g, minutes=120 - LAG_MIN).consent("marketing").value is True
    assert known_us(g) == us(120) - LOG_LAG_US


def test_the_producers_create_time_is_a_claim_and_changes_nothing() -> None:
    w = entry(W, -400 * DAY, scope=Scope("marketing"))
    g = logged(entry(G, -365 * DAY, recorded=-365 * DAY, scope=Scope("marketing")), 120, LogTime.CREATE)
    assert view(w, g, minutes=30).consent("marketing").value is True  # recorded_at stands (as for a file)


def test_the_platforms_lag_within_the_bound_does_not_hold_a_grant_back() -> None:
    g = logged(entry(G, 10, recorded=20), 20 + LAG_MIN)
    assert view(g, minutes=20).consent("marketing").value is True


def test_every_permissive_kind_waits_for_the_broker_and_no_restrictive_kind_does() -> None:
    out = entry(FactType.MARKETING_OPT_OUT, -600)
    opt_in = logged(entry(FactType.MARKETING_OPT_IN, -300, recorded=-300), 600)
    assert view(out, opt_in, minutes=30).opted_out("marketing").value is True
    start = logged(entry(FactType.SERVICE_STARTED, -300, recorded=-300, service="joint",
                         scope=Scope(recipient_id="acme")), 600)
    assert view(start, minutes=30).service_active(None, "business_partner", "acme").value is None
    closed = logged(entry(FactType.ACCOUNT_CLOSED, -300, recorded=-300), 600)
    assert view(closed, minutes=30).account_closed().value is True  # binds from its effective time
    withdrawn = logged(entry(W, -300, recorded=-300, scope=Scope("marketing")), 600)
    assert view(withdrawn, minutes=30).consent("marketing").value is False


def test_the_store_keeps_the_log_time_and_its_clock(tmp_path: Path) -> None:
    e = logged(entry(G, 5, scope=Scope("marketing")), 9)
    pseudonym = pseudonym_bytes(U1)
    assert decode_entry(*encode_entry(pseudonym, e)) == e
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        store.apply(0, [(0, fact(G, 5)), (1, fact(W, 6))], KEY, logged={0: (us(9), LogTime.APPEND)})
        first, second = store.history(0, U1)
        assert (first.logged_us, first.logged_by) == (us(9), LogTime.APPEND)
        assert (second.logged_us, second.logged_by) == (-1, LogTime.NONE)


def test_a_grant_backdated_in_both_its_times_does_not_correct_a_past_violation(tmp_path: Path) -> None:
    """Withdrawn 400 days ago; a marketing send at minute 30; at minute 90 a grant reaches the log saying it
    was recorded and effective a year ago. Before: a CORRECTION to consent granted, citing it."""
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(W, -400 * DAY, scope=Scope("marketing")))], KEY)
        audit(store, index, U1, 30, seq=7)
        backdated = fact(G, -365 * DAY, recorded=-365 * DAY)
        report = index.affected(store.apply(0, [(1, backdated)], KEY, logged={1: (us(90), LogTime.APPEND)}).applied)
        assert report.corrections == ()
        assert store.view(0, U1, at(30)).consent("marketing").value is False
        assert store.view(0, U1, at(90)).consent("marketing").value is True


def test_ipasar_judges_by_what_the_broker_logged_in_time() -> None:
    e = replace(MKT, occurred_at=at(30))
    w = entry(W, -400 * DAY, offset=3, scope=Scope("marketing"))
    backdated = logged(entry(G, -365 * DAY, offset=9, recorded=-365 * DAY), 90)
    assert judge("ipasar", e, w, backdated).decision.verdict is Verdict.VIOLATION
    assert judge("ipasar", replace(e, occurred_at=at(91)), w, backdated).decision.verdict is Verdict.ALLOW
