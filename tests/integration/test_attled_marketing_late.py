"""attled, on 9272054 (a consent scoped to marketing answers the opt-out question too), on a real
broker: under ipmart, whose marketing is opt-out and whose pack never reads consent, a consent fact
that arrives after the marketing send was audited changes only the opt-out answer; the daemon's
late-fact path must still write a CORRECTION record for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from daemonkit import (
    InProcessDaemon,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import DATA, T0, consent, ledger_setup

from auditor.events.codec import iter_event_file
from auditor.events.model import Event
from auditor.ledger.model import FactType, Scope
from auditor.stream.produce import produce
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka


def ipmart_send(event_id: str, subject: str) -> Event:
    """ipmart's marketing alert by its mailer; the event claims nothing (not opted out): ALLOW on its word."""
    for row in iter_event_file(Path(DATA / "events" / "ipmart.jsonl")):
        if row.event is not None and row.event.event_id == "ipmart-mkt-noconsent":
            e = row.event
            return replace(e, event_id=event_id, occurred_at=T0 + timedelta(hours=2),
                           subject=replace(e.subject, id=subject))
    raise KeyError("ipmart-mkt-noconsent")


def test_a_late_consent_withdrawal_corrects_an_ipmart_marketing_send_through_the_opt_out(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap)
    # u-b: a marketing consent in January; both later withdraw, after their sends were audited
    produce(kafka_bootstrap, facts, [consent("g-b", "u-b", FactType.CONSENT_GRANTED, T0 - timedelta(days=30))])
    produce(kafka_bootstrap, setup.events, [ipmart_send("send-a", "u-a"), ipmart_send("send-b", "u-b")])
    with InProcessDaemon(setup.config(instance_id="one")) as d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 2, 90, "two audit records")
        produce(kafka_bootstrap, facts, [
            # u-a withdraws her marketing consent (9272054: opted out of marketing)
            consent("w-a", "u-a", FactType.CONSENT_WITHDRAWN, T0 + timedelta(hours=1), Scope("Marketing")),
            # u-b withdraws all consent: it ends her January marketing grant (attled)
            consent("w-b", "u-b", FactType.CONSENT_WITHDRAWN, T0 + timedelta(hours=1), None)])
        wait_until(lambda: len([e for e in read_audit(kafka_bootstrap, setup.audit)
                                if e.record.record_type is RecordType.CORRECTION]) >= 2, 90, "two correction records")
        assert d.sample("auditor_ledger_corrections_total", {"pack": "ipmart", "verdict_changed": "true"}) == 2
    entries = read_audit(kafka_bootstrap, setup.audit)
    first = {e.record.event_id: e.record for e in entries if e.record.record_type is RecordType.DECISION}
    fixes = {e.record.event_id: e.record for e in entries if e.record.record_type is RecordType.CORRECTION}
    for event_id in ("send-a", "send-b"):
        was, fix = first[event_id], fixes[event_id]
        assert was.decision is not None and was.decision.verdict.value == "ALLOW", event_id
        assert fix.decision is not None and fix.decision.verdict.value == "VIOLATION", event_id
        assert "ipmart.prohibit.marketing-opt-out" in {v.rule_id for v in fix.decision.violations}
        assert fix.ledger is not None and fix.ledger.corrects is not None
        assert (fix.ledger.corrects.chain_id, fix.ledger.corrects.seq) == (was.chain_id, was.seq)
        assert [(r.question, r.value) for r in fix.ledger.reads if r.question == "opt_out"] == [("opt_out", True)]
    assert len(fixes) == 2
