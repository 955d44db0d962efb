"""The daemon's facts reader against a hostile or stalling facts log (atl, session 10).

A stub consumer hands over the facts of one partition with the Kafka timestamps a broker gives them;
the reader applies them to a real store. Each test is an attack or a fault found by reading
``auditor/stream/ledgerfeed.py``:

* a producer-stamped (``CreateTime``) fact after broker-stamped ones in the same partition: the facts
  topic's ``message.timestamp.type`` was set back to ``CreateTime`` for a moment (the broker keeps each
  batch's type: ``tests/integration/test_ledger_timestamp_flip.py`` shows it on a real broker), so a grant
  dated back in both its times was taken on its ``recorded_at``;
* a grant the broker stamped early, kept invisible in an open transaction (read_committed readers stop
  at the last stable offset) until after the event it would excuse was audited;
* the logged-late counter counted a fact again each time it was read again (a rewind after a correction
  that did not commit);
* "no progress" raised after a chunk of the round was applied left those facts to be confirmed by the
  next round without the late-fact check (suite's note, session 9).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from auditor.errors import TransientError
from auditor.ledger.asof import LOG_LAG_US, known_us
from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.model import Entry, FactType, LogTime, Scope, SubjectFact, to_us
from auditor.stream import ledgerfeed
from auditor.stream.ledgerfeed import FactsReader, LedgerFeed
from tests.unit.ledger.ledgerkit import T0, at, fact
from tests.unit.stream.streamkit import ledger_feed

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN
MKT = Scope("marketing")
MIN = 60_000_000  # a minute in microseconds
NOW_US = to_us(T0 + timedelta(days=280))  # the broker's and the auditor's clock: long after T0


class Stamped:
    """A consumed message: a fact's bytes at an offset, with its Kafka timestamp (type, ms)."""

    def __init__(self, offset: int, value: bytes, stamp: tuple[int, int]) -> None:
        self._offset, self._value, self._stamp = offset, value, stamp

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return self._stamp


class StubLog:
    """Partition 0 of a facts topic: what is logged, how far it is stable (read_committed readers
    stop there), and a consumer over it that hands over nothing while ``stalled``."""

    def __init__(self) -> None:
        self.messages: list[Stamped] = []
        self.stable: int | None = None  # None: everything logged is stable
        self.position = 0
        self.stalled = False

    def append(self, f: SubjectFact, kind: LogTime, logged_us: int) -> None:
        self.messages.append(Stamped(len(self.messages), encode_fact_single_object(f), (int(kind), logged_us // 1000)))

    def end(self) -> int:
        return len(self.messages) if self.stable is None else self.stable

    # the consumer's calls the reader makes
    def consume(self, n: int, timeout: float) -> list[Stamped]:
        if self.stalled:
            return []
        out = self.messages[self.position:min(self.end(), self.position + n)]
        self.position += len(out)
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.position = tp.offset

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.position = tps[0].offset

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        pass

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, self.end()

    def close(self) -> None:
        pass


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> StubLog:
    stub = StubLog()
    monkeypatch.setattr(ledgerfeed, "Consumer", lambda conf: stub)
    return stub


@pytest.fixture
def feed(tmp_path: Path, log: StubLog) -> Iterator[LedgerFeed]:
    f = ledger_feed(tmp_path)
    reader = FactsReader(f.cfg, f.store, None, f.decoder, f.metrics, f.pseudonymize)  # type: ignore[arg-type]
    reader.ends = lambda: {p: log.end() for p in reader.next}  # type: ignore[method-assign]
    reader.now_us = lambda: NOW_US
    reader.assign({0})
    f.reader = reader
    yield f
    f.close()


def read(feed: LedgerFeed, collect: bool = False) -> ledgerfeed.Pending:
    assert feed.reader is not None
    pending, _ = feed.reader.read_some(0.3, lambda p: collect, lambda: None)
    return pending


def settle(feed: LedgerFeed, pending: ledgerfeed.Pending) -> None:
    assert feed._settle(pending, lambda result: True)


def stored(feed: LedgerFeed, subject: str = "u-1") -> list[Entry]:
    return list(feed.store.history(0, feed.pseudonymize(subject)))


def logged_late(feed: LedgerFeed, clock: str) -> float:
    return feed.metrics.logged_late.labels(clock)._value.get()


# ---------------------------------------------------------------- the timestamp type relabelled

def test_a_producer_stamped_grant_after_a_broker_stamped_fact_is_not_in_force_before_that_fact_was_logged(
        feed: LedgerFeed, log: StubLog) -> None:
    """The topic was LogAppendTime (the withdrawal, logged now), set to CreateTime for one grant that
    says it was recorded an hour after T0, then set back. The broker logged the grant after the withdrawal:
    it is in force no earlier than the withdrawal's log time less the lag."""
    log.append(fact(W, 0, scope=MKT), LogTime.APPEND, NOW_US)
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))  # the producer's claim, dated back
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= NOW_US - LOG_LAG_US
    view = feed.store.view(0, feed.pseudonymize("u-1"), at(120))
    assert view.consent("marketing").value is False


def test_the_bound_from_the_logs_order_outlives_a_restart(feed: LedgerFeed, log: StubLog) -> None:
    """The broker's time of the facts confirmed is kept with the store: a relabelled grant read by a new
    reader (a restart: nothing in memory) is bounded by it too."""
    log.append(fact(W, 0, scope=MKT), LogTime.APPEND, NOW_US)
    settle(feed, read(feed))
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))
    reader = FactsReader(feed.cfg, feed.store, None, feed.decoder, feed.metrics,  # type: ignore[arg-type]
                         feed.pseudonymize)
    reader.ends = lambda: {p: log.end() for p in reader.next}  # type: ignore[method-assign]
    reader.now_us = lambda: NOW_US
    reader.assign({0})
    feed.reader = reader
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= NOW_US - LOG_LAG_US


def test_a_store_confirmed_before_it_kept_the_bound_finds_the_broker_time_in_its_facts(
        feed: LedgerFeed, log: StubLog) -> None:
    """A store written by the code before (facts confirmed, no bound kept: an upgrade). The reader resumes
    past the broker-stamped facts, so it never reads them again: the bound comes from the store's facts."""
    log.append(fact(W, 0, scope=MKT), LogTime.APPEND, NOW_US)
    feed.store.apply(0, [(0, fact(W, 0, scope=MKT))], feed.pseudonymize, logged={0: (NOW_US, LogTime.APPEND)})
    assert feed.reader is not None
    feed.reader.assign(set())
    feed.reader.assign({0})  # the store now holds offset 0: resumes at 1
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= NOW_US - LOG_LAG_US


def test_producer_stamped_history_before_the_first_broker_stamped_fact_keeps_its_recorded_at(
        feed: LedgerFeed, log: StubLog) -> None:
    """The README's advice: a CreateTime topic set to LogAppendTime. What was logged before the switch is
    history, taken on its recorded_at as before (held: passes before and after the fix)."""
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))
    log.append(fact(W, 600, scope=MKT, subject="u-2"), LogTime.APPEND, NOW_US)
    settle(feed, read(feed))
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is True


def test_a_known_minors_birth_date_changed_to_an_adults_while_the_topic_was_relabelled_changes_nothing_before(
        feed: LedgerFeed, log: StubLog) -> None:
    """Minors: u-1's birth date (a minor) is on record, broker-stamped at T0, and the partition is quiet:
    the broker's time before the next fact is T0. A second birth date (an adult), effective and recorded
    as early, is produced at T0+3h while the topic is set to CreateTime. The auditor had read the partition
    to its end at T0+3h without it: not known before then, so u-1 stays a known minor at T0+2h."""
    from datetime import date

    minor, adult = date(2012, 5, 1), date(1980, 5, 1)
    log.append(fact(FactType.BIRTH_DATE, 0, born=minor), LogTime.APPEND, to_us(at(0)) + 1_000_000)
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))
    log.append(fact(FactType.BIRTH_DATE, 0, born=adult, recorded=1), LogTime.CREATE, to_us(at(1)))
    feed.reader.now_us = lambda: to_us(at(181))
    settle(feed, read(feed))
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).minor(18).value is True


def test_a_tombstone_for_a_subject_removes_none_of_its_facts_from_the_store(feed: LedgerFeed, log: StubLog) -> None:
    """Minors, removed: a record with no value keyed by the subject (what deletes a key on a compacted
    topic) is refused as undecodable; the birth date on record stays (held: before and after). What
    compaction or retention deletes from the topic is gone from a store rebuilt from it: topics create
    and the daemon now say so (test_ledger_facts_topic.py)."""
    from datetime import date

    log.append(fact(FactType.BIRTH_DATE, 0, born=date(2012, 5, 1)), LogTime.APPEND, to_us(at(0)))
    log.messages.append(Stamped(1, b"", (int(LogTime.APPEND), to_us(at(1)) // 1000)))
    settle(feed, read(feed))
    assert feed.metrics.rejected.labels("undecodable")._value.get() == 1
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).minor(18).value is True


def test_a_producer_stamped_grant_in_a_quiet_partition_of_a_log_append_time_topic_is_bounded_by_the_auditors_read(
        feed: LedgerFeed, log: StubLog) -> None:
    """The topic was switched to LogAppendTime (the daemon saw it so), and this partition has had no fact
    since: no broker time in it. The insider sets the topic back to CreateTime for one grant dated back.
    The daemon had read the partition's end at T0+3h without it: not in force before then (less the lag)."""
    log.append(fact(W, 0, scope=MKT), LogTime.CREATE, to_us(at(0)))  # history, before the switch
    assert feed.reader is not None
    feed.reader.broker_stamped = True  # LedgerFeed._check_facts_config saw LogAppendTime
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))
    feed.reader.now_us = lambda: to_us(at(181))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert (grant.logged_by, known_us(grant)) == (LogTime.BOUND, to_us(at(180)) - LOG_LAG_US)
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is False
    withdrawal = next(e for e in stored(feed) if e.type is W)
    assert withdrawal.logged_by is LogTime.CREATE  # read before the daemon's first look: history


# ---------------------------------------------------------------- a grant held in an open transaction

def test_a_grant_hidden_in_an_open_transaction_is_not_in_force_before_the_auditor_could_read_it(
        feed: LedgerFeed, log: StubLog) -> None:
    """The broker stamps a record when it is written, not when its transaction commits. A grant written at
    T0+1h in a transaction left open is invisible to read_committed readers; the event at T0+2h is judged
    without it (the auditor read the partition's stable end below it, at T0+3h); the commit at T0+4h makes
    it visible. It was not on record for the auditor before T0+3h: in force no earlier than that less the
    lag, so the event is not corrected to ALLOW."""
    log.append(fact(W, 0, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(0)))
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)))
    log.stable = 1
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))
    log.stable = None
    feed.reader.now_us = lambda: to_us(at(240))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= to_us(at(180)) - LOG_LAG_US
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is None


def test_the_last_read_before_a_stop_bounds_a_grant_committed_while_the_daemon_was_down(
        feed: LedgerFeed, log: StubLog) -> None:
    """The open transaction across a restart: the daemon read the partition's end below the grant at T0+3h
    (no fact since the last confirmed, at T0) and stopped; the grant was committed while it was down. The
    new reader bounds it by that last read, kept at the stop."""
    log.append(fact(W, 0, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(0)))
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)))
    log.stable = 1
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(1))
    settle(feed, read(feed))  # the withdrawal, confirmed at T0+1m
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))  # nothing new: the end still below the grant at T0+3h
    feed.reader.close()  # the daemon stops
    log.stable = None  # committed while it was down
    reader = FactsReader(feed.cfg, feed.store, None, feed.decoder, feed.metrics,  # type: ignore[arg-type]
                         feed.pseudonymize)
    reader.ends = lambda: {p: log.end() for p in reader.next}  # type: ignore[method-assign]
    reader.now_us = lambda: to_us(at(240))
    reader.assign({0})
    feed.reader = reader
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) == to_us(at(180)) - LOG_LAG_US


def test_a_grant_committed_within_the_lag_still_counts_from_its_recorded_at(feed: LedgerFeed, log: StubLog) -> None:
    """The platform's ordinary lag (held: passes before and after): logged a second after it was recorded,
    read a minute later; in force from its recorded_at."""
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)) + 1_000_000)
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(59))
    settle(feed, read(feed))  # nothing yet: an observation of the empty partition
    feed.reader.now_us = lambda: to_us(at(61))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) == to_us(at(60))


# ---------------------------------------------------------------- counted once

def test_a_fact_logged_late_is_counted_once_though_read_again_after_a_rewind(feed: LedgerFeed, log: StubLog) -> None:
    log.append(fact(G, 0, scope=MKT), LogTime.APPEND, NOW_US)  # recorded at T0, logged 280 days later
    assert feed.reader is not None
    read(feed)  # its correction did not commit: read again (what _settle does)
    feed.reader.rewind([0])
    settle(feed, read(feed))
    assert logged_late(feed, "broker") == 1


def test_a_fact_logged_late_is_counted_when_confirmed(feed: LedgerFeed, log: StubLog) -> None:
    log.append(fact(G, 0, scope=MKT), LogTime.CREATE, NOW_US)
    settle(feed, read(feed))
    assert logged_late(feed, "producer") == 1


# ---------------------------------------------------------------- no progress mid-round

def test_facts_applied_before_a_stall_are_checked_for_late_effects_before_they_are_confirmed(
        feed: LedgerFeed, log: StubLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round applies its facts CHUNK at a time; a stall after the first chunk raised "no progress" and
    dropped what had been applied, while the reader's position stayed past it: the next round confirmed
    those facts without their late-fact check. The next round must hand them over again."""
    monkeypatch.setattr(ledgerfeed, "CHUNK", 3)
    for i in range(5):
        log.append(fact(W, i, scope=MKT, subject=f"u-{i}"), LogTime.APPEND, NOW_US)
    real = log.consume

    def stall_after_three(n: int, timeout: float) -> list[Stamped]:
        if log.position >= 3:
            log.stalled = True
        return real(min(n, 3 - log.position) if log.position < 3 else n, timeout)

    log.consume = stall_after_three  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        read(feed, collect=True)
    assert feed.store.high_offset(0) == -1  # nothing confirmed
    log.stalled = False
    log.consume = real  # type: ignore[method-assign]
    pending = read(feed, collect=True)
    assert sorted(a.entry.offset for a in pending.applied) == [0, 1, 2, 3, 4]
    assert pending.high == {0: 4}


def test_a_stall_whose_partitions_cannot_be_rewound_assigns_them_again_from_the_store(
        feed: LedgerFeed, log: StubLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stall, and the consumer refuses the seek (a partition not fetching yet): the partitions are
    unassigned, and the next round (before_batch assigns the owned partitions first) reads from the store's
    position, so the applied facts are handed over again."""
    from confluent_kafka import KafkaError, KafkaException

    monkeypatch.setattr(ledgerfeed, "CHUNK", 3)
    for i in range(5):
        log.append(fact(W, i, scope=MKT, subject=f"u-{i}"), LogTime.APPEND, NOW_US)
    real = log.consume

    def stall_after_three(n: int, timeout: float) -> list[Stamped]:
        if log.position >= 3:
            log.stalled = True
        return real(min(n, 3 - log.position) if log.position < 3 else n, timeout)

    def refuse(tp: TopicPartition) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE))

    log.consume = stall_after_three  # type: ignore[method-assign]
    log.seek = refuse  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        read(feed, collect=True)
    log.stalled = False
    log.consume = real  # type: ignore[method-assign]
    assert feed.reader is not None
    feed.reader.assign({0})
    pending = read(feed, collect=True)
    assert sorted(a.entry.offset for a in pending.applied) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- an event counted once as predated

class EventMessage:
    """An event's message as the processor hands it to the join: its position and Kafka timestamp."""

    def __init__(self, offset: int, logged_us: int) -> None:
        self._offset, self._logged_us = offset, logged_us

    def topic(self) -> str:
        return "events"

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return int(LogTime.APPEND), self._logged_us // 1000


def test_an_event_judged_again_after_an_abort_is_counted_once_as_predated(feed: LedgerFeed, log: StubLog) -> None:
    """auditor_ledger_events_predated_total counted each judging: a batch judged again after its transaction
    aborted (or read again after a restart before its commit) counted its predated events again."""
    import json
    from dataclasses import replace

    from auditor.events.codec import event_from_mapping

    log.append(fact(W, 0, scope=MKT), LogTime.APPEND, to_us(at(0)))
    settle(feed, read(feed))
    line = next(raw for raw in (Path(__file__).resolve().parents[2] / "data" / "events" / "ipasar.jsonl")
                .read_text().splitlines() if '"event_id":"ipasar-mkt-consent"' in raw.replace(" ", ""))
    e = event_from_mapping(json.loads(line))
    event = replace(e, occurred_at=at(-60), subject=replace(e.subject, id="u-1"))  # dated before the withdrawal
    evaluator = feed.processor.evaluators["ipasar"]
    for _ in range(2):  # judged, the transaction aborts, judged again
        feed.judge(event, evaluator, 0, EventMessage(7, to_us(at(30))))
    feed.judge(event, evaluator, 0, EventMessage(8, to_us(at(30))))  # another event: counted
    assert feed.metrics.predated.labels("broker")._value.get() == 2


# ---------------------------------------------------------------- a withdrawal dated forward

def test_a_withdrawal_dated_forward_binds_from_its_effective_at_and_is_logged(feed: LedgerFeed, log: StubLog) -> None:
    """The audited system publishes the person's withdrawal made at T0 as taking effect 30 days later (its
    recorded_at moved too; the broker logged it at T0). It binds from its effective_at, as the README decided
    (the auditor cannot tell a date the person asked for from one moved forward), and is now logged with its
    position for an investigator. A withdrawal in time, and a service ended on a date agreed, are not."""
    from structlog.testing import capture_logs

    month = 30 * 24 * 60
    log.append(fact(W, month, scope=MKT, recorded=month), LogTime.APPEND, to_us(at(0)))
    log.append(fact(W, 1, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(1)))
    log.append(fact(FactType.SERVICE_ENDED, month, subject="u-3", service="joint"), LogTime.APPEND, to_us(at(2)))
    with capture_logs() as logs:
        settle(feed, read(feed))
    forward = [e for e in logs if "takes effect well after" in e["event"]]
    assert [(e["offset"], e["type"], e["ahead_s"]) for e in forward] == [(0, "CONSENT_WITHDRAWN", month * 60)]
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is None
