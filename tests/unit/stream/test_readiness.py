"""Readiness (/readyz, auditor_ready): a member has joined its consumer group once it received an
assignment, even an empty one (more members than partitions, e.g. ``run --processes N`` with N above
the partition count): an idle member is ready, its assigned-partition count (0) shows in the
metrics. Lost from the group, unhealthy or holding a stalled partition, it is not ready. The
assignment callbacks are called as librdkafka calls them, on a stand-in consumer."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from auditor.config import load_config
from auditor.metrics import build_metrics
from auditor.stream.runner import Daemon
from tests.unit.stream.streamkit import Clock, processor


class _Consumer:
    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass


class _Checkpoints:
    def forget(self, chains: object) -> None:
        pass


def _daemon() -> tuple[Daemon, _Consumer, Clock]:
    cfg = load_config(env={})
    daemon = Daemon(cfg, processor(), build_metrics(CollectorRegistry()), checkpoints=_Checkpoints())  # type: ignore[arg-type]
    clock = daemon.ownership.clock = Clock()
    consumer = daemon.consumer = _Consumer()  # type: ignore[assignment]
    return daemon, consumer, clock


def _assigned(daemon: Daemon) -> float | None:
    return daemon.metrics.registry.get_sample_value("auditor_partitions_assigned")


def test_not_ready_before_the_first_assignment():
    daemon, _, _ = _daemon()
    assert not daemon.ready()


def test_a_member_given_an_empty_assignment_is_ready_and_counts_no_partition():
    daemon, consumer, _ = _daemon()
    daemon.ownership.on_assign(consumer, [])
    assert daemon.ready()
    assert _assigned(daemon) == 0


def test_a_member_given_partitions_is_ready_and_counts_them():
    daemon, consumer, _ = _daemon()
    daemon.ownership.on_assign(consumer, [TopicPartition("events", 0), TopicPartition("events", 1)])
    assert daemon.ready()
    assert _assigned(daemon) == 2


def test_a_member_whose_partitions_are_revoked_stays_ready_and_idle():
    """Cooperative rebalancing: a revoke takes partitions away, the member stays in the group."""
    daemon, consumer, _ = _daemon()
    parts = [TopicPartition("events", 0)]
    daemon.ownership.on_assign(consumer, parts)
    daemon.ownership.on_revoke(consumer, parts)
    assert daemon.ready()
    assert _assigned(daemon) == 0


def test_a_member_that_lost_its_assignment_is_not_ready_until_it_is_assigned_again():
    daemon, consumer, _ = _daemon()
    parts = [TopicPartition("events", 0)]
    daemon.ownership.on_assign(consumer, parts)
    daemon.ownership.on_lost(consumer, parts)
    assert not daemon.ready()
    daemon.ownership.on_assign(consumer, [])
    assert daemon.ready()


def test_an_idle_member_is_not_ready_when_unhealthy_or_a_readiness_check_fails():
    daemon, consumer, _ = _daemon()
    daemon.ownership.on_assign(consumer, [])
    daemon.ready_checks.append(lambda: False)
    assert not daemon.ready()
    daemon.ready_checks.clear()
    daemon.healthy = False
    assert not daemon.ready()


def test_a_stalled_partition_still_makes_the_member_not_ready():
    daemon, consumer, clock = _daemon()
    daemon.ownership.on_assign(consumer, [TopicPartition("events", 0)])
    assert daemon.ready()
    clock.now += daemon.cfg.watchdog.progress_timeout_s + 1   # never restored
    assert not daemon.ready()
