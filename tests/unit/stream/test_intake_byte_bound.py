"""Attack on the intake's memory bound (auditor.stream.intake.Intake): its queues are bounded in
messages (8 batches a partition, 32 in all), but what a message weighs is up to the producer (the
input topic's max.message.bytes, 1 MiB by Kafka's default). librdkafka's own queue is bounded in bytes
(queued.max.messages.kbytes); what the intake moved out of it into Python is not counted there.

Before the byte bound: a backlog of 100 KiB events with batches of 500 kept 16,000 of them buffered,
1.6 GB. Now draining stops once the queues hold TOTAL_BYTES (what is over it: one consume chunk)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from auditor.stream.intake import TOTAL_BYTES, Intake
from tests.unit.stream.test_stream_intake import FakeConsumer, Msg, T, keys

EVENT = b"x" * (100 * 1024)  # one object shared by every message: the test itself stays small


class Big(Msg):
    __slots__ = ()

    def value(self) -> bytes:
        return EVENT


class BigConsumer(FakeConsumer):
    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return [Big(m.p, m.o) for m in super().consume(num_messages, timeout)]


def _buffered_bytes(it: Intake) -> int:
    return sum(len(m.value() or b"") for q in it.buffers.queues.values() for m in q)


def test_what_the_intake_buffers_is_bounded_in_bytes_not_only_in_messages():
    max_events = 500
    c = BigConsumer({p: 20_000 for p in range(4)}, fetch=2000)
    it = Intake(lambda: keys(0, 1, 2, 3), max_events)
    most, seen = 0, {p: 0 for p in range(4)}
    for _ in range(60):
        batch, errors = it.take(c, max_events, 0)
        assert errors == [] and batch
        for m in batch:  # still every partition in offset order, no gap, no duplicate
            assert m.o == seen[m.p]
            seen[m.p] += 1
        most = max(most, _buffered_bytes(it))
    assert most <= TOTAL_BYTES + max_events * len(EVENT), f"{most / 2**20:.0f} MiB buffered"
    assert min(seen.values()) > 0  # and every partition was audited meanwhile


def test_small_events_still_fill_the_queues_by_count():
    c = FakeConsumer({p: 20_000 for p in range(4)}, fetch=2000)
    it = Intake(lambda: keys(0, 1, 2, 3), 500)
    it.take(c, 500, 0)
    assert len(it.buffers) >= 8 * 500  # the byte bound does not bite on events of a few bytes


class Err(Big):
    __slots__ = ()

    def error(self) -> object:
        return "broker down"


class Tombstone(Msg):
    __slots__ = ()

    def value(self) -> None:
        return None


class MixedConsumer(FakeConsumer):
    """Big events, tombstones and error events (whose value is the error text) in one queue."""

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        out: list[Any] = []
        for m in super().consume(num_messages, timeout):
            out.append((Big, Tombstone, Big)[m.o % 3](m.p, m.o))
            if m.o % 97 == 0:
                out.append(Err(m.p, -1))
        return out


def test_the_bytes_counted_are_what_is_buffered_through_errors_unrestored_partitions_drops_and_takes():
    """The count must not drift: counted too high, draining would stop for good (a stall)."""
    restored = keys(0, 1, 2)  # partition 3 assigned, not restored: its messages not kept
    c = MixedConsumer({p: 3_000 for p in range(4)}, fetch=700)
    it = Intake(lambda: restored, 100, total_bytes=32 * 2**20)
    for i in range(400):
        batch, errors = it.take(c, 100, 0)
        assert it.buffers.nbytes == _buffered_bytes(it)
        if i == 5:
            assert it.buffers.count((T, 1)) > 0
            it.drop(keys(1))  # a rewind or revoke
            c.seek(TopicPartition(T, 1, batch[0].o if batch else 0))
            assert it.buffers.nbytes == _buffered_bytes(it)
        if not batch and not errors:
            break
    assert it.buffers.nbytes == 0 and len(it.buffers) == 0
