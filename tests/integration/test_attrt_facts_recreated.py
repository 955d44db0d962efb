"""attrt: the facts topic deleted and created again under the same name, with as many partitions.

attops's checks (e84a4f0 at start, 8d33556 every 10 s) compare partition counts, which a topic
created again with the same count passes. The store's positions are the old topic's offsets: the
new topic's facts below them are never read, and once the new topic is longer than the old one
was, a restart resumes after them (``resume_from`` drops the store only for a topic shorter than
what was applied). A subject's withdrawal produced again to the new topic was never met, silently.
The store now records the facts topic's id (Kafka gives a topic created again a new one); a daemon
that finds another one stops (exit 2) with what to do. Real broker (the session's, tests/conftest.py).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from confluent_kafka.admin import AdminClient
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, raising_daemon, stops_before_auditing, withdrawal

from auditor.errors import ConfigError
from auditor.localkafka.broker import create_topics
from auditor.stream import ledgerfeed
from auditor.stream.produce import produce

pytestmark = pytest.mark.kafka


def _recreate(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:  # the broker refuses a name still marked for deletion for a moment
        try:
            create_topics(bootstrap, [topic], partitions)
            return
        except Exception:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_facts_topic_created_again_under_the_store_stops_the_daemon(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    # three facts of other subjects applied: the store has read the facts partition through offset 2
    produce(kafka_bootstrap, facts, [withdrawal(f"old-{i}", f"other-{i}", T0) for i in range(3)])
    with InProcessDaemon(setup.config(instance_id="a")) as d:
        wait_until(lambda: d.sample("auditor_ledger_facts_total") == 3, 90, "the old facts applied")
    _recreate(kafka_bootstrap, facts, 1)
    # the new topic: the subject's withdrawal first (offset 0), then more facts than the old topic held
    produce(kafka_bootstrap, facts, [withdrawal("w", "u-1", T0)] +
            [withdrawal(f"new-{i}", f"other-{i}", T0) for i in range(4)])
    produce(kafka_bootstrap, setup.events, [marketing_event("after", "u-1", T0 + timedelta(hours=1))])
    # before: the audit topic held [('after', 'DECISION', 'ALLOW')]: resumed at offset 3 of the new topic,
    # the withdrawal never read
    err = stops_before_auditing(setup, kafka_bootstrap)
    assert "created again" in str(err), err


def test_a_facts_topic_created_again_while_the_daemon_runs_stops_it(tmp_path, kafka_bootstrap, monkeypatch):
    """The same while the daemon runs (no check during the deletion, one before the next event): the
    reader's position (3) is past the new topic's end (1), so it read nothing and the subject's
    withdrawal was never met; the partition count check passed."""
    monkeypatch.setattr(ledgerfeed, "PARTITIONS_CHECK_S", 3600.0)
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, facts, [withdrawal(f"old-{i}", f"other-{i}", T0) for i in range(3)])
    d, raised = raising_daemon(setup.config(instance_id="a"))
    with d:
        wait_until(lambda: d.sample("auditor_ledger_facts_total") == 3, 90, "the old facts applied")
        _recreate(kafka_bootstrap, facts, 1)
        produce(kafka_bootstrap, facts, [withdrawal("w", "u-1", T0)])
        monkeypatch.setattr(ledgerfeed, "PARTITIONS_CHECK_S", 0.5)  # the next check is due
        produce(kafka_bootstrap, setup.events, [marketing_event("after", "u-1", T0 + timedelta(hours=1))])
        wait_until(lambda: not d.thread.is_alive() or read_audit(kafka_bootstrap, setup.audit), 90,
                   "the daemon stopped, or the event audited")
    records = [(e.record.event_id, e.record.record_type.value, e.record.decision.verdict.value if e.record.decision
                else None) for e in read_audit(kafka_bootstrap, setup.audit)]
    # before: [('after', 'DECISION', 'ALLOW')], the daemon still running
    assert records == [], records
    assert raised and isinstance(raised[0], ConfigError) and "created again" in str(raised[0]), raised
