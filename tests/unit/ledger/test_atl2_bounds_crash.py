"""Attacks on the facts reader's log-time bounds (atl2, session 10): what a crash or a restart loses.

The bound atl added (a fact counts as logged no earlier than the auditor's last read of its partition's
stable end below it) lived in memory between confirms: kept at a clean stop, lost by a kill -9. And the
rule "once the daemon has seen the topic configured LogAppendTime" was forgotten at each restart.
Reuses the stub log of ``test_ledger_factsreader.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.ledger.asof import LOG_LAG_US, known_us
from auditor.ledger.model import LogTime, to_us
from auditor.stream.ledgerfeed import FactsReader, LedgerFeed
from tests.unit.ledger.ledgerkit import at, fact
from tests.unit.ledger.test_ledger_factsreader import MKT, G, StubLog, W, feed, log, read, settle, stored

__all__ = ["feed", "log"]  # the fixtures


def new_reader(feed: LedgerFeed, log: StubLog, now: int) -> FactsReader:
    """A daemon started again over the same store: nothing in memory (after kill -9: no close())."""
    reader = FactsReader(feed.cfg, feed.store, None, feed.decoder, feed.metrics,  # type: ignore[arg-type]
                         feed.pseudonymize)
    reader.ends = lambda: {p: log.end() for p in reader.next}  # type: ignore[method-assign]
    reader.now_us = lambda: now
    reader.assign({0})
    feed.reader = reader
    return reader


def test_a_kill_between_applying_and_confirming_keeps_the_read_that_bounds_a_late_committed_grant(
        feed: LedgerFeed, log: StubLog) -> None:
    """The grant (written at T0+1h in a transaction left open, dated back) is invisible at T0+3h; it is
    committed, read and applied at T0+4h, and the daemon is killed before it confirms (before its
    correction is durable). The new process reads the grant again: before, the read at T0+3h was lost with
    the process and the grant counted from its broker time (T0+1h): in force for the event at T0+2h."""
    log.append(fact(W, 0, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(0)))
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)))
    log.stable = 1
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(1))
    settle(feed, read(feed))  # the withdrawal confirmed at T0+1m
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))  # the end still below the grant at T0+3h: nothing to confirm
    log.stable = None
    feed.reader.now_us = lambda: to_us(at(240))
    read(feed)  # the grant applied, not confirmed: kill -9 here (no close, no settle)
    new_reader(feed, log, to_us(at(241)))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= to_us(at(180)) - LOG_LAG_US
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is None


def test_a_kill_while_the_transaction_is_open_keeps_the_auditors_reads_of_the_stalled_end(
        feed: LedgerFeed, log: StubLog) -> None:
    """Same, but the daemon is killed while the transaction is still open (its reads of the stalled end
    since the last confirm only in memory), and the grant is committed while it is down."""
    log.append(fact(W, 0, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(0)))
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)))
    log.stable = 1
    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(1))
    settle(feed, read(feed))
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))  # the stalled end read at T0+3h; then kill -9
    log.stable = None  # committed while it is down
    new_reader(feed, log, to_us(at(240)))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) >= to_us(at(180)) - LOG_LAG_US


@pytest.mark.parametrize("at_restart", ["CreateTime", "unreachable"])
def test_the_topic_seen_log_append_time_is_remembered_across_a_restart(
        tmp_path: Path, feed: LedgerFeed, log: StubLog, monkeypatch: Any, at_restart: str) -> None:
    """The daemon saw the facts topic configured LogAppendTime; an insider sets it to CreateTime and the
    daemon restarts (a deploy) while it is so: the check at start sees CreateTime. A grant dated back is
    then produced, producer-stamped, in a quiet partition (no broker-stamped fact in it yet). Before, the
    restarted daemon had forgotten what it saw and took the grant on its recorded_at. Also when the
    configuration cannot be read at the restart."""
    from auditor.errors import BrokerError
    from auditor.stream import ledgerfeed

    log.append(fact(W, 0, scope=MKT), LogTime.CREATE, to_us(at(0)))  # history, before the switch
    configs = iter([{"message.timestamp.type": "LogAppendTime"}, {"message.timestamp.type": at_restart}])

    def describe(admin: Any, topics: Any, timeout: float) -> dict[str, dict[str, str]]:
        conf = next(configs)
        if conf["message.timestamp.type"] == "unreachable":
            raise BrokerError("describe_configs timed out")
        return {feed.cfg.topics.facts: conf}
    monkeypatch.setattr(ledgerfeed, "describe", describe)
    feed._check_facts_config(None)  # type: ignore[arg-type]  # the first start: LogAppendTime
    assert feed.reader is not None
    feed.reader.broker_stamped = feed.broker_stamped
    feed.reader.now_us = lambda: to_us(at(180))
    settle(feed, read(feed))
    feed.reader.close()
    feed.broker_stamped = False  # a new process: nothing in memory
    feed.reader = None
    feed._check_facts_config(None)  # type: ignore[arg-type]  # the restart: CreateTime now
    reader = new_reader(feed, log, to_us(at(181)))
    reader.broker_stamped = feed.broker_stamped  # what LedgerFeed.start hands the new reader
    log.append(fact(G, 60, scope=MKT), LogTime.CREATE, to_us(at(60)))
    settle(feed, read(feed))
    grant = next(e for e in stored(feed) if e.type is G)
    assert (grant.logged_by, known_us(grant)) == (LogTime.BOUND, to_us(at(180)) - LOG_LAG_US)
    assert feed.store.view(0, feed.pseudonymize("u-1"), at(120)).consent("marketing").value is False


def test_a_broker_stamped_fact_read_well_after_the_end_below_it_was_read_is_logged(
        feed: LedgerFeed, log: StubLog) -> None:
    """The auditor's clock 10 minutes ahead of the broker's (or a transaction held open): a grant the broker
    stamped at T0+1h, read after the auditor saw the end below it at (its clock) T0+1h10m, counts from
    then. A genuine grant is then out of force for events within 5 minutes after it: said, with its position
    (before: nothing). A fact read within the lag is not logged."""
    from structlog.testing import capture_logs

    assert feed.reader is not None
    feed.reader.now_us = lambda: to_us(at(61))
    settle(feed, read(feed))  # the empty partition read at (the auditor's) T0+1h01m
    log.append(fact(G, 60, scope=MKT, subject="u-2"), LogTime.APPEND, to_us(at(60)))  # stamped at T0+1h
    feed.reader.now_us = lambda: to_us(at(62))
    with capture_logs() as quiet:
        settle(feed, read(feed))
    feed.reader.now_us = lambda: to_us(at(70))
    settle(feed, read(feed))  # the end below the next grant, at (the auditor's) T0+1h10m
    log.append(fact(G, 60, scope=MKT), LogTime.APPEND, to_us(at(60)))  # the broker's T0+1h
    feed.reader.now_us = lambda: to_us(at(71))
    with capture_logs() as logs:
        settle(feed, read(feed))
    assert not [e for e in quiet if "well after its broker time" in e["event"]]
    (said,) = [e for e in logs if "well after its broker time" in e["event"]]
    assert (said["partition"], said["offset"], said["behind_s"]) == (0, 1, 600)
    grant = next(e for e in stored(feed) if e.type is G)
    assert known_us(grant) == to_us(at(70)) - LOG_LAG_US
