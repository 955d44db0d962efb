"""The demo's summary: the violations only the subject ledger could catch."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auditor.events.codec import event_from_mapping
from auditor.events.model import ConsentState
from auditor.ledger.codec import fact_to_json
from auditor.ledger.model import FactType, Scope, SubjectFact
from auditor.ledger.offline import OfflineLedger
from auditor.policy import load_pack
from auditor.stream.demo import LiveSummary
from auditor.stream.generate import ledger_stream
from auditor.stream.processor import BatchResult
from auditor.trail.record import SourceRef, build_record

DATA = Path(__file__).resolve().parents[2] / "data"
T0 = datetime(2026, 2, 24, tzinfo=UTC)


def test_a_violation_only_the_ledger_saw_is_counted_one_the_event_admits_is_not(tmp_path):
    line = next(raw for raw in (DATA / "events" / "ipasar.jsonl").read_text().splitlines()
                if '"event_id":"ipasar-mkt-consent"' in raw.replace(" ", ""))
    event = replace(event_from_mapping(json.loads(line)), occurred_at=T0 + timedelta(days=1))
    facts = tmp_path / "facts.jsonl"
    facts.write_text(fact_to_json(SubjectFact("w", event.subject.id, FactType.CONSENT_WITHDRAWN, T0, T0, "cmp",
                                              Scope("marketing"))) + "\n")
    pack = load_pack("ipasar")
    ledger = OfflineLedger(facts)
    try:
        summary = LiveSummary(10, io.StringIO(), packs={pack.id: pack})
        result = BatchResult()
        for e in (event, replace(event, event_id="admits", consent=ConsentState())):
            judged = ledger.judge(e, pack)
            assert judged.decision.verdict.value == "VIOLATION"
            record = build_record(e, judged.decision, SourceRef.kafka("t", 0, 0), ledger.pseudonymize, "i", T0,
                                  ledger=judged.ledger)
            result.sealed.append((record, 0, b"", b""))
        summary.on_batch(result)
    finally:
        ledger.close()
    assert summary.ledger_only == {"consent withdrawn before the event": 1}
    assert "violations only the subject ledger could catch (the events' own claims said yes): 1" in summary.report()


def test_the_ledger_stream_has_withdrawals_opt_outs_and_closures_inside_the_events_span():
    events, facts = ledger_stream(seed=3, events=400, subjects=80)
    kinds = {f.type for f in facts}
    assert {FactType.CONSENT_WITHDRAWN, FactType.MARKETING_OPT_OUT, FactType.ACCOUNT_CLOSED} <= kinds
    first, last = events[0].occurred_at, events[-1].occurred_at
    assert all(first <= f.effective_at <= last + timedelta(minutes=1) for f in facts
               if f.type is not FactType.CONSENT_GRANTED)
    assert sum(1 for e in events if e.purpose == "marketing" and e.consent.marketing) > 50
