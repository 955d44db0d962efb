"""attled: ``auditor check --ledger`` and ``replay --reevaluate`` on ipmart's marketing alert, with a January
marketing consent and a February withdrawal of all consent on record (the event itself claims marketing consent
and no opt-out). The opt-out answer is the withdrawal (it ended the grant), the pack's opt-out rule fails, the
withdrawn consent is one contradiction (not two: the opt-out claim cites the same fact), and re-judging the
record from its own ledger reads changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.cli import main
from auditor.trail.keys import KeyRing
from auditor.trail.replay import iter_records

DATA = Path(__file__).resolve().parents[2] / "data"


def _event() -> dict:
    for line in (DATA / "events" / "ipmart.jsonl").read_text().splitlines():
        if line.startswith("{") and json.loads(line)["event_id"] == "ipmart-mkt-noconsent":
            doc = json.loads(line)
            doc["consent"] = {**doc["consent"], "marketing": True}
            return {**doc, "event_id": "send", "occurred_at": "2026-03-01T10:00:00Z"}
    raise AssertionError("fixture event missing")


def _fact(fact_id: str, ftype: str, effective_at: str, subject: str, **extra: object) -> dict:
    return {"fact_id": fact_id, "subject_id": subject, "type": ftype, "effective_at": effective_at,
            "recorded_at": effective_at, "source_system": "consent-platform", **extra}


def test_check_counts_the_withdrawal_once_and_replay_reproduces(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    event = _event()
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n")
    subject = event["subject"]["id"]
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(d) + "\n" for d in [
        _fact("g", "CONSENT_GRANTED", "2026-01-10T00:00:00Z", subject, scope={"purpose": "marketing"}),
        _fact("w", "CONSENT_WITHDRAWN", "2026-02-10T00:00:00Z", subject)]))
    keys, trail = tmp_path / "keys", tmp_path / "trail"
    KeyRing.generate(keys)
    assert main(["check", str(events), "--ledger", str(facts), "--format", "jsonl",
                 "--trail", str(trail), "--keys", str(keys)]) == 0
    out, err = capsys.readouterr()
    (got,) = map(json.loads, out.splitlines())
    assert got["verdict"] == "VIOLATION"
    assert "ipmart.prohibit.marketing-opt-out" in {v["rule"] for v in got["violations"]}
    assert {"question": "opt_out", "purpose": "marketing", "recipient_type": None, "recipient_id": None,
            "value": True, "facts_lines": [2]} in got["ledger"]
    claims = [v["failed"] for v in got["violations"] if v["kind"] == "CLAIM_CONTRADICTED"]
    assert claims == [["consent.marketing"]]
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["ledger"]["contradicted_claims"] == 1
    (record,) = list(iter_records(trail))
    assert ("opt_out", True, (2,)) in {(r.question, r.value, r.fact_offsets) for r in record.ledger.reads}
    assert main(["replay", str(trail), "--keys", str(keys), "--reevaluate", "--policy", "ipmart"]) == 0
    assert "re-judged 1 event(s) under ipmart: 0 changed" in capsys.readouterr().out
