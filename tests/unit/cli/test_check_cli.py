"""``auditor check`` and ``auditor policy`` as a user runs them (in-process, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.cli import main

DATA = Path(__file__).resolve().parents[2] / "data"
PACKS = ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"]


@pytest.mark.parametrize("pack", PACKS)
def test_check_jsonl_matches_example_expectations(pack, capsys):
    import yaml

    assert main(["check", "--policy", pack, str(DATA / "events" / f"{pack}.jsonl"), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    got = {d["event_id"]: d for d in map(json.loads, out.splitlines())}
    table = yaml.safe_load((DATA / "examples" / f"{pack}.yaml").read_text())
    for ex in table["examples"]:
        d = got[ex["id"]]
        assert d["verdict"] == ex["expect"], ex["id"]
        assert {v["rule"] for v in d["violations"]} == set(ex.get("violations") or [])
        assert all(v["clause"] and v["reason"] for v in d["violations"])
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["events"] == len(table["examples"]) and summary["malformed"] == 0


def test_malformed_lines_named_counted_and_rest_audited(capsys):
    path = DATA / "events" / "malformed.jsonl"
    assert main(["check", "--policy", "ipmart", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:4: not valid JSON" in out
    assert f"{path}:5: field 'kind' is 'TELEPORT'" in out
    assert "m-5" in out and "4 malformed" in out and "2 ALLOW, 1 VIOLATION" in out


def test_fail_on_violation_exit_code(capsys):
    path = str(DATA / "events" / "malformed.jsonl")
    assert main(["check", "--policy", "ipmart", path, "--fail-on-violation"]) == 1


def test_unknown_pack_is_a_clear_error(capsys):
    assert main(["check", "--policy", "nosuch", str(DATA / "events" / "ipmart.jsonl")]) == 2
    assert "unknown pack 'nosuch'" in capsys.readouterr().err


def test_policy_lint_all_bundled_ok(capsys):
    assert main(["policy", "lint"]) == 0
    assert capsys.readouterr().out.count("ok  ") >= 5


def test_policy_lint_reports_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    text = (DATA / "packs" / "tiny.yaml").read_text().replace("[contact]", "[kontact]")
    bad.write_text(text)
    assert main(["policy", "lint", str(bad)]) == 1
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "kontact" in s)
    assert f"{bad}:{line}: rule 'tiny.use.marketing': unknown category 'kontact'" in capsys.readouterr().out


def test_policy_show_json_round_trips(capsys):
    assert main(["policy", "show", "inper", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pack"] == "inper" and doc["hash"].startswith("sha256:")
    assert any(r["id"] == "inper.disclose.corporate-transaction" for r in doc["rules"])


def test_event_files_are_up_to_date():
    script = DATA / "make_event_files.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_console_script_installed():
    result = subprocess.run(["auditor", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "auditor check" in result.stdout
