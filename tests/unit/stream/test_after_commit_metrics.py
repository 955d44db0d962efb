"""What the daemon counts once a batch committed (Daemon._after_commit): the latency histograms take
the batch in one call each, and expose what a prometheus_client Histogram fed one value at a time would."""

from __future__ import annotations

import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from auditor.metrics import DECISION_BUCKETS, LATENCY_BUCKETS, BatchHistogram, build_metrics
from auditor.stream.processor import BatchResult
from auditor.stream.runner import Daemon, ages


def samples(reg: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for f in reg.collect() for s in f.samples
            if s.name.startswith(name) and not s.name.endswith("_created")}


def reference_ages(times: list[float], now: float) -> list[float]:
    return [now - t if t < now else 0.0 for t in times]


@given(st.lists(st.floats(min_value=0.0, max_value=2e9, allow_nan=False), max_size=50),
       st.floats(min_value=0.0, max_value=2e9, allow_nan=False))
def test_ages_are_the_latencies_and_zero_for_a_time_not_before_now(times, now):
    got = ages(times, now)
    assert got == reference_ages(times, now)
    assert all(type(a) is float for a in got)


def test_a_time_after_now_or_at_now_counts_as_no_latency():
    now = 1_700_000_000.5
    times = [now - 2.0, now, now + 3.0, now - 0.25]
    assert ages(times, now) == [2.0, 0.0, 0.0, 0.25]


@given(st.lists(st.one_of(st.sampled_from(DECISION_BUCKETS), st.floats(min_value=-1.0, max_value=1.0,
                                                                        allow_nan=False)), max_size=60))
def test_a_batch_histogram_of_decision_seconds_is_a_client_histogram(values):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("d_seconds", "doc", DECISION_BUCKETS, ours)
    reference = Histogram("d_seconds", "doc", buckets=DECISION_BUCKETS, registry=theirs)
    batch.observe_many(values)
    for v in values:
        reference.observe(v)
    assert samples(ours, "d_seconds") == pytest.approx(samples(theirs, "d_seconds"))


def test_after_commit_observes_every_decision_and_every_latency_of_the_batch():
    metrics = build_metrics(CollectorRegistry())
    daemon = types.SimpleNamespace(metrics=metrics, file_copy=None, batches=0, ledger=None, on_batch=None)
    decisions = [0.00002, 0.00002, 0.00002, 0.0003, 0.02]
    result = BatchResult(audited=[("p", "USE", "ALLOW")] * 3, decision_seconds=decisions,
                         occurred_at=[0.0, 1.0, 4e9])  # the last one from a clock far ahead
    Daemon._after_commit(daemon, [], result)  # type: ignore[arg-type]
    reg = metrics.registry
    want = CollectorRegistry()
    reference = Histogram("auditor_decision_latency_seconds", "doc", buckets=DECISION_BUCKETS, registry=want)
    for s in decisions:
        reference.observe(s)
    assert samples(reg, "auditor_decision_latency_seconds") == \
        pytest.approx(samples(want, "auditor_decision_latency_seconds"))
    assert reg.get_sample_value("auditor_end_to_end_latency_seconds_count") == 3
    assert reg.get_sample_value("auditor_end_to_end_latency_seconds_bucket", {"le": "0.0005"}) == 1
    assert reg.get_sample_value("auditor_events_audited_total", {"pack": "p", "kind": "USE", "verdict": "ALLOW"}) == 3
    assert daemon.batches == 1
    assert LATENCY_BUCKETS[0] == 0.0005
