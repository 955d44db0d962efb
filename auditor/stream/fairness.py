"""Fair draining: a backlog on several partitions is audited on all of them at once.

librdkafka hands messages over from one queue, in the order its fetches brought them, and one
fetch can carry tens of thousands of one partition's events (up to ``max.partition.fetch.bytes``
of compressed record batches, always at least one whole batch): taken in that order, the other
partitions wait behind it. So the daemon takes everything librdkafka hands over into a small
queue per partition (:class:`PartitionBuffers`) and builds each batch from those queues in turn,
like Kafka Streams' ``RecordQueue``/``PartitionGroup``: every partition with something buffered
gets its share of every batch, in offset order within the partition.

What bounds the queues (pause a partition whose queue is full, resume it when it drained) is
:class:`auditor.stream.intake.Intake`: pausing drops what librdkafka prefetched for the partition
(it is fetched again on resume), but never stalls it, since its queue still holds its next events.
This module has no Kafka in it: messages are anything with ``topic()`` and ``partition()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

Key = tuple[str, int]


class PartitionBuffers:
    """A FIFO queue per partition, and batches taken from them in turn."""

    def __init__(self, weigh: Callable[[Iterable[Any]], int] | None = None) -> None:
        self.queues: dict[Key, deque[Any]] = {}
        #: messages buffered over all partitions
        self.size = 0
        #: what messages weigh (their payloads' bytes), and what is buffered (added to by the caller,
        #: which weighs what it adds by the chunk: :meth:`add` is per message, the hot path)
        self.weigh = weigh
        self.nbytes = 0
        #: the partition the next batch starts with rotates, so no partition is always served first
        self._turn = 0

    def __len__(self) -> int:
        return self.size

    def count(self, key: Key) -> int:
        q = self.queues.get(key)
        return len(q) if q is not None else 0

    def add(self, key: Key, msg: Any) -> int:
        """Append one message to its partition's queue; return that queue's length."""
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = deque()
        q.append(msg)
        self.size += 1
        return len(q)

    def drop(self, keys: Iterable[Key]) -> int:
        """Forget what is buffered for these partitions (rewound or revoked); return how many."""
        dropped = 0
        for key in keys:
            q = self.queues.pop(key, None)
            if q is not None:
                dropped += len(q)
                if self.weigh is not None:
                    self.nbytes -= self.weigh(q)
        self.size -= dropped
        return dropped

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` messages, the partitions with something buffered sharing them equally (what one
        cannot fill goes to the others); each partition's messages in its offset order."""
        if n <= 0 or not self.size:
            return []
        keys = [k for k, q in self.queues.items() if q]
        start = self._turn % len(keys)
        self._turn += 1
        keys = keys[start:] + keys[:start]
        shares = dict.fromkeys(keys, 0)
        left = min(n, self.size)
        while left:
            open_ = [k for k in keys if len(self.queues[k]) > shares[k]]
            each, extra = divmod(left, len(open_))
            for i, k in enumerate(open_):
                got = min(each + (1 if i < extra else 0), len(self.queues[k]) - shares[k])
                shares[k] += got
                left -= got
        out: list[Any] = []
        for k in keys:
            q, m = self.queues[k], shares[k]
            if m == len(q):
                out.extend(q)
                q.clear()
            else:
                out.extend(q.popleft() for _ in range(m))
        self.size -= len(out)
        if self.weigh is not None:
            self.nbytes -= self.weigh(out)
        return out
