"""`auditor policy test|probe|show|lint` on a user's pack in a temporary directory, outside the repo."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from auditor.cli import main

FEATURES = Path(__file__).resolve().parents[2] / "data" / "packs" / "features.yaml"

# A shop whose marketing consent sits inside one permit: relabelling launders it (probe must find it).
SHOP = """\
language: 2
pack: shop
title: A small shop
absent: {recipient.on_our_behalf: "unknown is not on our behalf"}
default: {clause: "0", quote: "we do only what this says"}
vocabulary:
  categories:
    contact: {clause: "1", quote: "name and email"}
    orders: {clause: "1", quote: "what you bought"}
  purposes:
    marketing: {clause: "2", quote: "offers, with your consent"}
    delivery: {clause: "3", quote: "to deliver"}
  recipients:
    courier: {clause: "3", quote: "couriers deliver for us"}
permits:
  - id: shop.marketing
    clause: "2"
    quote: "offers, with your consent"
    when: {kinds: [USE], purposes: [marketing], categories: [contact]}
    require: [{consent: marketing}]
  - id: shop.staff
    clause: "1"
    quote: "our staff"
    when: {kinds: [ACCESS]}
    require: [{actor_types: [EMPLOYEE]}]
  - id: shop.courier
    clause: "3"
    quote: "couriers deliver for us"
    when: {recipients: [courier], purposes: [delivery]}
    require: [on_our_behalf]
"""

TABLE = """\
pack: shop
base:
  occurred_at: "2026-01-01T00:00:00Z"
  kind: USE
  policy_id: shop
  source_system: crm
  actor: {type: EMPLOYEE, id: "e-1", organisation: OURS}
  subject: {id: "s-1", age: 40}
  data_categories: [contact]
  purpose: marketing
examples:
  - {id: mkt-ok, title: consented offer, clause: "2", expect: ALLOW, permitted_by: shop.marketing,
     event: {consent: {marketing: true}}}
  - {id: mkt-noconsent, title: offer without consent, clause: "2", expect: VIOLATION, violations: [shop.marketing]}
  - {id: staff-reads, title: staff reads orders, clause: "1", expect: ALLOW, event: {kind: ACCESS}}
  - {id: outsider-reads, title: an outsider reads, clause: "1", expect: VIOLATION, violations: [shop.staff],
     event: {kind: ACCESS, actor: {type: OTHER}}}
  - {id: courier-ok, title: courier delivers, clause: "3", expect: ALLOW, event: {kind: DISCLOSURE, purpose: delivery,
     data_categories: [orders], recipient: {type: courier, id: c, on_our_behalf: true}}}
  - {id: courier-own, title: courier keeps it, clause: "3", expect: VIOLATION, violations: [shop.courier],
     event: {kind: DISCLOSURE, purpose: delivery, recipient: {type: courier, id: c, on_our_behalf: false}}}
  - {id: undeclared, title: health data, clause: "0", expect: VIOLATION, violations: [shop.undeclared-category],
     event: {data_categories: [health]}}
  - {id: undeclared-p, title: resale, clause: "0", expect: VIOLATION, violations: [shop.undeclared-purpose],
     event: {purpose: resale}}
  - {id: undeclared-r, title: broker, clause: "0", expect: VIOLATION, violations: [shop.undeclared-recipient],
     event: {kind: DISCLOSURE, recipient: {type: broker, id: b}}}
  - {id: deny, title: delivery use, clause: "0", expect: VIOLATION, violations: [shop.default-deny],
     event: {purpose: delivery}}
"""


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.yaml").write_text(SHOP)
    (tmp_path / "shop.examples.yaml").write_text(TABLE)
    return tmp_path / "shop.yaml"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_policy_test_passes_a_users_table_found_beside_the_pack(shop, capsys):
    code, out = run(capsys, "policy", "test", str(shop), "--min-coverage", "100")
    assert code == 0, out
    assert "10/10 pass" in out and "rules 100%" in out and out.rstrip().endswith("OK")
    assert "PASS mkt-noconsent" in out


def test_policy_test_fails_with_the_reason_and_exit_1(shop, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TABLE.replace("expect: VIOLATION, violations: [shop.marketing]", "expect: ALLOW"))
    code, out = run(capsys, "policy", "test", str(shop), str(bad))
    assert code == 1
    assert "FAIL mkt-noconsent" in out and "got verdict VIOLATION, expected ALLOW" in out
    assert "expected: verdict" not in out   # the judged verdict is not labelled as the expected one
    assert "shop.marketing: the subject has not given marketing consent" in out


def test_policy_test_fails_below_min_coverage(shop, capsys, tmp_path):
    few = tmp_path / "few.yaml"
    doc = yaml.safe_load(TABLE)
    doc["examples"] = doc["examples"][:2]
    few.write_text(yaml.safe_dump(doc))
    assert run(capsys, "policy", "test", str(shop), str(few))[0] == 0
    code, out = run(capsys, "policy", "test", str(shop), str(few), "--min-coverage", "100")
    assert code == 1 and "UNCOVERED shop.courier: no example where it holds" in out


def test_policy_test_json_and_junit(shop, capsys, tmp_path):
    code, out = run(capsys, "policy", "test", str(shop), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["passed"] == 10 and doc["coverage"]["percent"] == 100.0
    report = tmp_path / "junit.xml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(TABLE.replace("expect: ALLOW, permitted_by: shop.marketing", "expect: VIOLATION"))
    code, _ = run(capsys, "policy", "test", str(shop), str(bad), "--format", "junit", "-o", str(report))
    suite = ET.fromstring(report.read_text())
    assert code == 1 and suite.tag == "testsuite" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["mkt-ok"]
    code, _ = run(capsys, "policy", "test", str(shop), str(bad), "--format", "junit", "-o", str(report),
                  "--min-coverage", "100")
    cases = ET.fromstring(report.read_text()).iter("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["mkt-ok"]  # the table still covers every rule: the decision, not the expectation, counts


def test_policy_test_runs_as_a_subprocess_outside_the_repo(shop):
    result = subprocess.run([sys.executable, "-m", "auditor", "policy", "test", "shop.yaml"], cwd=shop.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10/10 pass" in result.stdout


def test_probe_finds_the_laundering_paths_then_lists_only_unreviewed(shop, capsys, tmp_path):
    code, out = run(capsys, "policy", "probe", str(shop), "--format", "json")
    doc = json.loads(out)
    changes = {(f["example"], f["change"], f["allowed_by"]) for f in doc["list"]}
    # the consent check lives in one permit: reading the same contact data as an ACCESS is allowed
    assert ("mkt-noconsent", "kind: USE -> ACCESS", "shop.staff") in changes
    assert ("outsider-reads", "actor.type: OTHER -> EMPLOYEE", "shop.staff") in changes
    assert code == 1 and doc["unreviewed"] == len(changes) > 0
    skeleton = tmp_path / "skeleton.yaml"
    run(capsys, "policy", "probe", str(shop), "--skeleton", str(skeleton))
    reviewed = yaml.safe_load(skeleton.read_text())
    for entry in reviewed["reviewed"]:
        entry.update(shown_by="staff-reads", note="the text allows it")
    (shop.parent / "shop.reviewed.yaml").write_text(yaml.safe_dump(reviewed))
    code, out = run(capsys, "policy", "probe", str(shop))
    assert code == 0 and "0 unreviewed" in out, out
    # a pack fix makes a review stale, and probe says so
    (shop.parent / "shop.yaml").write_text(SHOP.replace("require: [{actor_types: [EMPLOYEE]}]",
                                                        "require: [{actor_types: [EMPLOYEE]}, {purposes: [delivery]}]"))
    code, out = run(capsys, "policy", "probe", str(shop))
    assert "stale review" in out and "mkt-noconsent: kind: USE -> ACCESS" in out


def test_reviews_need_a_resolution_and_an_example(shop, capsys):
    (shop.parent / "shop.reviewed.yaml").write_text(
        "pack: shop\nreviewed:\n  - {example: mkt-noconsent, change: 'kind: USE -> ACCESS', allowed_by: shop.staff,\n"
        "     resolution: hole, shown_by: nope, note: x}\n")
    code = main(["policy", "probe", str(shop)])
    err = capsys.readouterr().err
    assert code == 2 and "resolution 'hole' is not one of text-allows" in err and "shown_by 'nope'" in err


def test_show_renders_every_field_of_every_rule_and_constraint(capsys):
    raw = yaml.safe_load(FEATURES.read_text())
    code, out = run(capsys, "policy", "show", str(FEATURES))
    assert code == 0
    for rule in raw["permits"] + raw["constraints"]:
        assert rule["id"] in out
        for key in rule.get("when", {}):
            assert f"{key}: " in out, key
        assert rule["quote"] in out
    for text in ("notes", "transfer_outside: [home]", "forbid: everything in scope", "home: [MY, SG]",
                 "maps_to: [pd:EmailAddress]", "holds: [name, email]", "actor.organisation: an actor",
                 "within: [EEA, home]", "not: {regions: [EEA]}"):
        assert text.split(":")[0] in out and text in out or text == "notes", text
    code, out = run(capsys, "policy", "show", str(FEATURES), "--json")
    doc = json.loads(out)
    assert [r["when"] for r in doc["permits"] + doc["constraints"]] == \
        [r.get("when", {}) for r in raw["permits"] + raw["constraints"]]
    assert [r.get("require") for r in doc["permits"] + doc["constraints"]] == \
        [r.get("require") for r in raw["permits"] + raw["constraints"]]


@pytest.mark.parametrize("pack_id", ["ipasar", "waimaotong", "ipmart", "inper", "thisproduct"])
def test_show_json_keeps_every_when_and_require_of_the_seed_packs(pack_id, capsys):
    from auditor.policy.loader import resolve_pack

    raw = yaml.safe_load(resolve_pack(pack_id).read_text())
    code, out = run(capsys, "policy", "show", pack_id, "--json")
    doc = json.loads(out)
    rules = raw["permits"] + raw.get("constraints", [])
    assert [r["when"] for r in doc["permits"] + doc["constraints"]] == [r.get("when", {}) for r in rules]
    assert [r.get("require") for r in doc["permits"] + doc["constraints"]] == [r.get("require") for r in rules]
    code, text = run(capsys, "policy", "show", pack_id)
    for r in rules:
        for key, _value in r.get("when", {}).items():
            assert f"{key}: " in text


def test_lint_strict_fails_on_a_warning(tmp_path, capsys):
    pack = tmp_path / "p.yaml"
    pack.write_text(SHOP.replace('absent: {recipient.on_our_behalf: "unknown is not on our behalf"}\n', ""))
    code, out = run(capsys, "policy", "lint", str(pack))
    assert code == 0 and "relies on absence" in out
    code, out = run(capsys, "policy", "lint", "--strict", str(pack))
    assert code == 1


def test_lint_reads_a_pack_from_standard_input():
    """`auditor policy lint -` lints the pack piped in; errors name '<stdin>' and the line."""
    ok = subprocess.run([sys.executable, "-m", "auditor", "policy", "lint", "-"], input=SHOP.encode(),
                        capture_output=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode().startswith("ok  shop")
    bad = SHOP.replace("categories: [contact]}", "categories: [kontact]}")
    failed = subprocess.run([sys.executable, "-m", "auditor", "policy", "lint", "-"], input=bad.encode(),
                            capture_output=True, timeout=120)
    line = bad.splitlines().index(next(x for x in bad.splitlines() if "kontact" in x)) + 1
    assert failed.returncode == 1
    assert f"<stdin>:{line}: " in failed.stdout.decode() and "kontact" in failed.stdout.decode()
