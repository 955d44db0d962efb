"""attfeed: the partition left fetching (auditor/stream/intake.py) revoked or lost in a rebalance callback."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from tests.unit.stream.test_stream_intake import FakeConsumer, T, _daemon


def test_the_one_left_fetching_revoked_a_paused_one_resumes_in_the_callback_before_the_unassign():
    """Ownership.on_revoke/on_lost run inside consume() (librdkafka unassigns once they return). When
    the partition revoked was the one left fetching, the others were all paused from then until the
    next take(), a batch later: the unassign wakes librdkafka's broker thread, which found nothing to
    fetch and slept (up to 1 s) through the resume that came a batch later (auditor/stream/intake.py).
    A paused one is resumed in the callback itself, before the unassign reaches the broker thread."""
    c = FakeConsumer({0: 30_000, 1: 30_000, 2: 30_000}, fetch=500)
    daemon = _daemon(c, [0, 1, 2], max_events=100)
    for _ in range(50):
        daemon.intake.take(c, 100, 0)
        if len(c.paused) == 2:
            break
    assert len(c.paused) == 2, "the queues never filled up: nothing was tested"
    (left,) = {0, 1, 2} - c.paused
    daemon.ownership.on_revoke(c, [TopicPartition(T, left)])
    still = {p for _, p in daemon.ownership.restored()}
    assert still == {0, 1, 2} - {left}
    assert still - c.paused, f"every partition left is paused when {left} goes: {sorted(c.paused)}"
    daemon.ownership.on_lost(c, [TopicPartition(T, p) for p in still - c.paused])
    assert not daemon.ownership.restored() or {p for _, p in daemon.ownership.restored()} - c.paused
