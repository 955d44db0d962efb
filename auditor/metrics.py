"""Prometheus metrics of the daemon, built against a registry passed in (no import-time globals).

Names and labels are a contract with ``deploy/prometheus/rules.yml`` and the Grafana dashboard.
Label values are bounded: packs, rule ids and purposes come from the loaded packs (anything
undeclared is folded into ``undeclared``), reasons from a fixed list, partitions from the topic.
"""

from __future__ import annotations

import platform
import threading
from bisect import bisect_left
from collections import Counter as CountOf
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from auditor import __version__

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DECISION_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01)


class BatchHistogram:
    """A histogram that takes a whole batch of observations in one pass under one lock.

    Every record of a batch commits at the same instant, so the daemon observes a batch's
    end-to-end latencies together; ``Histogram.observe`` per event would cost more than the rest
    of the bookkeeping. Exposed exactly like a prometheus_client Histogram (``_bucket``, ``_sum``,
    ``_count``).
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        # the attributes prometheus_client's own metrics expose, for tools that introspect them
        self._name, self._type, self._labelnames = name, "histogram", ()
        self.bounds = sorted(float(b) for b in buckets) + [float("inf")]
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        values = list(values)
        slots = CountOf(map(bisect_left, repeat(self.bounds), values))  # first bucket whose bound >= v
        with self.lock:
            counts = self.counts
            for i, n in slots.items():
                counts[i] += n
            self.total += sum(values)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self.lock:
            counts, total = list(self.counts), self.total
        cumulative, running = [], 0
        for bound, n in zip(self.bounds, counts, strict=True):
            running += n
            cumulative.append((floatToGoString(bound), running))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    consumed: Counter
    audited: Counter
    violations: Counter
    dead_letters: Counter
    decision_latency: BatchHistogram
    end_to_end_latency: BatchHistogram
    consumer_lag: Gauge
    transactions: Counter
    checkpoint_age: Gauge
    pack_info: Gauge
    build_info: Gauge
    start_time: Gauge
    ready: Gauge
    partitions_assigned: Gauge
    last_audit: Gauge
    partition_blocked: Gauge
    partition_stalled: Gauge
    batch_splits: Counter
    healthy: Gauge
    schema_registry_up: Gauge
    schema_registry_errors: Counter
    retention_finite: Gauge
    forged: Counter
    adopted_unsigned: Counter
    witness_failures: Counter
    witness_cosigned: Counter
    witness_behind: Gauge


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
        decision_latency=BatchHistogram("auditor_decision_latency_seconds",
                                        "Policy evaluation time per event (one evaluation in 16 is timed)",
                                        DECISION_BUCKETS, r),
        end_to_end_latency=BatchHistogram("auditor_end_to_end_latency_seconds",
                                          "From the event's occurred_at to the commit of its audit record",
                                          LATENCY_BUCKETS, r),
        consumer_lag=Gauge("auditor_consumer_lag", "Messages behind the partition's high watermark",
                           ["topic", "partition"], registry=r),
        transactions=Counter("auditor_transactions", "Kafka transactions by outcome", ["outcome"],
                             registry=r),
        checkpoint_age=Gauge("auditor_trail_checkpoint_age_seconds",
                             "Seconds since the chain's last signed checkpoint", ["chain"], registry=r),
        pack_info=Gauge("auditor_pack_info", "Loaded policy packs and their content hashes",
                        ["pack", "hash"], registry=r),
        build_info=Gauge("auditor_build_info", "auditor build", ["version", "python"], registry=r),
        start_time=Gauge("auditor_start_time_seconds", "Unix time this process started (built its metrics)",
                         registry=r),
        ready=Gauge("auditor_ready", "1 when the daemon has joined its consumer group (an assignment came, even an "
                    "empty one), is consuming and no partition of it is stalled", registry=r),
        partitions_assigned=Gauge("auditor_partitions_assigned", "Source partitions assigned to this instance "
                                  "(0: idle, more instances than partitions)", registry=r),
        last_audit=Gauge("auditor_last_audit_timestamp_seconds", "Unix time of the last audited event",
                         ["topic"], registry=r),
        partition_blocked=Gauge("auditor_partition_blocked",
                                "1 while a partition is paused because its chain head cannot be trusted yet "
                                "(a previous owner's transaction still open, or the head disagrees with the "
                                "committed offset)", ["topic", "partition"], registry=r),
        partition_stalled=Gauge("auditor_partition_stalled",
                                "1 while a partition has made no progress for watchdog.progress_timeout_s "
                                "(paused, or its batches keep aborting); /readyz fails meanwhile",
                                ["topic", "partition"], registry=r),
        batch_splits=Counter("auditor_batch_splits", "Batches split in halves because the broker refused "
                             "their outputs", registry=r),
        healthy=Gauge("auditor_healthy", "1 while /healthz answers 200 (0: the watchdog fired)", registry=r),
        schema_registry_up=Gauge("auditor_schema_registry_up",
                                 "1 while the configured schema registry answers, 0 during an outage "
                                 "(absent when no registry is configured)", ["registry"], registry=r),
        schema_registry_errors=Counter("auditor_schema_registry_errors",
                                       "Failed schema registry look-ups, by reason", ["reason"], registry=r),
        retention_finite=Gauge("auditor_trail_retention_finite",
                               "1 when a trail topic (audit or checkpoints) has finite retention and the daemon "
                               "runs anyway (trail.accept_finite_retention)", ["topic"], registry=r),
        forged=Counter("auditor_trail_forged", "Chains found on restore with records no signed checkpoint covers "
                       "(appended outside the auditor's transactions)", ["chain"], registry=r),
        adopted_unsigned=Counter("auditor_trail_adopted_unsigned",
                                 "Records of chains with no signed checkpoint that the daemon checked from genesis "
                                 "and signed, under trail.adopt_unsigned_chains", ["chain"], registry=r),
        witness_failures=Counter("auditor_witness_failures", "Checkpoints a witness did not cosign, by reason "
                                 "(unreachable, refused, dropped: the witness queue was full, error)",
                                 ["witness", "reason"], registry=r),
        witness_cosigned=Counter("auditor_witness_cosigned", "Checkpoints cosigned by a witness",
                                 ["witness"], registry=r),
        witness_behind=Gauge("auditor_witness_behind_seconds", "How long the oldest checkpoint a witness has "
                             "not cosigned has waited, over every chain of this instance (0: none)",
                             ["witness"], registry=r),
    )
    m.build_info.labels(__version__, platform.python_version()).set(1)
    m.start_time.set_to_current_time()  # its changes count restarts (AuditorInstanceRestarting)
    for outcome in ("commit", "abort"):
        m.transactions.labels(outcome)
    return m
