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
    assert f"{path}:5: field 'kind' is not one of ACCESS" in out and "TELEPORT" not in out
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
    assert any(r["id"] == "inper.disclose.corporate-transaction" for r in doc["permits"])


def test_event_files_are_up_to_date():
    script = DATA / "make_event_files.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_console_script_installed():
    result = subprocess.run(["auditor", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "auditor check" in result.stdout


def test_check_reads_avro_container_files_like_jsonl(tmp_path, capsys):
    from auditor.events.codec import iter_event_file, write_avro_file

    src = DATA / "events" / "ipmart.jsonl"
    events = [row.event for row in iter_event_file(src) if row.event is not None]
    avro = tmp_path / "ipmart.avro"
    write_avro_file(avro, events)
    assert main(["check", "--policy", "ipmart", str(src), "--format", "jsonl"]) == 0
    from_json = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["check", "--policy", "ipmart", str(avro), "--format", "jsonl"]) == 0
    from_avro = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    strip = lambda docs: [{k: v for k, v in d.items() if k != "source"} for d in docs]  # noqa: E731
    assert len(from_avro) == len(events) > 0
    assert strip(from_avro) == strip(from_json)
    assert from_avro[0]["source"] == f"{avro}:1"


def test_check_trail_writes_a_verifiable_trail_without_raw_ids(tmp_path, capsys):
    from auditor.trail.keys import KeyRing

    KeyRing.generate(tmp_path / "keys")
    trail = tmp_path / "trail"
    src = DATA / "events" / "malformed.jsonl"
    assert main(["check", "--policy", "ipmart", str(src), "--trail", str(trail),
                 "--keys", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    assert main(["verify", str(trail), "--keys", str(tmp_path / "keys")]) == 0
    assert "7 records in 1 chain(s)" in capsys.readouterr().out  # 3 audited + 4 rejected lines
    blob = b"".join(p.read_bytes() for p in trail.rglob("*") if p.is_file())
    assert b"u-1" not in blob and b"e-9" not in blob  # raw subject and actor ids never stored


# ---------------------------------------------------------------- packs by policy_id, --trail idempotency

def _events(*packs: str) -> str:
    return "".join((DATA / "events" / f"{p}.jsonl").read_text() for p in packs)


def test_each_event_is_judged_under_the_pack_its_policy_id_names(tmp_path, capsys):
    both = tmp_path / "mixed.jsonl"
    both.write_text(_events("ipasar", "inper"))
    assert main(["check", str(both), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert set(summary["packs"]) == {"ipasar", "inper"} and summary["malformed"] == 0
    packs = {json.loads(line)["pack"] for line in out.splitlines()}
    assert packs == {"ipasar", "inper"}
    # and each verdict equals the one the single-pack run gives
    assert main(["check", "--policy", "inper", str(DATA / "events" / "inper.jsonl"), "--format", "jsonl"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    single = {d["event_id"]: d["verdict"] for d in docs}
    mixed = {d["event_id"]: d["verdict"] for d in map(json.loads, out.splitlines()) if d["pack"] == "inper"}
    assert mixed == single


def test_policy_override_warns_on_a_mismatch(tmp_path, capsys):
    both = tmp_path / "mixed.jsonl"
    both.write_text(_events("ipasar", "inper"))
    assert main(["check", "--policy", "ipasar", str(both), "--format", "jsonl"]) == 0
    _, err = capsys.readouterr()
    n_inper = sum(1 for line in _events("inper").splitlines() if line.startswith("{"))
    assert f"warning: {n_inper} event(s) name policy 'inper' but were judged under --policy ipasar" in err
    assert json.loads(err.strip().splitlines()[-1])["summary"]["policy_mismatches"] == n_inper


def test_an_event_naming_an_unknown_pack_is_rejected_without_its_id(tmp_path, capsys):
    line = next(x for x in _events("ipasar").splitlines() if x.startswith("{"))
    doc = json.loads(line)
    doc["policy_id"] = "u-secret-pack"
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(doc) + "\n" + line + "\n")
    assert main(["check", str(path), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    errors = [d for d in map(json.loads, out.splitlines()) if "error" in d]
    assert len(errors) == 1 and errors[0]["reason"] == "unknown_policy" and "u-secret" not in errors[0]["error"]


def test_check_trail_is_idempotent_and_its_chain_id_ignores_the_path(tmp_path, capsys, monkeypatch):
    from auditor.trail.keys import KeyRing
    from auditor.trail.replay import iter_records

    keys = tmp_path / "keys"
    KeyRing.generate(keys)
    (tmp_path / "a").mkdir()
    events = tmp_path / "a" / "events.jsonl"
    events.write_text(_events("ipmart") + "not json\n")
    trail = tmp_path / "trail"
    monkeypatch.chdir(tmp_path)
    assert main(["check", "a/events.jsonl", "--trail", str(trail), "--keys", str(keys)]) == 0
    first = list(iter_records(trail))
    monkeypatch.chdir(tmp_path / "a")
    assert main(["check", "events.jsonl", "--trail", str(trail), "--keys", str(keys)]) == 0
    assert main(["check", str(events), "--trail", str(trail), "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    again = list(iter_records(trail))
    assert len(again) == len(first) and {r.chain_id for r in again} == {"file:events.jsonl"}
    assert f"trail: 0 record(s) appended, {len(first)} already there" in out
    assert main(["verify", str(trail), "--keys", str(keys)]) == 0


def test_avro_and_json_inputs_give_the_same_digest(tmp_path, capsys):
    from auditor.events.codec import iter_event_file
    from auditor.events.container import write_container
    from auditor.trail.keys import KeyRing
    from auditor.trail.replay import iter_records

    keys = tmp_path / "keys"
    KeyRing.generate(keys)
    src = DATA / "events" / "thisproduct.jsonl"
    avro = tmp_path / "thisproduct.avro"
    with avro.open("wb") as fh:
        write_container(fh, (row.event for row in iter_event_file(src) if row.event is not None))
    for path, trail in ((src, tmp_path / "t1"), (avro, tmp_path / "t2")):
        assert main(["check", str(path), "--trail", str(trail), "--keys", str(keys)]) == 0
    digests = [{r.event_id: r.input_digest for r in iter_records(t)} for t in (tmp_path / "t1", tmp_path / "t2")]
    assert digests[0] == digests[1] and len(digests[0]) > 10


def test_convert_writes_a_container_that_check_reads_like_the_json(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(_events("waimaotong") + "not json\n")
    avro = tmp_path / "out.avro"
    assert main(["convert", str(src), "--out", str(avro)]) == 0
    err = capsys.readouterr().err
    assert "malformed lines skipped" in err and avro.read_bytes()[:4] == b"Obj\x01"
    results = []
    for path in (src, avro):
        assert main(["check", str(path), "--format", "jsonl"]) == 0
        out = capsys.readouterr().out
        results.append({d["event_id"]: d["verdict"] for d in map(json.loads, out.splitlines()) if "event_id" in d})
    assert results[0] == results[1] and len(results[0]) > 10


def test_reasons_read_as_english(capsys):
    import re

    paths = [str(p) for p in sorted((DATA / "events").glob("*.jsonl")) if p.name != "malformed.jsonl"]
    assert main(["check", *paths, "--format", "jsonl"]) == 0
    reasons = [v["reason"] for d in map(json.loads, capsys.readouterr().out.splitlines())
               for v in d.get("violations", [])]
    assert reasons
    wrong = re.compile(r"\ba (other|employee|agent|affiliate|insurer|acquirer|individual|organisation|aggregate)\b"
                       r"|\ban (service|contractor|bank|regulator|government|court|processor|third)\b", re.I)
    assert [r for r in reasons if wrong.search(r)] == []


def test_table_columns_line_up_for_every_bundled_pack(capsys):
    """The fixed columns (event, verdict, rule) start at the same place on every line; the clause
    and the reason share the free last column, so a long clause cannot shift the reason."""
    from pathlib import Path

    from auditor.cli import main

    events = sorted(str(p) for p in (Path(__file__).parents[2] / "data" / "events").glob("*.jsonl"))
    assert main(["check", *events]) == 0
    lines = capsys.readouterr().out.split("\n\nsummary:")[0].splitlines()
    header, rows = lines[0], lines[1:]
    rule_at, free_at = header.index("RULE"), header.index("CLAUSE: REASON")
    assert len(rows) > 500
    for line in rows:
        first = line.split()[0] if line.strip() else ""
        if len(first) > 24:
            continue  # an event id longer than its column shifts only its own line
        assert line[rule_at - 1] == " " and line[rule_at] != " ", line
        assert line[free_at - 1] == " " and line[free_at] != " ", line
