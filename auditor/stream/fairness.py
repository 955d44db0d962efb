"""Fair draining: a backlog on several partitions is audited on all of them at once.

librdkafka hands messages over in the order its fetches brought them, and one fetch can carry a
partition's whole backlog when the producer wrote it in large record batches: the consumer then
sees one partition for minutes while the others wait. Two measures:

- the prefetch queue is kept near two batches and per-partition fetches small
  (``queued.min.messages``, ``max.partition.fetch.bytes`` in :meth:`Config.consumer_conf`);
- rotation: when a batch came mostly from some partitions while other owned partitions still
  have a backlog, those partitions are paused for the next batch (pausing drops what was
  prefetched for them; they resume from their position afterwards), so the next batch comes
  from the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

Key = tuple[str, int]


class Rotation:
    def __init__(self) -> None:
        self.held: set[Key] = set()

    def after_batch(self, consumer: Any, batch: Iterable[Any], restored: frozenset[Key]) -> None:
        """Resume what sat out this batch; pause what dominated it if others are waiting."""
        back = [TopicPartition(t, p) for t, p in self.held if (t, p) in restored]
        self.held.clear()
        if back:
            consumer.resume(back)
        counts = Counter((m.topic(), m.partition()) for m in batch)
        total = sum(counts.values())
        if not total:
            return
        dominant = {k for k, n in counts.items() if n * 2 >= total}
        waiting = [k for k in restored - counts.keys() if _has_backlog(consumer, k)]
        if dominant and waiting:
            consumer.pause([TopicPartition(t, p) for t, p in dominant])
            self.held = dominant

    def forget(self, keys: Iterable[Key]) -> None:
        self.held.difference_update(keys)


def _has_backlog(consumer: Any, key: Key) -> bool:
    """True unless the partition is known to be caught up (cached watermark, no broker call)."""
    tp = TopicPartition(*key)
    try:
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        (pos,) = consumer.position([tp])
    except KafkaException:
        return True
    return high < 0 or pos.offset < 0 or pos.offset < high
