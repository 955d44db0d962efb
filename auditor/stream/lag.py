"""Consumer lag measured from a side thread, so it keeps moving while the main loop is stalled.

Every ``interval_s`` it asks the cluster, with its own admin client, for the high watermark of
each partition this instance owns, and with its own consumer (the group's id, never subscribed)
for the group's committed offset; lag is the difference. Nothing here touches the main loop's
consumer or producer. A measure that fails replaces both clients: after a broker restart an old
client can stay refused (stale leader epoch) or time out (the group's offsets) for good, while a
new one answers at once.

Not the admin client's ``list_consumer_group_offsets``: librdkafka 2.16 crashes the process
(SIGSEGV in ``rd_kafka_cgrp_op``, a NULL consumer group) when that request is answered
NOT_COORDINATOR, as right after a broker restart (librdkafka #5040, fix PR #5318 open; attx saw the
daemon die with signal 11 in test_broker_sigkill_and_restart). A consumer has a group, so its
``committed()`` takes the same answer as "ask the coordinator again".
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.stream.offsets import list_offsets

log = get_logger("auditor.lag")

Partitions = Callable[[], frozenset[tuple[str, int]]]


def lag_of(committed: int, low: int, high: int) -> int:
    """Messages behind: from the committed offset (or the log start when nothing is committed)."""
    start = committed if committed >= 0 else low
    return max(0, high - max(start, low))


class LagMonitor:
    def __init__(self, admin_conf: dict[str, Any], group: str, owned: Partitions, metrics: Metrics,
                 interval_s: float) -> None:
        self.admin_conf = admin_conf
        self.group, self.owned, self.metrics, self.interval_s = group, owned, metrics, interval_s
        self.admin = AdminClient(admin_conf)
        self.offsets = self._offsets_client()
        self.shown: set[tuple[str, int]] = set()
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="auditor-lag", daemon=True)

    def start(self) -> LagMonitor:
        self.thread.start()
        return self

    def close(self) -> None:
        self._halt.set()

    def _offsets_client(self) -> Consumer:
        """A consumer of the group that never joins it: only its committed offsets are asked."""
        return Consumer({**self.admin_conf, "group.id": self.group, "enable.auto.commit": False,
                         "isolation.level": "read_uncommitted"})  # the last committed, not waiting for stable

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                self.measure()
            except (KafkaException, RuntimeError, ValueError, TimeoutError) as exc:  # a future's own timeout too
                log.info("lag not measured this time", error=str(exc)[:300] or type(exc).__name__)
                self.admin = AdminClient(self.admin_conf)  # see the module's docstring
                old, self.offsets = self.offsets, self._offsets_client()
                with contextlib.suppress(KafkaException, RuntimeError):
                    old.close()
        with contextlib.suppress(KafkaException, RuntimeError):
            self.offsets.close()

    def measure(self) -> dict[tuple[str, int], int]:
        owned = self.owned()
        gone = self.shown - owned
        for t, p in gone:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(t, str(p))
        self.shown -= gone
        if not owned:
            return {}
        tps = [TopicPartition(t, p) for t, p in sorted(owned)]
        timeout = max(1.0, self.interval_s)
        high = list_offsets(self.admin, tps, OffsetSpec.latest(), timeout)
        low = list_offsets(self.admin, tps, OffsetSpec.earliest(), timeout)
        committed = {(tp.topic, tp.partition): tp.offset for tp in self.offsets.committed(tps, timeout=timeout)
                     if tp.error is None}
        out = {}
        for key in owned:
            if key in high and key in low and key in self.owned():
                out[key] = lag_of(committed.get(key, -1), low[key], high[key])
                self.metrics.consumer_lag.labels(key[0], str(key[1])).set(out[key])
                self.shown.add(key)
        return out


