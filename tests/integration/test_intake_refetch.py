"""The intake on a real broker with the daemon's own consumer settings: a partition resumed once its
queue drained is fetched again at once, even in a backlog on every partition.

A full partition is paused and resumed once drained (auditor/stream/intake.py). librdkafka handles a
resume on its main thread and does not wake the broker thread, which decides what to fetch only when
it wakes for something else (a fetch response, a fetch backoff, a heartbeat, at the latest after 1 s).
With every partition paused, nothing woke it: resumed partitions were fetched again 0.3-0.9 s after
their resume, and the daemon waited in ``consume`` with its queues empty (31% of its wall time on a
400,000-event backlog). The intake now always leaves one partition fetching.

Processing is simulated by a sleep per batch (a fixed rate, whatever the machine's load), slower than
librdkafka fetches, so every partition's queue fills up and is paused again and again. Measured: the
time from each resume to the partition's next message handed over by ``consume``. Before the fix, in
four runs, the slowest was 0.89-0.92 s (resumed while every other partition was paused, or right after
one that was); after it, 0.13-0.15 s (load 9-10).

What is bounded is the part of that time spent waiting inside ``consume`` (librdkafka had nothing of
the partition yet): the wall time also holds the loop's own sleeps and, on a loaded machine, its waits
for a core, and failed the fixed intake (0.33-0.59 s at load 13-16 or with busy loops sharing its
core) while its waits inside ``consume`` stayed under 0.09 s; the old intake's were 0.6-0.76 s.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from auditor.config import load_config
from auditor.localkafka.broker import create_topics
from auditor.stream.intake import Intake

pytestmark = pytest.mark.kafka

PARTITIONS = 3
PER_PARTITION = 50_000
BATCH = 500
#: simulated processing: 40,000 events/s
SECONDS_PER_EVENT = 25e-6
#: the longest from a resume to the partition's next message (before the fix: up to 0.9 s, the broker
#: thread's sleep; after: at most 0.15 s, one fetch and the next call of the loop, at load 9-10)
MAX_REFETCH_S = 0.3


def _backlog(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 200_000})
    value = bytes(range(256)) * 2  # not very compressible, a few hundred bytes like an event
    for i in range(PARTITIONS * PER_PARTITION):
        producer.produce(topic, value=value, partition=i % PARTITIONS)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


class Watched:
    """The consumer, and for each resume how long ``consume`` waited until the partition's next message
    was handed over: the time spent inside ``consume`` from the resume to that message. The wall time
    (kept too, printed) adds the loop's own work and, on a loaded machine, its waits for a core."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.resumed: dict[int, float] = {}
        self.blocked: dict[int, float] = {}  # partition -> seconds inside consume() since its resume
        #: (seconds inside consume(), partition, every other one was paused, wall seconds)
        self.refetch: list[tuple[float, int, bool, float]] = []
        self.paused: set[int] = set()
        self.alone: dict[int, bool] = {}
        self.idle = 0.0  # seconds inside consume() calls that handed over nothing

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        start = time.monotonic()
        msgs = self.consumer.consume(num_messages, timeout)
        now = time.monotonic()
        if not msgs:
            self.idle += now - start
        for p in self.blocked:
            self.blocked[p] += now - start
        for m in msgs:
            p = m.partition()
            if p in self.resumed:
                self.refetch.append((self.blocked.pop(p), p, self.alone.pop(p), now - self.resumed.pop(p)))
        return msgs

    def pause(self, tps: list[TopicPartition]) -> None:
        self.consumer.pause(tps)
        self.paused.update(tp.partition for tp in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        alone = len(self.paused) == PARTITIONS
        self.consumer.resume(tps)
        for tp in tps:
            self.paused.discard(tp.partition)
            self.resumed[tp.partition] = time.monotonic()
            self.blocked[tp.partition] = 0.0
            self.alone[tp.partition] = alone


def test_a_resumed_partition_is_fetched_again_at_once(kafka_bootstrap: str):
    topic = f"intake-refetch-{uuid.uuid4().hex[:6]}"
    create_topics(kafka_bootstrap, [topic], PARTITIONS)
    _backlog(kafka_bootstrap, topic)
    cfg = load_config(env={}, overrides={"kafka.bootstrap_servers": kafka_bootstrap,
                                         "kafka.group_id": f"refetch-{uuid.uuid4().hex[:6]}"})
    consumer = Watched(Consumer(cfg.consumer_conf()))
    consumer.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    keys = frozenset((topic, p) for p in range(PARTITIONS))
    intake = Intake(lambda: keys, BATCH)
    waited = 0.0  # in take(), after the first full batch (librdkafka starts the partitions one by one)
    got = 0
    deadline = time.monotonic() + 120
    try:
        while got < PARTITIONS * PER_PARTITION:
            assert time.monotonic() < deadline, f"only {got} messages after 120 s"
            start = time.monotonic()
            batch, errors = intake.take(consumer, BATCH, 0.1)
            if got >= BATCH:
                waited += time.monotonic() - start
            assert not [e for e in errors if e.error().code() != -191], errors  # (_PARTITION_EOF)
            got += len(batch)
            time.sleep(len(batch) * SECONDS_PER_EVENT)
    finally:
        consumer.consumer.close()
    worst = sorted(consumer.refetch)[-4:]
    walls = sorted(w for *_, w in consumer.refetch)[-4:]
    print(f"partitions paused: {intake.pause_count}; slowest refetches after a resume (s inside consume, "
          f"partition, every other one paused, s wall): {[(round(s, 3), p, a, round(w, 3)) for s, p, a, w in worst]}; "
          f"slowest wall {[round(w, 3) for w in walls]}; {waited:.2f} s in take() in all")
    assert len(consumer.refetch) >= 6, "the queues never filled up: nothing was tested"
    assert max(consumer.refetch)[0] < MAX_REFETCH_S, f"a resumed partition was fetched again after {worst[-1]}"
