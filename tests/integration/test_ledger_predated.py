"""An event dated back before a withdrawal, on a real broker (ledger, session 9).

The daemon judges an event at its ``occurred_at`` (a delayed event is no violation, and the auditor
cannot tell one from an event dated back), but an event whose Kafka time is more than five minutes after
its ``occurred_at`` and that escapes a withdrawal on record by then is counted
(``auditor_ledger_events_predated_total{clock}``) and logged. Here every event is produced today with
February times (the producer's ``CreateTime``): only the event dated before its subject's withdrawal is
counted; the one after it (a violation either way) and a subject with no facts are not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.stream.produce import produce

pytestmark = pytest.mark.kafka


def test_an_event_dated_before_a_withdrawal_on_record_when_it_was_logged_is_counted(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, facts, [withdrawal("w-1", "u-withdrew", T0)])
    produce(kafka_bootstrap, setup.events, [marketing_event("dated-before", "u-withdrew", T0 - timedelta(days=1)),
                                            marketing_event("after", "u-withdrew", T0 + timedelta(days=1)),
                                            marketing_event("no-facts", "u-other", T0 - timedelta(days=1))])
    with InProcessDaemon(setup.config(instance_id="one")) as d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 3, 90, "three audit records")
        counted = (d.sample("auditor_ledger_events_predated_total", {"clock": "producer"}),
                   d.sample("auditor_ledger_events_predated_total", {"clock": "broker"}))
    verdicts = {e.record.event_id: e.record.decision.verdict.value for e in read_audit(kafka_bootstrap, setup.audit)
                if e.record.decision is not None}
    assert verdicts == {"dated-before": "ALLOW", "after": "VIOLATION", "no-facts": "ALLOW"}
    assert counted == (1, 0)
