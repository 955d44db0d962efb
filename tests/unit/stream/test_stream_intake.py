"""take_batch with a fake consumer that keeps librdkafka's semantics: ``consume(n, timeout)`` returns
at once when n messages are queued, else waits the whole timeout (a fake clock) and returns what
arrived. The daemon must not wait for more once it has something to audit."""

from __future__ import annotations

import gc

import pytest

from auditor.stream.intake import GC_THRESHOLD, settle_heap, take_batch


class FakeConsumer:
    def __init__(self, queued: int = 0, arrivals: list[tuple[float, int]] | None = None) -> None:
        self.now = 0.0
        self.queue = list(range(queued))
        self.arrivals = sorted(arrivals or [])  # (time, count) of messages still on their way
        self.calls: list[tuple[int, float]] = []

    def _arrive(self, until: float) -> None:
        while self.arrivals and self.arrivals[0][0] <= until:
            _, n = self.arrivals.pop(0)
            self.queue += range(len(self.queue), len(self.queue) + n)

    def consume(self, num_messages: int, timeout: float) -> list[int]:
        self.calls.append((num_messages, timeout))
        self._arrive(self.now)
        if len(self.queue) < num_messages and timeout > 0:
            # librdkafka: wait until num_messages are queued or the timeout passes
            deadline = self.now + timeout
            while self.arrivals and self.arrivals[0][0] <= deadline and len(self.queue) < num_messages:
                self.now = self.arrivals[0][0]
                self._arrive(self.now)
            if len(self.queue) < num_messages:
                self.now = deadline
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out


def test_queued_messages_are_taken_without_waiting():
    c = FakeConsumer(queued=3, arrivals=[(0.05, 10)])
    assert len(take_batch(c, 1000, 0.1)) == 3
    assert c.now == 0.0  # a single consume(1000, 0.1) would have waited 100 ms for more


def test_a_backlog_gives_full_batches():
    c = FakeConsumer(queued=5000)
    assert [len(take_batch(c, 1000, 0.1)) for _ in range(6)] == [1000] * 5 + [0]
    assert c.now == pytest.approx(0.1)  # only the empty call waited


def test_an_idle_consumer_waits_for_the_first_message_then_takes_what_came_with_it():
    c = FakeConsumer(arrivals=[(0.03, 7), (0.08, 50)])
    assert len(take_batch(c, 1000, 0.1)) == 7
    assert c.now == pytest.approx(0.03)
    assert len(take_batch(c, 1000, 0.1)) == 50
    assert c.now == pytest.approx(0.08)


def test_nothing_arrives():
    c = FakeConsumer()
    assert take_batch(c, 1000, 0.1) == []
    assert c.now == pytest.approx(0.1)


def test_one_event_batches():
    c = FakeConsumer(queued=3)
    assert [take_batch(c, 1, 0.1) for _ in range(3)] == [[0], [1], [2]]


def test_settle_heap_freezes_and_raises_the_young_threshold():
    old = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
