"""The daemon's intake (auditor.stream.intake.Intake) on a stand-in for our consume seam that keeps
librdkafka's semantics where they matter here:

- one queue, in fetch order: a fetch brings a chunk of each partition's messages, one partition's
  chunk after the other; the next fetch arrives once the application has drained the queue (by its
  next call after one that found fewer messages than it asked for);
- ``pause`` drops what is queued for the partition; on ``resume`` it is fetched again from the
  position of the last message handed over; ``seek`` drops it too and fetches from the new offset;
- a resume does not wake librdkafka's broker thread: resumed after the thread found every partition
  paused (it then sleeps), a partition is fetched again only when the thread wakes for something
  else, ``WAKE_S`` later (auditor/stream/intake.py);
- ``consume(n, timeout)`` returns at once when n messages are queued, else waits the whole timeout
  (a fake clock) and returns what arrived.

What is checked: every partition with a backlog gets its share of every batch, in offset order,
with no gap and no duplicate across rewinds and rebalances; what is buffered is bounded (a full
partition is paused and resumed once drained, without a stall); only restored partitions are
audited; and the daemon does not wait for more once it has something to audit.
"""

from __future__ import annotations

import gc
from collections import Counter, deque
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream.intake import GC_THRESHOLD, Intake, settle_heap
from auditor.stream.runner import Daemon
from tests.unit.stream.streamkit import Msg, processor

T = "events"
#: how long librdkafka's broker thread sleeps with nothing to fetch (rd_kafka_max_block_ms; a heartbeat may come sooner)
WAKE_S = 1.0



class FakeConsumer:
    def __init__(self, backlog: dict[int, int] | None = None, fetch: int = 3000,
                 arrivals: list[tuple[float, int, int]] | None = None) -> None:
        self.end = dict(backlog or {})           # high watermark per partition
        self.fetch = fetch                       # messages per fetch of one partition
        self.fetch_pos = dict.fromkeys(self.end, 0)
        self.app_pos = dict.fromkeys(self.end, 0)
        self.queue: deque[Msg] = deque()
        self.paused: set[int] = set()
        self.pauses: list[int] = []
        self.resumes: list[int] = []
        self.fetched: Counter[int] = Counter()
        self.dropped: Counter[int] = Counter()  # queued messages a pause threw away
        self.now = 0.0
        self.arrivals = sorted(arrivals or [])   # (time, partition, count) produced later
        self.calls: list[tuple[int, float]] = []
        self.due = True                          # a fetch arrives before the next call
        self.asleep = False                      # the broker thread found nothing to fetch: it sleeps
        self.unnoticed: dict[int, float] = {}    # resumed while it slept: fetched from then on

    # -- librdkafka's fetcher, between the application's calls
    def _queued(self, p: int) -> int:
        return sum(1 for m in self.queue if m.p == p)

    def _fetch(self) -> None:
        if not self.due:
            return
        self.due = False
        while self.arrivals and self.arrivals[0][0] <= self.now:
            _, p, n = self.arrivals.pop(0)
            self.end[p] = self.end.get(p, 0) + n
            self.fetch_pos.setdefault(p, 0)
            self.app_pos.setdefault(p, 0)
        for p, wake in list(self.unnoticed.items()):
            if wake <= self.now:
                del self.unnoticed[p]
        self.asleep = set(self.end) <= self.paused | set(self.unnoticed)
        for p in sorted(self.end):
            if p in self.paused or p in self.unnoticed or self._queued(p) >= self.fetch:
                continue
            n = min(self.fetch, self.end[p] - self.fetch_pos[p])
            self.queue.extend(Msg(p, o) for o in range(self.fetch_pos[p], self.fetch_pos[p] + n))
            self.fetch_pos[p] += n
            self.fetched[p] += n

    def _drop_queued(self, p: int) -> None:
        self.queue = deque(m for m in self.queue if m.p != p)

    # -- the seam
    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.calls.append((num_messages, timeout))
        self._fetch()
        if len(self.queue) < num_messages and timeout > 0:
            deadline = self.now + timeout
            while len(self.queue) < num_messages:
                due = [t for t in (*(a[0] for a in self.arrivals[:1]), *self.unnoticed.values()) if t <= deadline]
                if not due:
                    break
                self.now = max(self.now, min(due))
                self.due = True
                self._fetch()
            if len(self.queue) < num_messages:
                self.now = deadline
        out = [self.queue.popleft() for _ in range(min(num_messages, len(self.queue)))]
        self.due = self.due or len(out) < num_messages
        for m in out:
            self.app_pos[m.p] = m.o + 1
        return out

    def pause(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.pauses.append(tp.partition)
            self.paused.add(tp.partition)
            self.dropped[tp.partition] += self._queued(tp.partition)
            self._drop_queued(tp.partition)
            self.fetch_pos[tp.partition] = self.app_pos[tp.partition]

    def resume(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.resumes.append(tp.partition)
            self.paused.discard(tp.partition)
            if self.asleep:
                self.unnoticed[tp.partition] = self.now + WAKE_S
        self.due = True

    def seek(self, tp: TopicPartition) -> None:
        self._drop_queued(tp.partition)
        self.fetch_pos[tp.partition] = self.app_pos[tp.partition] = tp.offset
        self.due = True

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.end.setdefault(tp.partition, 0)
            self.fetch_pos.setdefault(tp.partition, 0)
            self.app_pos.setdefault(tp.partition, 0)

    def unassign(self, p: int) -> None:
        self._drop_queued(p)
        self.paused.discard(p)


def keys(*ps: int) -> frozenset[tuple[str, int]]:
    return frozenset((T, p) for p in ps)


def intake(consumer: FakeConsumer, restored: frozenset[tuple[str, int]], max_events: int = 300,
           **bounds: int) -> Intake:
    return Intake(lambda: restored, max_events, **bounds)


def per_partition(batch: list[Msg]) -> Counter[int]:
    return Counter(m.p for m in batch)


def drain(it: Intake, c: FakeConsumer, max_events: int, limit: int = 10_000) -> list[list[Msg]]:
    batches = []
    for _ in range(limit):
        batch, errors = it.take(c, max_events, 0)
        assert errors == []
        if not batch:
            return batches
        batches.append(batch)
    raise AssertionError("never drained")


def offsets(batches: list[list[Msg]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for b in batches:
        for m in b:
            out.setdefault(m.p, []).append(m.o)
    return out


# ---------------------------------------------------------------- fairness and order

def test_every_partition_with_a_backlog_gets_its_share_of_every_batch():
    # librdkafka queues a 3,000-message fetch of partition 0 ahead of partitions 1 and 2
    c = FakeConsumer({0: 9000, 1: 9000, 2: 9000})
    it = intake(c, keys(0, 1, 2))
    batches = drain(it, c, 300)
    assert sum(len(b) for b in batches) == 27000
    assert all(per_partition(b) == {0: 100, 1: 100, 2: 100} for b in batches)


def test_what_one_partition_cannot_fill_goes_to_the_others():
    c = FakeConsumer({0: 10, 1: 5000, 2: 5000})
    it = intake(c, keys(0, 1, 2))
    batch, _ = it.take(c, 300, 0)
    assert len(batch) == 300
    assert per_partition(batch) == {0: 10, 1: 145, 2: 145}


def test_each_partition_in_offset_order_without_gap_or_duplicate():
    c = FakeConsumer({0: 20000, 1: 7000, 2: 13000})
    it = intake(c, keys(0, 1, 2), max_events=500)
    got = offsets(drain(it, c, 500))
    assert got == {0: list(range(20000)), 1: list(range(7000)), 2: list(range(13000))}


def test_messages_of_an_unrestored_partition_are_not_kept_and_come_again_after_the_restore_seek():
    c = FakeConsumer({0: 600, 1: 600})
    restored = {(T, 0)}
    it = Intake(lambda: frozenset(restored), 300)
    first = drain(it, c, 300)
    assert per_partition([m for b in first for m in b]) == {0: 600}
    restored.add((T, 1))
    c.seek(TopicPartition(T, 1, 0))  # what Ownership does on restore: seek to the committed offset
    assert offsets(drain(it, c, 300)) == {1: list(range(600))}


# ---------------------------------------------------------------- bounds: pause, resume, no stall

def test_a_full_partition_is_paused_once_librdkafka_s_queue_is_drained():
    c = FakeConsumer({0: 50_000, 1: 50_000, 2: 50_000}, fetch=500)
    it = intake(c, keys(0, 1, 2), max_events=100, high=800, low=200, total=5000)
    it.take(c, 100, 0)
    assert c.paused == set()  # one fetch of each, 3 x 500, less a batch: none full
    it.take(c, 100, 0)
    assert all(it.buffers.count((T, p)) >= 800 for p in (0, 1, 2))
    assert c.paused == {1, 2}  # all three full: one is left fetching (the least buffered, then the first)
    assert sum(c.dropped.values()) == 0  # what librdkafka had queued was taken first: a pause dropped nothing


def test_one_partition_is_always_left_fetching():
    # pausing them all put librdkafka's broker thread to sleep: resumed partitions were fetched again
    # only when it woke (WAKE_S later) and the batches ran dry meanwhile
    c = FakeConsumer({0: 30_000, 1: 30_000, 2: 30_000}, fetch=500)
    it = intake(c, keys(0, 1, 2), max_events=300, high=1200, low=600, total=6000)
    sizes = []
    while True:
        batch, _ = it.take(c, 300, 0.1)
        if not batch:
            break
        sizes.append(len(batch))
        assert len(c.paused) < 3
    assert c.now == pytest.approx(0.1)  # waited only in the last poll, with nothing left
    assert sizes == [300] * 300
    assert len(c.pauses) > 20  # (the queues did fill up)


def test_the_one_left_fetching_is_revoked_then_a_paused_one_fetches():
    c = FakeConsumer({0: 30_000, 1: 30_000, 2: 30_000}, fetch=500)
    restored = set(keys(0, 1, 2))
    it = Intake(lambda: frozenset(restored), 100, high=800, low=200, total=5000)
    it.take(c, 100, 0)
    it.take(c, 100, 0)
    assert c.paused == {1, 2}
    restored.discard((T, 0))  # revoked (Ownership drops its queue)
    it.drop([(T, 0)])
    c.unassign(0)
    it.take(c, 100, 0)
    assert len(c.paused) == 1 and c.resumes == [1]  # the less buffered of the two, then the first


def test_a_drained_partition_is_resumed_and_batches_never_stall():
    c = FakeConsumer({0: 50_000, 1: 50_000}, fetch=500)
    it = intake(c, keys(0, 1), max_events=100, high=800, low=200, total=3000)
    most = 0
    batches = []
    while True:
        batch, _ = it.take(c, 100, 0)
        if not batch:
            break
        batches.append(batch)
        most = max(most, len(it.buffers))
    assert [len(b) for b in batches] == [100] * 1000  # a full batch every time: a pause never stalls
    assert offsets(batches) == {0: list(range(50_000)), 1: list(range(50_000))}
    assert len(c.resumes) > 10
    assert most <= 3000 + 100
    assert sum(c.fetched.values()) < 1.25 * 100_000  # what a pause dropped, fetched again: little


def test_big_batches_are_taken_whole_without_buffering_more():
    # batch.max_events 5,000 (fewer transactions in a backlog) buffers no more than 1,000 did
    assert (Intake(lambda: keys(0), 5000).high, Intake(lambda: keys(0), 5000).total) == \
        (Intake(lambda: keys(0), 1000).high, Intake(lambda: keys(0), 1000).total)
    c = FakeConsumer({0: 30_000, 1: 30_000, 2: 30_000}, fetch=3000)
    it = intake(c, keys(0, 1, 2), max_events=5000)
    sizes, most = [], 0
    while True:
        batch, _ = it.take(c, 5000, 0.1)
        if not batch:
            break
        sizes.append(len(batch))
        most = max(most, len(it.buffers))
    assert sizes == [5000] * 18
    assert most <= it.total + 3 * 3000  # the total bound, overshot by at most one fetch of each partition


def test_the_total_buffered_is_bounded_over_many_partitions():
    c = FakeConsumer({p: 20_000 for p in range(12)}, fetch=2000)
    it = intake(c, keys(*range(12)), max_events=100, high=800, low=200, total=3000)
    most = 0
    while True:
        batch, _ = it.take(c, 100, 0)
        if not batch:
            break
        most = max(most, len(it.buffers))
    assert most <= 3000 + 100


# ---------------------------------------------------------------- the daemon: rewind and rebalance

class _Checkpoints:
    def forget(self, chains: object) -> None:
        pass


def _daemon(consumer: FakeConsumer, partitions: list[int], max_events: int = 100) -> Daemon:
    cfg = load_config(env={}, overrides={"batch.max_events": max_events})
    daemon = Daemon(cfg, processor(), build_metrics(CollectorRegistry()), checkpoints=_Checkpoints())  # type: ignore[arg-type]
    daemon.consumer = consumer  # type: ignore[assignment]
    _assign_restored(daemon, consumer, partitions, committed=0)
    return daemon


def _assign_restored(daemon: Daemon, consumer: FakeConsumer, partitions: list[int], committed: int) -> None:
    tps = [TopicPartition(T, p) for p in partitions]
    daemon.ownership.on_assign(consumer, tps)  # pauses them
    for tp in tps:  # what Ownership._try does once the head is trusted
        consumer.seek(TopicPartition(T, tp.partition, committed))
        daemon.ownership.states[(T, tp.partition)].restored = True
    consumer.resume(tps)


def test_a_rewind_drops_what_was_buffered_after_the_batch_start():
    c = FakeConsumer({0: 3000, 1: 3000})
    daemon = _daemon(c, [0, 1])
    done, _ = daemon.intake.take(c, 100, 0)
    failed, _ = daemon.intake.take(c, 100, 0)      # this batch aborts: back to its start
    assert len(daemon.intake.buffers) > 0
    daemon._rewind(failed)
    rest = drain(daemon.intake, c, 100)
    assert offsets([done] + rest) == {0: list(range(3000)), 1: list(range(3000))}


def test_a_revoked_partition_s_buffer_is_dropped_and_not_audited_after_it_comes_back():
    c = FakeConsumer({0: 3000, 1: 3000})
    daemon = _daemon(c, [0, 1])
    first, _ = daemon.intake.take(c, 100, 0)
    assert daemon.intake.buffers.count((T, 1)) > 0
    daemon.ownership.on_revoke(c, [TopicPartition(T, 1)])
    c.unassign(1)
    batch, _ = daemon.intake.take(c, 100, 0)
    assert per_partition(batch) == {0: 100}
    # another member audited partition 1 up to 2,000 meanwhile; it comes back
    _assign_restored(daemon, c, [1], committed=2000)
    got = offsets(drain(daemon.intake, c, 100))
    assert got[1] == list(range(2000, 3000))
    assert offsets([first, batch])[0] + got[0] == list(range(3000))


# ---------------------------------------------------------------- waiting (batch.max_ms)

def test_queued_messages_are_taken_without_waiting():
    c = FakeConsumer(arrivals=[(0.0, 0, 3), (0.05, 0, 10)])
    it = intake(c, keys(0))
    batch, _ = it.take(c, 1000, 0.1)
    assert len(batch) == 3
    assert c.now == 0.0  # a single consume(1000, 0.1) would have waited 100 ms for more


def test_an_idle_consumer_waits_for_the_first_message_then_takes_what_came_with_it():
    c = FakeConsumer(arrivals=[(0.03, 0, 7), (0.08, 1, 50)])
    it = intake(c, keys(0, 1))
    batch, _ = it.take(c, 1000, 0.1)
    assert len(batch) == 7 and c.now == pytest.approx(0.03)
    batch, _ = it.take(c, 1000, 0.1)
    assert len(batch) == 50 and c.now == pytest.approx(0.08)


def test_nothing_arrives():
    c = FakeConsumer()
    it = intake(c, keys(0))
    assert it.take(c, 1000, 0.1) == ([], [])
    assert c.now == pytest.approx(0.1)


def test_one_event_batches():
    c = FakeConsumer({0: 3})
    it = intake(c, keys(0), max_events=1)
    assert [[m.o for m in it.take(c, 1, 0.1)[0]] for _ in range(4)] == [[0], [1], [2], []]


def test_error_events_are_handed_back_not_buffered():
    class Err(Msg):
        def error(self) -> Any:  # type: ignore[override]
            return "broker down"

    class Erring(FakeConsumer):
        def consume(self, num_messages: int, timeout: float) -> list[Msg]:
            return [Err(0, -1)] + super().consume(num_messages, timeout) if not self.calls else \
                super().consume(num_messages, timeout)

    c = Erring({0: 5})
    it = intake(c, keys(0))
    batch, errors = it.take(c, 1000, 0.1)
    assert [m.o for m in batch] == [0, 1, 2, 3, 4] and len(errors) == 1


def test_settle_heap_freezes_and_raises_the_young_threshold():
    old = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
