"""Restore chain heads from the audit topic: the last committed record of each chain.

Runs for a newly assigned partition, before any of its messages is processed, with a
read_committed consumer outside the group. It reads the audit partition backwards in windows
from its end until it has seen the latest record of every chain it was asked for (or reached
the start, meaning the chain is new). Never from memory: a partition that comes back to an
instance is restored again.

A restored head is trusted only when it agrees with the group's committed offset for the
source partition (:func:`disagreement`): the head record's source offset must be the committed
offset minus one. :mod:`auditor.stream.ownership` decides when to restore and what to do when
they disagree (a previous owner's transaction still completing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from auditor.errors import BrokerError, TrailCorruption
from auditor.stream.offsets import list_offsets
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead

WINDOW = 2000


@dataclass(frozen=True)
class Restored:
    """The last committed record of a chain: the head after it and its source offset."""

    head: ChainHead | None = None
    source_offset: int | None = None


def disagreement(chain: str, committed: int, restored: Restored) -> str | None:
    """Why the restored head cannot be trusted with the group's committed offset, or None.

    ``committed`` is the group's committed offset for the chain's source partition (negative:
    nothing committed). They agree when the head record is for offset ``committed - 1``, or the
    chain is empty and nothing was committed.
    """
    head, src = restored.head, restored.source_offset
    if committed < 0:
        if head is None:
            return None
        return (f"chain {chain} has {head.size} records (the last for source offset {src}) but the group "
                "has no committed offset for its partition")
    if head is None:
        return f"the group committed offset {committed} for {chain} but the chain has no committed records"
    if src == committed - 1:
        return None
    return (f"chain {chain} ends at source offset {src} but the group committed offset {committed} "
            f"(expected the chain to end at {committed - 1}); a previous owner's transaction may still be "
            "completing")


def open_transaction_gap(admin: AdminClient, topic: str, partition: int, timeout: float) -> int:
    """High watermark minus last stable offset: > 0 while a transaction on the partition is open."""
    stable, high = stable_offsets(admin, topic, partition, timeout)
    return max(0, high - stable)


def stable_offsets(admin: AdminClient, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """(last stable offset, high watermark) of a partition. A read_committed reader sees nothing at
    or past the last stable offset: the first offset of the oldest transaction still open there."""
    tp = TopicPartition(topic, partition)
    hwm = list_offsets(admin, [tp], OffsetSpec.latest(), timeout, IsolationLevel.READ_UNCOMMITTED)[(topic, partition)]
    lso = list_offsets(admin, [tp], OffsetSpec.latest(), timeout, IsolationLevel.READ_COMMITTED)[(topic, partition)]
    return lso, hwm


def restore_heads(conf: dict[str, Any], audit_topic: str, partition: int, chain_ids: Iterable[str],
                  timeout: float = 30.0) -> dict[str, Restored]:
    """Latest committed head per chain in one audit partition (``Restored()``: no records)."""
    wanted = set(chain_ids)
    found: dict[str, Restored] = {}
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
        found[chain] = Restored()
    return found


def _read_window(consumer: Consumer, topic: str, partition: int, start: int, end: int,
                 timeout: float) -> dict[str, Restored]:
    """Latest head per chain among committed records with offsets in [start, end)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    latest: dict[str, Restored] = {}
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
        if previous is not None and previous.head is not None and record.seq != previous.head.size:
            raise TrailCorruption(f"chain {record.chain_id} jumps from seq {previous.head.size - 1} to "
                                  f"{record.seq} at {topic}/{partition}@{offset}", chain=record.chain_id,
                                  seq=record.seq)
        latest[record.chain_id] = Restored(ChainHead.after(record), record.source.offset)
    consumer.unassign()
    return latest

