"""A grant written in a transaction left open until after the event it would excuse was audited (atl).

The broker stamps a record (LogAppendTime) when it is written, not when its transaction commits, and
read_committed readers see it only after the commit: the facts partition's last stable offset stays
below it meanwhile. An insider with a transactional producer writes a grant, keeps the transaction open,
lets the victim's marketing send be audited as a VIOLATION (her withdrawal is on record, the grant is
not readable), then commits: the grant's log time is before the send, so the daemon corrected it to
ALLOW. Kafka lets a transaction stay open up to the broker's transaction.max.timeout.ms (15 minutes by
default), beyond the 5 minutes' lag a grant is allowed. The daemon now counts a fact as logged no
earlier than when it last saw the partition's stable end below it. The lag is 2 s here (monkeypatched),
so the test needs seconds, not minutes."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from daemonkit import (
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    set_topic_config,
    wait_until,
)
from ledgerkit import audited, consent, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.ledger import asof
from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.model import FactType
from auditor.stream.produce import produce
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka
LAG_S = 2


def test_a_grant_committed_after_the_event_was_audited_does_not_correct_it(tmp_path, kafka_bootstrap, monkeypatch):
    monkeypatch.setattr(asof, "LOG_LAG_US", LAG_S * 1_000_000)
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    set_topic_config(kafka_bootstrap, facts, "message.timestamp.type", "LogAppendTime")
    start = datetime.now(UTC)
    produce(kafka_bootstrap, facts, [withdrawal("w-victim", "u-victim", start - timedelta(minutes=1))])
    insider = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"insider-{facts}",
                        "transaction.timeout.ms": 300_000})
    insider.init_transactions(30)
    insider.begin_transaction()
    grant = replace(consent("g-open", "u-victim", FactType.CONSENT_GRANTED, start), recorded_at=start)
    insider.produce(facts, encode_fact_single_object(grant), key=b"u-victim", partition=0)
    assert insider.flush(30) == 0  # written and stamped by the broker now; not readable until committed
    time.sleep(1.5)
    sent = datetime.now(UTC)  # after the grant's log time
    produce(kafka_bootstrap, setup.events, [marketing_event("victim-send", "u-victim", sent),
                                            marketing_event("control-send", "u-control", sent)])
    with audited(setup, kafka_bootstrap, 2):
        assert records_by_event(kafka_bootstrap, setup.audit)["victim-send"] == [("DECISION", "VIOLATION")]
        time.sleep(2 * LAG_S + 1)  # the daemon, idle, reads the partition's stable end below the grant
        insider.commit_transaction(30)
        produce(kafka_bootstrap, facts, [withdrawal("w-control", "u-control", sent - timedelta(seconds=30))])
        wait_until(lambda: any(e.record.record_type is RecordType.CORRECTION and e.record.event_id == "control-send"
                               for e in read_audit(kafka_bootstrap, setup.audit)), 90, "the control's correction")
    out = records_by_event(kafka_bootstrap, setup.audit)
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]
    assert out["victim-send"] == [("DECISION", "VIOLATION")]  # before: then ("CORRECTION", "ALLOW")


def test_a_transaction_holding_the_facts_back_is_logged(tmp_path, kafka_bootstrap, monkeypatch):
    """The same open transaction delays every fact after its first record, withdrawals included: the daemon
    logs a partition whose stable offset stays below its end for longer than the lag (1 s here; checked
    every 0.5 s). Before: nothing said (the withdrawals' corrections came late, unexplained)."""
    import structlog

    from auditor.stream import ledgerfeed

    monkeypatch.setattr(ledgerfeed, "PARTITIONS_CHECK_S", 0.5)
    monkeypatch.setattr(ledgerfeed, "HELD_BACK_S", 1.0)
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, facts, [withdrawal("w-1", "u-1", datetime.now(UTC))])
    produce(kafka_bootstrap, setup.events, [marketing_event("send", "u-2", datetime.now(UTC))])
    insider = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"insider-{facts}",
                        "transaction.timeout.ms": 300_000})
    insider.init_transactions(30)
    insider.begin_transaction()
    insider.produce(facts, encode_fact_single_object(withdrawal("w-2", "u-2", datetime.now(UTC))), key=b"u-2",
                    partition=0)
    assert insider.flush(30) == 0
    with structlog.testing.capture_logs() as logs, audited(setup, kafka_bootstrap, 1):
        wait_until(lambda: any("holds back the facts" in e["event"] for e in logs), 60, "the stall logged")
    insider.abort_transaction(30)
    (held,) = [e for e in logs if "holds back the facts" in e["event"]]
    assert (held["partition"], held["stable_offset"], held["end"]) == (0, 1, 2), held
