"""`auditor policy lint -` reads one pack from standard input, bounded like a pack file."""

from __future__ import annotations

from clikit import assert_one_line_error, run_cli

from auditor.policy import load_pack
from auditor.policy.loader import packs_dir


def test_a_pack_on_standard_input_lints_with_the_files_hash():
    path = packs_dir() / "ipasar.yaml"
    r = run_cli("policy", "lint", "-", stdin=path.read_bytes(), timeout=60)
    assert r.code == 0, r.err
    assert r.out.startswith("ok  ipasar") and load_pack("ipasar").content_hash in r.out
    assert r.out.rstrip().endswith("<stdin>") and "stdin.yaml" not in r.out


def test_faults_on_standard_input_name_stdin_and_the_line():
    r = run_cli("policy", "lint", "-", stdin=b"language: 2\npack: x\nbogus: 1\n", timeout=60)
    assert r.code == 1
    assert "<stdin>:3: unknown key 'bogus'" in r.out and "auditor-lint-" not in r.out


def test_an_alias_bomb_on_standard_input_is_refused_quickly():
    bomb = "language: 2\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{'abcdefghi'[i]}: &{'abcdefghi'[i]} [" + ", ".join([f"*{'abcdefghi'[i - 1]}"] * 10) + "]\n"
    r = run_cli("policy", "lint", "-", stdin=bomb.encode(), timeout=60)
    assert r.code == 1 and "<stdin>" in r.out and "alias" in r.out.lower(), (r.out, r.err)


def test_standard_input_once():
    assert_one_line_error(run_cli("policy", "lint", "-", "-", stdin=b"", timeout=60), 2, "standard input")
