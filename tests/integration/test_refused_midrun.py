"""Delivery reports for failed outputs only (``delivery.report.only.error``), on a real broker: a
topic whose ``max.message.bytes`` shrinks after the daemon read its budgets refuses outputs the
daemon thought fit. The refusal must still reach the commit (an error delivery report), so the
batch is split and each event whose violation message the broker refuses is rejected as
unwritable and dead-lettered, every other event audited, once."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from daemonkit import (
    Feeder,
    InProcessDaemon,
    TopicTail,
    assert_exactly_once,
    make_setup,
    mixed_events,
    read_audit,
    read_topic,
)

from auditor.events.model import Event
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka

LIMIT = 700  # below every violation message, above the record batch framing


def _set_max_message_bytes(bootstrap: str, topic: str, max_bytes: int) -> None:
    entry = ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the broker answers the alter before its metadata shows it
        (fut,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
        if fut.result(30)["max.message.bytes"].value == str(max_bytes):
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: max.message.bytes not {max_bytes} after 30 s")


def test_a_violation_topic_shrunk_mid_run_still_splits_and_dead_letters(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    events = [e for e in mixed_events(300, seed=5) if isinstance(e, Event)][:120]
    feeder = Feeder(kafka_bootstrap, setup.events)
    config = setup.config()
    with TopicTail(kafka_bootstrap, setup.audit) as tail, InProcessDaemon(config) as daemon:
        feeder.send_all(events[:20])
        tail.wait_for(20, 60, "(the daemon is running with the budgets it read)")
        _set_max_message_bytes(kafka_bootstrap, setup.violations, LIMIT)
        feeder.send_all(events[20:])
        tail.wait_for(len(feeder.sent), 120, "(a refused output must not stop the partition)")
        splits = daemon.sample("auditor_batch_splits_total")
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    late = [e.record for e in entries if (e.record.source.offset or 0) >= 20]
    unwritable = [r for r in late if r.record_type is RecordType.REJECTION
                  and r.rejection is not None and r.rejection.reason == "unwritable"]
    decided = [r for r in late if r.record_type is RecordType.DECISION]
    assert unwritable, "no event was rejected as unwritable: the broker's refusal went unseen"
    assert splits > 0
    assert decided and all(r.decision is not None and r.decision.verdict.value != "VIOLATION" for r in decided), \
        "a violation was audited although its message cannot be written"
    assert len(read_topic(kafka_bootstrap, setup.dead_letter)) == len(unwritable)
