"""The commit sequence of one batch, in one object (like Quix Streams' ``Checkpoint.commit``).

The only order in which anything becomes visible:

1. ``begin_transaction``                                          hook ``after_begin``
2. produce the audit records, violations and dead letters          hook ``after_produce``
3. ``send_offsets_to_transaction`` (the consumed offsets, KIP-447)  hooks ``in_send_offsets`` (inside
   the watched call, before the client is called) and ``after_send_offsets``
4. ``commit_transaction``: records and offsets visible together     hook ``after_commit``
5. advance the in-memory chain heads                               hook ``after_heads``
6. append the records to the optional file copy and make it durable

A transaction that consumed nothing (the ledger's corrections) sends at step 3 the group's
committed offsets of its records' inputs again (:meth:`BatchCommit._fence`), so KIP-447 fences it too.

With ``batch.pipeline`` (:meth:`BatchCommit.start`, :meth:`BatchCommit.finish`) steps 3-4 run on
one commit worker thread while the main thread consumes and processes the next batch (its records
chained after this batch's working heads, its transaction not begun); steps 5-6 run on the main
thread once the worker is done, and advance the heads only up to this batch. The test hooks fire
at the same steps, the steps 3-4 ones on the worker.

A failure before step 4 completes aborts the transaction and drops the working chain heads:
nothing of the batch is visible, and the caller rewinds to the batch start (pipelined: also the
next batch, processed after those heads, is dropped and read again). Retriable errors
are retried with backoff; a fatal error (fenced) raises :class:`Fatal`. Every librdkafka call
runs under the watchdog's eye with its own timeout (:meth:`Watchdog.call`).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.processor import BatchProcessor, BatchResult, MessageLike, Outgoing
from auditor.stream.testhook import TestHook
from auditor.stream.watchdog import Watchdog
from auditor.trail.chain import ChainHead

log = get_logger("auditor.stream")

SEND_OFFSETS_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_S = 60.0
ABORT_TIMEOUT_S = 30.0
FENCE_TIMEOUT_S = 10.0

#: delivery errors caused by a message's content: retrying the same message cannot cure them
CONTENT_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG, KafkaError.POLICY_VIOLATION, KafkaError.INVALID_MSG_SIZE,
})


#: the codes that mean another producer with our transactional id took over (librdkafka reports the
#: same fence as ``_FENCED`` "old epoch", ``PRODUCER_FENCED`` or ``INVALID_PRODUCER_EPOCH`` by call)
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class Fatal(Exception):
    """A fatal Kafka error (fenced by a newer instance, ...): the daemon exits with code 3."""

    def __init__(self, message: str, fenced: bool = False) -> None:
        super().__init__(message)
        #: another instance with the same instance id (transactional id) took over
        self.fenced = fenced

    @classmethod
    def of(cls, err: KafkaError) -> Fatal:
        return cls(str(err), fenced=err.code() in FENCED_CODES)


@dataclass(frozen=True)
class Outcome:
    committed: bool
    #: the abort was caused by an output the broker refuses (size, policy), not by the cluster
    content_error: bool = False
    error: str = ""


COMMITTED = Outcome(True)
ABORTING = Outcome(False, error="aborting")


@dataclass
class InFlight:
    """A transaction whose steps 3-4 run on the commit worker (``batch.pipeline``)."""

    batch: Sequence[MessageLike]
    result: BatchResult
    #: the working chain heads at the end of this batch: what becomes current when it commits
    heads: Mapping[str, ChainHead]
    future: Future[None] | None
    outcome: Outcome | None = None


class _Worker:
    """One thread that runs the in-flight transaction's broker round trips (they release the GIL)."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[tuple[Callable[[], None], Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditor-commit", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self._todo.put((fn, future))
        return future

    def _run(self) -> None:
        while (job := self._todo.get()) is not None:
            fn, future = job
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which decides
                future.set_exception(exc)
            else:
                future.set_result(None)

    def close(self) -> None:
        self._todo.put(None)


class BatchCommit:
    """Commits one processed batch with its consumed offsets, exactly once."""

    def __init__(self, producer: Producer, consumer: Any, processor: BatchProcessor, watchdog: Watchdog,
                 file_copy: Any | None = None, hook: TestHook | None = None, metrics: Metrics | None = None) -> None:
        self.producer, self.consumer, self.processor = producer, consumer, processor
        self.watchdog, self.file_copy, self.hook, self.metrics = watchdog, file_copy, hook, metrics
        #: t11: signs the records of each batch in the same transaction (auditor.stream.checkpointing)
        self.checkpoints: Checkpointer | None = None
        self._worker: _Worker | None = None

    def commit(self, batch: Sequence[MessageLike], result: BatchResult) -> Outcome:
        """Run the sequence; on abort the working heads are dropped and nothing is visible."""
        try:
            sent = self._open(batch, result)
            self._close(*sent)
        except KafkaException as exc:
            return self._abort(exc)
        self._committed(result, None)
        return COMMITTED

    def start(self, batch: Sequence[MessageLike], result: BatchResult,
              heads: Mapping[str, ChainHead]) -> InFlight:
        """``batch.pipeline``: steps 1-2 here, steps 3-4 on the commit worker; :meth:`finish` waits
        for them and does 5-6. ``heads`` are the working chain heads as they were at the end of this
        batch (:meth:`BatchProcessor.working_heads`): a batch processed meanwhile seals after them,
        and only these become current when this transaction commits. Nothing else may use the
        producer until :meth:`finish` returned."""
        try:
            sent = self._open(batch, result)
        except KafkaException as exc:
            return InFlight(batch, result, heads, None, self._abort(exc))
        if self._worker is None:
            self._worker = _Worker()
        return InFlight(batch, result, heads, self._worker.submit(functools.partial(self._close, *sent)))

    def finish(self, inflight: InFlight) -> Outcome:
        """Wait for an in-flight transaction; then advance the heads (up to its batch) and append the
        file copy, or abort it. Raises :class:`Fatal` as :meth:`commit` does."""
        if inflight.outcome is None:
            assert inflight.future is not None
            try:
                inflight.future.result()
            except KafkaException as exc:
                inflight.outcome = ABORTING  # a second finish (at close, after a Fatal) does not abort again
                inflight.outcome = self._abort(exc)
            else:
                inflight.outcome = COMMITTED
                self._committed(inflight.result, inflight.heads)
        return inflight.outcome

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _open(self, batch: Sequence[MessageLike], result: BatchResult) -> tuple[list[TopicPartition], Any]:
        """Steps 1-2: begin, produce; what step 3 sends.

        No delivery callback per output: a refused output fails the transaction, and the error that
        send_offsets_to_transaction or commit_transaction raises then carries the broker's code for it
        (``MSG_SIZE_TOO_LARGE``..., abortable; checked on a real broker, tests/integration/test_refused_midrun.py):
        :meth:`_abort` reads it there. (A callback per output cost ~0.3 us of the main thread per output
        in produce() alone, for reports that only ever arrive for refused outputs.)"""
        producer, hook = self.producer, self.hook
        with self.watchdog.call("begin_transaction", 5.0):
            producer.begin_transaction()
        if hook:
            hook("after_begin")
        signed = self.checkpoints.seal(result) if self.checkpoints is not None else []
        produce = producer.produce
        for topic, partition, key, value, headers in result.outgoing:  # one call per output: unpacked in the loop
            try:
                if headers:
                    produce(topic, value, key, -1 if partition is None else partition, headers=list(headers))
                else:
                    produce(topic, value, key, -1 if partition is None else partition)
            except BufferError:
                self._produce(Outgoing(topic, partition, key, value, headers))
        for o in signed:
            self._produce(o)
        if hook:
            hook("after_produce")
        tps = [TopicPartition(t, p, o) for (t, p), o in next_offsets(batch).items()] or self._fence(result)
        return tps, self.consumer.consumer_group_metadata()

    def _close(self, tps: list[TopicPartition], metadata: Any) -> None:
        """Steps 3-4: send the offsets, commit (on the commit worker with ``batch.pipeline``)."""
        producer, hook = self.producer, self.hook
        self._retry(lambda: producer.send_offsets_to_transaction(tps, metadata, SEND_OFFSETS_TIMEOUT_S),
                    "send_offsets_to_transaction", SEND_OFFSETS_TIMEOUT_S, hook_step="in_send_offsets")
        if hook:
            hook("after_send_offsets")
        self._retry(lambda: producer.commit_transaction(COMMIT_TIMEOUT_S), "commit_transaction",
                    COMMIT_TIMEOUT_S)
        if hook:
            hook("after_commit")

    def _committed(self, result: BatchResult, heads: Mapping[str, ChainHead] | None) -> None:
        """Steps 5-6, once the transaction committed."""
        if self.metrics is not None:
            self.metrics.transactions.labels("commit").inc()
        self.processor.commit_heads(heads)
        if self.checkpoints is not None:
            self.checkpoints.commit()
        if self.hook:
            self.hook("after_heads")
        if self.file_copy is not None:
            audit = self.processor.routing.audit_topic  # t11: the topic's bytes, not re-sealed records
            self.file_copy.append(o.value for o in result.outgoing if o.topic == audit)
            self.file_copy.commit()

    def _fence(self, result: BatchResult) -> list[TopicPartition]:
        """A transaction that consumed nothing (the ledger's CORRECTION records) still goes through the
        group's KIP-447 fence: it commits again the group's committed offsets of its records' input
        partitions (no change), so an instance whose partitions moved while it was frozen is refused
        (send_offsets_to_transaction with no offset does nothing, and nothing else fenced it: att12)."""
        keys = sorted({(r.source.topic, r.source.partition) for r, *_ in result.sealed
                       if r.source.topic is not None and r.source.partition is not None})
        if not keys:
            return []
        with self.watchdog.call("committed offsets (fence)", FENCE_TIMEOUT_S):
            got = self.consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=FENCE_TIMEOUT_S)
        return [tp for tp in got if tp.error is None and tp.offset >= 0]

    def _abort(self, exc: KafkaException) -> Outcome:
        err = exc.args[0]
        self.processor.discard_heads()
        if self.checkpoints is not None:
            self.checkpoints.discard()
        if err.fatal():
            raise Fatal.of(err) from exc
        content = err.code() in CONTENT_ERRORS  # a refused output's own code (see _open)
        log.warning("transaction aborted; rewinding to the batch start", error=str(err),
                    abortable=err.txn_requires_abort(), refused_by_broker=content)
        try:
            with self.watchdog.call("abort_transaction", ABORT_TIMEOUT_S):
                self.producer.abort_transaction(ABORT_TIMEOUT_S)
        except KafkaException as abort_exc:
            if abort_exc.args[0].fatal():
                raise Fatal.of(abort_exc.args[0]) from abort_exc
            log.warning("abort failed", error=str(abort_exc.args[0]))
        if self.metrics is not None:
            self.metrics.transactions.labels("abort").inc()
        return Outcome(False, content, str(err))

    def _produce(self, o: Outgoing) -> None:
        """Produce one output, waiting while the client's queue is full (commit() tries each output
        once inline first: one call per output is the common case)."""
        topic, partition, key, value, headers = o
        partition = -1 if partition is None else partition  # -1: the partitioner decides
        while True:
            try:
                if headers:
                    self.producer.produce(topic, value, key, partition, headers=list(headers))
                else:
                    self.producer.produce(topic, value, key, partition)
                return
            except BufferError:
                with self.watchdog.call("produce (queue full)", 1.0):
                    self.producer.poll(0.05)

    def _retry(self, op: Callable[[], Any], what: str, timeout: float, attempts: int = 10,
               hook_step: str | None = None) -> Any:
        for attempt in range(attempts):
            try:
                with self.watchdog.call(what, timeout):
                    if hook_step and self.hook:
                        self.hook(hook_step)  # inside the watched call, before the client is called
                    return op()
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and attempt < attempts - 1:
                    log.info("retrying", op=what, error=str(err), attempt=attempt + 1)
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise
        raise AssertionError("unreachable")


def spans(batch: Sequence[MessageLike]) -> dict[tuple[str, int], tuple[int, int, int]] | None:
    """Per partition (first offset, last offset, messages) of a batch the intake built
    (:class:`~auditor.stream.fairness.Batch`), from its first and last message alone; None for any
    other sequence (a split's half, a batch read again), or when those offsets cannot be the ends of
    the partition's messages in offset order (an offset missing, or fewer offsets between them than
    messages): the callers then look at every message."""
    got = getattr(batch, "spans", None)
    if got is None:
        return None
    out = {}
    for key, (first, last, n) in got.items():
        lo, hi = first.offset(), last.offset()
        if lo is None or hi is None or hi - lo + 1 < n:
            return None
        out[key] = (lo, hi, n)
    return out


def next_offsets(batch: Sequence[MessageLike]) -> dict[tuple[str, int], int]:
    """Per partition, the offset to commit: one past the last message of the batch."""
    ends = spans(batch)
    if ends is not None:
        return {key: hi + 1 for key, (_, hi, _) in ends.items()}
    offsets: dict[tuple[str, int], int] = {}
    for m in batch:
        key = (m.topic() or "", m.partition() or 0)
        offsets[key] = max(offsets.get(key, -1), (m.offset() or 0) + 1)
    return offsets


def first_offsets(batch: Sequence[MessageLike]) -> dict[tuple[str, int], int]:
    """Per partition, the first offset of the batch (where a rewind goes back to)."""
    ends = spans(batch)
    if ends is not None:
        return {key: lo for key, (lo, _, _) in ends.items()}
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        key, off = (m.topic() or "", m.partition() or 0), m.offset() or 0
        first[key] = min(first.get(key, off), off)
    return first
