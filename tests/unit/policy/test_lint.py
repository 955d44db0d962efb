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
    ("{legal_request: binding}", "{legal_request: []}", "can never hold"),
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
    text = TINY.replace("[contact]", "[contakt]").replace("severity: critical", "severity: fatal")
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


def warnings_of(tmp_path: Path, text: str) -> list[str]:
    return [str(w) for w in parse_pack(write(tmp_path, text)).warnings]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("pack: tiny", "pack: Tiny Pack", "pack id 'Tiny Pack' is not a plain identifier"),
    ("id: tiny.disclose.police", "id: tiny.disclose.police officers", "not a plain identifier"),
    ("id: tiny.disclose.police", "id: other.disclose.police", "must start with the pack id"),
    ("id: tiny.disclose.police", "id: tiny.default-deny", "reserved"),
    ("    contact: {clause", "    Contact Details: {clause", "not a plain identifier"),
])
def test_ids_must_be_plain_identifiers(tmp_path, old, new, message):
    assert old in TINY
    fs = findings(tmp_path, TINY.replace(old, new))
    assert any(message in str(f) for f in fs), [str(f) for f in fs]


def test_a_prohibition_with_no_scope_is_rejected(tmp_path):
    text = TINY + "  - {id: tiny.nothing, clause: '7', quote: q, forbid: true}\n"
    (f,) = findings(tmp_path, text)
    assert "forbids with no scope" in str(f)
    scoped = TINY + "  - {id: tiny.no-cards, clause: '7', quote: q, when: {categories: [card]}, forbid: true}\n"
    assert parse_pack(write(tmp_path, scoped)).constraints[-1].forbid


def test_a_constraint_must_require_or_forbid(tmp_path):
    (f,) = findings(tmp_path, TINY + "  - {id: tiny.empty, clause: '7', quote: q, when: {kinds: [USE]}}\n")
    assert "requires nothing" in str(f)


def test_declared_recipient_type_no_rule_uses(tmp_path):
    text = TINY.replace("  recipients:\n", "  recipients:\n    insurer: {clause: '8', quote: 'insurers'}\n")
    (f,) = findings(tmp_path, text)
    assert "recipient type 'insurer' is declared but no rule names it" in str(f)
    assert f.line == line_of(text, "insurer:")


def test_recipient_types_are_the_packs_own_not_a_fixed_list(tmp_path):
    text = TINY.replace("service_provider", "cloud_host")
    pack = parse_pack(write(tmp_path, text))
    assert "cloud_host" in pack.recipients


def test_silent_reliance_on_absence_is_a_warning_until_the_reading_is_stated(tmp_path):
    bare = TINY.replace('  subject.minor: "a subject of unknown age is not treated as a child"\n', "")
    (w,) = warnings_of(tmp_path, bare)
    assert "tiny.minors" in w and "relies on absence" in w and "unknown age" in w
    assert warnings_of(tmp_path, bare.replace("when: {minor: true}", "when: {minor: [true, unknown]}")) == []
    per_rule = bare.replace("    when: {minor: true}", "    when: {minor: true}\n    absent: {subject.minor: adult}")
    assert warnings_of(tmp_path, per_rule) == []


def test_maps_to_names_a_standard_term(tmp_path):
    ok = TINY.replace('contact: {clause: "1", quote: "your name and email"}',
                      'contact: {clause: "1", quote: "your name and email", '
                      'maps_to: [fideslang:user.contact, pd:Email]}')
    assert parse_pack(write(tmp_path, ok)).categories["contact"].maps_to == ("fideslang:user.contact", "pd:Email")
    bad = ok.replace("pd:Email", "schema.org/email")
    (f,) = findings(tmp_path, bad)
    assert "maps_to 'schema.org/email'" in str(f)


@pytest.mark.parametrize(("holds", "message"), [
    ("[email, phone]", "neither a category nor a declared element"),
    ("[contact]", "holds itself"),
])
def test_category_contents_are_checked(tmp_path, holds, message):
    text = TINY.replace('contact: {clause: "1", quote: "your name and email"}',
                        f'contact: {{clause: "1", quote: "your name and email", holds: {holds}}}'
                        ).replace("  categories:\n", "  elements: [email]\n  categories:\n")
    assert any(message in str(f) for f in findings(tmp_path, text))


def test_v1_packs_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(PolicyError, match="language: 2"):
        parse_pack(write(tmp_path, TINY.replace("language: 2\n", "")))


@pytest.mark.parametrize("bomb", [
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)),
    "a: &a [1, *a]\n",
])
def test_yaml_alias_bombs_fail_fast_with_a_clear_error(tmp_path, bomb):
    import time

    start = time.monotonic()
    with pytest.raises(PolicyError) as info:
        parse_pack(write(tmp_path, bomb))
    assert "alias" in str(info.value) and "pack.yaml" in str(info.value)
    assert time.monotonic() - start < 5


def test_deep_nesting_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="nested too deeply|not valid YAML"):
        parse_pack(write(tmp_path, "a: " + "[" * 20000 + "]" * 20000 + "\n"))


def test_a_category_without_contents_among_categories_with_contents_is_a_warning(tmp_path):
    text = TINY.replace('contact: {clause: "1", quote: "your name and email"}',
                        'contact: {clause: "1", quote: "your name and email", holds: [email]}'
                        ).replace("  categories:\n", "  elements: [email, card_number]\n  categories:\n")
    (w,) = warnings_of(tmp_path, text)
    assert "category 'card' declares no contents" in w
    fixed = text.replace('card: {clause: "1", quote: "your card number"}',
                         'card: {clause: "1", quote: "your card number", holds: [card_number]}')
    assert warnings_of(tmp_path, fixed) == []
