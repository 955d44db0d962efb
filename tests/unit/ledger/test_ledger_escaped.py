"""An event dated back before a withdrawal (ledger, session 9; attlg's open hole).

The ledger judges an event as of its ``occurred_at``, the audited system's word: an event producer can
date an event before a withdrawal and escape it. The auditor cannot tell such an event from one that was
delayed (an offline device, a batch upload), which is not a violation, so it keeps judging at
``occurred_at``; what it can do is say when a verdict rests on that word alone. :func:`escaped` names the
questions whose answer, as of the event's Kafka time less ``EVENT_LAG_US``, is restrictive where the
answer at ``occurred_at`` was not; the daemon counts such events
(``auditor_ledger_events_predated_total{clock}``) and logs their position.
"""

from __future__ import annotations

from pathlib import Path

from auditor.ledger.judging import EVENT_LAG_US, escaped
from auditor.ledger.model import FactType, Family, Query, Reading, Scope
from auditor.ledger.store import LedgerStore
from tests.unit.ledger.ledgerkit import fact, us
from tests.unit.ledger.test_ledger_late import KEY, U1

LAG_MIN = EVENT_LAG_US / 60_000_000


def _reads(store: LedgerStore, minutes: float) -> tuple[tuple[Query, Reading], ...]:
    v = store.view(0, U1, us(minutes))
    v.consent("marketing")
    v.opted_out("marketing")
    return tuple(v.reads)


def test_an_event_logged_after_a_withdrawal_it_predates_is_named(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        store.apply(0, [(0, fact(FactType.CONSENT_WITHDRAWN, 0, scope=Scope("marketing")))], KEY)
        reads = _reads(store, -60)
        assert escaped(store, 0, U1, reads, us(-60), us(30)) == (Family.CONSENT, Family.OPT_OUT)


def test_an_event_logged_in_time_or_before_the_withdrawal_is_not(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        store.apply(0, [(0, fact(FactType.CONSENT_WITHDRAWN, 0, scope=Scope("marketing")))], KEY)
        reads = _reads(store, -2)
        assert escaped(store, 0, U1, reads, us(-2), us(-2 + LAG_MIN)) == ()  # within the lag
        reads = _reads(store, -60)
        assert escaped(store, 0, U1, reads, us(-60), us(-1 + LAG_MIN)) == ()  # logged before it took effect


def test_a_grant_between_the_two_times_is_not_an_escape(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        store.apply(0, [(0, fact(FactType.CONSENT_GRANTED, 0, scope=Scope("marketing")))], KEY)
        reads = _reads(store, -60)
        assert escaped(store, 0, U1, reads, us(-60), us(30)) == ()
