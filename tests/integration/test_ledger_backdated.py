"""Backdated permissive facts on a real broker (ledger, session 9).

99cf102 (attlg) holds a grant back until its ``recorded_at``; its tests drove the store and the index
directly. Here the daemon reads the facts topic: a marketing-consent grant produced after the event it
would excuse was audited as a violation must not be turned into a CORRECTION to ALLOW, neither when it
says it was recorded after the event (99cf102) nor, on a facts topic whose broker stamps the log time
(``message.timestamp.type=LogAppendTime``), when it claims a record time before the event too (the
store now keeps each fact's Kafka timestamp). A control subject's late withdrawal, produced after the
grant on the same partition, proves the daemon read past the grant before the assertions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from daemonkit import (
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    set_topic_config,
    wait_until,
)
from ledgerkit import T0, audited, consent, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.ledger.model import FactType
from auditor.stream.produce import produce
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka


def _run(tmp_path: Path, bootstrap: str, *, broker_time: bool, grant_recorded: timedelta
         ) -> tuple[dict[str, list[tuple[str, str]]], float]:
    """u-victim withdrew at T0; her marketing send at T0+2h is audited (VIOLATION); then a grant
    'effective' at T0+1h, recorded at T0+``grant_recorded``, reaches the facts topic, then u-control's
    withdrawal effective at T0+1h (her T0+2h send was ALLOW). Returns event id -> [(record type,
    verdict)] and the broker-clock count of permissive facts logged late."""
    setup, facts = ledger_setup(tmp_path, bootstrap, partitions=1)
    if broker_time:
        set_topic_config(bootstrap, facts, "message.timestamp.type", "LogAppendTime")
    produce(bootstrap, facts, [withdrawal("w-victim", "u-victim", T0)])
    produce(bootstrap, setup.events, [marketing_event("victim-send", "u-victim", T0 + timedelta(hours=2)),
                                      marketing_event("control-send", "u-control", T0 + timedelta(hours=2))])
    with audited(setup, bootstrap, 2) as d:
        grant = replace(consent("g-backdated", "u-victim", FactType.CONSENT_GRANTED, T0 + timedelta(hours=1)),
                        recorded_at=T0 + grant_recorded)
        produce(bootstrap, facts, [grant])
        produce(bootstrap, facts, [withdrawal("w-control", "u-control", T0 + timedelta(hours=1))])
        wait_until(lambda: any(e.record.record_type is RecordType.CORRECTION and e.record.event_id == "control-send"
                               for e in read_audit(bootstrap, setup.audit)), 90, "the control's correction")
        late = d.sample("auditor_ledger_facts_logged_late_total", {"clock": "broker"})
    return records_by_event(bootstrap, setup.audit), late


def test_a_grant_recorded_after_the_audited_event_does_not_correct_it_to_allow(tmp_path, kafka_bootstrap):
    """99cf102 end to end (a CreateTime topic, the default): the grant says it was recorded at T0+3h."""
    out, _ = _run(tmp_path, kafka_bootstrap, broker_time=False, grant_recorded=timedelta(hours=3))
    assert out["victim-send"] == [("DECISION", "VIOLATION")]
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]


def test_a_grant_backdated_in_both_times_does_not_correct_it_when_the_broker_stamps_the_log(
        tmp_path, kafka_bootstrap):
    """The grant says it was recorded at T0+1h, before the event; the broker logged it today."""
    out, late = _run(tmp_path, kafka_bootstrap, broker_time=True, grant_recorded=timedelta(hours=1))
    assert out["victim-send"] == [("DECISION", "VIOLATION")]
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]
    assert late == 1
