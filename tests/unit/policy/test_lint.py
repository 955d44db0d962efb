"""Pack validation: every fault is named with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import PolicyError, PolicyLintError
from auditor.policy import load_pack, parse_pack

TINY = (Path(__file__).resolve().parents[2] / "data" / "packs" / "tiny.yaml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pack.yaml"
    p.write_text(text)
    return p


def findings(tmp_path: Path, text: str) -> list[PolicyError]:
    with pytest.raises(PolicyLintError) as info:
        parse_pack(write(tmp_path, text))
    return info.value.findings


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_category_in_rule_names_file_and_line(tmp_path):
    text = TINY.replace("only_categories: [contact]", "only_categories: [contakt]")
    (f,) = findings(tmp_path, text)
    assert "unknown category 'contakt'" in str(f)
    assert f.path == str(tmp_path / "pack.yaml")
    assert f.line == line_of(text, "contakt")


def test_declared_purpose_no_rule_uses(tmp_path):
    text = TINY.replace("    legal: {clause", "    research: {clause: \"9\", quote: \"studies\"}\n    legal: {clause")
    (f,) = findings(tmp_path, text)
    assert "purpose 'research' is declared but no rule uses it" in str(f)
    assert f.line == line_of(text, "research:")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("{legal_request: any}", "{legal_request: [NONE]}", "can never hold"),
    ("{roles: [support_agent]}", "{roles: []}", "can never hold"),
    ("require: [{roles: [support_agent]}]", "require: [on_our_behalf]", "on_our_behalf can never hold"),
    ("when: {kinds: [ACCESS], purposes: [support]}",
     "when: {kinds: [ACCESS], purposes: [support], recipients: [service_provider]}", "never match"),
])
def test_conditions_that_can_never_hold(tmp_path, old, new, message):
    assert old in TINY
    fs = findings(tmp_path, TINY.replace(old, new))
    assert any(message in str(f) for f in fs), [str(f) for f in fs]


def test_all_findings_reported_at_once(tmp_path):
    text = TINY.replace("[contact]", "[contakt]").replace("effect: prohibit", "effect: forbid")
    fs = findings(tmp_path, text)
    assert len(fs) >= 2


def test_duplicate_rule_ids(tmp_path):
    text = TINY.replace("id: tiny.disclose.police", "id: tiny.disclose.processor")
    assert any("duplicate rule id" in str(f) for f in findings(tmp_path, text))


def test_unknown_keys_and_conditions(tmp_path):
    text = TINY.replace("    severity: critical", "    severity: critical\n    sevrity: low")
    assert any("unknown key 'sevrity'" in str(f) for f in findings(tmp_path, text))
    text = TINY.replace("not_opted_out", "not_opted_in")
    assert any("unknown condition 'not_opted_in'" in str(f) for f in findings(tmp_path, text))


def test_yaml_syntax_error_has_line(tmp_path):
    with pytest.raises(PolicyError) as info:
        parse_pack(write(tmp_path, "pack: x\nrules: [\n  - bad"))
    assert info.value.line is not None and "pack.yaml" in str(info.value)


def test_unknown_pack_name_lists_bundled():
    with pytest.raises(PolicyError, match="unknown pack 'nope'"):
        load_pack("nope")


def test_hash_ignores_comments_but_not_content(tmp_path):
    a = parse_pack(write(tmp_path, TINY)).content_hash
    b = parse_pack(write(tmp_path, "# a comment\n" + TINY)).content_hash
    c = parse_pack(write(tmp_path, TINY.replace("only with your consent", "only with consent"))).content_hash
    assert a == b != c
