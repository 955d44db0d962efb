"""bench/tail.py's attribution: each sample's end-to-end time split into the parts of its own batch
(matched by the Kafka timestamp its record got in ``_open``), the parts adding up to the whole, and the
broker JVM's pauses read from its safepoint log."""

from __future__ import annotations

import math

import pytest

from bench.tail import PARTS, batches, broker_pauses, split, tail_report

LOG = """\
[1.124s][1796471029077ms] GC(0) Pause Full (Metadata GC Threshold) 72M->8M(365M) 63.260ms
[1.124s][1796471029077ms] Safepoint "CollectForMetadataAllocation", Time since last: 506678883 ns, \
Reaching safepoint: 2123 ns, Cleanup: 110836 ns, At safepoint: 63338536 ns, Total: 63451495 ns
[1.779s][1796471029732ms] Safepoint "ICBufferFull", Time since last: 652501643 ns, Reaching safepoint: \
1483797 ns, Cleanup: 871929 ns, At safepoint: 22684 ns, Total: 2378410 ns
[21.487s][1796471148735ms] Safepoint "GenCollectForAllocation", Time since last: 1 ns, Reaching safepoint: \
1 ns, Cleanup: 1 ns, At safepoint: 1 ns, Total: 101187000 ns
"""


def test_broker_pauses_are_the_safepoints_of_at_least_the_bound() -> None:
    got = broker_pauses(LOG, at_least_s=0.005)
    assert [(round(a, 6), round(b, 6)) for a, b in got] == [
        (round(1796471029.077 - 0.063451495, 6), 1796471029.077),
        (round(1796471148.735 - 0.101187, 6), 1796471148.735)]
    assert len(broker_pauses(LOG, at_least_s=0.001)) == 3


def trace() -> list[list[object]]:
    """Two pipelined batches: take, process, open on the main thread; the round trips on the worker.
    Batch 2 is taken while batch 1's transaction is in flight, and waits for it before its open."""
    return [
        ["take", 10.000, 10.020, 500, 1_000_000, 2_000_000],
        ["process", 10.021, 10.030, 500],
        ["open", 10.030, 10.033, 520],
        ["rpc", 10.034, 10.040, "send_offsets_to_transaction"],
        ["take", 10.033, 10.050, 300, 3_000_000, 2_500_000],  # 0.5 ms waited since the first take
        ["rpc", 10.040, 10.060, "commit_transaction"],
        ["process", 10.051, 10.055, 300],
        ["gc", 10.052, 10.053, 0, 1],
        ["open", 10.062, 10.064, 310],
        ["rpc", 10.065, 10.070, "send_offsets_to_transaction"],
        ["rpc", 10.070, 10.080, "commit_transaction"],
        ["take", 10.090, 10.091, 0, 4_000_000, 9_500_000],  # an empty take is no batch
        ["take", 10.095, 10.100, 50, 5_000_000, 12_500_000],  # 10 ms waited in batch 2
    ]


def test_each_batch_is_its_take_process_open_and_commit() -> None:
    got = batches(trace())
    assert [(b["take_end"], b["process"], b["open"], b["committed"], b["events"]) for b in got] == [
        (10.020, (10.021, 10.030), (10.030, 10.033), 10.060, 500),
        (10.050, (10.051, 10.055), (10.062, 10.064), 10.080, 300)]
    assert got[0]["main_waited_s"] == pytest.approx(0.0005)
    assert got[1]["main_waited_s"] == pytest.approx(0.010)


def test_a_sample_is_split_by_its_own_batch_and_the_parts_add_up() -> None:
    samples = [(10.095, 10.010, 10.031),   # batch 1 (Kafka timestamp inside its open)
               (10.120, 10.040, 10.063),   # batch 2
               (10.200, 10.001, 10.045)]   # produced outside every open: not matched
    got = split(samples, batches(trace()))
    assert len(got) == 2
    one, two = got
    assert one["to_batch"] == pytest.approx(0.010)
    assert one["settle"] == pytest.approx(0.001)
    assert one["process"] == pytest.approx(0.009)
    assert one["wait_prev"] == pytest.approx(0.0)
    assert one["open"] == pytest.approx(0.003)
    assert one["commit"] == pytest.approx(0.027)
    assert one["visible"] == pytest.approx(0.035)
    assert two["to_batch"] == pytest.approx(0.010)
    assert two["wait_prev"] == pytest.approx(0.007)  # batch 1 committing
    assert two["commit"] == pytest.approx(0.016)
    assert two["visible"] == pytest.approx(0.040)
    for p in got:
        assert math.fsum(p[k] for k in PARTS) == pytest.approx(p["total"])


def test_the_tail_counts_what_was_in_flight_with_its_samples() -> None:
    parts = split([(10.095 + i * 1e-4, 10.010, 10.031) for i in range(99)] + [(10.400, 10.040, 10.063)],
                  batches(trace()))
    rep = tail_report(parts, gcs=[(10.052, 10.053)], pauses=[(10.300, 10.350)])
    assert rep["samples"] == 100 and rep["tail_samples"] == 1
    assert rep["p99_s"] == pytest.approx(0.360)
    assert rep["tail_mean"]["visible"] == pytest.approx(0.320)
    assert rep["tail_with_broker_pause"] == 1
    assert rep["tail_with_daemon_gc"] == 1
    assert rep["tail_with_main_waiting_5ms"] == 1  # batch 2's main thread waited 10 ms
    assert rep["all_with_broker_pause"] == 1
