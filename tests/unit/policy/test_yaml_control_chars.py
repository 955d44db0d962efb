"""A control character in a pack (as one flipped bit of a newline makes: 0x0a ^ 0x01 = 0x0b) is a
PolicyError naming the file, never a yaml.ReaderError escaping to the caller (verify-evidence crashed
on such a pack part instead of naming it; policy lint printed a traceback)."""

from __future__ import annotations

import pytest

from auditor.cli import main
from auditor.errors import PolicyError
from auditor.policy.yamlsrc import load_yaml
from auditor.trail.evidence import pack_hash_of


def test_a_control_character_is_a_policy_error_naming_the_file(tmp_path):
    pack = tmp_path / "p.yaml"
    pack.write_bytes(b"id: p\x0bnotes: []\n")
    with pytest.raises(PolicyError, match="not valid YAML") as info:
        load_yaml(pack)
    assert "p.yaml" in str(info.value)


def test_the_evidence_pack_hash_of_such_bytes_is_a_policy_error():
    with pytest.raises(PolicyError):
        pack_hash_of(b"id: p\x0bnotes: []\n")


def test_policy_lint_reports_it_as_any_invalid_yaml(tmp_path, capsys):
    pack = tmp_path / "p.yaml"
    pack.write_bytes(b"id: p\x0bnotes: []\n")
    assert main(["policy", "lint", str(pack)]) == 1  # lint's status for a pack that does not load
    out = capsys.readouterr()
    said = out.out + out.err
    assert "not valid YAML" in said and "Traceback" not in said
