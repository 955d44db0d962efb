"""Prometheus metrics of the daemon, built against a registry passed in (no import-time globals).

Names and labels are a contract with ``deploy/prometheus/rules.yml`` and the Grafana dashboard.
Label values are bounded: packs, rule ids and purposes come from the loaded packs (anything
undeclared is folded into ``undeclared``), reasons from a fixed list, partitions from the topic.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from auditor import __version__

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DECISION_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    consumed: Counter
    audited: Counter
    violations: Counter
    dead_letters: Counter
    decision_latency: Histogram
    end_to_end_latency: Histogram
    consumer_lag: Gauge
    transactions: Counter
    checkpoint_age: Gauge
    pack_info: Gauge
    build_info: Gauge
    ready: Gauge
    last_audit: Gauge


def build_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    r = registry if registry is not None else CollectorRegistry()
    m = Metrics(
        registry=r,
        consumed=Counter("auditor_events_consumed", "Messages consumed from event topics",
                         ["topic"], registry=r),
        audited=Counter("auditor_events_audited", "Events audited, by pack, kind and verdict",
                        ["pack", "kind", "verdict"], registry=r),
        violations=Counter("auditor_violations", "Violated rules, one count per rule per event",
                           ["pack", "rule", "severity", "recipient_type", "purpose"], registry=r),
        dead_letters=Counter("auditor_dead_letters", "Inputs set aside on the dead-letter topic",
                             ["reason"], registry=r),
        decision_latency=Histogram("auditor_decision_latency_seconds",
                                   "Policy evaluation time per event (one evaluation in 16 is timed)",
                                   buckets=DECISION_BUCKETS, registry=r),
        end_to_end_latency=Histogram("auditor_end_to_end_latency_seconds",
                                     "From the event's occurred_at to the commit of its audit record",
                                     buckets=LATENCY_BUCKETS, registry=r),
        consumer_lag=Gauge("auditor_consumer_lag", "Messages behind the partition's high watermark",
                           ["topic", "partition"], registry=r),
        transactions=Counter("auditor_transactions", "Kafka transactions by outcome", ["outcome"],
                             registry=r),
        checkpoint_age=Gauge("auditor_trail_checkpoint_age_seconds",
                             "Seconds since the chain's last signed checkpoint", ["chain"], registry=r),
        pack_info=Gauge("auditor_pack_info", "Loaded policy packs and their content hashes",
                        ["pack", "hash"], registry=r),
        build_info=Gauge("auditor_build_info", "auditor build", ["version", "python"], registry=r),
        ready=Gauge("auditor_ready", "1 when the daemon is assigned partitions and consuming", registry=r),
        last_audit=Gauge("auditor_last_audit_timestamp_seconds", "Unix time of the last audited event",
                         ["topic"], registry=r),
    )
    m.build_info.labels(__version__, platform.python_version()).set(1)
    for outcome in ("commit", "abort"):
        m.transactions.labels(outcome)
    return m
