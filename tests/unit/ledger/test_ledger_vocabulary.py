"""Facts scoped to a purpose or recipient type no loaded pack declares: warned of, never rejected."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.cli import main
from auditor.ledger.model import Scope
from auditor.ledger.vocabulary import MAX_NAMES, UndeclaredScopes
from auditor.stream.app import load_packs

DATA = Path(__file__).resolve().parents[2] / "data"


def vocabulary() -> UndeclaredScopes:
    return UndeclaredScopes(load_packs(("ipasar",)).values())


def test_declared_names_pass_as_words_and_undeclared_ones_are_noted_once() -> None:
    v = vocabulary()
    assert v.check(Scope("Marketing"), "line 1") is None  # compared as words, like Scope.covers
    assert v.check(Scope("research-statistics", "Business Partner"), "line 2") is None
    assert v.declares(Scope(recipient_id="anyone"))  # recipient ids are not vocabulary
    first = v.check(Scope("markting"), "line 3")
    assert first is not None and (first.field, first.name, first.first) == ("purpose", "markting", "line 3")
    assert v.check(Scope("MARKTING "), "line 4") is None  # the same name: counted, not noted again
    assert v.check(Scope("marketing", "partners"), "line 5", 3) is not None
    assert {(u.field, u.name, u.facts) for u in v.found()} == {("purpose", "markting", 2),
                                                               ("recipient_type", "partners", 3)}
    assert "no loaded pack (ipasar) declares that purpose" in v.message(v.found()[0])


def test_marketing_is_always_declared_because_the_join_asks_about_it() -> None:
    assert UndeclaredScopes(load_packs(("ipasar",)).values()).declares(Scope("marketing"))


def test_names_kept_are_bounded() -> None:
    v = vocabulary()
    for i in range(MAX_NAMES + 10):
        v.check(Scope(f"p{i}" + "x" * 10_000), "here")
    assert len(v.found()) == MAX_NAMES and v.overflow == 10
    assert all(len(u.name) <= 64 for u in v.found())


def _event() -> dict:
    for line in (DATA / "events" / "ipasar.jsonl").read_text().splitlines():
        if line.startswith("{") and json.loads(line)["event_id"] == "ipasar-mkt-consent":
            return json.loads(line)
    raise AssertionError("fixture event missing")


def test_check_ledger_warns_of_facts_scoped_to_undeclared_names(tmp_path, capsys) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(_event()) + "\n")
    fact = {"fact_id": "w", "subject_id": "u-10293", "type": "CONSENT_WITHDRAWN",
            "effective_at": "2020-01-01T00:00:00Z", "recorded_at": "2020-01-01T00:00:00Z", "source_system": "cmp"}
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({**fact, "fact_id": f"w{i}", "scope": {"purpose": p}}) + "\n"
                             for i, p in enumerate(["marketing", "markting", "markting"])))
    assert main(["check", str(events), "--ledger", str(facts), "--format", "jsonl"]) == 0
    _, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert "purpose 'markting' (2, the first at line 2)" in warnings[0] and "ipasar" in warnings[0]
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["ledger"]["undeclared_scope_names"] == 1
    facts.write_text(json.dumps({**fact, "scope": {"purpose": "Marketing"}}) + "\n")
    assert main(["check", str(events), "--ledger", str(facts), "--format", "jsonl"]) == 0
    assert "warning" not in capsys.readouterr().err
