"""Daemon._take while a transaction is in flight (batch.pipeline): the next batch is gathered until
the commit is over, and taken the moment it is, not at the next message or the end of a poll slice.

librdkafka fetches on its own threads whether or not consume() is called; the main thread waited in
``consume(1, IN_FLIGHT_POLL_S)``, which returns at the next fetched message or after the slice, and
only then looked at the commit. Traced at half the daemon's rate (bench/tail.py's hook, load 8-15):
the take ended 2.5 ms (p50), 5 ms (p90), 9-10 ms (p99) after commit_transaction returned on the worker,
a delay added to every event of the next batch. Now it waits on the commit's future itself (woken when
the worker sets it) and drains librdkafka's queue without waiting at each slice.

The first test fails before the change (the take returns after the 2 s slice, not ~50 ms after the
commit), the others hold before and after (a full batch is not held back by a slow commit; with
neither a commit nor a message, the take ends at its deadline).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream import runner
from auditor.stream.commit import InFlight
from auditor.stream.runner import Daemon
from tests.unit.stream.streamkit import Msg, processor

T = "events"
KEYS = frozenset((T, p) for p in range(3))


class Librdkafka:
    """A consumer queue: consume(n, timeout) returns at once what is queued, else blocks until a message
    is queued or the timeout is over (nothing arrives here unless ``feed`` says so)."""

    def __init__(self, feed: int = 0) -> None:
        self.feed = feed  # messages queued before each call
        self.offset = 0
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.calls.append((num_messages, timeout))
        k = min(num_messages, self.feed)
        if not k:
            time.sleep(timeout)
            return []
        out = [Msg(i % 3, self.offset + i, b"e") for i in range(k)]
        self.offset += k
        return out

    def pause(self, tps: list[TopicPartition]) -> None:
        pass

    def resume(self, tps: list[TopicPartition]) -> None:
        pass


class _Checkpoints:
    def forget(self, chains: object) -> None:
        pass


def daemon(consumer: Any, future: Future[None]) -> Daemon:
    cfg = load_config(env={}, overrides={})
    d = Daemon(cfg, processor(), build_metrics(CollectorRegistry()), checkpoints=_Checkpoints())  # type: ignore[arg-type]
    d.consumer = consumer
    d.intake.restored = lambda: KEYS
    d._inflight = InFlight([], None, {}, future)  # type: ignore[arg-type]
    return d


def test_the_batch_is_taken_when_the_commit_is_over_not_at_the_end_of_a_poll_slice(monkeypatch):
    monkeypatch.setattr(runner, "IN_FLIGHT_POLL_S", 2.0)  # a slice far longer than the commit
    future: Future[None] = Future()
    d = daemon(Librdkafka(), future)
    done_at: list[float] = []

    def commit_over() -> None:
        done_at.append(time.monotonic())
        future.set_result(None)

    threading.Timer(0.05, commit_over).start()
    start = time.monotonic()
    batch, errors = d._take(10.0)
    end = time.monotonic()
    assert batch == [] and errors == []
    assert done_at and end >= done_at[0]
    assert end - start < 1.0, f"took {end - start:.3f} s for a commit over after 0.05 s"


def test_a_full_batch_is_taken_while_the_commit_is_still_in_flight():
    d = daemon(Librdkafka(feed=1000), Future())  # never done: a slow commit
    start = time.monotonic()
    batch, _ = d._take(10.0)
    assert len(batch) == d.cfg.batch_max_events
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("wait_s", [0.05, 0.3])
def test_with_no_commit_end_and_no_message_the_take_ends_at_its_deadline(wait_s):
    c = Librdkafka()
    d = daemon(c, Future())
    start = time.monotonic()
    batch, _ = d._take(wait_s)
    took = time.monotonic() - start
    assert batch == []
    assert wait_s <= took < wait_s + 1.0
    assert len(c.calls) >= 2  # librdkafka's queue looked at more than once meanwhile
