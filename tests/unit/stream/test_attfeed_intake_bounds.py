"""attfeed: the intake's byte bound holds while a transaction is in flight (batch.pipeline).

While the previous batch commits, the daemon gathers the next one (Daemon._take: Intake.top_up in
slices of IN_FLIGHT_POLL_S until ``batch.max_events`` are buffered or the commit is over). Once the
intake's total bounds were reached, ``_fill`` took nothing and ``top_up`` then consumed one message
anyway (``consume(1, wait)``, meant for an idle consumer), once per slice, with librdkafka's queue
always full in a backlog: the queues grew past ``TOTAL_BYTES`` one message at a time, up to
``batch.max_events`` messages. With large events (~250 KiB) and the default of 5,000, a batch of
1.2 GiB in memory and in one transaction, where the bound says 64 MiB. (On a real broker the
overshoot per batch is what librdkafka fetches within ``batch.max_ms``, up to ``batch.max_events``
messages; this fake refills its queue at once.) Fixed: at the bounds ``top_up`` takes nothing more and
``Daemon._take`` stops gathering (the batch is as full as the bounds let it be).

Fail before the fix: the first (152 MiB buffered after 100 slices), the second (a 5,000-event batch of
1,220 MiB). Without the runner half, the second fails on its time (the loop polls until the deadline).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream.commit import InFlight
from auditor.stream.intake import TOTAL_BYTES, Intake
from auditor.stream.runner import Daemon
from tests.unit.stream.streamkit import Msg, processor

T = "events"
EVENT = b"x" * (250 * 1024)
#: what librdkafka's queue holds at most (queued.max.messages.kbytes, 64 MiB) of these events
QUEUED = 65536 * 1024 // len(EVENT)



class Backlog:
    """librdkafka in a backlog of large events: its queue is refilled (up to 64 MiB) between calls."""

    def __init__(self, partitions: int = 3) -> None:
        self.next = dict.fromkeys(range(partitions), 0)
        self.queued = 0
        self.consumed = 0
        self.paused: set[int] = set()

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        live = [p for p in self.next if p not in self.paused] or list(self.next)
        out = []
        while len(out) < min(num_messages, QUEUED):
            p = live[len(out) % len(live)]
            out.append(Msg(p, self.next[p], EVENT))
            self.next[p] += 1
        self.consumed += len(out)
        return out

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in tps)


class _Checkpoints:
    def forget(self, chains: object) -> None:
        pass


def weight(msgs: list[Any]) -> int:
    return sum(len(m.value()) for m in msgs)


def test_the_intake_does_not_go_past_its_byte_bound_while_it_waits():
    c = Backlog()
    it = Intake(lambda: frozenset((T, p) for p in range(3)), 5000)
    it.top_up(c)
    it.top_up(c)
    assert it.buffers.nbytes >= TOTAL_BYTES  # at the bound
    for _ in range(100):  # Daemon._take's slices while a commit is in flight
        it.top_up(c, 0.005)
    assert it.buffers.nbytes <= TOTAL_BYTES + QUEUED * len(EVENT)  # overshot by one drain of librdkafka's queue


def test_a_batch_gathered_while_a_commit_is_in_flight_stays_within_the_byte_bound():
    cfg = load_config(env={}, overrides={})
    assert cfg.batch_max_events == 5000
    daemon = Daemon(cfg, processor(), build_metrics(CollectorRegistry()), checkpoints=_Checkpoints())  # type: ignore[arg-type]
    c = Backlog()
    daemon.consumer = c  # type: ignore[assignment]
    keys = frozenset((T, p) for p in range(3))
    daemon.intake.restored = lambda: keys
    daemon._inflight = InFlight([], None, {}, Future())  # type: ignore[arg-type]  # never done: a slow commit
    start = time.monotonic()
    batch, _ = daemon._take(5.0)
    assert time.monotonic() - start < 2.0  # at the bounds the batch is as full as it gets: no waiting on
    assert weight(batch) <= TOTAL_BYTES + QUEUED * len(EVENT), (len(batch), weight(batch) >> 20)
    assert daemon.intake.buffers.nbytes + weight(batch) <= TOTAL_BYTES + QUEUED * len(EVENT)
