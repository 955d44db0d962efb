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


class Batch(list[Any]):
    """A batch as :meth:`PartitionBuffers.take` builds it: the messages, and per partition its first
    message, its last and how many (``spans``), so that what is per partition (the offsets to commit,
    where a rewind goes, the counts) is read per partition, not by a loop over every message
    (:func:`auditor.stream.commit.next_offsets`). A slice or a copy is a plain list again."""

    __slots__ = ("spans",)

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[Key, tuple[Any, Any, int]] = {}


class PartitionBuffers:
    """A FIFO queue per partition, and batches taken from them in turn."""

    def __init__(self, weigh: Callable[[Iterable[Any]], int] | None = None) -> None:
        self.queues: dict[Key, deque[Any]] = {}
        #: messages buffered over all partitions
        self.size = 0
        #: what messages weigh (their payloads' bytes), and what is buffered (:meth:`add_all` weighs what
        #: it adds in its own loop; a caller of :meth:`add` adds the weight itself)
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

    def add_all(self, msgs: Iterable[Any], wanted: frozenset[Key] | set[Key], errors: list[Any]) -> set[Key]:
        """Append each message of ``wanted`` partitions to its partition's queue, in order, and add what
        their payloads weigh (``len(value())``, as ``weigh`` does) to :attr:`nbytes`; one whose
        ``error()`` is set goes to ``errors``, one of another partition is left out. Returns the
        partitions added to. (A loop over every message with no call per message of our own: the
        messages of a fetch come in runs of one partition, so its queue is looked up once a run.)"""
        queues, touched = self.queues, set()
        kept = nbytes = 0
        topic: Any = None
        partition: Any = None
        q: deque[Any] | None = None
        for m in msgs:
            if m.error() is not None:
                errors.append(m)
                continue
            t, p = m.topic(), m.partition()
            if p != partition or t != topic or q is None:
                topic, partition = t, p
                key = (t, p)
                if key in wanted:
                    q = queues.get(key)
                    if q is None:
                        q = queues[key] = deque()
                    touched.add(key)
                else:
                    q = None
                    continue
            q.append(m)
            kept += 1
            v = m.value()
            if v:
                nbytes += len(v)
        self.size += kept
        self.nbytes += nbytes
        return touched

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

    def take(self, n: int) -> Batch:
        """Up to ``n`` messages, the partitions with something buffered sharing them equally (what one
        cannot fill goes to the others); each partition's messages in its offset order."""
        if n <= 0 or not self.size:
            return Batch()
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
        out = Batch()
        spans = out.spans
        for k in keys:
            q, m = self.queues[k], shares[k]
            if not m:
                continue
            first = q[0]
            if m == len(q):
                last = q[-1]
                out.extend(q)
                q.clear()
            else:
                last = q[m - 1]
                out.extend([q.popleft() for _ in range(m)])
            spans[k] = (first, last, m)
        self.size -= len(out)
        if self.weigh is not None:
            self.nbytes -= self.weigh(out)
        return out
