"""Late facts: which audited decisions a fact that arrives late would have changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.ledger.asof import answer
from auditor.ledger.late import DecisionIndex, DecisionReads
from auditor.ledger.model import FactRef, Family, Query, Reading
from auditor.ledger.store import LedgerStore
from auditor.trail.keys import Pseudonymizer
from tests.unit.ledger.ledgerkit import fact, us

KEY = Pseudonymizer(b"k" * 32)
U1, U2 = KEY("u-1"), KEY("u-2")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as s:
        yield s


def audit(store: LedgerStore, index: DecisionIndex, pseudonym: str, minutes: float, seq: int,
          partition: int = 0) -> DecisionReads:
    """What the daemon does per event: read the ledger as of the event, then index the reads."""
    v = store.view(partition, pseudonym, us(minutes))
    v.consent("marketing")
    v.opted_out("marketing")
    d = DecisionReads(partition, pseudonym, v.at_us, f"events/{partition}", seq, f"ev-{seq}", tuple(v.reads))
    index.record([d])
    return d


def test_a_withdrawal_that_arrives_after_the_event_was_audited_yields_a_correction(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    audit(store, index, U1, 30, seq=7)          # consent in force: allowed
    audit(store, index, U1, 5, seq=8)
    late = store.apply(0, [(1, fact("CONSENT_WITHDRAWN", 10, recorded=40))], KEY)
    report = index.affected(late.applied)
    assert [(c.event_id, c.seq) for c in report.corrections] == [("ev-7", 7)]  # ev-8 came before the withdrawal
    (c,) = report.corrections
    assert c.changes == ((Query(Family.CONSENT, "marketing"), True, Reading(False, (FactRef(0, 1),), us(10))),)
    assert c.cause == (FactRef(0, 1),)
    assert (c.chain_id, c.occurred_us, c.partition, c.pseudonym) == ("events/0", us(30), 0, U1)
    assert report.late_facts == 1 and report.beyond_window == 0


def test_a_fact_effective_after_every_audited_event_is_not_late(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    audit(store, index, U1, 30, seq=1)
    report = index.affected(store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 31))], KEY).applied)
    assert report.corrections == () and report.late_facts == 0


def test_a_late_fact_that_changes_no_answer_needs_no_correction(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 0))], KEY)
    audit(store, index, U1, 30, seq=1)
    report = index.affected(store.apply(0, [(1, fact("CONSENT_WITHDRAWN", 10))], KEY).applied)
    assert report.corrections == () and report.late_facts == 1
    other = index.affected(store.apply(0, [(2, fact("ACCOUNT_CLOSED", 10))], KEY).applied)
    assert other.corrections == ()  # the decision never asked about the account


def test_only_the_subjects_own_decisions_are_corrected(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    audit(store, index, U1, 30, seq=1)
    audit(store, index, U2, 30, seq=2)
    audit(store, index, U1, 30, seq=3, partition=1)
    report = index.affected(store.apply(0, [(0, fact("MARKETING_OPT_OUT", 0, subject="u-1"))], KEY).applied)
    assert [c.event_id for c in report.corrections] == ["ev-1"]


def test_a_late_fact_that_was_never_known_turns_unknown_into_an_answer(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    audit(store, index, U1, 30, seq=1)  # ledger silent: consent None
    (c,) = index.affected(store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY).applied).corrections
    assert c.changes[0].before is None and c.changes[0].after.value is True


def test_acknowledged_corrections_are_not_reported_again(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    audit(store, index, U1, 30, seq=1)
    first = index.affected(store.apply(0, [(1, fact("CONSENT_WITHDRAWN", 10))], KEY).applied)
    assert len(first.corrections) == 1
    index.acknowledge(first.corrections)
    again = index.affected(store.apply(0, [(2, fact("CONSENT_WITHDRAWN", 12))], KEY).applied)
    assert again.corrections == ()
    back = index.affected(store.apply(0, [(3, fact("CONSENT_GRANTED", 20))], KEY).applied)
    assert [c.changes[0].after.value for c in back.corrections] == [True]


def test_a_birth_date_correction_reaches_decisions_that_read_the_age(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    store.apply(0, [(0, fact("BIRTH_DATE", -10**6, born=date(1990, 1, 1)))], KEY)
    v = store.view(0, U1, us(0))
    assert v.minor(18).value is False
    index.record([DecisionReads(0, U1, v.at_us, "events/0", 1, "ev-1", tuple(v.reads))])
    fix = fact("BIRTH_DATE", -10**6, recorded=-1, born=date(2012, 1, 1))  # on record before the event, read late
    (c,) = index.affected(store.apply(0, [(1, fix)], KEY).applied).corrections
    assert c.changes[0].before == date(1990, 1, 1) and c.changes[0].after.value == date(2012, 1, 1)


def test_the_window_drops_old_decisions_and_counts_facts_beyond_it(store: LedgerStore) -> None:
    index = DecisionIndex(store, window=timedelta(minutes=60))
    audit(store, index, U1, 0, seq=1)
    audit(store, index, U1, 50, seq=2)
    assert index.horizon_us() is None
    audit(store, index, U1, 100, seq=3)   # newest 100: decisions before minute 40 are dropped
    assert index.count() == 2 and index.horizon_us() == us(0) + 1
    report = index.affected(store.apply(0, [(0, fact("CONSENT_WITHDRAWN", -5))], KEY).applied)
    assert sorted(c.event_id for c in report.corrections) == ["ev-2", "ev-3"]
    assert report.beyond_window == 1


def test_the_index_stays_within_its_byte_bound(store: LedgerStore) -> None:
    index = DecisionIndex(store, window=timedelta(days=3650), max_bytes=256 * 1024)
    for batch in range(20):
        reads = []
        for i in range(200):
            seq = batch * 200 + i
            v = store.view(0, KEY(f"u-{seq % 500}"), us(seq))
            v.consent("marketing")
            reads.append(DecisionReads(0, KEY(f"u-{seq % 500}"), v.at_us, "events/0", seq, f"ev-{seq}", tuple(v.reads)))
        index.record(reads)
    stats = store.stats()
    assert stats["decisions_bytes"] <= 256 * 1024
    assert 0 < index.count() < 4000
    assert index.horizon_us() is not None and index.horizon_us() > us(0)


def test_dropping_a_partition_drops_its_decisions(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    audit(store, index, U1, 0, seq=1, partition=0)
    audit(store, index, U1, 0, seq=2, partition=1)
    store.drop_partition(0)
    assert index.count() == 1
    with store.env.begin(db=store.decisions_by_time) as txn:
        assert txn.stat(store.decisions_by_time)["entries"] == 1


FACT_TYPES = ["CONSENT_GRANTED", "CONSENT_WITHDRAWN", "MARKETING_OPT_OUT", "MARKETING_OPT_IN"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FACT_TYPES), st.integers(0, 10), st.sampled_from(["u-1", "u-2"])),
                max_size=6),
       st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["u-1", "u-2"])), min_size=1, max_size=8),
       st.lists(st.tuples(st.sampled_from(FACT_TYPES), st.integers(0, 12), st.sampled_from(["u-1", "u-2"])),
                min_size=1, max_size=4))
def test_corrections_are_exactly_the_decisions_whose_answers_changed(
        tmp_path_factory: pytest.TempPathFactory, before: list, events: list, late: list) -> None:  # type: ignore[type-arg]
    with LedgerStore(tmp_path_factory.mktemp("l") / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(i, fact(t, m, subject=s)) for i, (t, m, s) in enumerate(before)], KEY)
        decided = {seq: audit(store, index, KEY(s), m, seq) for seq, (m, s) in enumerate(events)}
        start = len(before)
        applied = store.apply(0, [(start + i, fact(t, m, subject=s)) for i, (t, m, s) in enumerate(late)], KEY).applied
        report = index.affected(applied)
        changed = set()
        for seq, d in decided.items():
            history = store.history(0, d.pseudonym)
            if any(answer(history, d.occurred_us, q).value != r.value for q, r in d.reads):
                changed.add(seq)
        assert {c.seq for c in report.corrections} == changed
        index.acknowledge(report.corrections)
        assert index.affected(applied).corrections == ()  # the trail now says what the ledger says


def test_the_payload_recorded_with_a_decision_comes_back_with_its_correction(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    v = store.view(0, U1, us(30))
    v.consent("marketing")
    blob = bytes(range(256)) * 3  # any bytes, e.g. the record's facts to re-judge the event from
    index.record([DecisionReads(0, U1, v.at_us, "events/0", 1, "ev-1", tuple(v.reads), blob)])
    (c,) = index.affected(store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 0))], KEY).applied).corrections
    assert c.payload == blob
    index.acknowledge([c])
    (c2,) = index.affected(store.apply(0, [(1, fact("CONSENT_GRANTED", 10))], KEY).applied).corrections
    assert c2.payload == blob


# ---------------------------------------------------------------- decisions indexed from the trail (l12b)

def indexed_elsewhere(store: LedgerStore, pseudonym: str, minutes: float, seq: int, chain: str = "events/0",
                      partition: int = 0) -> DecisionReads:
    """A decision another instance made: its reads as of the facts it had then (its through_offset)."""
    v = store.view(partition, pseudonym, us(minutes))
    v.consent("marketing")
    v.opted_out("marketing")
    return DecisionReads(partition, pseudonym, v.at_us, chain, seq, f"ev-{seq}", tuple(v.reads), b"rec",
                         v.through_offset)


def test_a_decision_indexed_from_the_trail_after_its_late_fact_was_applied_is_rechecked(store: LedgerStore) -> None:
    # another instance decided with the grant only; the withdrawal reached this instance's store
    # before the decision was indexed here, so affected() never sees it: recheck() must
    store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    before = indexed_elsewhere(store, U1, 30, seq=4)
    early = indexed_elsewhere(store, U1, 5, seq=3)
    other = indexed_elsewhere(store, U2, 30, seq=5)
    store.apply(0, [(1, fact("CONSENT_WITHDRAWN", 10, recorded=40)), (2, fact("MARKETING_OPT_IN", 31))], KEY)
    index = DecisionIndex(store)
    index.record([before, early, other])
    assert index.affected(()).corrections == ()
    report = index.recheck([(0, "events/0")])
    assert [(c.event_id, c.seq, c.payload) for c in report.corrections] == [("ev-4", 4, b"rec")]
    (c,) = report.corrections
    assert c.changes == ((Query(Family.CONSENT, "marketing"), True, Reading(False, (FactRef(0, 1),), us(10))),)
    assert c.cause == (FactRef(0, 1),)  # past its through_offset and in force by its time; not the opt-in
    assert report.late_facts == 1
    index.acknowledge(report.corrections)
    assert index.recheck([(0, "events/0")]).corrections == ()
    assert index.recheck([(0, "events/1")]).corrections == ()  # another chain of the partition


def test_forgetting_a_chain_drops_its_decisions_only(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    index.record([indexed_elsewhere(store, U1, 1, 1, "a/0"), indexed_elsewhere(store, U2, 2, 2, "a/0"),
                  indexed_elsewhere(store, U1, 3, 3, "b/0"), indexed_elsewhere(store, U1, 4, 4, "a/1", partition=1)])
    assert index.forget_chains([(0, "a/0")]) == 2
    assert index.count() == 2
    with store.env.begin(db=store.decisions_by_time) as txn:
        assert txn.stat(store.decisions_by_time)["entries"] == 2
    store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 0))], KEY)
    assert {c.chain_id for c in index.recheck([(0, "a/0"), (0, "b/0"), (1, "a/1")]).corrections} == {"b/0"}


def test_an_acknowledged_correction_can_replace_the_payload_with_the_correction_record(store: LedgerStore) -> None:
    index = DecisionIndex(store)
    v = store.view(0, U1, us(30))
    v.consent("marketing")
    index.record([DecisionReads(0, U1, v.at_us, "events/0", 1, "ev-1", tuple(v.reads), b"decision")])
    (c,) = index.affected(store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 0))], KEY).applied).corrections
    index.acknowledge([c], {("events/0", 1): b"correction", ("events/0", 2): b"another"})
    (c2,) = index.affected(store.apply(0, [(1, fact("CONSENT_GRANTED", 10))], KEY).applied).corrections
    assert (c2.seq, c2.payload) == (1, b"correction")  # compared with what the trail says last


def test_chain_markers_follow_the_index_and_are_dropped_with_it(store: LedgerStore) -> None:
    now = [1_000.0]
    index = DecisionIndex(store, clock=lambda: now[0])
    assert index.marker(0, "a/0") is None
    index.record([indexed_elsewhere(store, U1, 1, 4, "a/0"), indexed_elsewhere(store, U2, 2, 9, "a/0")])
    assert index.marker(0, "a/0") == (9, 1_000_000, None)
    now[0] = 2_000.0
    index.record([indexed_elsewhere(store, U1, 3, 20, "a/0")], marks={})  # read back: not advanced yet
    assert index.marker(0, "a/0") == (9, 1_000_000, None)
    index.left(0, "a/0", 41)
    assert index.marker(0, "a/0") == (9, 1_000_000, 41)
    index.mark({(0, "a/0"): 25})
    assert index.marker(0, "a/0") == (25, 2_000_000, None)  # indexed again: no longer left
    index.mark({(0, "a/0"): 3})
    assert index.marker(0, "a/0").seq == 25  # type: ignore[union-attr]  # never backwards
    index.record([indexed_elsewhere(store, U1, 3, 2, "b/1", partition=1)])
    index.forget_chains([(0, "a/0")])
    assert index.marker(0, "a/0") is None and index.marker(1, "b/1") is not None
    store.drop_partition(1)
    assert index.marker(1, "b/1") is None
