"""Fair draining on a real broker: a backlog on several partitions is audited on all of them at once,
not one partition after another.

The rotation (auditor/stream/fairness.py) serves a partition with a backlog again after about one
starvation window (STARVE_S, 0.2 s). How many events that is depends on the daemon's speed: at
30,000 events/s a window is 6,000 events. So the backlog is large (3 x 40,000: half of it takes
several windows) and the check is made at half the backlog: drained one after another, the shares
are then 1.0, 0.5 and 0.0. (A check at a third of a 3 x 6,000 and then 3 x 20,000 backlog failed
once the fact path made the daemon faster: CIs of 6e6af6d and e42c2b5, smallest shares 0.08 and
0.125, with the rotation working.) The longest time each partition went unserved is printed.
"""

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
PER_PARTITION = 40000
#: each partition's least share of its own backlog audited by the time half the whole backlog is
#: (drained one after another: 1.0, 0.5, 0.0)
MIN_SHARE = 0.15


def _longest_wait(samples: list[tuple[float, Counter[int]]], p: int) -> float:
    """The longest time partition p, with events left, went without its committed offset advancing
    (from the first sample with any progress on any partition)."""
    start = next(i for i, (_, s) in enumerate(samples) if sum(s.values()) > 0)
    since, last, worst = samples[start][0], samples[start][1][p], 0.0
    for t, s in samples[start + 1:]:
        if s[p] != last:
            since, last = t, s[p]
        if last >= PER_PARTITION:
            break
        worst = max(worst, t - since)
    return worst


def test_a_backlog_on_several_partitions_is_drained_on_all_of_them_at_once(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=PARTITIONS, trail=False, batch_max_events=500)
    events = [e for e in mixed_events(PARTITIONS * PER_PARTITION + 2000, seed=51) if isinstance(e, Event)]
    feeder = Feeder(kafka_bootstrap, setup.events)
    for i, e in enumerate(events[:PARTITIONS * PER_PARTITION]):
        feeder.send(e, partition=i % PARTITIONS)
    feeder.flush()
    samples: list[tuple[float, Counter[int]]] = []
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    tps = [TopicPartition(setup.events, p) for p in range(PARTITIONS)]
    with InProcessDaemon(setup.config()):
        deadline = time.monotonic() + 240
        while not samples or sum(samples[-1][1].values()) < PARTITIONS * PER_PARTITION:
            assert time.monotonic() < deadline, f"progress after 240s: {samples[-1:]}"
            time.sleep(0.1)
            request = [ConsumerGroupTopicPartitions(setup.group, tps)]
            try:
                got = admin.list_consumer_group_offsets(request)[setup.group].result(30).topic_partitions
            except KafkaException:  # the group coordinator is still loading
                continue
            samples.append((time.monotonic(), Counter({tp.partition: max(0, tp.offset) for tp in got})))
    # (committed offsets of the group, sampled every 0.1 s: what the daemon has audited per partition)
    waits = {p: round(_longest_wait(samples, p), 2) for p in range(PARTITIONS)}
    half = next(s for _, s in samples if sum(s.values()) >= PARTITIONS * PER_PARTITION / 2)
    shares = {p: half[p] / PER_PARTITION for p in range(PARTITIONS)}
    print("share audited when half the backlog was:", shares, "; longest wait per partition (s):", waits)
    assert min(shares.values()) >= MIN_SHARE, f"partitions drained one after another: {shares}, waits {waits}"
