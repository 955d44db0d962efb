"""``auditor replay --subject ID --report``: everything about one person, for an access request."""

from __future__ import annotations

from trailkit import write_trail

from auditor.cli import main
from auditor.trail import KeyRing, ReplayFilter, iter_records
from auditor.trail.render import organisation_text


def test_report_lists_every_access_use_and_disclosure_of_one_person(tmp_path, monkeypatch):
    keys = KeyRing.generate(tmp_path / "keys")
    monkeypatch.setenv("AUDITOR_KEYS", str(tmp_path / "keys"))
    write_trail(tmp_path / "trail", keys, 300, checkpoint_every=50,
                subjects={i: "alice@example.com" for i in range(0, 300, 7)})
    mine = list(iter_records(tmp_path / "trail", ReplayFilter(subject=keys.pseudonymizer("alice@example.com"))))
    assert len(mine) == 43
    out = tmp_path / "alice.md"
    assert main(["replay", str(tmp_path / "trail"), "--subject", "alice@example.com", "--report",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "alice@example.com" not in text  # the identifier used to find her is not written
    assert keys.pseudonymizer("alice@example.com") in text
    counts = {kind: sum(1 for r in mine if r.facts.kind.value == kind) for kind in ("ACCESS", "USE", "DISCLOSURE")}
    assert f"## Accessed ({counts['ACCESS']})" in text and f"## Used ({counts['USE']})" in text
    assert f"## Disclosed ({counts['DISCLOSURE']})" in text
    for r in mine:  # every record is there, with its rule and the way to prove it
        assert f"{r.chain_id}#{r.seq}" in text
        rule = r.decision.violations[0].rule_id if r.decision.violations else r.decision.permitted_by
        line = next(ln for ln in text.splitlines() if ln.endswith(f"| {r.chain_id}#{r.seq} |"))
        assert rule in line and r.facts.purpose in line
        assert f", {organisation_text(r)} |" in line  # who acted: whose organisation (revision 3)
    disclosed = [r for r in mine if r.facts.kind.value == "DISCLOSURE"]
    assert all(f"{r.facts.recipient.type} '{r.facts.recipient.id}'" in text for r in disclosed)
    violations = sum(1 for r in mine if r.decision.violations)
    assert f"Events judged to break the privacy policy: {violations}." in text


def test_report_needs_a_subject(tmp_path, monkeypatch, capsys):
    keys = KeyRing.generate(tmp_path / "keys")
    monkeypatch.setenv("AUDITOR_KEYS", str(tmp_path / "keys"))
    write_trail(tmp_path / "trail", keys, 10)
    assert main(["replay", str(tmp_path / "trail"), "--report"]) == 2
    assert "--report needs --subject" in capsys.readouterr().err
