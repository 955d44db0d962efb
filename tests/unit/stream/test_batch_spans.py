"""Per-partition facts of a batch read from its ends, and the intake's queues filled by one loop.

A batch the intake builds (:class:`auditor.stream.fairness.Batch`) carries each partition's first
and last message and count; the offsets to commit, where a rewind goes and the per-topic counts are
read from those, and must be what a look at every message gives. Anything else (a split's half, a
hand-made list, ends that cannot be right) is looked at message by message."""

from __future__ import annotations

import random

from confluent_kafka import KafkaError, Message

from auditor.stream.commit import first_offsets, next_offsets, spans
from auditor.stream.fairness import Batch, PartitionBuffers
from auditor.stream.intake import payload_bytes


def _fetch(rng: random.Random, next_offset: dict[int, int], n: int) -> list[Message]:
    """``n`` messages in runs of one partition, offsets increasing per partition with gaps (compaction,
    transaction markers), as librdkafka hands them over."""
    out = []
    while len(out) < n:
        p = rng.randrange(3)
        for _ in range(min(rng.randrange(1, 400), n - len(out))):
            next_offset[p] += rng.choice((1, 1, 1, 2, 5))
            out.append(Message(topic="ev", partition=p, offset=next_offset[p], value=b"x" * rng.randrange(0, 50)))
    return out


def test_a_taken_batch_gives_what_every_message_gives():
    rng = random.Random(7)
    buffers = PartitionBuffers(payload_bytes)
    wanted = frozenset({("ev", 0), ("ev", 1), ("ev", 2)})
    offsets = {0: 0, 1: 0, 2: 0}
    for _ in range(60):
        buffers.add_all(_fetch(rng, offsets, rng.randrange(1, 3000)), wanted, [])
        batch = buffers.take(rng.randrange(1, 2500))
        assert isinstance(batch, Batch)
        plain = list(batch)
        assert spans(plain) is None
        assert spans(batch) is not None
        assert next_offsets(batch) == next_offsets(plain)
        assert first_offsets(batch) == first_offsets(plain)
        assert sum(n for _, _, n in spans(batch).values()) == len(batch)  # type: ignore[union-attr]


def test_ends_that_cannot_be_right_are_not_trusted():
    msgs = [Message(topic="ev", partition=0, offset=o) for o in (10, 11, 3, 4)]  # a jump back
    batch = Batch()
    batch.extend(msgs)
    batch.spans = {("ev", 0): (msgs[0], msgs[-1], 4)}
    assert spans(batch) is None
    assert next_offsets(batch) == {("ev", 0): 12}
    assert first_offsets(batch) == {("ev", 0): 3}
    batch.spans = {("ev", 0): (Message(topic="ev", partition=0), msgs[-1], 4)}  # no offset
    assert spans(batch) is None


def test_add_all_keeps_order_weighs_and_leaves_out_others_and_errors():
    wanted = frozenset({("ev", 0), ("ev", 2)})
    err = Message(topic="ev", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    msgs = [Message(topic="ev", partition=p, offset=o, value=b"v" * (o % 7)) for o in range(30) for p in (0, 1, 2)]
    msgs.insert(10, err)
    msgs.append(Message(topic="other", partition=0, offset=1, value=b"zz"))
    buffers, errors = PartitionBuffers(payload_bytes), []
    touched = buffers.add_all(msgs, wanted, errors)
    assert touched == {("ev", 0), ("ev", 2)}
    assert errors == [err]
    kept = [m for m in msgs if m.error() is None and (m.topic(), m.partition()) in wanted]
    assert len(buffers) == len(kept)
    assert buffers.nbytes == payload_bytes(kept)
    for key in wanted:
        assert list(buffers.queues[key]) == [m for m in kept if (m.topic(), m.partition()) == key]
    assert ("ev", 1) not in buffers.queues
