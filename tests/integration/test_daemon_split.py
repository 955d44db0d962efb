"""A batch whose outputs the broker refuses, on a real broker: the batch is split until the one
message whose output is refused is alone, that message is dead-lettered by reference, and every
message around it is audited in the same pass (no endless abort loop)."""

from __future__ import annotations

import random

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


def test_an_output_the_broker_refuses_is_isolated_and_dead_lettered_by_reference(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    set_topic_config(kafka_bootstrap, setup.dead_letter, "max.message.bytes", str(64 * 1024))
    events = [e for e in mixed_events(400, seed=61) if isinstance(e, Event)][:200]
    # oversize: dead-lettered with its 300 KB (incompressible), which the dead-letter topic refuses
    poison = b"\xc3\x01" + random.Random(7).randbytes(300 * 1024)
    feeder = Feeder(kafka_bootstrap, setup.events)
    feeder.send_all([*events[:100], poison, *events[100:]])
    poison_offset = next(s.offset for s in feeder.sent if not isinstance(s.item, Event))
    # the daemon refuses to start when the producer's batch.size exceeds an output topic's limit (the broker
    # would refuse whole batches), so a shrunken dead-letter topic needs a smaller batch.size too
    config = setup.config(**{"kafka.properties": {"batch.size": "60000"}})
    with TopicTail(kafka_bootstrap, setup.audit) as tail, InProcessDaemon(config) as daemon:
        tail.wait_for(len(feeder.sent), 120, "(a refused output must not stop the partition)")
        splits = daemon.sample("auditor_batch_splits_total")
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    (rejected,) = [e.record for e in entries if e.record.record_type is RecordType.REJECTION]
    assert rejected.source.offset == poison_offset
    (letter,) = read_topic(kafka_bootstrap, setup.dead_letter)
    headers = {k: v.decode() for k, v in letter.headers.items()}
    assert headers["auditor.source.offset"] == str(poison_offset)
    assert len(letter.value or b"") < 64 * 1024, "the dead letter carries a reference, not the refused bytes"
    assert splits > 0 or headers["auditor.error.reason"] != "unwritable"
