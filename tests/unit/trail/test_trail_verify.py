"""Golden trails and tampered copies: every attack is detected and named at the right seq."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import timedelta

from trailkit import (
    T0,
    flip_body_byte,
    frame_of,
    make_records,
    only_segment,
    reseal,
    rewrite_segment,
    segment_records,
    segmented_trail,
    signed_checkpoints,
    stored_checkpoints,
    write_stored,
    write_trail,
)

from auditor.trail import KeyRing, Policy, TrailWriter, open_checkpoint, verify_trail
from auditor.trail.checkpoint import Checkpoint, origin_for
from auditor.trail.note import Note

N = 200  # the golden trail's records (conftest.py: keys, golden, copy)


def issues_of(trail, keys, **kw):
    report = verify_trail(trail, keys.verifier, **kw)
    assert not report.ok
    return report.issues


def test_untouched_golden_trail_verifies(golden, keys):
    report = verify_trail(golden.trail, keys.verifier)
    assert report.ok, report.issues
    assert report.records == N and report.checkpoints == 4 and report.chains == {"events/0": N}


def test_modified_record_is_named_with_expected_and_actual_hash(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    recs[77] = flip_body_byte(recs[77])
    rewrite_segment(seg, recs)
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.chain, issue.seq) == ("modified", "events/0", 77)
    assert issue.expected == frame_of(recs[77]).record_hash.hex() and issue.actual != issue.expected


def test_modified_and_rehashed_record_is_named_by_its_successor_link(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    original = frame_of(recs[120]).record_hash
    recs[120] = reseal(flip_body_byte(recs[120]))
    rewrite_segment(seg, recs)
    issues = issues_of(copy, keys)
    assert issues[0].kind == "modified" and issues[0].seq == 120
    assert issues[0].expected == original.hex()
    assert len(issues) == 1  # later checkpoints compare against the genuine leaf


def test_deleted_record_is_named(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    del recs[33]
    rewrite_segment(seg, recs)
    issues = issues_of(copy, keys)
    assert (issues[0].kind, issues[0].seq) == ("deleted", 33)
    assert "record seq 33 is missing" in issues[0].message


def test_inserted_record_is_named_even_before_the_genuine_one(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    forged = reseal(flip_body_byte(recs[60], 9))  # same seq 60, links to 59, self-hash valid
    recs.insert(60, forged)
    rewrite_segment(seg, recs)
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.seq) == ("inserted", 60)


def test_inserted_record_after_the_genuine_one_is_named(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    recs.insert(61, reseal(flip_body_byte(recs[60], 9)))
    rewrite_segment(seg, recs)
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.seq) == ("inserted", 60)


def test_rewritten_history_is_caught_by_the_signed_checkpoint(copy, keys):
    """A forger who edits seq 70 and re-seals everything after it defeats the links, not the signatures."""
    seg = only_segment(copy)
    recs = segment_records(seg)
    recs[70] = reseal(flip_body_byte(recs[70]))
    for i in range(71, N):
        recs[i] = reseal(recs[i], prev=frame_of(recs[i - 1]).record_hash)
    rewrite_segment(seg, recs)
    issues = issues_of(copy, keys)
    assert issues[0].kind == "checkpoint" and issues[0].seq == 99
    assert "after seq 49" in issues[0].message  # the rewrite lies between the checkpoints at 50 and 100


def test_reordered_segments_are_named(tmp_path, keys):
    trail = tmp_path / "t"
    segs = segmented_trail(trail, keys)
    assert len(segs) >= 3
    a, b = segs[1], segs[2]
    a.rename(a.with_suffix(".x"))
    b.rename(a)
    a.with_suffix(".x").rename(b)
    issues = issues_of(trail, keys)
    assert {i.kind for i in issues} == {"reordered"}
    assert any(a.name in i.message and "holds segment 2" in i.message for i in issues)


def test_missing_segment_is_named(tmp_path, keys):
    trail = tmp_path / "t"
    segmented_trail(trail, keys)[1].unlink()
    issues = issues_of(trail, keys)
    assert any(i.kind == "reordered" and "segment 1 is missing" in i.message for i in issues)
    assert any(i.kind == "deleted" for i in issues)


def test_truncation_below_a_signed_checkpoint_is_detected(copy, keys):
    seg = only_segment(copy)
    rewrite_segment(seg, segment_records(seg)[:130])
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.seq) == ("truncated", 130) and "130..199" in issue.message


def _crash_after_unsigned_records(trail, keys):
    write_trail(trail, keys, 100, checkpoint_every=50)
    w = TrailWriter.open(trail, keys, checkpoint_every=50, clock=lambda: T0)
    w.append(make_records(keys, 30, seed=5))
    w.commit()  # durable, not yet checkpointed; then the process dies
    w._unlock()


def test_unsigned_tail_younger_than_the_allowed_age_is_a_note(tmp_path, keys):
    trail = tmp_path / "t"
    _crash_after_unsigned_records(trail, keys)
    seg = only_segment(trail)
    rewrite_segment(seg, segment_records(seg)[:115])  # a cut there goes unnoticed, and says so
    report = verify_trail(trail, keys.verifier, policy=Policy(now=T0 + timedelta(minutes=5)))
    assert report.ok, report.issues
    assert any("last 15 records are not yet covered" in n for n in report.notes)


def test_unsigned_tail_older_than_the_allowed_age_fails(tmp_path, keys):
    trail = tmp_path / "t"
    _crash_after_unsigned_records(trail, keys)
    report = verify_trail(trail, keys.verifier, policy=Policy(now=T0 + timedelta(hours=1),
                                                             max_unsigned_age=timedelta(minutes=15)))
    (issue,) = report.issues
    assert (issue.kind, issue.chain, issue.seq) == ("unsigned", "events/0", 100)
    assert "30 records after the last signed checkpoint (size 100)" in issue.message


def test_deleted_checkpoint_log_is_not_intact_even_for_fresh_records(copy, keys):
    """The guard no longer reads the cadence from the unsigned trail.json: no checkpoint, no pass."""
    (copy / "checkpoints.jsonl").unlink()
    meta = json.loads((copy / "trail.json").read_text())
    meta["checkpoint_every"] = 10**9
    (copy / "trail.json").write_text(json.dumps(meta))
    (issue,) = issues_of(copy, keys, policy=Policy(now=T0))
    assert issue.kind == "unsigned" and "no valid signed checkpoint" in issue.message


def test_removed_checkpoints_beyond_the_cadence_are_detected(copy, keys):
    lines = (copy / "checkpoints.jsonl").read_text().splitlines()
    (copy / "checkpoints.jsonl").write_text(lines[0] + "\n")
    (issue,) = issues_of(copy, keys)
    assert issue.kind == "unsigned" and issue.seq == 50


def test_rollback_to_an_older_copy_is_detected_against_a_trusted_checkpoint(tmp_path, golden, keys):
    old = tmp_path / "old"
    shutil.copytree(golden.trail, old)
    new = tmp_path / "new"
    shutil.copytree(golden.trail, new)
    with TrailWriter.open(new, keys, checkpoint_every=50) as w:
        w.append(make_records(keys, 60, seed=11))
    trusted = signed_checkpoints(new, keys)[-1]
    assert verify_trail(old, keys.verifier).ok  # alone, the old copy looks fine
    assert verify_trail(new, keys.verifier, [trusted]).ok
    (issue,) = issues_of(old, keys, trusted=[trusted])
    assert (issue.kind, issue.seq) == ("rollback", N) and "260" in issue.message


def test_forked_trail_differs_from_a_trusted_checkpoint(tmp_path, golden, keys):
    trusted = signed_checkpoints(golden.trail, keys)[-1]
    fork = tmp_path / "fork"
    write_trail(fork, keys, N, seed=123)  # same size, other content, validly signed
    (issue,) = issues_of(fork, keys, trusted=[trusted])
    assert (issue.kind, issue.seq) == ("fork", N - 1)


def test_forged_checkpoint_has_a_bad_signature(copy, keys):
    entries = stored_checkpoints(copy)
    text = entries[1].note.decode().replace("\n100\n", "\n99\n", 1)
    entries[1] = dataclasses.replace(entries[1], note=text.encode())
    write_stored(copy, entries)
    (issue,) = issues_of(copy, keys)
    assert issue.kind == "signature" and "bad signature" in issue.message


def test_checkpoint_signed_by_an_unknown_key_is_named(copy, keys, tmp_path):
    other = KeyRing.generate(tmp_path / "other")
    entries = stored_checkpoints(copy)
    note = Note.parse(entries[-1].note)
    forged = Note(note.text, (other.signer.note_signer.sign(note.text),))
    entries[-1] = dataclasses.replace(entries[-1], note=forged.to_bytes())
    write_stored(copy, entries)
    issues = issues_of(copy, keys)
    assert issues[0].kind == "signature" and "unknown key" in issues[0].message


def test_checkpoint_of_another_chain_cannot_stand_in(copy, keys):
    """An origin names its chain: a validly signed checkpoint cannot be replayed for another chain."""
    entries = stored_checkpoints(copy)
    signed = entries[-1].open(keys.verifier)
    assert signed.chain_id == "events/0"
    cp = signed.checkpoint
    moved = dataclasses.replace(cp, origin=origin_for(keys.signer.name, "events/1"))
    note = Note(moved.text(), (keys.signer.note_signer.sign(moved.text()),))
    assert open_checkpoint(note.to_bytes(), keys.verifier).chain_id == "events/1"


def test_a_tampered_compact_range_is_named(copy, keys):
    entries = stored_checkpoints(copy)
    bad = (bytes(32),) + entries[-1].range[1:]
    entries[-1] = dataclasses.replace(entries[-1], range=bad)
    write_stored(copy, entries)
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.seq) == ("checkpoint", N - 1) and "compact range" in issue.message


def test_a_tampered_stored_consistency_proof_is_named(copy, keys):
    entries = stored_checkpoints(copy)
    proof = list(entries[2].proof)
    proof[0] = bytes(32)
    entries[2] = dataclasses.replace(entries[2], proof=tuple(proof))
    write_stored(copy, entries)
    (issue,) = issues_of(copy, keys)
    assert (issue.kind, issue.seq) == ("proof", 149) and "from size 100 to 150" in issue.message


def test_two_signed_checkpoints_of_one_size_with_different_roots_are_a_fork(tmp_path, golden, keys):
    fork = tmp_path / "fork"
    write_trail(fork, keys, N, seed=123)
    trail = tmp_path / "t"
    shutil.copytree(golden.trail, trail)
    write_stored(trail, stored_checkpoints(trail) + stored_checkpoints(fork)[-1:])
    issues = issues_of(trail, keys)
    assert any(i.kind == "fork" and i.seq == N - 1 and "two histories" in i.message for i in issues)


def test_guard_a_validly_signed_checkpoint_with_the_right_head_but_a_wrong_root_is_named(copy, keys):
    """Only the Merkle-root comparison catches this (the head and every link are right)."""
    entries = stored_checkpoints(copy)
    note = Note.parse(entries[1].note)
    cp = Checkpoint.parse(note.text)
    wrong = dataclasses.replace(cp, root=bytes(32))
    signed = Note(wrong.text(), (keys.signer.note_signer.sign(wrong.text()),))
    entries[1] = dataclasses.replace(entries[1], note=signed.to_bytes(), range=())
    write_stored(copy, entries)
    issues = issues_of(copy, keys)
    assert any(i.kind == "checkpoint" and i.seq == 99 and "Merkle root of the first 100 records" in i.message
               for i in issues), issues
