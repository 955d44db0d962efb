"""Fair draining on a real broker: a backlog on several partitions is audited on all of them at once,
not one partition after another."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from daemonkit import Feeder, InProcessDaemon, make_setup, mixed_events

from auditor.events.model import Event

pytestmark = pytest.mark.kafka

PARTITIONS = 3
# Large enough that a third of the backlog takes several starvation windows (fairness.STARVE_S) to
# audit: with 6,000 the faster fact path (issue 14) audited a third in about as long as one window,
# so one partition could dominate it without any starvation (CI of 6e6af6d: shares 0.83/0.08/0.17)
PER_PARTITION = 20000


def test_a_backlog_on_several_partitions_is_drained_on_all_of_them_at_once(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=PARTITIONS, trail=False, batch_max_events=500)
    events = [e for e in mixed_events(PARTITIONS * PER_PARTITION + 2000, seed=51) if isinstance(e, Event)]
    feeder = Feeder(kafka_bootstrap, setup.events)
    for i, e in enumerate(events[:PARTITIONS * PER_PARTITION]):
        feeder.send(e, partition=i % PARTITIONS)
    feeder.flush()
    samples: list[Counter[int]] = []
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    tps = [TopicPartition(setup.events, p) for p in range(PARTITIONS)]
    with InProcessDaemon(setup.config()):
        deadline = time.monotonic() + 180
        while not samples or sum(samples[-1].values()) < PARTITIONS * PER_PARTITION:
            assert time.monotonic() < deadline, f"progress after 180s: {samples[-1:]}"
            time.sleep(0.1)
            request = [ConsumerGroupTopicPartitions(setup.group, tps)]
            try:
                got = admin.list_consumer_group_offsets(request)[setup.group].result(30).topic_partitions
            except KafkaException:  # the group coordinator is still loading
                continue
            samples.append(Counter({tp.partition: max(0, tp.offset) for tp in got}))
    # (committed offsets of the group, sampled every 0.1s: what the daemon has audited per partition)
    # while the backlog drains, no partition waits for another: by the time a third of the whole
    # backlog is audited, every partition has had a fair part of its own audited
    third = next(s for s in samples if sum(s.values()) >= PARTITIONS * PER_PARTITION / 3)
    shares = {p: third[p] / PER_PARTITION for p in range(PARTITIONS)}
    print("per-partition share audited when a third of the backlog was:", shares)
    assert min(shares.values()) >= 0.15, f"partitions drained one after another: {shares}"
    # and no partition finishes long before the others start
    first_done = next(s for s in samples if max(s.values()) >= PER_PARTITION)
    assert min(first_done[p] for p in range(PARTITIONS)) >= PER_PARTITION / 3, \
        f"one partition was drained while another was starved: {dict(first_done)}"
