"""Delivery reports for failed outputs only (``delivery.report.only.error``), on a real broker: a
topic whose ``max.message.bytes`` shrinks after the daemon read its budgets refuses outputs the
daemon thought fit. The refusal must still reach the commit (an error delivery report), so the
batch is split and each event whose violation message the broker refuses is rejected as
unwritable and dead-lettered, every other event audited, once."""

from __future__ import annotations

import pytest
from daemonkit import (
    Feeder,
    InProcessDaemon,
    TopicTail,
    assert_exactly_once,
    make_setup,
    mixed_events,
    read_audit,
    read_topic,
    set_topic_config,
)

from auditor.events.model import Event
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka

LIMIT = 700  # below every violation message, above the record batch framing


def test_a_violation_topic_shrunk_mid_run_still_splits_and_dead_letters(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    events = [e for e in mixed_events(300, seed=5) if isinstance(e, Event)][:120]
    feeder = Feeder(kafka_bootstrap, setup.events)
    config = setup.config()
    with TopicTail(kafka_bootstrap, setup.audit) as tail, InProcessDaemon(config) as daemon:
        feeder.send_all(events[:20])
        tail.wait_for(20, 60, "(the daemon is running with the budgets it read)")
        set_topic_config(kafka_bootstrap, setup.violations, "max.message.bytes", str(LIMIT))
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
