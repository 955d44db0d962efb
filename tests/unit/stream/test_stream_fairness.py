"""Rotation (fair draining) with a fake consumer: a dominant partition is paused only when another
owned partition with a backlog has been starved for ``starve_s``; pausing drops prefetched data, so
an interleaved backlog must never be rotated."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from auditor.stream.fairness import Rotation

T = "events"


class Msg:
    def __init__(self, p: int) -> None:
        self.p = p

    def topic(self) -> str:
        return T

    def partition(self) -> int:
        return self.p


class FakeConsumer:
    """Every partition has a backlog (position 0, high watermark 10**6)."""

    def __init__(self) -> None:
        self.paused: list[int] = []
        self.resumed: list[int] = []

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused += [tp.partition for tp in tps]

    def resume(self, tps: list[TopicPartition]) -> None:
        self.resumed += [tp.partition for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, 10**6

    def position(self, tps: list[TopicPartition]) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in tps]


OWNED = frozenset({(T, 0), (T, 1), (T, 2)})


def batch(*parts: int, n: int = 100) -> list[Msg]:
    return [Msg(p) for p in parts for _ in range(n)]


def test_an_interleaved_backlog_is_never_paused():
    now = [0.0]
    rot, consumer = Rotation(starve_s=0.5, clock=lambda: now[0]), FakeConsumer()
    for i in range(30):  # each batch from one partition, in turn, 0.1 s apart: nobody starves
        now[0] += 0.1
        rot.after_batch(consumer, batch(i % 3), OWNED)
    assert consumer.paused == []


def test_a_starved_partition_gets_the_next_batch():
    now = [0.0]
    rot, consumer = Rotation(starve_s=0.5, clock=lambda: now[0]), FakeConsumer()
    rot.after_batch(consumer, batch(0, 1, 2), OWNED)
    for _ in range(4):  # partition 0 only, for 0.4 s: not yet starved
        now[0] += 0.1
        rot.after_batch(consumer, batch(0), OWNED)
    assert consumer.paused == []
    now[0] += 0.2  # partitions 1 and 2 have had nothing for 0.6 s
    rot.after_batch(consumer, batch(0), OWNED)
    assert consumer.paused == [0]
    now[0] += 0.1
    rot.after_batch(consumer, batch(1, 2), OWNED)
    assert consumer.resumed == [0]


def test_a_partition_without_backlog_is_not_waited_for():
    class CaughtUp(FakeConsumer):
        def position(self, tps: list[TopicPartition]) -> list[Any]:
            return [TopicPartition(tp.topic, tp.partition, 10**6) for tp in tps]

    now = [0.0]
    rot, consumer = Rotation(starve_s=0.5, clock=lambda: now[0]), CaughtUp()
    rot.after_batch(consumer, batch(0, 1, 2), OWNED)
    for _ in range(10):
        now[0] += 0.2
        rot.after_batch(consumer, batch(0), OWNED)
    assert consumer.paused == []


def test_a_newly_owned_partition_starts_its_wait_when_first_seen():
    now = [100.0]
    rot, consumer = Rotation(starve_s=0.5, clock=lambda: now[0]), FakeConsumer()
    rot.after_batch(consumer, batch(0), frozenset({(T, 0)}))
    now[0] += 0.1
    rot.after_batch(consumer, batch(0), OWNED)  # 1 and 2 assigned just now
    assert consumer.paused == []
