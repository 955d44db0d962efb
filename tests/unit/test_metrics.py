"""The daemon's metrics: BatchHistogram exposes what a prometheus_client Histogram would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from auditor.metrics import LATENCY_BUCKETS, BatchHistogram, build_metrics


def test_batch_histogram_exposition_equals_a_client_histogram():
    values = [0.0, 0.0004, 0.001, 0.003, 0.2, 0.2, 7.5, 100.0, 0.05, 60.0]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lat_seconds", "doc", LATENCY_BUCKETS, ours)
    reference = Histogram("lat_seconds", "doc", buckets=LATENCY_BUCKETS, registry=theirs)
    batch.observe_many(values[:6])
    batch.observe(values[6])
    batch.observe_many(values[7:])
    for v in values:
        reference.observe(v)

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("le", "")): s.value for f in reg.collect() for s in f.samples
                if not s.name.endswith("_created")}

    assert samples(ours) == pytest.approx(samples(theirs))
    assert b'lat_seconds_bucket{le="+Inf"} 10.0' in generate_latest(ours)


def test_build_metrics_uses_a_fresh_registry_each_time():
    a, b = build_metrics(), build_metrics()
    a.audited.labels("p", "USE", "ALLOW").inc()
    labels = {"pack": "p", "kind": "USE", "verdict": "ALLOW"}
    assert a.registry.get_sample_value("auditor_events_audited_total", labels) == 1
    assert b.registry.get_sample_value("auditor_events_audited_total", labels) is None
