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
from daemonkit import logs_to_the_live_stdout  # noqa: F401  (autouse fixture)
from ledgerkit import T0, audited, ledger_setup, marketing_event, records_by_event, withdrawal

from auditor.stream.produce import produce

pytestmark = pytest.mark.kafka


def test_an_event_dated_before_a_withdrawal_on_record_when_it_was_logged_is_counted(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, facts, [withdrawal("w-1", "u-withdrew", T0)])
    produce(kafka_bootstrap, setup.events, [marketing_event("dated-before", "u-withdrew", T0 - timedelta(days=1)),
                                            marketing_event("after", "u-withdrew", T0 + timedelta(days=1)),
                                            marketing_event("no-facts", "u-other", T0 - timedelta(days=1))])
    with audited(setup, kafka_bootstrap, 3) as d:
        counted = (d.sample("auditor_ledger_events_predated_total", {"clock": "producer"}),
                   d.sample("auditor_ledger_events_predated_total", {"clock": "broker"}))
    assert records_by_event(kafka_bootstrap, setup.audit) == {"dated-before": [("DECISION", "ALLOW")],
                                                             "after": [("DECISION", "VIOLATION")],
                                                             "no-facts": [("DECISION", "ALLOW")]}
    assert counted == (1, 0)
