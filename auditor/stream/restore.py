"""Restore chain heads from the audit topic: the last committed record of each chain.

Runs on partition assignment, before any message of the partition is processed, with a
read_committed consumer outside the group. It reads the audit partition backwards in windows
from its end until it has seen the latest record of every chain it was asked for (or reached
the start, meaning the chain is new). Never from memory: a partition that comes back to an
instance is restored again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from auditor.errors import BrokerError, TrailCorruption
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead

WINDOW = 2000


def restore_heads(conf: dict[str, Any], audit_topic: str, partition: int, chain_ids: Iterable[str],
                  timeout: float = 30.0) -> dict[str, ChainHead | None]:
    """Latest committed head per chain in one audit partition (None: the chain has no records)."""
    wanted = set(chain_ids)
    found: dict[str, ChainHead | None] = {}
    consumer = Consumer({**conf, "group.id": "auditor-restore", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(audit_topic, partition),
                                                   timeout=timeout, cached=False)
        end = high
        while wanted - found.keys() and end > low:
            start = max(low, end - WINDOW)
            latest = _read_window(consumer, audit_topic, partition, start, end, timeout)
            for chain, head in latest.items():
                if chain in wanted and chain not in found:
                    found[chain] = head
            end = start
    except KafkaException as exc:
        raise BrokerError(f"cannot restore chains from {audit_topic}/{partition}: {exc}") from exc
    finally:
        consumer.close()
    for chain in wanted - found.keys():
        found[chain] = None
    return found


def _read_window(consumer: Consumer, topic: str, partition: int, start: int, end: int,
                 timeout: float) -> dict[str, ChainHead]:
    """Latest head per chain among committed records with offsets in [start, end)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    latest: dict[str, ChainHead] = {}
    while True:
        msg = consumer.poll(timeout)
        if msg is None:
            raise BrokerError(f"timed out reading {topic}/{partition} from offset {start}")
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                break
            raise BrokerError(f"reading {topic}/{partition}: {err}")
        offset = msg.offset() or 0
        if offset >= end:
            break
        value = msg.value()
        if value is None:
            continue
        try:
            record = record_from_bytes(value)
        except Exception as exc:
            raise TrailCorruption(f"unreadable audit record at {topic}/{partition}@{offset}") from exc
        previous = latest.get(record.chain_id)
        if previous is not None and record.seq != previous.size:
            raise TrailCorruption(f"chain {record.chain_id} jumps from seq {previous.size - 1} to "
                                  f"{record.seq} at {topic}/{partition}@{offset}", chain=record.chain_id,
                                  seq=record.seq)
        latest[record.chain_id] = ChainHead.after(record)
    consumer.unassign()
    return latest

