"""Read and verify the trail held in the audit topic (read_committed), without the file copy.

Every record's hash is recomputed from its bytes and every chain link is checked, with the
same chain logic as the file verifier, so a modified, deleted, inserted or reordered record in
the topic is named with its chain and seq.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from auditor.errors import BrokerError
from auditor.trail.canonical import iter_frames
from auditor.trail.chain import RECORD_PREFIX
from auditor.trail.verify import Issue, VerifyReport, _Chain, _finish


def iter_topic(bootstrap_conf: dict[str, Any], topic: str, timeout: float = 30.0,
               ) -> Iterator[tuple[int, int, bytes]]:
    """(partition, offset, value) of every committed message, partition by partition."""
    md = AdminClient(bootstrap_conf).list_topics(topic, timeout=timeout)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise BrokerError(f"audit topic {topic} does not exist")
    partitions = sorted(md.topics[topic].partitions)
    consumer = Consumer({**bootstrap_conf, "group.id": "auditor-verify", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            # consume() waits for all 5000 messages or the whole timeout, so poll in short slices
            # and give up only after `timeout` seconds without any message.
            deadline = time.monotonic() + timeout
            while True:
                msgs = consumer.consume(5000, 0.2)
                if not msgs:
                    if time.monotonic() > deadline:
                        raise BrokerError(f"timed out reading {topic}/{p}")
                    continue
                deadline = time.monotonic() + timeout
                eof = False
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof = True
                            break
                        raise BrokerError(f"reading {topic}/{p}: {err}")
                    yield p, m.offset() or 0, m.value() or b""
                if eof:
                    break
            consumer.unassign()
    finally:
        consumer.close()


def verify_topic(bootstrap_conf: dict[str, Any], topic: str,
                 progress: Callable[[int], object] | None = None) -> VerifyReport:
    report = VerifyReport()
    chains: dict[str, _Chain] = {}
    sha256 = hashlib.sha256
    for partition, offset, value in iter_topic(bootstrap_conf, topic):
        try:
            (f,) = list(iter_frames(value, 1))
        except Exception:
            report.issues.append(Issue("damaged", f"unreadable record at {topic}/{partition}@{offset}"))
            continue
        chain = chains.get(f.chain_id)
        if chain is None:
            chain = chains[f.chain_id] = _Chain(f.chain_id, {}, report)
        actual = sha256(RECORD_PREFIX + value[f.start:f.end - 32]).digest()
        if actual != f.record_hash:
            chain.issue("modified", f"record seq {f.seq} was modified ({topic}/{partition}@{offset})",
                        f.seq, f.record_hash, actual)
        chain.add(f.seq, f.prev_hash, f.record_hash)
        report.records += 1
        if progress is not None:
            progress(1)
    _finish(chains, {}, {}, None, report)
    return report
