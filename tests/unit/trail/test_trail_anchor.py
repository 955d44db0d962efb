"""Trusted checkpoints: extension shown by consistency proofs alone; rollbacks and forks named."""

from __future__ import annotations

import shutil

import pytest
from trailkit import make_records, signed_checkpoints, stored_checkpoints, write_stored, write_trail

from auditor.cli import main
from auditor.trail import KeyRing, TrailWriter
from auditor.trail.anchor import check_extends, findings
from auditor.trail.source import FileSource
from auditor.trail.verify import Policy, VerifyReport, load_checkpoints


@pytest.fixture
def setup(tmp_path, monkeypatch):
    keys = KeyRing.generate(tmp_path / "keys")
    monkeypatch.setenv("AUDITOR_KEYS", str(tmp_path / "keys"))
    trail = tmp_path / "trail"
    write_trail(trail, keys, 200, batch=25, checkpoint_every=50)
    return tmp_path, keys, trail


def save_note(path, signed):
    path.write_bytes(signed.note.to_bytes())
    return path


def history_of(trail, keys):
    report = VerifyReport()
    load_checkpoints(FileSource(trail), keys.verifier, Policy(), report)
    return report


def test_the_trail_extends_an_older_trusted_checkpoint_without_reading_records(setup, monkeypatch, capsys):
    tmp, keys, trail = setup
    trusted = save_note(tmp / "trusted.note", signed_checkpoints(trail, keys)[1])  # size 100
    with TrailWriter.open(trail, keys, checkpoint_every=50) as w:
        w.append(make_records(keys, 120, seed=3))

    def no_records(self):  # noqa: ANN001
        raise AssertionError("records were read")

    monkeypatch.setattr(FileSource, "chunks", no_records)
    assert main(["verify", str(trail), "--trusted-checkpoint", str(trusted), "--checkpoints-only"]) == 0
    out = capsys.readouterr().out
    assert "extends the trusted one (size 100)" in out and "no record read" in out


def test_a_rollback_to_an_older_copy_is_named_from_checkpoints_alone(setup, capsys):
    tmp, keys, trail = setup
    old = tmp / "old"
    shutil.copytree(trail, old)
    with TrailWriter.open(trail, keys, checkpoint_every=50) as w:
        w.append(make_records(keys, 60, seed=3))
    trusted = save_note(tmp / "latest.note", signed_checkpoints(trail, keys)[-1])  # size 260
    assert main(["verify", str(old), "--trusted-checkpoint", str(trusted), "--checkpoints-only"]) == 1
    out = capsys.readouterr().out
    assert "rollback: [events/0 seq 200]" in out and "signs 260" in out


def test_a_fork_is_named_with_the_first_diverging_size(setup, capsys):
    tmp, keys, trail = setup
    old_lines = stored_checkpoints(trail)  # what an outside party kept: the checkpoints of 50..200
    (tmp / "kept.jsonl").write_text("".join(e.to_json() + "\n" for e in old_lines))
    fork = tmp / "fork"
    write_trail(fork, keys, 120, batch=25, checkpoint_every=50)  # the same first 100 records ...
    with TrailWriter.open(fork, keys, checkpoint_every=50) as w:  # ... then another history, re-signed
        w.append(make_records(keys, 130, seed=99))
    assert main(["verify", str(fork), "--trusted-checkpoint", str(tmp / "kept.jsonl"), "--checkpoints-only"]) == 1
    out = capsys.readouterr().out
    assert "fork: [events/0 seq 149]" in out
    assert "first diverging size: 150" in out and "agrees with the trusted checkpoint of size 100" in out


def test_guard_a_rewritten_history_between_stored_checkpoints_fails_the_proof(setup):
    tmp, keys, trail = setup
    trusted = signed_checkpoints(trail, keys)[1]  # size 100
    entries = stored_checkpoints(trail)
    entries[2] = entries[2].__class__(entries[2].note, entries[2].range, entries[2].prev_size,
                                      (bytes(32),) + entries[2].proof[1:])
    write_stored(trail, entries)
    report = history_of(trail, keys)
    result = check_extends(trusted, report.history["events/0"], report.entries["events/0"])
    assert not result.ok and "from size 100 to 150 does not verify" in result.how
    (issue,) = findings([result])
    assert issue.kind == "fork"


def test_guard_a_different_root_at_the_trusted_size_is_a_fork(setup, tmp_path):
    _, keys, trail = setup
    other = tmp_path / "other"
    write_trail(other, keys, 200, batch=25, checkpoint_every=50, seed=5)
    trusted = signed_checkpoints(other, keys)[1]
    report = history_of(trail, keys)
    result = check_extends(trusted, report.history["events/0"], report.entries["events/0"])
    assert not result.ok and "diverge at or before size 100" in result.how


def test_a_trusted_size_the_trail_never_checkpointed_is_proved_from_the_records(setup, capsys):
    tmp, keys, trail = setup
    other = tmp / "other"
    write_trail(other, keys, 200, batch=10, checkpoint_every=30)  # same records, checkpoints at 30, 60, ...
    trusted = save_note(tmp / "t.note", signed_checkpoints(other, keys)[1])  # size 60
    assert main(["verify", str(trail), "--trusted-checkpoint", str(trusted)]) == 0
    assert "proof built from the records" in capsys.readouterr().out
    assert main(["verify", str(trail), "--trusted-checkpoint", str(trusted), "--checkpoints-only"]) == 1
