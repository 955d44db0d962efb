"""PartitionBuffers (fair draining, auditor/stream/fairness.py), pure: a queue per partition, each
batch shared by the partitions with something buffered, each partition's messages in their order."""

from __future__ import annotations

from collections import Counter

from auditor.stream.fairness import PartitionBuffers

T = "events"


def filled(**counts: int) -> PartitionBuffers:
    """p0=5, p1=3: partition 0 with messages (0, 0), (0, 1), ...; partition 1 with (1, 0), ..."""
    b = PartitionBuffers()
    for name, n in counts.items():
        p = int(name[1:])
        for o in range(n):
            b.add((T, p), (p, o))
    return b


def test_a_batch_is_shared_equally_and_the_remainder_rotates():
    b = filled(p0=100, p1=100, p2=100)
    firsts = []
    for _ in range(3):
        batch = b.take(10)
        assert sorted(Counter(p for p, _ in batch).values()) == [3, 3, 4]
        firsts.append(batch[0][0])
    assert sorted(firsts) == [0, 1, 2]  # no partition always first (nor always given the extra one)


def test_each_partition_keeps_its_order_and_nothing_is_lost_or_repeated():
    b = filled(p0=50, p1=7, p2=23)
    got: list[tuple[int, int]] = []
    while len(b):
        got += b.take(9)
    for p, n in ((0, 50), (1, 7), (2, 23)):
        assert [o for q, o in got if q == p] == list(range(n))
    assert len(b) == 0 and b.take(9) == []


def test_drop_forgets_a_partition_and_the_size_follows():
    b = filled(p0=5, p1=3)
    assert b.drop([(T, 1), (T, 9)]) == 3
    assert len(b) == 5 and b.count((T, 1)) == 0
    assert b.take(10) == [(0, o) for o in range(5)]


def test_add_returns_the_partition_s_queue_length():
    b = PartitionBuffers()
    assert [b.add((T, 0), i) for i in range(3)] + [b.add((T, 1), 0)] == [1, 2, 3, 1]
