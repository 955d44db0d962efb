"""Fair draining: a backlog on several partitions is audited on all of them at once.

librdkafka hands messages over in the order its fetches brought them, and one fetch can carry a
partition's whole backlog when the producer wrote it in large record batches: the consumer then
sees one partition for minutes while the others wait. The prefetch keeps librdkafka's sizes (a
small queue and small fetches interleaved the partitions too, but cost 3-5x in throughput), so
the measure is rotation: when a batch came mostly from some partitions while another owned partition with a
  backlog has had no message for ``starve_s`` (0.2 s), the dominant partitions are paused for the
  next batch, so the next batch comes from the others. Pausing drops what was prefetched for the
  paused partitions (they resume from their position and fetch it again), so it is kept for real
  starvation: rotating after every batch of a backlog that was already interleaved fetched most of
  the backlog twice (bench/stream.py: about 4x slower with the rotation on every batch).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

Key = tuple[str, int]


#: a partition with a backlog that got no message for this long is starved
STARVE_S = 0.2


class Rotation:
    def __init__(self, starve_s: float = STARVE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.held: set[Key] = set()
        self.starve_s = starve_s
        self.clock = clock
        #: when each owned partition last had a message in a batch (or was first seen owned)
        self.last_seen: dict[Key, float] = {}

    def after_batch(self, consumer: Any, batch: Iterable[Any], restored: frozenset[Key]) -> None:
        """Resume what sat out this batch; pause what dominated it if another is starved."""
        back = [TopicPartition(t, p) for t, p in self.held if (t, p) in restored]
        self.held.clear()
        if back:
            consumer.resume(back)
        now = self.clock()
        counts = Counter((m.topic(), m.partition()) for m in batch)
        for key in counts:
            self.last_seen[key] = now
        for key in restored:
            self.last_seen.setdefault(key, now)
        for key in self.last_seen.keys() - restored:  # revoked, or paused while its head is restored
            del self.last_seen[key]
        total = sum(counts.values())
        if not total:
            return
        dominant = {k for k, n in counts.items() if n * 2 >= total}
        waiting = [k for k in restored - counts.keys()
                   if now - self.last_seen[k] >= self.starve_s and _has_backlog(consumer, k)]
        if dominant and waiting:
            consumer.pause([TopicPartition(t, p) for t, p in dominant])
            self.held = dominant

    def forget(self, keys: Iterable[Key]) -> None:
        keys = list(keys)
        self.held.difference_update(keys)
        for key in keys:
            self.last_seen.pop(key, None)


def _has_backlog(consumer: Any, key: Key) -> bool:
    """True unless the partition is known to be caught up (cached watermark, no broker call)."""
    tp = TopicPartition(*key)
    try:
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        (pos,) = consumer.position([tp])
    except KafkaException:
        return True
    return high < 0 or pos.offset < 0 or pos.offset < high
