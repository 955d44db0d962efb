"""What the restores share: the restored head of a chain, whether the group's committed offset agrees
with it, a partition's stable offsets, and the forward read of a partition (:func:`read_forward`).

Chains are restored for a newly assigned partition, before any of its messages is processed, with a
read_committed consumer outside the group (:mod:`auditor.stream.chainrestore`: from the last signed
checkpoint, checked against the audit partition's tail). Never from memory: a partition that comes
back to an instance is restored again.

A restored head is trusted only when it agrees with the group's committed offset for the
source partition (:func:`disagreement`): the head record's source offset must be the committed
offset minus one. :mod:`auditor.stream.ownership` decides when to restore and what to do when
they disagree (a previous owner's transaction still completing).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from confluent_kafka import Consumer, IsolationLevel, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from auditor.errors import BrokerError
from auditor.stream.offsets import list_offsets
from auditor.trail.chain import ChainHead


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


def read_forward(consumer: Consumer, topic: str, partition: int, start: int, end: int | None,
                 timeout: float) -> Generator[Message, None, None]:
    """The messages with a value of one partition from offset ``start`` to its end (or to ``end``, exclusive),
    one at a time (none is kept here); the partition is unassigned when they are done, or when the generator is
    closed early (``contextlib.closing``). What it sees is what ``consumer`` reads (the restores: read_committed)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        while True:
            msg = consumer.poll(timeout)
            if msg is None:
                raise BrokerError(f"timed out reading {topic}/{partition} from offset {start}")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return
                raise BrokerError(f"reading {topic}/{partition}: {err}")
            if end is not None and (msg.offset() or 0) >= end:
                return
            if msg.value() is not None:
                yield msg
    finally:
        consumer.unassign()
