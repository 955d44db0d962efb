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


def test_warnings_on_standard_input_name_stdin_too():
    """One implementation of `lint -` (the loader reads standard input itself): the CLI's own copy
    wrote the pack to a temporary file and renamed only errors, so a warning named the temp file."""
    text = (packs_dir() / "ipmart.yaml").read_text().replace("unsubscribe_link: [true, ~]",
                                                               'unsubscribe_link: ["true", ~]')
    assert '"true"' in text
    r = run_cli("policy", "lint", "-", stdin=text.encode(), timeout=60)
    assert r.code == 0, r.err
    (warning,) = [line for line in r.out.splitlines() if "warning:" in line]
    assert warning.startswith("<stdin>:") and "quoted" in warning and "stdin.yaml" not in r.out, r.out


def test_an_alias_bomb_on_standard_input_is_refused_quickly():
    bomb = "language: 2\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{'abcdefghi'[i]}: &{'abcdefghi'[i]} [" + ", ".join([f"*{'abcdefghi'[i - 1]}"] * 10) + "]\n"
    r = run_cli("policy", "lint", "-", stdin=bomb.encode(), timeout=60)
    assert r.code == 1 and "<stdin>:1:" in r.out and "an alias bomb?" in r.out, (r.out, r.err)


def test_the_alias_expansion_check_itself_refuses_a_bomb(tmp_path):
    """Without the expansion check PyYAML shares the aliased objects, so only the check names the
    bomb (the message must not be matched by the file's path: tmp_path holds the test's name)."""
    import time

    import pytest

    from auditor.errors import PolicyError
    from auditor.policy.yamlsrc import load_yaml

    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    path = tmp_path / "p.yaml"
    path.write_text(text)
    start = time.monotonic()
    with pytest.raises(PolicyError) as info:
        load_yaml(path)
    assert "expand it to 1,234,567,909" in str(info.value) and "an alias bomb?" in str(info.value)
    assert time.monotonic() - start < 5


def test_standard_input_once():
    assert_one_line_error(run_cli("policy", "lint", "-", "-", stdin=b"", timeout=60), 2, "standard input")
