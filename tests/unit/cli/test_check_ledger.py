"""``auditor check --ledger FACTS.jsonl``: events judged against the subject facts in force at their time."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.cli import main
from auditor.trail.replay import iter_records
from tests.unit.cli.clikit import assert_one_line_error, run_cli

DATA = Path(__file__).resolve().parents[2] / "data"


def _event(event_id: str, occurred_at: str) -> dict:
    for line in (DATA / "events" / "ipasar.jsonl").read_text().splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        if doc["event_id"] == "ipasar-mkt-consent":  # marketing by us, claiming consent
            return {**doc, "event_id": event_id, "occurred_at": occurred_at}
    raise AssertionError("fixture event missing")


def _fact(fact_id: str, ftype: str, effective_at: str, **extra: object) -> dict:
    return {"fact_id": fact_id, "subject_id": "u-10293", "type": ftype, "effective_at": effective_at,
            "recorded_at": effective_at, "source_system": "consent-platform", **extra}


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _decisions(out: str) -> dict[str, dict]:
    return {d["event_id"]: d for d in map(json.loads, out.splitlines())}


def test_consent_claimed_after_a_withdrawal_is_a_violation_and_before_it_is_allowed(tmp_path, capsys):
    events = _write(tmp_path / "events.jsonl", [_event("after", "2026-02-01T10:00:00Z"),
                                                 _event("before", "2026-01-01T10:00:00Z")])
    facts = _write(tmp_path / "facts.jsonl", [
        _fact("g", "CONSENT_GRANTED", "2025-06-01T00:00:00Z", scope={"purpose": "marketing"}),
        _fact("w", "CONSENT_WITHDRAWN", "2026-01-15T00:00:00Z", scope={"purpose": "marketing"})])
    assert main(["check", str(events), "--ledger", str(facts), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    got = _decisions(out)
    assert got["before"]["verdict"] == "ALLOW"
    # the marketing consent answers the opt-out question too (docs/ledger.md, "one conversation")
    assert got["before"]["ledger"] == [{"question": "consent", "purpose": "marketing", "recipient_type": None,
                                        "recipient_id": None, "value": True, "facts_lines": [1]},
                                       {"question": "opt_out", "purpose": "marketing", "recipient_type": None,
                                        "recipient_id": None, "value": False, "facts_lines": [1]}]
    after = got["after"]
    assert after["verdict"] == "VIOLATION"
    claim = [v for v in after["violations"] if v["kind"] == "CLAIM_CONTRADICTED"]
    assert [(v["rule"], v["clause"], v["failed"]) for v in claim] == [
        ("ipasar.marketing.consent-required", "2.7", ["consent.marketing"])]
    assert "0@2" in claim[0]["reason"]
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["ledger"] == {"facts": 2, "malformed_facts": 0, "contradicted_claims": 1}
    # without the ledger both are allowed on the event's own word
    assert main(["check", str(events), "--format", "jsonl"]) == 0
    assert {d["verdict"] for d in _decisions(capsys.readouterr().out).values()} == {"ALLOW"}


def test_a_faulty_facts_line_is_named_counted_and_fails_the_gate(tmp_path, capsys):
    events = _write(tmp_path / "events.jsonl", [_event("e1", "2026-01-01T10:00:00Z")])
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps(_fact("g", "CONSENT_GRANTED", "2025-06-01T00:00:00Z")) + "\n"
                     + json.dumps(_fact("x", "CONSENT_GRANTED", "2025-06-01T00:00:00Z", efective_at="x")) + "\n")
    assert main(["check", str(events), "--ledger", str(facts)]) == 0
    out, err = capsys.readouterr()
    assert f"{facts}:2:" in err and "efective_at" in err
    assert "1 malformed" in out and "ledger: 1 fact(s), 1 malformed" in out
    assert main(["check", str(events), "--ledger", str(facts), "--fail-on-violation"]) == 1


def test_the_trail_records_which_facts_each_decision_read(tmp_path, capsys):
    events = _write(tmp_path / "events.jsonl", [_event("after", "2026-02-01T10:00:00Z")])
    facts = _write(tmp_path / "facts.jsonl", [
        _fact("w", "CONSENT_WITHDRAWN", "2026-01-15T00:00:00Z", scope={"purpose": "marketing"})])
    from auditor.trail.keys import KeyRing

    keys = tmp_path / "keys"
    KeyRing.generate(keys)
    trail = tmp_path / "trail"
    assert main(["check", str(events), "--ledger", str(facts), "--trail", str(trail), "--keys", str(keys)]) == 0
    capsys.readouterr()
    (record,) = list(iter_records(trail))
    assert record.ledger is not None and record.ledger.partition == 0 and record.ledger.through_offset == 1
    assert [(r.question, r.value, r.fact_offsets) for r in record.ledger.reads] == [("consent", False, (1,)),
                                                                                    ("opt_out", True, (1,))]
    assert "CLAIM_CONTRADICTED" in {v.kind for v in record.decision.violations}
    assert main(["verify", str(trail), "--keys", str(keys)]) == 0
    # what-if under the same pack reproduces the decision from the record's own ledger reads
    assert main(["replay", str(trail), "--keys", str(keys), "--reevaluate", "--policy", "ipasar"]) == 0
    assert "re-judged 1 event(s) under ipasar: 0 changed" in capsys.readouterr().out


def test_a_missing_facts_file_is_one_line_and_exit_2(tmp_path):
    events = _write(tmp_path / "events.jsonl", [_event("e1", "2026-01-01T10:00:00Z")])
    r = run_cli("check", events, "--ledger", tmp_path / "nope.jsonl")
    assert_one_line_error(r, 2, "no such facts file")
