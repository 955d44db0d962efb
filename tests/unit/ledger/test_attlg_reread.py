"""attlg: a decision read differently is not a late fact (open question (c) of session 7).

After an upgrade that changes how a fact is read (5ea8951 is one: a re-grant after a withdrawal of all
consent now restores a marketing grant on the opt-out question), the late-fact index asked its
decisions their questions again and found answers that differ from the ones recorded, with no fact
arriving late. `recheck` (every chain indexed from the trail: a rebalance, a restart that cannot
resume) wrote a CORRECTION for each decision of the window, naming as its late facts the facts the
decision had read; `affected` folded the re-read answers into the correction of any unrelated late
fact of the subject (a birth date) and named that fact as their cause. The same happens when the
store was rebuilt after retention removed facts the decisions had read.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from auditor.ledger.late import DecisionIndex, DecisionReads
from auditor.ledger.model import FactRef, FactType, Family, Query, Reading, Scope
from auditor.ledger.store import LedgerStore
from tests.unit.ledger.ledgerkit import fact, us
from tests.unit.ledger.test_ledger_late import KEY, U1

CHAIN = "events/0"
OPT_OUT, CONSENT = Query(Family.OPT_OUT, "marketing"), Query(Family.CONSENT, "marketing")
CLOSED = Query(Family.ACCOUNT_CLOSED)


def _facts(store: LedgerStore) -> None:
    """Jan marketing consent, Feb all consent withdrawn, Mar all consent granted (offsets 0-2)."""
    store.apply(0, [(0, fact(FactType.CONSENT_GRANTED, -900, scope=Scope("marketing"))),
                    (1, fact(FactType.CONSENT_WITHDRAWN, -600)),
                    (2, fact(FactType.CONSENT_GRANTED, -300))], KEY)


def _as_read_before(seq: int, through: int) -> DecisionReads:
    """A decision of minute 30 as the code before 5ea8951 read those facts: consent granted (the March
    grant), opted out (the February withdrawal); the account question had no fact."""
    reads = ((CONSENT, Reading(True, (FactRef(0, 2),))), (OPT_OUT, Reading(True, (FactRef(0, 1),))),
             (CLOSED, Reading(None)))
    return DecisionReads(0, U1, us(30), CHAIN, seq, f"ev-{seq}", reads, through_offset=through)


def test_a_decision_indexed_from_the_trail_and_read_differently_now_is_not_corrected(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        _facts(store)
        index.record([_as_read_before(7, through=2)])  # it had read every fact there is
        report = index.recheck({(0, CHAIN)})
        assert report.corrections == () and report.late_facts == 0


def test_a_fact_past_the_decisions_through_offset_still_corrects_it_on_recheck(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        _facts(store)
        store.apply(0, [(3, fact(FactType.ACCOUNT_CLOSED, 10))], KEY)  # after the decision was made
        index.record([_as_read_before(7, through=2)])
        (c,) = index.recheck({(0, CHAIN)}).corrections
        assert c.cause == (FactRef(0, 3),)
        assert {ch.query for ch in c.changes} == {CLOSED, OPT_OUT}  # judged again with the facts as they stand


def test_an_unrelated_late_fact_does_not_carry_a_re_read_answer_into_a_correction(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        _facts(store)
        index.record([_as_read_before(7, through=2)])
        late = store.apply(0, [(3, fact(FactType.BIRTH_DATE, 10, born=date(1990, 1, 1)))], KEY)
        report = index.affected(late.applied)  # the decision never asked for an age
        assert report.corrections == () and report.late_facts == 1
        late = store.apply(0, [(4, fact(FactType.ACCOUNT_CLOSED, 10))], KEY)
        (c,) = index.affected(late.applied).corrections  # this one it asked: corrected, citing it
        assert c.cause == (FactRef(0, 4),)


def test_facts_retention_removed_are_no_late_facts(tmp_path: Path) -> None:
    """The store rebuilt from a topic that lost the January grant: the decision had read it."""
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(1, fact(FactType.CONSENT_WITHDRAWN, -600)), (2, fact(FactType.CONSENT_GRANTED, -300))],
                    KEY)
        reads = ((CONSENT, Reading(True, (FactRef(0, 2),))), (OPT_OUT, Reading(False, (FactRef(0, 0), FactRef(0, 2)))))
        index.record([DecisionReads(0, U1, us(30), CHAIN, 7, "ev-7", reads, through_offset=2)])
        assert index.recheck({(0, CHAIN)}).corrections == ()
