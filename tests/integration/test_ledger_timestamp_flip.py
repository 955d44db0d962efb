"""A facts topic's timestamp type set back to CreateTime for one backdated grant (atl, session 10).

On a ``LogAppendTime`` facts topic a permissive fact is in force no earlier than its log time less 5
minutes (341f743), so a grant that reaches the topic today saying it was recorded months ago corrects
nothing before today. But Kafka keeps the timestamp type per batch, as written: whoever may alter the
topic's configuration (an insider of the audited system) sets ``message.timestamp.type=CreateTime``,
produces the grant with a CreateTime of his choosing, and sets it back. The broker does not restamp
what it logged under the other setting (this test reads the types back). The daemon took the grant on
its ``recorded_at`` and corrected the victim's violation to ALLOW. It now bounds a producer-stamped fact
that follows broker-stamped ones by the broker's time before it (Kafka appends a partition in order)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from daemonkit import (
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    set_topic_config,
    wait_until,
)
from ledgerkit import T0, audited, consent, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.ledger.model import FactType, LogTime
from auditor.stream.produce import produce
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka


def _timestamp_types(bootstrap: str, topic: str, n: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "atl-types", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[int] = []
        for _ in range(100):
            out += [m.timestamp()[0] for m in c.consume(n, 0.5) if m.error() is None]
            if len(out) >= n:
                break
        return out
    finally:
        c.close()


def _flip(tmp_path, bootstrap: str, *, withdrawal_before_the_switch: bool) -> tuple[dict, list[int], float]:
    """u-victim withdrew at T0; her marketing send at T0+2h is a VIOLATION. The topic is set to CreateTime,
    a grant effective and recorded at T0+1h is produced, the topic is set back. A control's withdrawal
    effective at T0+1h, produced after, proves the daemon read past the grant. Returns the records by
    event, the facts' timestamp types and the broker-clock count of permissive facts logged late."""
    setup, facts = ledger_setup(tmp_path, bootstrap, partitions=1)
    if withdrawal_before_the_switch:
        produce(bootstrap, facts, [withdrawal("w-victim", "u-victim", T0)])
    set_topic_config(bootstrap, facts, "message.timestamp.type", "LogAppendTime")
    if not withdrawal_before_the_switch:
        produce(bootstrap, facts, [withdrawal("w-victim", "u-victim", T0)])
    produce(bootstrap, setup.events, [marketing_event("victim-send", "u-victim", T0 + timedelta(hours=2)),
                                      marketing_event("control-send", "u-control", T0 + timedelta(hours=2))])
    with audited(setup, bootstrap, 2) as d:
        set_topic_config(bootstrap, facts, "message.timestamp.type", "CreateTime")
        grant = replace(consent("g-flip", "u-victim", FactType.CONSENT_GRANTED, T0 + timedelta(hours=1)),
                        recorded_at=T0 + timedelta(hours=1))
        produce(bootstrap, facts, [grant])
        set_topic_config(bootstrap, facts, "message.timestamp.type", "LogAppendTime")
        produce(bootstrap, facts, [withdrawal("w-control", "u-control", T0 + timedelta(hours=1))])
        wait_until(lambda: any(e.record.record_type is RecordType.CORRECTION and e.record.event_id == "control-send"
                               for e in read_audit(bootstrap, setup.audit)), 90, "the control's correction")
        late = d.sample("auditor_ledger_facts_logged_late_total", {"clock": "broker"})
    return records_by_event(bootstrap, setup.audit), _timestamp_types(bootstrap, facts, 3), late


def test_a_grant_produced_while_the_topic_was_set_back_to_create_time_does_not_correct_a_violation(
        tmp_path, kafka_bootstrap):
    """Bounded by the broker's time of the withdrawal before it."""
    out, types, late = _flip(tmp_path, kafka_bootstrap, withdrawal_before_the_switch=False)
    assert types == [LogTime.APPEND, LogTime.CREATE, LogTime.APPEND]
    assert out["victim-send"] == [("DECISION", "VIOLATION")]
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]
    assert late == 1  # the grant, bounded


def test_the_same_in_a_partition_with_no_broker_stamped_fact_yet(tmp_path, kafka_bootstrap):
    """The withdrawal was logged before the topic was switched to LogAppendTime (CreateTime: history), so the
    partition holds no broker time before the grant. The daemon saw the topic configured LogAppendTime at
    start, and had read the partition's end without the grant: bounded by that read (without the topic's
    setting read by the daemon, the victim gets ('CORRECTION', 'ALLOW'))."""
    out, types, late = _flip(tmp_path, kafka_bootstrap, withdrawal_before_the_switch=True)
    assert types == [LogTime.CREATE, LogTime.CREATE, LogTime.APPEND]
    assert out["victim-send"] == [("DECISION", "VIOLATION")]
    assert out["control-send"] == [("DECISION", "ALLOW"), ("CORRECTION", "VIOLATION")]
    assert late == 1
