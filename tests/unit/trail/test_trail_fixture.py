"""A trail written by an earlier schema revision (the committed fixture tests/data/trails/rev2, made
by make_fixture_trail.py at revision 2) still verifies, replays and proves, and a writer of the
current revision extends it without rewriting what is there."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import fastavro
import pytest
from trailkit import make_records

from auditor.cli import main
from auditor.events.model import ActorOrganisation
from auditor.trail import KeyRing, TrailWriter, iter_records
from auditor.trail.segment import list_segments

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "trails" / "rev2"


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    trail, keys = tmp_path / "trail", tmp_path / "keys"
    shutil.copytree(FIXTURE / "trail", trail)
    shutil.copytree(FIXTURE / "keys", keys)
    for f in keys.iterdir():
        os.chmod(f, 0o600)  # git does not keep a file's mode beyond the executable bit
    return trail, keys


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_revision_2_fixture_verifies_and_its_records_say_the_new_facts_were_not_recorded(capsys):
    pub = FIXTURE / "keys" / "signing.pub"
    assert main(["verify", str(FIXTURE / "trail"), "--pubkey", str(pub)]) == 0
    assert "30 records in 2 chain(s)" in capsys.readouterr().out
    records = list(iter_records(FIXTURE / "trail"))
    assert len(records) == 30 and any(r.ledger is not None for r in records)
    assert all(r.actor_organisation is None and r.legal_request_reference is None for r in records)
    assert main(["replay", str(FIXTURE / "trail"), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 30 and all(r["actor_organisation"] is None for r in rows)
    assert main(["replay", str(FIXTURE / "trail")]) == 0
    assert "not recorded (a record of schema revision 1 or 2)" in capsys.readouterr().out


def test_a_proof_of_a_revision_2_record_verifies(tmp_path, capsys):
    out = tmp_path / "p.json"
    keys = FIXTURE / "keys"
    assert main(["prove", str(FIXTURE / "trail"), "--chain", "events/1", "--seq", "3", "--out", str(out),
                 "--pubkey", str(keys / "signing.pub")]) == 0
    assert main(["verify-proof", str(out), "--pubkey", str(keys / "signing.pub")]) == 0
    assert '"actor_organisation": null' in capsys.readouterr().out


def test_a_current_writer_extends_the_fixture_in_a_new_segment_and_it_all_verifies(tmp_path, capsys):
    trail, keys_dir = _copy(tmp_path)
    (old,) = list_segments(trail)
    before = _digest(old[1])
    keys = KeyRing.load(keys_dir)
    new = make_records(keys, 6, seed=11, partitions=2)
    with TrailWriter.open(trail, keys, checkpoint_every=8, checkpoint_seconds=3600) as w:
        w.append(new)
        w.commit()
    segments = list_segments(trail)
    assert [i for i, _ in segments] == [0, 1] and _digest(old[1]) == before  # the old segment is untouched
    for _, path in segments:  # each segment reads with the schema its header names, in any Avro tool
        with path.open("rb") as fh:
            assert len(list(fastavro.reader(fh))) == (30 if path == old[1] else 6)
    assert main(["verify", str(trail), "--pubkey", str(keys_dir / "signing.pub")]) == 0
    assert "36 records in 2 chain(s)" in capsys.readouterr().out
    records = list(iter_records(trail))
    assert [r.actor_organisation for r in records[30:]] == [ActorOrganisation.UNKNOWN] * 6
    assert all(r.actor_organisation is None for r in records[:30])


@pytest.mark.parametrize("part", ["segments/00000000.avro", "checkpoints.jsonl"])
def test_a_changed_byte_in_the_fixture_is_found(tmp_path, part, capsys):
    trail, keys_dir = _copy(tmp_path)
    path = trail / part
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert main(["verify", str(trail), "--pubkey", str(keys_dir / "signing.pub")]) == 1
    assert ": intact" not in capsys.readouterr().out
