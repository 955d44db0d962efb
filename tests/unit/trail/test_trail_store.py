"""The file store: group commit, reopen, torn-tail repair, crash safety, no raw ids on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import fastavro
import pytest
from trailkit import T0, checkpoint_sizes, make_records, write_trail

from auditor.errors import ConfigError, TrailError
from auditor.trail import KeyRing, TrailWriter, verify_trail
from auditor.trail.segment import list_segments


def test_written_trail_verifies_and_is_plain_avro(tmp_path, keys):
    sealed = write_trail(tmp_path / "t", keys, 120, partitions=3, reject_every=9)
    report = verify_trail(tmp_path / "t", keys.verifier)
    assert report.ok, report.issues
    assert report.records == 120 and report.chains == {"events/0": 40, "events/1": 40, "events/2": 40}
    (_, seg), = list_segments(tmp_path / "t")
    with seg.open("rb") as fh:
        read = list(fastavro.reader(fh))
    assert [r["record_hash"] for r in read] == [r.record_hash for r in sealed]


def test_one_fsync_per_commit_not_per_record(tmp_path, keys, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=10**9, checkpoint_seconds=1e9) as w:
        w.append(make_records(keys, 10))  # first commit creates the segment (header fsyncs)
        w.commit()
        calls.clear()
        w.append(make_records(keys, 500, seed=2))
        w.commit()
        assert len(calls) == 1


def test_reopen_continues_every_chain_from_durable_records(tmp_path, keys):
    records = make_records(keys, 90, partitions=2)
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=20) as w:
        w.append(records[:50])
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=20) as w:
        assert w.head("events/0").size == 25
        w.append(records[50:])
    report = verify_trail(tmp_path / "t", keys.verifier)
    assert report.ok, report.issues
    assert report.chains == {"events/0": 45, "events/1": 45}


def test_checkpoints_follow_the_record_cadence_and_close(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 130, batch=10, checkpoint_every=50)
    assert checkpoint_sizes(tmp_path / "t", keys) == [50, 100, 130]


def test_time_cadence_checkpoints_idle_chains(tmp_path, keys):
    now = [T0]
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=10**6, checkpoint_seconds=5,
                          clock=lambda: now[0]) as w:
        w.append(make_records(keys, 3))
        w.commit()
        assert not (tmp_path / "t" / "checkpoints.jsonl").read_text()
        now[0] = T0.replace(second=10)
        w.append(make_records(keys, 1, seed=3))
        w.commit()
        assert (tmp_path / "t" / "checkpoints.jsonl").read_text().count("\n") == 1


def test_torn_tail_is_repaired_on_open(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 40)
    (_, seg), = list_segments(tmp_path / "t")
    good = seg.stat().st_size
    with seg.open("ab") as fh:
        fh.write(b"\x50\xf0\x07partial block")
    with (tmp_path / "t" / "checkpoints.jsonl").open("ab") as fh:
        fh.write(b'{"format":"auditor-checkpoint/1","cha')
    assert "damaged" in verify_trail(tmp_path / "t", keys.verifier).kinds()
    with TrailWriter.open(tmp_path / "t", keys) as w:
        assert seg.stat().st_size == good
        w.append(make_records(keys, 5, seed=9))
    report = verify_trail(tmp_path / "t", keys.verifier)
    assert report.ok, report.issues
    assert report.chains == {"events/0": 45}


def test_a_second_writer_is_refused(tmp_path, keys):
    with TrailWriter.open(tmp_path / "t", keys), pytest.raises(TrailError, match="another process"):
        TrailWriter.open(tmp_path / "t", keys)


def test_private_key_inside_the_trail_is_refused(tmp_path):
    keys = KeyRing.generate(tmp_path / "t" / "keys")
    with pytest.raises(ConfigError, match="inside the trail"):
        TrailWriter.open(tmp_path / "t", keys)


def test_segments_roll_over_at_the_size_limit(tmp_path, keys):
    records = make_records(keys, 200)
    with TrailWriter.open(tmp_path / "t", keys, segment_bytes=20_000) as w:
        for i in range(0, 200, 20):
            w.append(records[i:i + 20])
            w.commit()
    assert len(list_segments(tmp_path / "t")) > 3
    assert verify_trail(tmp_path / "t", keys.verifier).ok


def test_no_raw_subject_or_actor_identifier_anywhere_in_the_trail(tmp_path, keys):
    canaries = {i: f"CANARY-SUBJ-{i}-x9q" for i in range(0, 300, 7)}
    records = make_records(keys, 300, subjects=canaries, partitions=2)
    with TrailWriter.open(tmp_path / "t", keys) as w:
        w.append(records)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "t").rglob("*") if p.is_file())
    assert blob  # the scan saw the files
    assert b"CANARY" not in blob and b"CANARY".lower() not in blob.lower()
    assert b"emp-" not in blob  # actor ids are pseudonymised too
    assert keys.pseudonymizer("CANARY-SUBJ-7-x9q").encode() in blob


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from auditor.trail import KeyRing, TrailWriter
    from trailkit import make_records
    keys = KeyRing.load({keys!r})
    w = TrailWriter.open({trail!r}, keys, checkpoint_every=100)
    i = 0
    while True:
        w.append(make_records(keys, 10, seed=i, partitions=2))
        w.commit()
        i += 1
        if i == 5:
            print("ready", flush=True)
""")


@pytest.mark.slow
def test_sigkill_while_writing_leaves_a_trail_that_repairs_continues_and_verifies(tmp_path, keys):
    trail = tmp_path / "t"
    script = WRITER.format(tests=os.path.dirname(__file__), keys=str(keys.directory), trail=str(trail))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.7)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with TrailWriter.open(trail, keys, checkpoint_every=100) as w:
        before = {c: h.size for c, h in w.heads.items()}
        assert sum(before.values()) >= 50
        w.append(make_records(keys, 20, seed=99, partitions=2))
    report = verify_trail(trail, keys.verifier)
    assert report.ok, report.issues
    assert report.chains == {c: n + 10 for c, n in before.items()}


def test_writer_seals_exactly_like_the_pure_chain(tmp_path, keys):
    from auditor.trail import ChainHead, ReplayFilter, iter_records, seal

    records = make_records(keys, 60, partitions=3)
    with TrailWriter.open(tmp_path / "t", keys) as w:
        returned = list(w.append(records[:30])) + list(w.append(records[30:]))
    heads = {c: ChainHead.genesis(c) for c in ("events/0", "events/1", "events/2")}
    expected = []
    for r in records:
        s, heads[r.chain_id] = seal(heads[r.chain_id], r)
        expected.append(s)
    assert returned == expected == list(iter_records(tmp_path / "t", ReplayFilter()))
