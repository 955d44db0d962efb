"""The facts and event topics given more partitions after the ledger recorded facts (attops).

Kafka keeps a record where it was written: after ``kafka-topics --alter --partitions``, a subject
whose id now hashes to a new partition has its older facts on the old one and its new events on
the new one. Both topics still have equal counts, so the start-up check passed, and the misrouted
check (dc070f7) judges by the new count: the event is on its subject's partition, where none of its
facts are. Its own consent claim stood against the recorded withdrawal, and nothing was counted
(the withdrawal had been applied to the store before the change). The store now records the facts
topic's partition count; a daemon that finds another one stops (exit 2) with what to do.
Real broker (the session's, tests/conftest.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, raising_daemon, stops_before_auditing, withdrawal

from auditor.errors import ConfigError
from auditor.ledger.partitioning import subject_partition
from auditor.stream import ledgerfeed
from auditor.stream.produce import produce

pytestmark = pytest.mark.kafka


def test_a_partition_count_changed_under_the_recorded_facts_stops_the_daemon(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=2)
    subject = next(s for s in (f"u-{i}" for i in range(1000))
                   if subject_partition(s, 4) == subject_partition(s, 2) + 2)  # moves when the topics grow
    produce(kafka_bootstrap, facts, [withdrawal("w", subject, T0)])
    with InProcessDaemon(setup.config(instance_id="a")) as d:
        wait_until(lambda: d.sample("auditor_ledger_facts_total") == 1, 90, "the withdrawal applied")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_partitions([NewPartitions(facts, 4), NewPartitions(setup.events, 4)]).values():
        fut.result(30)
    produce(kafka_bootstrap, setup.events, [marketing_event("after", subject, T0 + timedelta(hours=1))])
    # before: the audit topic held [('after', 'DECISION', <not VIOLATION>)], the withdrawal on partition 0/1
    # never met
    err = stops_before_auditing(setup, kafka_bootstrap)
    assert "2 partition" in str(err) and "4" in str(err), err


def test_a_facts_topic_grown_while_the_daemon_runs_stops_it(tmp_path, kafka_bootstrap, monkeypatch):
    """The facts topic alone given more partitions while the daemon runs: a withdrawal of a subject whose
    id now hashes to a new partition is written there, and no instance reads it (the subject's events
    are still on the old partitions). Before, its events were judged on their consent claim, silently,
    until the next start (whose check refuses the counts). Now within PARTITIONS_CHECK_S (10 s) the
    daemon stops (exit 2); an event judged meanwhile is not corrected."""
    monkeypatch.setattr(ledgerfeed, "PARTITIONS_CHECK_S", 1.0)
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=2)
    subject = next(s for s in (f"u-{i}" for i in range(1000)) if subject_partition(s, 4) >= 2)
    produce(kafka_bootstrap, setup.events, [marketing_event("first", "u-other", T0)])
    d, raised = raising_daemon(setup.config(instance_id="a"))
    with d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) == 1, 90, "the first event audited")
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_partitions([NewPartitions(facts, 4)])[facts].result(30)
        produce(kafka_bootstrap, facts, [withdrawal("w", subject, T0)])  # to a new partition
        produce(kafka_bootstrap, setup.events, [marketing_event("after", subject, T0 + timedelta(hours=1))])
        # before: it ran on, every later event of the subject judged without the withdrawal (fails here)
        wait_until(lambda: not d.thread.is_alive(), 30, "the daemon stopped")
    assert raised and isinstance(raised[0], ConfigError) and "4 partition" in str(raised[0]), raised
