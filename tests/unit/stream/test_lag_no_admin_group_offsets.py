"""attx: the lag thread reads the group's committed offsets with a consumer of the group, never with the
admin client's list_consumer_group_offsets. librdkafka 2.16 dies with SIGSEGV in rd_kafka_cgrp_op (a
client with no consumer group) when that admin request is answered NOT_COORDINATOR, as after a broker
restart (librdkafka #5040, fix PR #5318 open): the daemon exited with signal 11 twice in broker SIGKILL
runs here (kernel log: "rdk:main ... segfault at 58 ... in librdkafka", rd_kafka_cgrp_op + 65), and
test_broker_sigkill_and_restart failed on it. Stand-in clients; no broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

import auditor.stream.lag as lag_mod
from auditor.metrics import build_metrics
from auditor.stream.lag import LagMonitor

OWNED = frozenset({("events", 0), ("events", 1)})


class _Admin:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    def list_consumer_group_offsets(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("list_consumer_group_offsets: librdkafka 2.16 segfaults on its NOT_COORDINATOR answer")


class _Consumer:
    made: list[_Consumer] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        _Consumer.made.append(self)

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in tps]

    def close(self) -> None:
        pass


def test_lag_is_measured_from_a_consumer_of_the_group_not_the_admin_client(monkeypatch):
    monkeypatch.setattr(lag_mod, "AdminClient", _Admin)
    monkeypatch.setattr(lag_mod, "Consumer", _Consumer, raising=False)
    ends = {("events", 0): (2, 10), ("events", 1): (0, 7)}
    monkeypatch.setattr(lag_mod, "list_offsets", lambda admin, tps, spec, timeout: {
        k: lo if "earliest" in type(spec).__name__.lower() else hi for k, (lo, hi) in ends.items()})
    registry = CollectorRegistry()
    monitor = LagMonitor({"bootstrap.servers": "x:1"}, "the-group", lambda: OWNED, build_metrics(registry), 5)
    got = monitor.measure()
    assert got == {("events", 0): 3, ("events", 1): 0}
    (consumer,) = _Consumer.made
    assert consumer.conf["group.id"] == "the-group" and consumer.conf["enable.auto.commit"] is False
