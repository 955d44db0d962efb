"""The trail held in Kafka as a :class:`~auditor.trail.source.TrailSource`: the audit topic's
records and the checkpoint topic's signed checkpoints, read with read_committed.

This is only an I/O adapter: verify, replay, prove and evidence run the same code on it as on a
trail directory. Client exceptions (an unreachable broker, authentication) propagate to the
CLI's one error boundary (:mod:`auditor.cli.boundary`), which names the real cause: exit 3, one
line. What only this adapter can see (a missing topic, a stalled partition) is a BrokerError.

Checkpoint-topic messages are described in :mod:`auditor.trail.chainlog` (key = origin, value =
the signed note, the compact range and consistency proof in headers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from auditor.errors import BrokerError, TrailCorruption
from auditor.trail.canonical import iter_frames
from auditor.trail.chainlog import stored_from_message
from auditor.trail.keys import Verifier
from auditor.trail.source import Chunk, Issue, Located, merge_cosignatures
from auditor.trail.verify import Policy, VerifyReport, verify_source

Message = tuple[int, int, bytes, Any]  # partition, offset, value, headers


class KafkaSource:
    """The audit topic and its checkpoint topic on one cluster.

    The daemon commits each batch's records with the checkpoint that covers them in one
    transaction, so a committed record no checkpoint covers was not written by it: no grace.

    A live topic grows while it is read, so :meth:`checkpoints` first takes the audit topic's
    last stable offsets, and :meth:`chunks` reads records only below them: every record read was
    committed before the checkpoints were read, with the checkpoint that covers it.
    """

    unsigned_grace = timedelta(0)
    unsigned_means = ("every transaction of the audit topic carries the checkpoint that covers its records, so "
                      "these were appended outside the auditor's transactions (forged)")

    def __init__(self, conf: dict[str, Any], audit_topic: str, checkpoint_topic: str, *,
                 timeout: float = 30.0) -> None:
        self.conf = dict(conf)
        self.audit_topic, self.checkpoint_topic = audit_topic, checkpoint_topic
        self.timeout = timeout
        self.label = f"kafka://{conf.get('bootstrap.servers', '?')}/{audit_topic}"
        self.notes: list[str] = []
        self.ends: dict[int, int] | None = None  # audit partition -> last stable offset when checkpoints were read

    def size_hint(self) -> int:
        return 0  # unknown in bytes; progress is counted anyway

    def checkpoints(self) -> Iterator[Located]:
        if self._exists(self.audit_topic, required=False):
            self.ends = stable_ends(self.conf, self.audit_topic, self.timeout)
        if not self._exists(self.checkpoint_topic, required=False):
            self.notes.append(f"checkpoint topic {self.checkpoint_topic} does not exist")
            return
        entries: list[Located] = []
        cosigned: list[bytes] = []
        for partition, offset, value, headers in iter_topic(self.conf, self.checkpoint_topic, self.timeout):
            where = f"{self.checkpoint_topic}/{partition}@{offset}"
            try:
                kind, entry = stored_from_message(value, headers)
            except TrailCorruption as exc:
                entries.append(Located(where, None, str(exc)))
                continue
            if kind == "cosigned":
                cosigned.append(entry.note)
            else:
                entries.append(Located(where, entry))
        yield from merge_cosignatures(entries, cosigned)

    def chunks(self) -> Iterator[Chunk | Issue]:
        self._exists(self.audit_topic, required=True)
        for partition, offset, value, _ in iter_topic(self.conf, self.audit_topic, self.timeout, self.ends):
            where = f"{self.audit_topic}/{partition}@{offset}"
            try:
                frames = list(iter_frames(value, 1))
                if frames[0].end != len(value):
                    raise TrailCorruption("trailing bytes after the record")
            except TrailCorruption as exc:
                yield Issue("damaged", f"unreadable record at {where}: {exc}")
                continue
            yield Chunk(where, value, frames)

    def probe(self) -> None:
        """Fail now (exit 3) if the cluster cannot be reached or the audit topic is missing."""
        self._exists(self.audit_topic, required=True)

    def _exists(self, topic: str, *, required: bool) -> bool:
        md = AdminClient(self.conf).list_topics(topic, timeout=self.timeout)
        meta = md.topics.get(topic)
        ok = meta is not None and meta.error is None and bool(meta.partitions)
        if required and not ok:
            raise BrokerError(f"topic {topic} does not exist on {self.conf.get('bootstrap.servers')}")
        return ok


def stable_ends(conf: dict[str, Any], topic: str, timeout: float = 30.0) -> dict[int, int]:
    """partition -> last stable offset (below it every transaction is decided)."""
    admin = AdminClient(conf)
    md = admin.list_topics(topic, timeout=timeout)
    tps = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=IsolationLevel.READ_COMMITTED,
                                 request_timeout=timeout)
    return {tp.partition: fut.result(timeout).offset for tp, fut in futures.items()}


def iter_topic(conf: dict[str, Any], topic: str, timeout: float = 30.0,
               ends: dict[int, int] | None = None) -> Iterator[Message]:
    """(partition, offset, value, headers) of every committed message, partition by partition (only
    below ``ends[partition]`` when given)."""
    md = AdminClient(conf).list_topics(topic, timeout=timeout)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BrokerError(f"topic {topic} does not exist")
    partitions = sorted(md.topics[topic].partitions)
    consumer = Consumer({**conf, "group.id": "auditor-verify", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        for p in partitions:
            yield from _read_partition(consumer, topic, p, timeout, None if ends is None else ends.get(p, 0))
    finally:
        consumer.close()


def _read_partition(consumer: Consumer, topic: str, p: int, timeout: float,
                    stop: int | None = None) -> Iterator[Message]:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
    if stop is not None:
        high = min(high, stop)
    if high <= low:
        return
    consumer.assign([TopicPartition(topic, p, low)])
    # consume() waits for all 5000 messages or the whole timeout, so poll in short slices and give
    # up only after `timeout` seconds without any message.
    deadline = time.monotonic() + timeout
    while True:
        msgs = consumer.consume(5000, 0.2)
        if not msgs:
            if time.monotonic() > deadline:
                raise BrokerError(f"timed out reading {topic}/{p}")
            continue
        deadline = time.monotonic() + timeout
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    consumer.unassign()
                    return
                raise BrokerError(f"reading {topic}/{p}: {err.str()}")
            if stop is not None and (m.offset() or 0) >= stop:
                consumer.unassign()
                return
            yield p, m.offset() or 0, m.value() or b"", m.headers()


def verify_topic(bootstrap_conf: dict[str, Any], topic: str, progress: Callable[[int], object] | None = None, *,
                 verifier: Verifier | None = None, checkpoint_topic: str | None = None,
                 policy: Policy | None = None) -> VerifyReport:
    """Verify the chains of an audit topic (and its checkpoint topic).

    Without a ``verifier`` only records and links are checked (what the daemon's integration
    tests use until the daemon writes checkpoints); ``auditor verify kafka://`` always passes the
    key, and then checkpoints are required like for a trail directory.
    """
    source = KafkaSource(bootstrap_conf, topic, checkpoint_topic or f"{topic}.checkpoints")
    if verifier is None:
        policy = Policy(require_checkpoints=False)
        verifier = Verifier()
    def count(n: int) -> None:
        if progress is not None:
            progress(1)

    return verify_source(source, verifier, (), policy or Policy(), progress=count)
