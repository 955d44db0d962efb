"""How the daemon takes its next batch from the consumer, and how it settles its heap at start.

:class:`Intake` sits between librdkafka and the batches. Each :meth:`Intake.take` first moves
everything librdkafka has queued into a queue per partition (:class:`~auditor.stream.fairness.PartitionBuffers`),
then builds the batch from those queues in turn, so a backlog on several partitions is audited on
all of them at once (Kafka Streams' ``RecordQueue``/``PartitionGroup``). The queues are bounded:
a partition whose queue holds ``high`` messages is paused (librdkafka then drops what it prefetched
for it and fetches it again on resume) and resumed once its queue is down to ``low``; since the
queue still holds its next events, a pause costs a refetch but never a stall. Bounds, in messages:
``PAUSE_BATCHES``/``RESUME_BATCHES`` batches per partition, ``TOTAL_BATCHES`` over all of them
(batches of ``batch.max_events`` up to ``BOUND_BATCH``), and ``TOTAL_BYTES`` of payload over all
of them (beyond that, librdkafka's own queue holds the rest).

Never every partition at once: one restored partition is always left fetching, held back by the
total bounds alone. librdkafka does not wake its broker thread for a resume (the resume is handled
on its main thread; the broker thread decides what to fetch only when it wakes for something else:
a fetch response, a fetch backoff, a heartbeat, at the latest after ``rd_kafka_max_block_ms``, 1 s).
With every partition paused, nothing woke it: a resumed partition was fetched again 0.3-0.9 s after
the resume, long after its queue of ``low`` messages had run dry (traced with ``debug=fetch,topic``
on a 400,000-event backlog: "Resume ... [1]" at 226 ms, "Fetch topic ... [1]" at 1,105 ms, the
daemon waiting in ``consume`` with empty queues in between; the same delay is reported in
confluent-kafka-go#630). A partition left fetching keeps the broker thread waking: for its fetch
responses, or every ``fetch.queue.backoff.ms`` while librdkafka's queue is over its threshold.
(With several brokers this holds for the broker of the partition left fetching only.)

What is buffered is not processed yet, so it is never committed past (offsets come from the batch,
:func:`auditor.stream.commit.next_offsets`). Whatever moves a partition's position from outside drops
its queue: a rewind (the seek fetches it again) and a revoke or loss (:meth:`Intake.drop`). Messages
of a partition that is assigned but not restored are not kept: restoring seeks it to the committed
offset, which fetches them again.

Waiting: ``take(max_events, max_wait_s)`` returns what is buffered, up to ``max_events``, without
waiting for more once there is something to audit; only when nothing is buffered does it wait up to
``max_wait_s`` for the first message (``consume(n, timeout)`` alone waits for the whole timeout
whenever fewer than ``n`` messages are queued, which added ``batch.max_ms`` to every event's latency
below the daemon's maximum rate).

:func:`settle_heap` freezes what exists once the daemon is built (modules, packs, schemas: ~60,000
objects that a full garbage collection traversed, 50-100 ms a time on this machine) and collects
the young generation less often, so collections do not stall batches (``gc.freeze``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from auditor.logging import get_logger
from auditor.stream.fairness import Key, PartitionBuffers

log = get_logger("auditor.stream")


class Consumer(Protocol):
    def consume(self, num_messages: int, timeout: float) -> list[Any]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...


#: the bounds below count batches of this many events at most (batch.max_events beyond it, for fewer
#: transactions in a backlog, does not buffer more)
BOUND_BATCH = 1000
#: a partition is paused when its queue holds this many batches, resumed when down to RESUME_BATCHES
PAUSE_BATCHES = 8
RESUME_BATCHES = 3
#: librdkafka's queue is not drained further while this many batches are buffered over all partitions
TOTAL_BATCHES = 32
#: ... nor while the queues hold this many bytes of payload (librdkafka's own queue is bounded in bytes,
#: queued.max.messages.kbytes, but what was moved out of it is not counted there: by count alone, 32
#: batches of 1,000 events of up to max.message.bytes each)
TOTAL_BYTES = 64 * 1024 * 1024

#: allocations (net of what was freed) between two young collections (CPython's default is 700). A
#: batch of 5,000 events (batch.max_events' default) allocates ~30,000 objects the collector tracks
#: (messages, the sealer's tuples, outputs) that live until the batch after it committed, next to up to
#: TOTAL_BATCHES of buffered messages: 60,000-100,000 at once in the daemon (gc.get_count() sampled
#: while it drained a backlog). All of them die by reference count; below that a young collection ran
#: every batch and traversed them for nothing (~10% of the main thread). Above it only what outlives
#: a batch (memo entries, queues that grow) brings a collection, and cyclic garbage is bounded by it.
GC_THRESHOLD = (200_000, 10, 10)


class Intake:
    def __init__(self, restored: Callable[[], frozenset[Key]], max_events: int,
                 high: int | None = None, low: int | None = None, total: int | None = None,
                 total_bytes: int = TOTAL_BYTES) -> None:
        self.consumer: Consumer | None = None  # the daemon's, as given to take()
        #: the partitions whose messages may be processed (ownership.restored)
        self.restored = restored
        self.chunk = unit = min(max_events, BOUND_BATCH)
        self.high = high if high is not None else PAUSE_BATCHES * unit
        self.low = low if low is not None else RESUME_BATCHES * unit
        self.total = total if total is not None else TOTAL_BATCHES * unit
        self.total_bytes = total_bytes
        self.buffers = PartitionBuffers(payload_bytes)
        #: partitions this intake paused because their queue was full
        self.paused: set[Key] = set()
        #: partitions paused so far (each pause drops what librdkafka prefetched for the partition)
        self.pause_count = 0

    def take(self, consumer: Consumer, max_events: int, max_wait_s: float) -> tuple[list[Any], list[Any]]:
        """(messages to audit, up to ``max_events``; the error events librdkafka handed over)."""
        errors = self.top_up(consumer)
        if not self.buffers and not errors and max_wait_s > 0:
            errors = self.top_up(consumer, max_wait_s)
        return self.next_batch(max_events), errors

    def top_up(self, consumer: Consumer, wait_s: float = 0.0) -> list[Any]:
        """Move what librdkafka has queued into the partitions' queues; if it had nothing, wait up to
        ``wait_s`` for a message (and what is queued with it). Returns the error events."""
        self.consumer = consumer
        errors: list[Any] = []
        self._resume_drained()
        if not self._fill(errors) and wait_s > 0 and not self.full():
            # (at the bounds, not even one more: in a backlog librdkafka always has one, and the daemon
            # polls in slices while a commit is in flight, which grew the queues a message a slice)
            self._keep(consumer.consume(1, wait_s), errors, set())
            self._fill(errors)
        return errors

    def buffered(self) -> int:
        return len(self.buffers)

    def full(self) -> bool:
        """At the total bounds (messages or bytes): nothing more is taken from librdkafka until a batch is."""
        return len(self.buffers) >= self.total or self.buffers.nbytes >= self.total_bytes

    def next_batch(self, max_events: int) -> list[Any]:
        """Up to ``max_events`` of what is buffered, every partition with something buffered getting its share."""
        return self.buffers.take(max_events)

    def drop(self, keys: Iterable[Key]) -> None:
        """Forget what is buffered for these partitions: rewound (the seek fetches it again), revoked or lost.
        A rewound partition this intake paused is resumed by the next :meth:`take` (its queue is empty);
        a revoked one is forgotten there (no longer restored)."""
        self.buffers.drop(keys)

    def revoke(self, keys: Iterable[Key]) -> None:
        """Ownership's on_revoke/on_lost, inside consume(), before librdkafka unassigns these: drop their
        queues and, if the one left fetching is among them, resume a paused one now. A batch later
        (the next :meth:`take`) is too late: the unassign wakes librdkafka's broker thread, which
        then finds every partition paused and sleeps through the resume (see the module doc)."""
        keys = set(keys)
        self.buffers.drop(keys)
        self.paused -= keys
        left = self.restored() - keys
        if self.consumer is not None and left and not left - self.paused:
            self._pause_resume([min(left, key=lambda k: (self.buffers.count(k), k))], pause=False)

    # ------------------------------------------------------------------ inside
    def _fill(self, errors: list[Any]) -> int:
        """Move what librdkafka has queued into the partitions' queues, then pause the full ones;
        return how many messages librdkafka handed over.

        Pausing only once librdkafka's queue is drained means a pause drops only the fetch then in
        flight for the partition (what it had queued is kept): pausing at once, with the rest of a
        fetch still queued behind, fetched the backlog 1.6-1.7 times instead of 1.1-1.3 (the
        fairness test's 3 x 40,000)."""
        assert self.consumer is not None
        full: set[Key] = set()
        got = 0
        while not self.full():
            msgs = self.consumer.consume(self.chunk, 0)
            self._keep(msgs, errors, full)
            got += len(msgs)
            if len(msgs) < self.chunk:
                break
        restored = self.restored()
        full = (full - self.paused) & restored  # (one revoked meanwhile has no queue left)
        if full and not restored - self.paused - full:
            # never pause them all: librdkafka would not notice the next resume (see the module doc)
            full.discard(min(full, key=lambda k: (self.buffers.count(k), k)))
        if full:
            self._pause_resume(sorted(full), pause=True)
        return got

    def _keep(self, msgs: list[Any], errors: list[Any], full: set[Key]) -> None:
        if not msgs:
            return
        buffers, high = self.buffers, self.high
        # the restored partitions after consume(): a rebalance callback may have run in it
        for key in buffers.add_all(msgs, self.restored(), errors):
            if buffers.count(key) >= high:
                full.add(key)

    def _resume_drained(self) -> None:
        if not self.paused:
            return
        restored = self.restored()
        gone = self.paused - restored
        self.paused -= gone
        drained = [k for k in self.paused if self.buffers.count(k) <= self.low]
        if not drained and self.paused and not restored - self.paused:
            # the one left fetching went away (revoked): one of the paused ones fetches instead
            drained = [min(self.paused, key=lambda k: (self.buffers.count(k), k))]
        if drained:
            self._pause_resume(drained, pause=False)

    def _pause_resume(self, keys: list[Key], pause: bool) -> None:
        assert self.consumer is not None
        tps = [TopicPartition(t, p) for t, p in keys]
        try:
            (self.consumer.pause if pause else self.consumer.resume)(tps)
        except KafkaException as exc:
            log.warning("pause/resume failed", pause=pause, partitions=[f"{t}/{p}" for t, p in keys],
                        error=str(exc))
            return
        if pause:
            self.pause_count += len(keys)
            self.paused.update(keys)
        else:
            self.paused.difference_update(keys)


def payload_bytes(msgs: Iterable[Any]) -> int:
    """The bytes of these messages' values (a tombstone's None weighs nothing); ~30 ns a message."""
    return sum([len(v) for m in msgs if (v := m.value())])


def settle_heap() -> None:
    """Collect once, freeze what survives (it lives as long as the process), collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
