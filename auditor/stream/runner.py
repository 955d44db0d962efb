"""The consumer daemon: consume a batch, audit it, and commit it in one Kafka transaction.

Durability order, per batch (the only order in which anything is made visible):

1. consume up to ``batch_max_events`` messages or ``batch_max_ms``, whichever comes first;
2. decode, evaluate, build and seal the audit records (:class:`BatchProcessor`, pure);
3. begin a transaction; produce audit records, violations and dead letters; add the consumed
   offsets to the transaction; commit it. Records and offsets become visible together
   (read_committed), so an offset never advances without its audit record, and a retried batch
   never leaves a duplicate;
4. only then advance the in-memory chain heads and append to the optional file copy.

Errors follow librdkafka's transactional guidance: retriable errors are retried; abortable
errors abort the transaction, discard the working chain heads and rewind the consumer to the
batch start; fatal errors (e.g. fenced by a newer instance) stop the daemon with exit 3.

Rebalancing is cooperative-sticky. Because a batch is committed before ``consume`` is called
again, nothing is pending when partitions are revoked (commit on revoke is the normal path);
on lost partitions the next commit fails and the batch is aborted. Newly assigned partitions
get their chain heads restored from the audit topic before any of their messages is processed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
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
from auditor.stream.http import OpsServer
from auditor.stream.processor import BatchProcessor, BatchResult, Outgoing, Routing
from auditor.stream.restore import restore_heads

log = get_logger("auditor.stream")

EXIT_OK, EXIT_FATAL, EXIT_SHUTDOWN_TIMEOUT = ExitCode.OK, ExitCode.BROKER, ExitCode.WATCHDOG


class Daemon:
    def __init__(self, cfg: Config, processor: BatchProcessor, metrics: Metrics,
                 file_copy: Any | None = None, on_batch: Callable[[BatchResult], None] | None = None) -> None:
        self.cfg = cfg
        self.processor = processor
        self.metrics = metrics
        self.file_copy = file_copy
        self.on_batch = on_batch
        self.stop_requested = threading.Event()
        self.assigned: set[tuple[str, int]] = set()
        self.healthy = True
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.http: OpsServer | None = None
        self.batches = 0
        self.on_started: Callable[[Daemon], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if not self.stop_requested.is_set():
            log.info("shutdown requested", signal=signum, bound_s=self.cfg.shutdown_timeout_s)
            if signum is not None:
                threading.Thread(target=self._watchdog, name="auditor-shutdown-watchdog", daemon=True).start()
        self.stop_requested.set()

    def _watchdog(self) -> None:
        """If draining hangs (e.g. the broker is gone), exit non-zero at the bound rather than never."""
        time.sleep(self.cfg.shutdown_timeout_s)
        log.error("shutdown did not finish within the bound; exiting without a clean commit",
                  bound_s=self.cfg.shutdown_timeout_s)
        os._exit(EXIT_SHUTDOWN_TIMEOUT)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def ready(self) -> bool:
        return self.healthy and self.consumer is not None and bool(self.assigned)

    def start(self) -> None:
        cfg = self.cfg
        self._check_topics()
        self.http = OpsServer(cfg.http_host, cfg.http_port, self.metrics.registry,
                              healthy=lambda: self.healthy, ready=self.ready).start()
        txn_id = f"auditor-{cfg.kafka.group_id}-{cfg.instance_id}"
        self.producer = Producer(cfg.producer_conf(txn_id))
        self._retry(lambda: self.producer.init_transactions(30), "init_transactions")  # type: ignore[union-attr]
        self.consumer = Consumer(cfg.consumer_conf())
        self.consumer.subscribe(list(cfg.topics.events), on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("auditor started", version=__version__, instance=cfg.instance_id, group=cfg.kafka.group_id,
                 topics=list(cfg.topics.events), audit_topic=cfg.topics.audit,
                 packs={p.id: p.content_hash for p in self.processor.packs.values()},
                 http_port=self.http.port, transactional_id=txn_id)
        if self.on_started is not None:
            self.on_started(self)

    def _check_topics(self) -> None:
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

    def run(self) -> int:
        """Run until stopped; return the process exit code."""
        try:
            self.start()
            while not self.stop_requested.is_set():
                self.step()
            log.info("draining: last batch committed, leaving the group")
            return EXIT_OK
        except _Fatal as exc:
            log.error("fatal Kafka error, exiting", error=str(exc))
            self.healthy = False
            return EXIT_FATAL
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group; revokes with nothing pending
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", error=str(exc))
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(5)
            self.producer = None
        if self.file_copy is not None:
            self.file_copy.close()
            self.file_copy = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        self.metrics.ready.set(0)

    # ------------------------------------------------------------------ one batch
    def step(self) -> None:
        assert self.consumer is not None and self.producer is not None
        msgs = self.consumer.consume(self.cfg.batch_max_events, self.cfg.batch_max_ms / 1000)
        self.metrics.ready.set(1 if self.ready() else 0)
        batch = []
        for m in msgs:
            err = m.error()
            if err is None:
                batch.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise _Fatal(str(err))
                log.warning("consumer error", error=str(err), retriable=err.retriable())
        if not batch:
            self._idle()
            return
        try:
            result = self.processor.process(batch)
        except TransientError as exc:
            log.warning("dependency unavailable; pausing and retrying the batch", error=str(exc))
            self.processor.discard_heads()
            self._rewind(batch)
            self.stop_requested.wait(1.0)
            return
        if self._commit(batch, result):
            self.processor.commit_heads()
            self._after_commit(batch, result)
        else:
            self.processor.discard_heads()
            self._rewind(batch)

    def _commit(self, batch: list[Any], result: BatchResult) -> bool:
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None
        try:
            producer.begin_transaction()
            for o in result.outgoing:
                self._produce(producer, o)
            offsets: dict[tuple[str, int], int] = {}
            for m in batch:
                offsets[(m.topic(), m.partition())] = m.offset() + 1
            tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._retry(lambda: producer.send_offsets_to_transaction(
                tps, consumer.consumer_group_metadata(), 30), "send_offsets_to_transaction")
            self._retry(lambda: producer.commit_transaction(60), "commit_transaction")
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise _Fatal(str(err)) from exc
            log.warning("transaction aborted; rewinding to the batch start", error=str(err),
                        abortable=err.txn_requires_abort())
            try:
                producer.abort_transaction(30)
            except KafkaException as abort_exc:
                if abort_exc.args[0].fatal():
                    raise _Fatal(str(abort_exc.args[0])) from abort_exc
            self.metrics.transactions.labels("abort").inc()
            return False
        self.metrics.transactions.labels("commit").inc()
        return True

    @staticmethod
    def _produce(producer: Producer, o: Outgoing) -> None:
        partition = -1 if o.partition is None else o.partition  # -1: the partitioner decides
        while True:
            try:
                if o.headers:
                    producer.produce(o.topic, o.value, o.key, partition, headers=list(o.headers))
                else:
                    producer.produce(o.topic, o.value, o.key, partition)
                return
            except BufferError:
                producer.poll(0.05)

    def _retry(self, op: Callable[[], Any], what: str, attempts: int = 10) -> Any:
        for attempt in range(attempts):
            try:
                return op()
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and attempt < attempts - 1:
                    log.info("retrying", op=what, error=str(err), attempt=attempt + 1)
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise
        raise AssertionError("unreachable")

    def _rewind(self, batch: list[Any]) -> None:
        assert self.consumer is not None
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (t, p), o in first.items():
            if (t, p) in self.assigned:
                try:
                    self.consumer.seek(TopicPartition(t, p, o))
                except KafkaException as exc:
                    log.warning("seek failed", topic=t, partition=p, error=str(exc))

    def _after_commit(self, batch: list[Any], result: BatchResult) -> None:
        m = self.metrics
        now = time.time()
        per_topic: dict[str, int] = defaultdict(int)
        for msg in batch:
            per_topic[msg.topic()] += 1
        for topic, n in per_topic.items():
            m.consumed.labels(topic).inc(n)
            m.last_audit.labels(topic).set(now)
        for labels, n in Counter(result.audited).items():
            m.audited.labels(*labels).inc(n)
        for vlabels, n in Counter(result.violations).items():
            m.violations.labels(*vlabels).inc(n)
        for reason, n in Counter(result.dead_letters).items():
            m.dead_letters.labels(reason).inc(n)
        for s in result.decision_seconds:
            m.decision_latency.observe(s)
        m.end_to_end_latency.observe_many([now - t if t < now else 0.0 for t in result.occurred_at])
        if self.file_copy is not None:
            self.file_copy.append(result.records)
            self.file_copy.commit()
            self._checkpoint_ages()
        self.batches += 1
        if self.batches % 20 == 0:
            self._update_lag()
        if self.on_batch is not None:
            self.on_batch(result)

    def _idle(self) -> None:
        if self.file_copy is not None:
            self.file_copy.commit()
            self._checkpoint_ages()
        self._update_lag()

    def _checkpoint_ages(self) -> None:
        assert self.file_copy is not None
        for chain, age in self.file_copy.checkpoint_ages().items():
            self.metrics.checkpoint_age.labels(chain).set(age)

    def _update_lag(self) -> None:
        if self.consumer is None or not self.assigned:
            return
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in self.assigned])
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
        except KafkaException:
            pass

    # ------------------------------------------------------------------ rebalancing
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        by_audit: dict[int, list[str]] = defaultdict(list)
        for tp in partitions:
            chain = f"{tp.topic}/{tp.partition}"
            by_audit[tp.partition % self.processor.routing.audit_partitions].append(chain)
        for audit_partition, chains in by_audit.items():
            heads = restore_heads(self.cfg.admin_conf(), self.cfg.topics.audit, audit_partition, chains)
            for chain, head in heads.items():
                self.processor.set_head(chain, head)
                log.info("chain restored", chain=chain, size=head.size if head else 0)
                if self.file_copy is not None and head is not None:
                    self.file_copy.catch_up(chain, head.size)
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.metrics.ready.set(1 if self.ready() else 0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every consumed batch was committed before consume() was called again: nothing pending.
        self._drop(partitions)
        log.info("partitions revoked", partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions)
        log.warning("partitions lost", partitions=[f"{tp.topic}/{tp.partition}" for tp in partitions])

    def _drop(self, partitions: list[TopicPartition]) -> None:
        self.processor.forget(f"{tp.topic}/{tp.partition}" for tp in partitions)
        self.assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))


class _Fatal(Exception):
    pass
