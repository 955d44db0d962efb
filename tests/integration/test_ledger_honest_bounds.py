"""The log-time bounds in honest operation (atl2, session 10): no genuine grant is judged out of force.

atl bounded a fact's log time by the log's order and by the daemon's own reads of its partition's end.
A genuine grant produced just before the event it covers must still be in force for it, whatever the
daemon went through meanwhile: frozen (SIGSTOP 10 s) while the facts arrive, stopped and started again
with the grant produced while it was down, and a second member joining (a rebalance moving a partition
to a member with no reads of it). The lag a grant is allowed is 2 s here (a sitecustomize on the
daemons' path), so a bound that came from a read after the grant was readable would show. Held: this
passes on main e7e9d51 and after atl2's change."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from daemonkit import DaemonProcess, read_audit, set_topic_config, wait_until
from ledgerkit import consent, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.ledger.model import FactType
from auditor.stream.produce import produce

pytestmark = pytest.mark.kafka
LAG_S = 2
PATCH = f"""
from auditor.ledger import asof
asof.LOG_LAG_US = {LAG_S} * 1_000_000
"""


def test_a_grant_made_before_the_event_is_in_force_across_a_freeze_a_restart_and_a_rebalance(tmp_path,
                                                                                           kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=2)
    set_topic_config(kafka_bootstrap, facts, "message.timestamp.type", "LogAppendTime")
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(PATCH)
    env = {"PYTHONPATH": os.pathsep.join([str(patch), os.environ.get("PYTHONPATH", "")])}
    subjects = [f"u-{i}" for i in range(8)]
    produce(kafka_bootstrap, facts, [withdrawal(f"w-{s}", s, datetime.now(UTC) - timedelta(minutes=1))
                                     for s in subjects])

    def granted_then_sent(batch: list[str]) -> None:
        now = datetime.now(UTC)
        produce(kafka_bootstrap, facts, [replace(consent(f"g-{s}", s, FactType.CONSENT_GRANTED, now), recorded_at=now)
                                         for s in batch])
        time.sleep(0.5)
        produce(kafka_bootstrap, setup.events, [marketing_event(f"send-{s}", s, datetime.now(UTC)) for s in batch])

    daemons = [DaemonProcess(setup, "a", env=env)]
    try:
        daemons[0].wait_ready()
        time.sleep(2)  # the withdrawals read; the daemon idle, reading the ends
        os.kill(daemons[0].proc.pid, signal.SIGSTOP)
        granted_then_sent(subjects[0:2])  # while it is frozen
        time.sleep(10)
        os.kill(daemons[0].proc.pid, signal.SIGCONT)
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 2, 90, "the frozen daemon's 2 records")
        assert daemons[0].terminate() == 0
        granted_then_sent(subjects[2:4])  # while it is down
        daemons.append(DaemonProcess(setup, "a", env=env))
        daemons[-1].wait_ready()
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 4, 90, "4 records")
        daemons.append(DaemonProcess(setup, "b", env=env))  # a rebalance: a partition moves to b
        granted_then_sent(subjects[4:6])
        daemons[-1].wait_ready()
        granted_then_sent(subjects[6:8])
        wait_until(lambda: len(records_by_event(kafka_bootstrap, setup.audit)) >= 8, 120, "8 events audited")
        time.sleep(3)  # any correction would follow the late fact by then
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                os.kill(d.proc.pid, signal.SIGCONT)
                d.kill()
    out = records_by_event(kafka_bootstrap, setup.audit)
    final = {e: records[-1][1] for e, records in out.items()}
    assert final == {f"send-{s}": "ALLOW" for s in subjects}, out
