"""attfeed: on a real broker, the partition left fetching is revoked while the others are paused; a
paused one fetches again at once, not after librdkafka's broker thread wakes by itself.

Ownership.on_revoke/on_lost run inside consume() and librdkafka unassigns the partitions once they
return. When the one left fetching (auditor/stream/intake.py) goes, the unassign wakes the broker
thread, which finds every partition left paused and sleeps; a resume does not wake it. The intake
resumed a paused one only at the next take(), a batch later: fetched again up to 1 s later. Now it
resumes one in the callback (Intake.revoke), before the unassign.

Here the revoke is what the daemon's callback does, by hand, inside consume() (manual incremental
assignment: no group traffic). Batches of 5,000 (the default), processing simulated at 40,000/s.
Measured, with the resume left to the next take() (Intake.drop in the callback, as before), five
runs: 1-3 take() found nothing after waiting their whole 0.1 s, 0.30-0.51 s in take() after the
revoke; with Intake.revoke, four runs: none found nothing, slowest 0.04-0.07 s, 0.08-0.15 s in all
(load 2.2-3.7). The stall is shorter than the module doc's 1 s (the revoked
partition's fetch in flight, up to fetch.wait.max.ms, likely wakes the thread once more).
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from auditor.config import load_config
from auditor.localkafka.broker import create_topics
from auditor.stream.intake import Intake
from tests.integration.test_intake_refetch import PARTITIONS, PER_PARTITION, SECONDS_PER_EVENT, Watched, _backlog

pytestmark = pytest.mark.kafka

#: the daemon's default batch.max_events: 125 ms of (simulated) processing between two takes
BATCH = 5000
#: the longest take() after the revoke (after the fix: 0.04-0.07 s)
MAX_AFTER_REVOKE_S = 0.3


class Revoking(Watched):
    """The consumer, whose consume() runs the daemon's revoke callback for the partition left fetching
    once every other one is paused (Ownership.on_revoke -> on_drop; librdkafka unassigns after it)."""

    def __init__(self, consumer: Consumer, intake: Intake, restored: set[tuple[str, int]], drop: bool) -> None:
        super().__init__(consumer)
        self.intake, self.restored, self.drop = intake, restored, drop
        self.revoked_at: float | None = None

    def consume(self, num_messages: int, timeout: float) -> list:
        if self.revoked_at is None and len(self.intake.paused & self.restored) == PARTITIONS - 1:
            (left,) = self.restored - self.intake.paused
            (self.intake.drop if self.drop else self.intake.revoke)([left])  # the callback
            self.restored.discard(left)
            self.consumer.incremental_unassign([TopicPartition(*left)])  # once it returned
            self.revoked_at = time.monotonic()
        return super().consume(num_messages, timeout)


def revoke_in_a_backlog(bootstrap: str, drop: bool = False) -> tuple[list[float], int]:
    """The time each take() after the revoke waited in consume() calls that handed over nothing, and how
    many of them found nothing."""
    topic = f"intake-revoke-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic], PARTITIONS)
    _backlog(bootstrap, topic)
    cfg = load_config(env={}, overrides={"kafka.bootstrap_servers": bootstrap,
                                         "kafka.group_id": f"revoke-{uuid.uuid4().hex[:6]}"})
    restored = {(topic, p) for p in range(PARTITIONS)}
    intake = Intake(lambda: frozenset(restored), BATCH)
    consumer = Revoking(Consumer(cfg.consumer_conf()), intake, restored, drop)
    consumer.consumer.incremental_assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    after: list[float] = []
    got = empty = 0
    deadline = time.monotonic() + 120
    try:
        while consumer.revoked_at is None or got < (PARTITIONS - 1) * PER_PARTITION // 2:
            assert time.monotonic() < deadline, f"only {got} messages after 120 s"
            start = consumer.idle  # how long take() waited for a message, not its own work (load)
            batch, _ = intake.take(consumer, BATCH, 0.1)
            if consumer.revoked_at is not None:
                assert all((m.topic(), m.partition()) in restored for m in batch)
                after.append(consumer.idle - start)
                got += len(batch)
                empty += not batch
            time.sleep(len(batch) * SECONDS_PER_EVENT)
    finally:
        consumer.consumer.close()
    assert consumer.revoked_at is not None, "never all but one partition paused: nothing was tested"
    print(f"after the revoke: {len(after)} takes, slowest {[round(a, 3) for a in sorted(after)[-3:]]}; "
          f"{sum(after):.2f} s in take(), {empty} found nothing")
    return after, empty


def test_the_one_left_fetching_revoked_a_paused_one_fetches_again_at_once(kafka_bootstrap: str):
    after, empty = revoke_in_a_backlog(kafka_bootstrap)
    # the two paused partitions hold 3 batches (2 x 8,000 buffered): one resumed at once never runs dry
    assert empty == 0, f"{empty} take() after the revoke found nothing (waited {sorted(after)[-empty:]})"
    assert max(after) < MAX_AFTER_REVOKE_S, f"waited {max(after):.2f} s for a partition left after the revoke"
