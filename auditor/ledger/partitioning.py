"""Which partition a subject's facts and events belong to: Kafka's default partitioner of Java
clients (murmur2 of the key, made positive, modulo the partition count), the one ``auditor
produce`` uses for both (librdkafka's ``murmur2_random``; Kafka Streams and Java producers alike).

The ledger holds a subject's facts in the partition its id hashes to and judges an event with
the facts of the partition the event arrived on. An event on another partition would find none of
its subject's facts, whatever they say: the producing system (the one audited) would choose which
withdrawals its events meet. :func:`subject_partition` lets the daemon refuse such an event, and
such a fact, instead (reason ``misrouted``).
"""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def subject_partition(subject_id: str, partitions: int) -> int:
    """The partition of a subject's facts and events among ``partitions``."""
    return (murmur2(subject_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
