"""Reopening a trail from its last checkpoints: cost, and the checks that guard it."""

from __future__ import annotations

import dataclasses
import os

import pytest
from trailkit import (
    T0,
    frame_of,
    make_records,
    reseal,
    rewrite_segment,
    segment_records,
    stored_checkpoints,
    write_stored,
    write_trail,
)

from auditor.errors import TrailCorruption
from auditor.trail import KeyRing, Policy, TrailWriter, iter_records, verify_trail
from auditor.trail.checkpoint import Checkpoint
from auditor.trail.note import Note
from auditor.trail.segment import list_segments


def test_reopen_reads_only_the_records_after_the_last_checkpoint(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 2000, batch=50, checkpoint_every=100)
    with TrailWriter.open(tmp_path / "t", keys) as w:
        assert w.head("events/0").size == 2000
        assert w.reopen_records <= 50  # the block holding the checkpoint's last record, nothing before it
        w.append(make_records(keys, 30, seed=4))
    report = verify_trail(tmp_path / "t", keys.verifier)
    assert report.ok, report.issues
    assert report.chains == {"events/0": 2030}


def test_reopen_after_a_crash_reads_the_unsigned_tail_and_continues(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 500, batch=50, checkpoint_every=100)
    w = TrailWriter.open(tmp_path / "t", keys, checkpoint_every=10**6, checkpoint_seconds=1e9)
    w.append(make_records(keys, 70, seed=8))
    w.commit()
    w._unlock()  # the process dies: 70 durable records, no checkpoint over them
    with TrailWriter.open(tmp_path / "t", keys) as w2:
        assert w2.head("events/0").size == 570
        assert 70 <= w2.reopen_records <= 70 + 50
    assert verify_trail(tmp_path / "t", keys.verifier).ok


def test_a_chain_checkpointed_long_ago_is_restored_next_to_a_busy_one(tmp_path, keys):
    quiet = make_records(keys, 5, topic="quiet")
    busy = make_records(keys, 600, topic="busy", seed=3)
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=100) as w:
        w.append(quiet)
        w.commit()
        w.checkpoint(["quiet/0"])
        for i in range(0, 600, 50):
            w.append(busy[i:i + 50])
            w.commit()
    with TrailWriter.open(tmp_path / "t", keys, checkpoint_every=100) as w:
        assert (w.head("quiet/0").size, w.head("busy/0").size) == (5, 600)
        w.append(make_records(keys, 3, topic="quiet", seed=9))
    assert verify_trail(tmp_path / "t", keys.verifier).chains == {"quiet/0": 8, "busy/0": 600}


def _resign_last(trail, keys, **changes):
    entries = stored_checkpoints(trail)
    note = Note.parse(entries[-1].note)
    cp = dataclasses.replace(Checkpoint.parse(note.text), **changes)
    signed = Note(cp.text(), (keys.signer.note_signer.sign(cp.text()),))
    entries[-1] = dataclasses.replace(entries[-1], note=signed.to_bytes())
    write_stored(trail, entries)


def test_guard_the_record_a_checkpoint_ends_with_must_hash_to_its_signed_head(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 200, batch=50, checkpoint_every=100)
    _resign_last(tmp_path / "t", keys, head=bytes(32))  # validly signed, wrong head
    with pytest.raises(TrailCorruption, match="differs from the head hash its checkpoint of size 200 signs"):
        TrailWriter.open(tmp_path / "t", keys)


def test_guard_the_first_record_after_a_checkpoint_must_link_to_it(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 100, batch=50, checkpoint_every=100)
    w = TrailWriter.open(tmp_path / "t", keys, checkpoint_every=10**6, checkpoint_seconds=1e9)
    w.append(make_records(keys, 10, seed=8))
    w.commit()
    w._unlock()
    (_, seg), = list_segments(tmp_path / "t")
    recs = segment_records(seg)
    data = seg.read_bytes()
    forged = [reseal(recs[100], prev=bytes(32))]
    for i in range(101, 110):
        forged.append(reseal(recs[i], prev=frame_of(forged[-1]).record_hash))
    for old, new in zip(recs[100:110], forged, strict=True):  # same lengths: blocks stay where they were
        data = data.replace(old, new)
    seg.write_bytes(data)
    with pytest.raises(TrailCorruption, match="does not link to its checkpoint of size 100 at seq 100"):
        TrailWriter.open(tmp_path / "t", keys)


def test_guard_records_lost_below_a_checkpoint_stop_the_writer(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 200, batch=50, checkpoint_every=100)
    (_, seg), = list_segments(tmp_path / "t")
    rewrite_segment(seg, segment_records(seg)[:120])
    with pytest.raises(TrailCorruption, match="records were lost"):
        TrailWriter.open(tmp_path / "t", keys)


def test_guard_a_compact_range_that_does_not_lead_to_the_signed_root_is_refused(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 200, batch=50, checkpoint_every=100)
    entries = stored_checkpoints(tmp_path / "t")
    entries[-1] = dataclasses.replace(entries[-1], range=(bytes(32),) + entries[-1].range[1:])
    write_stored(tmp_path / "t", entries)
    with pytest.raises(TrailCorruption, match="compact range"):
        TrailWriter.open(tmp_path / "t", keys)


def test_guard_a_checkpoint_signed_by_another_key_is_not_continued(tmp_path, keys):
    write_trail(tmp_path / "t", keys, 100, batch=50, checkpoint_every=100)
    other = KeyRing.generate(tmp_path / "other")
    with pytest.raises(TrailCorruption, match="does not verify with this trail's key"):
        TrailWriter.open(tmp_path / "t", other)


HEADER_OFFSETS = [0, 3, 4, 5, 6, 9, 20, 40]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("offset", HEADER_OFFSETS)
def test_a_flipped_bit_in_a_segment_header_is_a_named_error_not_a_hang(tmp_path, keys, offset):
    trail = tmp_path / "t"
    write_trail(trail, keys, 60, batch=20, checkpoint_every=20)
    (_, seg), = list_segments(trail)
    data = bytearray(seg.read_bytes())
    for bit in (0x01, 0x40, 0x80):
        damaged = bytearray(data)
        damaged[offset] ^= bit
        seg.write_bytes(bytes(damaged))
        report = verify_trail(trail, keys.verifier, policy=Policy(now=T0))
        assert not report.ok and any(seg.name in str(i) for i in report.issues if i.kind == "damaged"), \
            (offset, bit, report.issues)
        with pytest.raises(TrailCorruption, match=seg.name):
            list(iter_records(trail))
        with pytest.raises(TrailCorruption, match=seg.name):
            TrailWriter.open(trail, keys)
    seg.write_bytes(bytes(data))
    assert os.path.getsize(seg) == len(data) and verify_trail(trail, keys.verifier).ok
