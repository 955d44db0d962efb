"""The consumer daemon: consume a batch, audit it, and commit it in one Kafka transaction.

Durability order, per batch (the only order in which anything is made visible):

1. take what has arrived, up to ``batch_max_events`` messages, waiting up to ``batch_max_ms`` only
   for the first, each partition with something buffered getting its share
   (:class:`~auditor.stream.intake.Intake`);
2. decode, evaluate, build and seal the audit records (:class:`BatchProcessor`, pure);
3. commit it (:class:`~auditor.stream.commit.BatchCommit`): begin a transaction; produce audit
   records, violations and dead letters; add the consumed offsets to the transaction; commit it.
   Records and offsets become visible together (read_committed), so an offset never advances
   without its audit record, and a retried batch never leaves a duplicate;
4. only then advance the in-memory chain heads and append to the optional file copy.

``batch.pipeline`` (default on) overlaps step 3's broker round trips with steps 1-2 of the next
batch: the main thread begins the transaction of batch N and produces its outputs, hands
``send_offsets_to_transaction`` + ``commit_transaction`` to the commit worker
(:meth:`BatchCommit.start`), then consumes and processes N+1, its records chained after N's
working heads, and only then waits for N (:meth:`BatchCommit.finish`). N's heads (a snapshot taken
when N was processed), checkpoints and file copy advance once N committed; only then is N+1's
transaction begun. If N aborted, N+1 is dropped too (its records chain on N's) and both are read
again from N's start; the next batch then runs unpipelined, so a refused batch is split as below.
A rebalance callback (inside ``consume``) waits for the in-flight transaction before partitions
are given up (:attr:`Ownership.settle_in_flight`). The ledger path, a split, a restore, a
transient failure, an idle poll and shutdown wait for the in-flight transaction first.

Errors follow librdkafka's transactional guidance: retriable errors are retried; abortable
errors abort the transaction, discard the working chain heads and rewind the consumer to the
batch start (a batch whose outputs the broker refuses is split down to the message that fails,
:mod:`auditor.stream.split`); fatal errors (e.g. fenced by a newer instance) stop the daemon with
exit 3. A watchdog thread exits with code 4 when the loop stalls (:mod:`auditor.stream.watchdog`).

Rebalancing is cooperative-sticky. Because a batch is committed before ``consume`` is called
again, or is in flight and waited for in the revoke callback, nothing is pending when partitions
are revoked (commit on revoke is the normal path);
on lost partitions the next commit fails and the batch is aborted. Newly assigned partitions
stay paused until their chain heads are restored from the audit topic and agree with the
committed offsets (:mod:`auditor.stream.ownership`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import wait as wait_futures
from itertools import repeat
from operator import lt, sub
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from auditor import __version__
from auditor.config import Config
from auditor.errors import BrokerError, ConfigError, TransientError
from auditor.exitcodes import ExitCode
from auditor.logging import get_logger
from auditor.metrics import Metrics
from auditor.stream.budget import read_budget
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.commit import BatchCommit, Fatal, InFlight, first_offsets, spans
from auditor.stream.http import OpsServer
from auditor.stream.intake import Intake
from auditor.stream.lag import LagMonitor
from auditor.stream.ledgerfeed import LedgerFeed
from auditor.stream.ownership import Ownership
from auditor.stream.processor import BatchProcessor, BatchResult, MessageLike, Routing
from auditor.stream.split import Progress, commit_or_split
from auditor.stream.testhook import TestHook
from auditor.stream.topics import check_trail_topics
from auditor.stream.watchdog import SignalThread, Watchdog

log = get_logger("auditor.stream")

EXIT_OK, EXIT_FATAL, EXIT_SHUTDOWN_TIMEOUT = ExitCode.OK, ExitCode.BROKER, ExitCode.WATCHDOG
#: while a transaction is in flight, librdkafka's queue is drained into the intake every this long (the
#: wait itself ends the moment the transaction is over: Daemon._take waits on its future)
IN_FLIGHT_POLL_S = 0.005


class Daemon:
    def __init__(self, cfg: Config, processor: BatchProcessor, metrics: Metrics,
                 file_copy: Any | None = None, on_batch: Callable[[BatchResult], None] | None = None,
                 checkpoints: Checkpointer | None = None) -> None:
        self.cfg = cfg
        assert checkpoints is not None, "the daemon signs what it writes: build it with auditor.stream.app.build_daemon"
        self.checkpoints = checkpoints  # signed checkpoints in every transaction (t11)
        self.processor = processor
        self.metrics = metrics
        self.file_copy = file_copy
        self.on_batch = on_batch
        self.stop_requested = threading.Event()
        #: further conditions of readiness (e.g. the schema registry answers); each returns a bool
        self.ready_checks: list[Callable[[], bool]] = []
        self.healthy = True
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.http: OpsServer | None = None
        self.lag: LagMonitor | None = None
        self.committer: BatchCommit | None = None
        self.batches = 0
        self.fatal = False
        self.on_started: Callable[[Daemon], None] | None = None
        #: how the watchdog ends the process (tests running the daemon in-process replace it)
        self.exit_process: Callable[[int], None] = os._exit
        self.hook = TestHook.from_env()
        w = cfg.watchdog
        self.watchdog = Watchdog(w.stall_timeout_s, w.call_margin_s, cfg.shutdown_timeout_s, self._watchdog_fired)
        self.ownership = Ownership(cfg, processor, metrics, self.watchdog, file_copy)
        self.ownership.checkpoints = checkpoints  # t11: restore from signed checkpoints
        #: per-partition queues between librdkafka and the batches (fair draining, auditor.stream.intake)
        self.intake = Intake(self.ownership.restored, cfg.batch_max_events)
        self.ownership.on_drop = self.intake.revoke  # a revoked or lost partition's queue goes with it
        #: the subject ledger (auditor.stream.ledgerfeed), set by build_daemon when ledger.dir is configured
        self.ledger: LedgerFeed | None = None
        #: batch.pipeline: the transaction on the commit worker, and one that aborted whose batch (with
        #: whatever was consumed after it) is still to be read again
        self.pipelined = cfg.batch.pipeline
        self._inflight: InFlight | None = None
        self._aborted: InFlight | None = None
        self._sync_next = False
        #: a Fatal met while waiting for the in-flight transaction inside a rebalance callback
        self._fatal_in_callback: Fatal | None = None
        self.ownership.settle_in_flight = self._settle_in_callback

    # ------------------------------------------------------------------ lifecycle
    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        return self.ownership.owned()

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if not self.stop_requested.is_set():
            log.info("shutdown requested", signal=signum, bound_s=self.cfg.shutdown_timeout_s)
            self.watchdog.stopping()
        self.stop_requested.set()

    def _watchdog_fired(self, reason: str) -> None:
        self.healthy = False
        self.metrics.healthy.set(0)
        log.error("watchdog: exiting so that the process is restarted", reason=reason,
                  exit_code=int(ExitCode.WATCHDOG))
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        self.exit_process(ExitCode.WATCHDOG)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT via sigwait on a thread of their own (call from the main thread first)."""
        SignalThread(self.request_stop).install()

    def ready(self) -> bool:
        """In the group (an assignment came, even an empty one: an idle member is ready), healthy, no
        owned partition stalled, every further check passing."""
        return (self.healthy and self.consumer is not None and self.ownership.joined
                and not self.ownership.stuck() and all(check() for check in self.ready_checks))

    def start(self) -> None:
        cfg = self.cfg
        self.watchdog.start()
        self.metrics.healthy.set(1)
        admin = self._check_topics()
        if self.ledger is not None:  # l12: the facts topic co-partitioned with the events (else exit 2)
            self.ledger.start(admin, admin.list_topics(timeout=15))
        self.processor.budget = read_budget(cfg)  # d9b hook: what the output topics accept (stream/budget.py)
        self.http = OpsServer(cfg.http_host, cfg.http_port, self.metrics.registry,
                              healthy=lambda: self.healthy, ready=self.ready).start()
        txn_id = f"auditor-{cfg.kafka.group_id}-{cfg.instance_id}"
        producer = self.producer = Producer(cfg.producer_conf(txn_id))
        self.consumer = Consumer(cfg.consumer_conf())
        self.committer = BatchCommit(producer, self.consumer, self.processor, self.watchdog, self.file_copy, self.hook,
                                     self.metrics)
        self.committer.checkpoints = self.checkpoints  # t11: the checkpoint covering each batch, same transaction
        self.pipelined = self.cfg.batch.pipeline and self.ledger is None  # l12: the ledger path runs in turn
        self.committer._retry(lambda: producer.init_transactions(30), "init_transactions", 30)
        self.ownership.attach(self.consumer, admin)
        self.ownership.producer = producer  # attx: closes a hanging transaction of ours (between batches)
        self.consumer.subscribe(list(cfg.topics.events), on_assign=self.ownership.on_assign,
                                on_revoke=self.ownership.on_revoke, on_lost=self.ownership.on_lost)
        self.lag = LagMonitor(cfg.admin_conf(), cfg.kafka.group_id, self.ownership.restored, self.metrics,
                              cfg.lag.interval_s).start()
        log.info("auditor started", version=__version__, instance=cfg.instance_id, group=cfg.kafka.group_id,
                 topics=list(cfg.topics.events), audit_topic=cfg.topics.audit,
                 packs={p.id: p.content_hash for p in self.processor.packs.values()},
                 http_port=self.http.port, transactional_id=txn_id,
                 test_hook=self.hook.spec if self.hook else None)
        if self.on_started is not None:
            self.on_started(self)

    def _check_topics(self) -> AdminClient:
        admin = AdminClient(self.cfg.admin_conf())
        try:
            md = admin.list_topics(timeout=15)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach Kafka at {self.cfg.kafka.bootstrap_servers}: {exc}. "
                              "Check kafka.bootstrap_servers (or AUDITOR_KAFKA_BOOTSTRAP_SERVERS).") from exc
        t = self.cfg.topics
        missing = [name for name in (*t.events, t.audit, t.violations, t.dead_letter) if name not in md.topics]
        if missing:
            raise ConfigError(f"topics missing on {self.cfg.kafka.bootstrap_servers}: {', '.join(missing)}. "
                              "Create them (auditor topics create --config ...) or fix the topics.* settings.")
        audit_parts = len(md.topics[t.audit].partitions)
        widest = max(len(md.topics[e].partitions) for e in t.events)
        if audit_parts < widest:
            log.warning("audit topic has fewer partitions than an event topic; chains will share audit partitions",
                        audit_partitions=audit_parts, event_partitions=widest)
        self.processor.routing = Routing(t.audit, t.violations, t.dead_letter, audit_parts)
        self.checkpoints.audit_partitions = audit_parts
        self.checkpoints.partitions = check_trail_topics(admin, md, self.cfg, self.metrics)  # t11: retention
        return admin

    def run(self) -> int:
        """Run until stopped; return the process exit code."""
        try:
            self.start()
            while not self.stop_requested.is_set():
                self.step()
            self._drain()
            log.info("draining: last batch committed, leaving the group")
            return EXIT_OK
        except Fatal as exc:
            if exc.fenced:
                log.error("fenced: this process no longer owns its transactions, exiting", error=str(exc),
                          exit_code=int(EXIT_FATAL),
                          hint="either another process started with the same instance_id (give every instance its "
                               "own; a restarted instance fences the old one), or the broker aborted a transaction "
                               "this process left open past transaction.timeout.ms (it was frozen or starved of CPU); "
                               "a restart resumes from the last commit")
            else:
                log.error("fatal Kafka error, exiting", error=str(exc), exit_code=int(EXIT_FATAL))
            self.healthy = False
            self.fatal = True
            return EXIT_FATAL
        finally:
            self.close()

    def close(self) -> None:
        """Release everything; each part on its own, so a fenced producer cannot keep the file copy
        from its final checkpoint."""
        if self.lag is not None:
            self.lag.close()
            self.lag = None
        if self._inflight is not None and self.committer is not None:  # an error left one on the worker
            try:
                self.committer.finish(self._inflight)  # committed (heads, file copy) or aborted
            except Exception as exc:  # noqa: BLE001 - closing goes on; a restart reads it again
                log.warning("the in-flight transaction failed at close", error=str(exc)[:300])
            self._inflight = None
        if self.committer is not None:
            self.committer.close()
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group; revokes with nothing pending
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", error=str(exc))
            self.consumer = None
        if self.producer is not None and not self.fatal:  # a fenced producer has nothing left to deliver
            try:
                self.producer.flush(5)
            except (KafkaException, RuntimeError) as exc:
                log.warning("producer flush at close failed", error=str(exc))
        self.producer = None
        if self.file_copy is not None:
            self.file_copy.close()  # commits and signs a final checkpoint of every chain
            self.file_copy = None
        self.checkpoints.close()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        self.metrics.ready.set(0)
        self.watchdog.close()

    # ------------------------------------------------------------------ one batch
    def step(self) -> None:
        assert self.consumer is not None and self.committer is not None
        if self._inflight is not None and self.ownership.owned() != self.ownership.restored():
            self._drain()  # a chain to restore: no transaction of ours open on the audit partitions
        self.ownership.restore_due()
        self.ownership.report()
        self.metrics.ready.set(1 if self.ready() else 0)
        with self.watchdog.call("consume", self.cfg.batch_max_ms / 1000 + 5):
            batch, errors = self._take(self.cfg.batch_max_ms / 1000)
        for m in errors:
            err = m.error()
            if err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise Fatal.of(err)
                log.warning("consumer error", error=str(err), retriable=err.retriable())
        restored = self.ownership.restored()
        if self.ledger is not None and not self._ledger_caught_up(restored, batch):
            return
        if self._fatal_in_callback is not None:
            raise self._fatal_in_callback
        if self._aborted is not None:  # the in-flight transaction aborted in a rebalance callback
            self._reread(batch)
            return
        if not batch:
            self._drain()
            self._idle()
            return
        committer = self.committer
        if self.pipelined and not self._sync_next:
            self._pipelined(batch)
            return
        self._drain()
        self._sync_next = False
        progress = commit_or_split(batch, None, self.processor.process, committer.commit,
                                   self.processor.reject_unwritable, self.cfg.batch.split_after_failures)
        self._settle(progress)

    # ------------------------------------------------------------------ batch.pipeline
    def _take(self, max_wait_s: float) -> tuple[list[Any], list[Any]]:
        """Intake.take; while a transaction is on the worker, what arrives until it has committed (as
        Intake.take gathers it then), or a full batch at once: processing overlaps the commit when
        there is a backlog, and a batch is not cut short at lower rates (smaller transactions, and
        events arriving meanwhile would wait for two commits). At most ``max_wait_s`` (then an empty
        poll settles the in-flight transaction at once, not ``batch.max_ms`` later).

        librdkafka fetches on its own threads meanwhile, so the wait is on the transaction's future
        (woken the moment the worker is done), draining librdkafka's queue every ``IN_FLIGHT_POLL_S``
        without waiting in consume(): waiting in ``consume(1, IN_FLIGHT_POLL_S)`` noticed the commit
        only at the next fetched message or the slice's end, 2.5 ms after it at the median (bench/tail.py's
        trace at half the daemon's rate), which every event of the batch waited for."""
        assert self.consumer is not None
        inflight, consumer, n, intake = self._inflight, self.consumer, self.cfg.batch_max_events, self.intake
        if inflight is None or inflight.future is None:
            return intake.take(consumer, n, max_wait_s)
        future = inflight.future
        deadline = time.monotonic() + max_wait_s
        errors = intake.top_up(consumer)
        while intake.buffered() < n and not intake.full() and not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait_futures((future,), min(IN_FLIGHT_POLL_S, left))
            errors += intake.top_up(consumer)
        if intake.buffered() < n and future.done():
            errors += intake.top_up(consumer)
        return intake.next_batch(n), errors

    def _pipelined(self, batch: list[Any]) -> None:
        """Process this batch while the previous one commits; then begin its own transaction."""
        assert self.committer is not None
        inflight = self._inflight
        gathered_in_flight = inflight is not None
        if inflight is not None and (inflight.future is None or inflight.future.done()):
            self._await_inflight()  # already over (the batch was gathered until it was): settle it first
            if self._aborted is not None:
                self._reread(batch)
                return
        try:
            result = self.processor.process(batch)  # chained after the in-flight batch's working heads
        except TransientError as exc:
            self._await_inflight()
            if self._aborted is None:
                self._settle(Progress(failed=list(batch), transient=True, error=str(exc)))
            else:
                self._reread(batch)
            return
        heads = self.processor.working_heads()
        if gathered_in_flight and self.hook:
            self.hook("next_processed")
        self._await_inflight()
        if self._aborted is not None:  # this batch's records chain on the aborted one's: read both again
            self._reread(batch)
            return
        inflight = self._inflight = self.committer.start(batch, result, heads)
        if inflight.outcome is not None:  # aborted before it reached the worker
            self._await_inflight()
            self._reread([])

    def _await_inflight(self) -> None:
        """Wait for the transaction on the commit worker; settle it (heads, file copy, metrics), or note
        its abort (its batch is read again by :meth:`_reread`)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        assert self.committer is not None
        outcome = self.committer.finish(inflight)  # Fatal: exit 3
        if outcome.committed:
            self._settle(Progress(committed=[(inflight.batch, inflight.result)]))
        else:
            self.ownership.note_aborted(first_offsets(inflight.batch))
            self._aborted = inflight

    def _reread(self, batch: Sequence[MessageLike]) -> None:
        """The in-flight transaction aborted: rewind to its start, and to the start of ``batch``
        (consumed or processed after it, dropped) where it had nothing; the next batch runs in turn."""
        aborted, self._aborted = self._aborted, None
        self.processor.discard_heads()  # done by the abort already; ``batch``'s heads chained on them
        self._rewind([*(aborted.batch if aborted is not None else ()), *batch])
        self._sync_next = True

    def _drain(self) -> None:
        """Main loop: no transaction left on the worker (an aborted one rewound)."""
        self._await_inflight()
        if self._aborted is not None:
            self._reread([])

    def _settle_in_callback(self) -> None:
        """Ownership's on_revoke/on_lost, inside consume(): the in-flight transaction carries the
        offsets of the partitions going away, so it ends first. A rewind waits for the main loop."""
        if self._inflight is None:
            return
        try:
            with self.watchdog.outside_call():  # consume's own timeout does not count meanwhile
                self._await_inflight()
        except Fatal as exc:
            self._fatal_in_callback = exc  # raised by the main loop once consume returns

    def _ledger_caught_up(self, restored: frozenset[tuple[str, int]], batch: Sequence[MessageLike]) -> bool:
        """l12: the facts partitions read to their end and late facts corrected before the batch
        (auditor.stream.ledgerfeed); otherwise the batch is rewound and tried again."""
        assert self.ledger is not None and self.committer is not None
        committer = self.committer
        try:  # its client calls are bounded by ledger.catch_up_timeout_s; a long restore beats per round
            done = self.ledger.before_batch(restored, lambda r: committer.commit([], r).committed,
                                            self.watchdog.beat)
        except (TransientError, KafkaException) as exc:
            log.warning("subject ledger not caught up; the batch waits", error=str(exc)[:500])
            done = False
        if not done:
            self._rewind(batch)
            self.stop_requested.wait(0.5)
        return done

    def _settle(self, progress: Progress) -> None:
        if progress.splits:
            self.metrics.batch_splits.inc(progress.splits)
        if progress.committed or progress.transient:  # progress (a dependency outage: a restart would not help)
            self.watchdog.beat()
        for part, result in progress.committed:
            self.ownership.note_committed(first_offsets(part))
            self._after_commit(part, result)
        if progress.failed:
            self.ownership.note_aborted(first_offsets(progress.failed))
            self._rewind(progress.failed)
            if progress.transient:
                self.processor.discard_heads()  # process() stopped part-way through the batch
                log.warning("dependency unavailable; pausing and retrying the batch", error=progress.error)
                self.stop_requested.wait(1.0)

    def _rewind(self, batch: Sequence[MessageLike]) -> None:
        assert self.consumer is not None
        owned = self.ownership.owned()
        first = first_offsets(batch)
        self.intake.drop(first)  # what is buffered after the batch start is fetched again after the seek
        for (t, p), o in first.items():
            if (t, p) in owned:
                try:
                    self.consumer.seek(TopicPartition(t, p, o))
                except KafkaException as exc:
                    # The position stays past the batch (and what was buffered behind it): going on,
                    # the next commit would move the group's offset over messages never audited.
                    # Exit (3); the restart resumes from the committed offsets.
                    raise Fatal(f"seek of {t}/{p} back to offset {o} failed after an abort: {exc}; "
                                "exiting so that the restart resumes from the committed offsets") from exc

    def _after_commit(self, batch: Sequence[MessageLike], result: BatchResult) -> None:
        m = self.metrics
        now = time.time()
        per_topic: dict[str, int] = defaultdict(int)
        ends = spans(batch)
        if ends is not None:
            for (topic, _), (_, _, n) in ends.items():
                per_topic[topic] += n
        else:
            for msg in batch:
                per_topic[msg.topic() or ""] += 1
        for topic, n in per_topic.items():
            m.consumed.labels(topic).inc(n)
            m.last_audit.labels(topic).set(now)
        for labels, n in Counter(result.audited).items():
            m.audited.labels(*labels).inc(n)
        for vlabels, n in Counter(result.violations).items():
            m.violations.labels(*vlabels).inc(n)
        for reason, n in Counter(result.dead_letters).items():
            m.dead_letters.labels(reason).inc(n)
        if result.decision_seconds:
            m.decision_latency.observe_many(result.decision_seconds)
        m.end_to_end_latency.observe_many(ages(result.occurred_at, now))
        if self.file_copy is not None:
            self._checkpoint_ages()
        self.batches += 1
        if self.ledger is not None:
            self.ledger.after_commit(result)
        if self.on_batch is not None:
            self.on_batch(result)

    def _idle(self) -> None:
        # Nothing to do is not a stall, unless nothing can be done: every partition this instance owns
        # still paused because its chain head cannot be trusted (a restore refused on every retry).
        # Then the watchdog counts the time and a restart (exit 4) starts the clients afresh.
        ownership = self.ownership
        if ownership.restored() or not ownership.owned():
            self.watchdog.beat()
        if self.file_copy is not None:
            self.file_copy.commit()
            self._checkpoint_ages()

    def _checkpoint_ages(self) -> None:
        assert self.file_copy is not None
        for chain, age in self.file_copy.checkpoint_ages().items():
            self.metrics.checkpoint_age.labels(chain).set(age)


def ages(times: Sequence[float], now: float) -> list[float]:
    """``now - t`` for each time ``t`` before ``now``, 0.0 for one not before it (a clock ahead of
    ours): the batch's end-to-end latencies, with no Python code per event when every time is before now."""
    if all(map(lt, times, repeat(now))):
        return list(map(sub, repeat(now), times))
    return [now - t if t < now else 0.0 for t in times]
