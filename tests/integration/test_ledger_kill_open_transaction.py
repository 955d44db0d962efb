"""kill -9 while a grant is held in an open transaction on the facts topic (atl2, session 10).

atl bounded a fact's log time by the daemon's last read of its partition's stable end below it (a grant
written in a transaction left open is stamped early, readable only once committed). Those reads were kept
in the store only with a confirm or at a clean stop: a daemon killed (SIGKILL) while the transaction was
open lost them, the insider committed while it was down, and the restarted daemon took the grant at its
broker time: the victim's VIOLATION was corrected to ALLOW. Now the reads are kept every
``KEEP_READS_US``. A real broker, the daemon as a subprocess; the lag (2 s) and the keeping interval
(1 s) are set by a sitecustomize on the subprocess's path."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from daemonkit import DaemonProcess, read_audit, set_topic_config, wait_until
from ledgerkit import consent, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.model import FactType
from auditor.stream.produce import produce
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka
LAG_S = 2

PATCH = f"""
from auditor.ledger import asof
asof.LOG_LAG_US = {LAG_S} * 1_000_000
from auditor.stream import ledgerfeed
ledgerfeed.KEEP_READS_US = 1_000_000
"""


def test_a_grant_committed_while_the_daemon_was_killed_does_not_correct_the_event(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    set_topic_config(kafka_bootstrap, facts, "message.timestamp.type", "LogAppendTime")
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(PATCH)
    env = {"PYTHONPATH": os.pathsep.join([str(patch), os.environ.get("PYTHONPATH", "")])}
    start = datetime.now(UTC)
    produce(kafka_bootstrap, facts, [withdrawal("w-victim", "u-victim", start - timedelta(minutes=1))])
    first = DaemonProcess(setup, "k", env=env)
    try:
        first.wait_ready()
        wait_until(lambda: first.metric("auditor_ledger_facts_total") >= 1, 60, "the withdrawal applied")
        insider = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"insider-{facts}",
                            "transaction.timeout.ms": 300_000})
        insider.init_transactions(30)
        insider.begin_transaction()
        grant = replace(consent("g-open", "u-victim", FactType.CONSENT_GRANTED, start), recorded_at=start)
        insider.produce(facts, encode_fact_single_object(grant), key=b"u-victim", partition=0)
        assert insider.flush(30) == 0  # stamped by the broker now; readable once committed
        time.sleep(1.5)
        sent = datetime.now(UTC)
        produce(kafka_bootstrap, setup.events, [marketing_event("victim-send", "u-victim", sent),
                                                marketing_event("control-send", "u-control", sent)])
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 2, 90, "2 audit records")
        assert records_by_event(kafka_bootstrap, setup.audit)["victim-send"] == [("DECISION", "VIOLATION")]
        time.sleep(2 * LAG_S + 2)  # the daemon, idle, reads the stalled end below the grant
    finally:
        first.kill()  # SIGKILL: nothing kept at a stop
    insider.commit_transaction(30)
    produce(kafka_bootstrap, facts, [withdrawal("w-control", "u-control", sent - timedelta(seconds=30))])
    second = DaemonProcess(setup, "k", env=env)
    try:
        wait_until(lambda: any(e.record.record_type is RecordType.CORRECTION and e.record.event_id == "control-send"
                               for e in read_audit(kafka_bootstrap, setup.audit)), 120,
                   lambda: f"the control's correction; {second.describe()}")
        time.sleep(1)
    finally:
        second.kill()
    out = records_by_event(kafka_bootstrap, setup.audit)
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]
    assert out["victim-send"] == [("DECISION", "VIOLATION")]  # before: then ("CORRECTION", "ALLOW")
