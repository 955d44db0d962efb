"""Tests that kill the mutants the second mutation run found alive (docs/mutation.md, "Second run").

Each test names the function and the change it pins. Without it, the change went unnoticed by every
test of tests/unit/trail.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trailkit import (
    flip_body_byte,
    make_records,
    only_segment,
    rewrite_segment,
    segment_records,
    segmented_trail,
    stored_checkpoints,
    write_stored,
    write_trail,
)

from auditor.errors import TrailError
from auditor.trail import KeyRing, TrailWriter, make_proof, verify_proof, verify_trail
from auditor.trail.anchor import chain_leaves
from auditor.trail.chain import recompute_hash
from auditor.trail.keys import Verifier
from auditor.trail.note import ALG_COSIGNATURE_V1, ALG_ED25519, format_vkey, key_id, parse_vkey, raw_public
from auditor.trail.source import Issue, as_source

N = 200  # the golden trail's records (conftest.py: keys, golden, copy)


# ---------------------------------------------------------------- anchor.chain_leaves, proof.make_proof:
# an Issue in the stream (here: segments renamed out of order) is skipped, not the end of the stream
# (mutants `continue` -> `break`).

def test_leaves_and_proofs_are_read_past_an_issue_the_source_reports(tmp_path, keys):
    trail = tmp_path / "t"
    segs = segmented_trail(trail, keys)
    a, b = segs[1], segs[2]
    a.rename(a.with_suffix(".x"))
    b.rename(a)
    a.with_suffix(".x").rename(b)
    items = list(as_source(trail).chunks())
    assert isinstance(items[0], Issue) and items[0].kind == "reordered"  # the issue comes first
    sealed = verify_trail(trail, keys.verifier)
    assert sealed.kinds() == {"reordered"}
    size = sealed.covered["events/0"]
    leaves = chain_leaves(as_source(trail), "events/0", size)
    assert len(leaves) == size and leaves == [r.record_hash for r in _records(trail)][:size]
    proof = make_proof(trail, 5, None, keys.verifier)
    assert proof.seq == 5 and verify_proof(proof, keys.verifier)[0] == []


def _records(trail):
    from auditor.trail import ReplayFilter, iter_records

    return list(iter_records(trail, ReplayFilter()))


# ---------------------------------------------------------------- proof.choose_checkpoint: an unreadable,
# forged or unparseable checkpoint entry is skipped, not the end of the search (`continue` -> `break`).

@pytest.mark.parametrize("with_key", [True, False])
def test_a_proof_skips_unreadable_and_forged_checkpoint_entries_before_the_good_ones(copy, keys, with_key):
    entries = stored_checkpoints(copy)
    junk = dataclasses.replace(entries[-1], note=b"not a signed note\n")
    write_stored(copy, [junk, *entries])
    with (copy / "checkpoints.jsonl").open("r+") as fh:  # and an unreadable line at the very start
        rest = fh.read()
        fh.seek(0)
        fh.write("{not json\n" + rest)
    proof = make_proof(copy, 7, "events/0", keys.verifier if with_key else None)
    assert (proof.seq, proof.tree_size) == (7, N)
    assert verify_proof(proof, keys.verifier)[0] == []


# ---------------------------------------------------------------- proof.make_proof: every checkpointed
# leaf must be seen (`or` -> `and`), and only leaves below the checkpoint's size count (`>=` -> `>`).

def test_no_proof_from_a_chain_cut_below_its_checkpoint(copy, keys):
    seg = only_segment(copy)
    rewrite_segment(seg, segment_records(seg)[:N - 10])  # seq 3 is there, seq 190..199 are not
    with pytest.raises(TrailError, match="does not hold seq 3 and all 200 checkpointed records"):
        make_proof(copy, 3, "events/0", keys.verifier)


def test_a_record_past_the_checkpoint_does_not_fill_the_gap_of_a_deleted_one(copy, keys):
    write_stored(copy, stored_checkpoints(copy)[:2])  # latest checkpoint: size 100; records 100.. unsigned
    seg = only_segment(copy)
    recs = segment_records(seg)
    del recs[33]
    rewrite_segment(seg, recs)
    with pytest.raises(TrailError, match="does not hold seq 10 and all 100 checkpointed records"):
        make_proof(copy, 10, "events/0", keys.verifier)


# ---------------------------------------------------------------- proof.verify_proof: the problem line
# names both roots, or says the path is malformed (`if root` -> `if root and False` / `or True`).

def test_a_wrong_audit_path_is_reported_with_both_roots_or_as_malformed(golden, keys):
    from auditor.trail.merkle import root_from_inclusion

    trail, _ = golden
    proof = make_proof(trail, 9, None, keys.verifier)
    bad_node = dataclasses.replace(proof, audit_path=(bytes(32), *proof.audit_path[1:]))
    problems, _ = verify_proof(bad_node, keys.verifier)
    leaf = recompute_hash(proof.record_bytes)
    actual = root_from_inclusion(9, N, leaf, bad_node.audit_path)
    assert actual is not None
    expected = root_from_inclusion(9, N, leaf, proof.audit_path)
    assert problems == ["the audit path does not lead to the checkpoint's Merkle root "
                        f"(expected {expected.hex()}, actual {actual.hex()})"]
    short = dataclasses.replace(proof, audit_path=(proof.audit_path[0][:31], *proof.audit_path[1:]))
    assert verify_proof(short, keys.verifier)[0] == [
        "the audit path does not lead to the checkpoint's Merkle root (malformed path)"]


# ---------------------------------------------------------------- verify._Chain.issue: a modified record's
# issue carries the hash its bytes have now (`actual.hex() if actual` -> `... and False`).

def test_a_modified_record_issue_carries_the_actual_hash_of_its_bytes(copy, keys):
    seg = only_segment(copy)
    recs = segment_records(seg)
    recs[77] = flip_body_byte(recs[77])
    rewrite_segment(seg, recs)
    (issue,) = verify_trail(copy, keys.verifier).issues
    assert issue.kind == "modified" and issue.actual == recompute_hash(recs[77]).hex()


# ---------------------------------------------------------------- keys.Verifier.of: without a name, the
# key's default note name (`default_key_name(p)` -> `default_key_name(None)`).

def test_a_verifier_built_from_the_bare_public_key_verifies_a_trail_of_a_key_without_a_name(golden, keys):
    trail, _ = golden
    verifier = Verifier.of(keys.signer.public_key())
    assert verifier.notes[0].name == keys.signer.name
    assert verify_trail(trail, verifier).ok


# ---------------------------------------------------------------- note.parse_vkey: strict base64
# (`validate=True` -> False) and exactly 33 bytes of a known key type (`or` -> `and`).

def _raw() -> bytes:
    return raw_public(Ed25519PrivateKey.generate().public_key())


def test_a_vkey_with_characters_outside_base64_is_malformed():
    text = format_vkey("example.com/log", ALG_ED25519, _raw())
    name, h, b64 = text.split("+", 2)
    with pytest.raises(ValueError, match="^vkey example.com/log: malformed key data$"):
        parse_vkey(f"{name}+{h}+{b64[:4]}!{b64[4:]}")


@pytest.mark.parametrize("blob", [
    bytes([0x09]) + bytes(32),          # 33 bytes, an unknown key type
    bytes([ALG_ED25519]) + bytes(33),    # a known type, 34 bytes
    bytes([ALG_COSIGNATURE_V1]) + bytes(31),
])
def test_a_vkey_of_an_unknown_type_or_length_is_refused_even_with_a_matching_hash(blob):
    raw = blob[1:]
    # the hash a forger would put there: the one the verifier would compute for a cosignature key
    h = f"{key_id('example.com/log', ALG_COSIGNATURE_V1, raw):08x}"
    text = f"example.com/log+{h}+{base64.b64encode(blob).decode()}"
    with pytest.raises(ValueError, match="not an Ed25519 key .type 0x01. or cosignature key .type 0x04.$"):
        parse_vkey(text)


# ---------------------------------------------------------------- chain.SealedBatch: a slice seals each item
# (`self._one(x)` -> `self._one(None)`).

def test_a_slice_of_a_sealed_batch_is_the_sealed_records(tmp_path, keys):
    records = make_records(keys, 5)
    with TrailWriter.open(tmp_path / "t", keys) as w:
        batch = w.append(records)
        w.commit()
    assert batch[1:3] == [batch[1], batch[2]]
    assert [r.seq for r in batch[:]] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- merkle.root_from_inclusion / path_ranges:
# the index must be inside the tree (`<` -> `<=`), the leaf and every path node 32 bytes (`or` -> `and`).

def _tree(n: int):
    from auditor.trail.hashing import leaf_hash
    from auditor.trail.merkle import list_nodes, root_of

    leaves = [leaf_hash(b"%d" % i) for i in range(n)]
    return leaves, list_nodes(leaves), root_of(leaves)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_an_inclusion_path_holds_only_for_a_leaf_inside_the_tree_and_hashes_of_32_bytes(size):
    from auditor.trail.merkle import inclusion_proof, root_from_inclusion, verify_inclusion

    leaves, node, root = _tree(size)
    for i in range(size):
        path = inclusion_proof(i, size, node)
        assert verify_inclusion(i, size, leaves[i], path, root)
        assert root_from_inclusion(i, size, leaves[i][:31], path) is None  # a short leaf
        assert root_from_inclusion(i, size, leaves[i], [*path, leaves[0]]) is None  # one node too many
        if path:
            assert root_from_inclusion(i, size, leaves[i], [path[0][:31], *path[1:]]) is None  # a short node
    last = inclusion_proof(size - 1, size, node)
    for index in (size, size + 1, -1):
        for path in (last, [], [leaves[0]] * 4):
            assert root_from_inclusion(index, size, leaves[-1], path) is None
    with pytest.raises(ValueError, match=f"leaf {size} is outside a tree of size {size}"):
        inclusion_proof(size, size, node)


# ---------------------------------------------------------------- anchor.check_extends: a stored proof
# from another size is not used (`or` -> `and`); the outcome is False, not None; the message counts the
# proofs after the trusted size only (`>` -> `>=`).

@pytest.fixture
def anchored(tmp_path, keys):
    trail = tmp_path / "trail"
    write_trail(trail, keys, 200, batch=25, checkpoint_every=50)
    return trail


def _history(trail, keys):
    from auditor.trail.source import FileSource
    from auditor.trail.verify import Policy, VerifyReport, load_checkpoints

    report = VerifyReport()
    load_checkpoints(FileSource(trail), keys.verifier, Policy(), report)
    return report.history["events/0"], report.entries["events/0"]


def test_a_stored_proof_from_another_size_sends_the_check_to_the_records(anchored, keys):
    from trailkit import signed_checkpoints

    from auditor.trail.anchor import check_extends, proof_from_leaves

    trusted = signed_checkpoints(anchored, keys)[0]  # size 50
    entries = stored_checkpoints(anchored)
    write_stored(anchored, [entries[0], *entries[2:]])  # 150's proof starts at 100, which is gone
    history, stored = _history(anchored, keys)
    assert [cp.size for cp in history] == [50, 150, 200]
    result = check_extends(trusted, history, stored)
    assert result.ok is False and result.needs_records is True
    assert result.how == "no stored proof links size 50 to 150"
    from_records = proof_from_leaves(trusted, history[-1], chain_leaves(as_source(anchored), "events/0", 200))
    assert from_records.ok is True


def test_check_extends_answers_false_and_counts_the_proofs_it_verified(anchored, keys):
    from trailkit import signed_checkpoints

    from auditor.trail.anchor import check_extends

    signed = signed_checkpoints(anchored, keys)
    history, stored = _history(anchored, keys)
    ok = check_extends(signed[1], history, stored)  # size 100: proofs 100->150, 150->200
    assert ok.ok is True and "2 consistency proof(s) verified, no record read" in ok.how
    gap = check_extends(signed[1], [history[0], *history[2:]], stored)
    assert gap.ok is False and gap.needs_records is True


# ---------------------------------------------------------------- anchor.findings: every chain is looked
# at (`continue` -> `break`); fork or rollback (`>` -> `>=`); where the histories agree (`and` -> `or`,
# `<` -> `<=`); "first diverging size" for a fork only.

@pytest.fixture(scope="module")
def two_chain_checkpoints(tmp_path_factory, keys):
    from trailkit import signed_checkpoints

    trail = tmp_path_factory.mktemp("two") / "trail"
    write_trail(trail, keys, 80, partitions=2, batch=10, checkpoint_every=10)
    by_chain: dict[str, list] = {}
    for cp in signed_checkpoints(trail, keys):
        by_chain.setdefault(cp.chain_id, []).append(cp)
    return {c: sorted(cps, key=lambda cp: cp.size) for c, cps in by_chain.items()}


def test_findings_name_a_failing_chain_after_a_passing_one(two_chain_checkpoints):
    from auditor.trail.anchor import Anchored, findings

    a, b = two_chain_checkpoints["events/0"][0], two_chain_checkpoints["events/1"][0]
    (issue,) = findings([Anchored(a, True, 40, "fine"), Anchored(b, False, 40, "diverges")])
    assert (issue.kind, issue.chain, issue.seq) == ("fork", "events/1", b.size - 1)
    assert issue.message == f"diverges; first diverging size: {b.size}"


def test_a_different_root_at_the_latest_size_is_a_fork_and_a_larger_size_a_rollback(two_chain_checkpoints):
    from auditor.trail.anchor import Anchored, findings

    cps = two_chain_checkpoints["events/0"]
    top = cps[-1]
    (same,) = findings([Anchored(top, False, top.size, "other root")])
    assert same.kind == "fork" and same.message == f"other root; first diverging size: {top.size}"
    (longer,) = findings([Anchored(top, False, top.size - 1, "rolled back")])
    assert longer.kind == "rollback" and longer.message == "rolled back" and longer.seq == top.size - 1


def test_findings_say_where_the_histories_agree_only_below_the_first_divergence(two_chain_checkpoints):
    from auditor.trail.anchor import Anchored, findings

    c10, c20, c30 = two_chain_checkpoints["events/0"][:3]
    (issue,) = findings([Anchored(c10, True, 40, ""), Anchored(c20, False, 40, "x"),
                         Anchored(c30, True, 40, "")])
    assert issue.message == f"x; first diverging size: {c20.size} (the trail agrees with the trusted checkpoint " \
                            f"of size {c10.size})"
    (alone,) = findings([Anchored(c20, True, 40, ""), Anchored(c20, False, 40, "y")])
    assert alone.message == f"y; first diverging size: {c20.size}"


# ---------------------------------------------------------------- keys.KeyRing.load: "no keys" only when
# the directory holds none of the three (each `and`/`is None`/`not` mutated).

def test_a_key_directory_with_any_one_key_loads_and_an_empty_one_is_refused(tmp_path, golden, keys):
    from auditor.errors import ConfigError
    from auditor.trail.keys import PSEUDONYM_KEY, SIGNING_PUB

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="^no keys in "):
        KeyRing.load(tmp_path / "empty")
    for name in (SIGNING_PUB, PSEUDONYM_KEY):
        only = tmp_path / name
        only.mkdir(mode=0o700)
        shutil.copy2(keys.directory / name, only / name)
        (only / name).chmod(0o600)
        ring = KeyRing.load(only)
        assert bool(ring.verifier) is (name == SIGNING_PUB)
    assert verify_trail(golden[0], KeyRing.load(tmp_path / SIGNING_PUB).verifier).ok


# ---------------------------------------------------------------- verify._Chain: the per-chain state
# machine, fed hashes directly (each case is a pattern a forger can write into a segment).

def _chain(expected=None):
    from auditor.trail.hashing import genesis_hash
    from auditor.trail.verify import VerifyReport, _Chain

    report = VerifyReport()
    return _Chain("c/0", expected or {}, report), report, genesis_hash("c/0")


def _h(i: int) -> bytes:
    return bytes([i]) * 32


def test_a_duplicate_seq_then_a_successor_linking_to_neither_is_a_modification():
    """`alt is not None and prev == alt` (-> `or`): a successor that links to neither copy of a
    duplicated seq is an altered record, not the genuine one of an insertion."""
    chain, report, g = _chain()
    chain.add(0, g, _h(1))
    chain.add(1, _h(1), _h(2))
    chain.add(1, _h(1), _h(3))   # a second record claiming seq 1
    chain.add(2, _h(9), _h(4))   # links to neither
    chain.finish()
    assert [(i.kind, i.seq) for i in report.issues] == [("modified", 1)]
    assert report.issues[0].message == "record seq 1 was altered and re-hashed: seq 2 links to another hash"


def test_a_gap_is_a_deletion_even_when_the_record_after_it_links_to_the_previous_head():
    """`seq == size - 1 and alt is None and prev == prev_head` (-> `... or prev == prev_head`)."""
    chain, report, g = _chain()
    chain.add(0, g, _h(1))
    chain.add(1, _h(1), _h(2))
    chain.add(5, _h(1), _h(3))
    chain.finish()
    assert [(i.kind, i.seq, i.message) for i in report.issues] == [
        ("deleted", 2, "records seq 2..4 are missing (3 deleted)")]
    assert report.chains == {} and chain.size == 6


def test_a_third_record_claiming_one_seq_is_named_as_inserted():
    """`seq == size - 1 and alt is None ...` (-> `seq == size - 1 or ...`): only one duplicate is held
    back; a third claimant is an insertion."""
    chain, report, g = _chain()
    chain.add(0, g, _h(1))
    chain.add(1, _h(1), _h(2))
    chain.add(1, _h(1), _h(3))
    chain.add(1, _h(1), _h(4))
    chain.finish()
    assert [(i.kind, i.seq) for i in report.issues] == [("inserted", 1), ("inserted", 1)]
    assert report.issues[0].message == ("a record claiming seq 1 appears after seq 1 "
                                        "(inserted, duplicated or out of order)")


def test_after_a_deletion_the_merkle_root_is_not_compared_but_the_head_still_is():
    """`merkle_ok = False` (-> True) after a gap: the range lacks leaves, so only heads compare."""
    from auditor.trail.verify import _Expect

    chain, report, g = _chain({3: [_Expect(3, bytes(32), _h(3), False)]})
    chain.add(0, g, _h(1))
    chain.add(2, _h(9), _h(3))   # seq 1 deleted; seq 2 is the checkpoint's head
    chain.finish()
    assert [(i.kind, i.seq) for i in report.issues] == [("deleted", 1)]
    assert chain.last_match == 3


@pytest.mark.parametrize("trusted, kind, what", [(True, "fork", "trusted checkpoint"),
                                                   (False, "checkpoint", "signed checkpoint")])
def test_a_head_that_differs_names_the_kind_of_checkpoint(trusted, kind, what):
    from auditor.trail.verify import _Expect

    chain, report, g = _chain({2: [_Expect(2, bytes(32), _h(7), trusted)]})
    chain.add(0, g, _h(1))
    chain.add(1, _h(1), _h(2))
    chain.finish()
    (issue,) = report.issues
    assert (issue.kind, issue.seq) == (kind, 1)
    assert issue.message == (f"record seq 1 differs from the {what} of size 2; records after seq -1 were "
                             "rewritten or replaced")


def test_verify_trail_reports_its_progress_in_bytes(golden, keys):
    trail, _ = golden
    seen: list[int] = []
    assert verify_trail(trail, keys.verifier, progress=seen.append).ok
    assert seen and all(n > 0 for n in seen)


def test_a_first_record_that_does_not_start_from_the_genesis_hash_is_named():
    chain, report, g = _chain()
    chain.add(0, _h(5), _h(1))
    chain.finish()
    (issue,) = report.issues
    assert (issue.kind, issue.seq, issue.expected, issue.actual) == ("modified", 0, g.hex(), _h(5).hex())
    assert issue.message == "seq 0 does not start from the chain's genesis hash"


# ---------------------------------------------------------------- verify_source / _check_coverage: which
# age limit applies (the policy's, else the source's grace, else 15 minutes), the boundary (older than the
# limit fails, exactly the limit passes), and what the issue says.

def _unsigned_tail(trail, keys):
    """100 signed records, then 30 durable ones no checkpoint covers (the writer died)."""
    from trailkit import T0

    write_trail(trail, keys, 100, checkpoint_every=50)
    w = TrailWriter.open(trail, keys, checkpoint_every=50, clock=lambda: T0)
    tail = make_records(keys, 30, seed=5)
    w.append(tail)
    w.commit()
    w._unlock()
    return tail[0].processed_at  # the oldest unsigned record


class _GraceSource:
    """A trail source that, like the Kafka audit topic, allows no unsigned records and says why
    (and keeps no ``notes``: they are optional)."""

    unsigned_grace = __import__("datetime").timedelta(0)
    unsigned_means = "this source signs every record at once"

    def __init__(self, trail):
        from auditor.trail.source import FileSource

        self._inner = FileSource(trail)
        self.label = "grace"

    def checkpoints(self):
        return self._inner.checkpoints()

    def chunks(self):
        return self._inner.chunks()

    def size_hint(self):
        return self._inner.size_hint()


def test_the_unsigned_age_limit_is_the_policys_then_the_sources_then_15_minutes(tmp_path, keys):
    from datetime import timedelta

    from auditor.trail.source import FileSource
    from auditor.trail.verify import Policy, _fmt, verify_source

    trail = tmp_path / "t"
    oldest = _unsigned_tail(trail, keys)
    now = oldest + timedelta(minutes=10)
    assert verify_trail(trail, keys.verifier, policy=Policy(now=now)).ok  # 10 minutes < the default 15
    (issue,) = verify_trail(trail, keys.verifier, policy=Policy(now=now, max_unsigned_age=timedelta(minutes=5))).issues
    assert (issue.kind, issue.chain, issue.seq) == ("unsigned", "events/0", 100)
    assert issue.message == ("30 records after the last signed checkpoint (size 100), the oldest processed 10m0s "
                             "ago, beyond the allowed 5m0s: checkpoints were removed or the writer stopped signing")
    (strict,) = verify_source(_GraceSource(trail), keys.verifier, policy=Policy(now=now)).issues
    assert strict.message.endswith(f"beyond the allowed {_fmt(timedelta(0))}: this source signs every record at once")
    limit = timedelta(minutes=7)
    at_limit = verify_source(FileSource(trail), keys.verifier,
                             policy=Policy(now=oldest + limit, max_unsigned_age=limit))
    assert at_limit.ok and any("the last 30 records are not yet covered" in n for n in at_limit.notes)
    past = verify_source(FileSource(trail), keys.verifier,
                         policy=Policy(now=oldest + limit + timedelta(seconds=1), max_unsigned_age=limit))
    assert past.kinds() == {"unsigned"}


def test_records_of_unknown_age_after_no_checkpoint_of_their_chain_are_unsigned():
    from datetime import UTC, datetime, timedelta

    from auditor.trail.verify import Policy, VerifyReport, _check_coverage

    report = VerifyReport(records=3, chains={"c/0": 3}, checkpoints=1)  # a checkpoint, of another chain
    _check_coverage(report, Policy(), datetime(2026, 1, 1, tzinfo=UTC), {}, timedelta(minutes=15), "why")
    (issue,) = report.issues
    assert (issue.kind, issue.chain, issue.seq) == ("unsigned", "c/0", 0)
    assert issue.message == ("3 records after no signed checkpoint at all, of unknown age, beyond the allowed "
                             "15m0s: why")


def test_an_unreadable_checkpoint_line_does_not_hide_the_checkpoints_after_it(copy, keys):
    text = (copy / "checkpoints.jsonl").read_text()
    (copy / "checkpoints.jsonl").write_text("{not json\n" + text)
    report = verify_trail(copy, keys.verifier)
    assert report.checkpoints == 4 and report.covered == {"events/0": N}
    (issue,) = report.issues
    assert issue.kind == "signature" and issue.message.startswith("checkpoint line 1: unreadable checkpoint entry")


def test_records_only_mode_reads_no_checkpoint_without_a_key_and_still_checks_them_with_one(golden, keys):
    from auditor.trail.source import FileSource
    from auditor.trail.verify import Policy, verify_source

    trail, _ = golden
    policy = Policy(require_checkpoints=False)
    bare = verify_source(FileSource(trail), Verifier(), policy=policy)
    assert bare.ok and bare.checkpoints == 0 and bare.records == N
    keyed = verify_source(FileSource(trail), keys.verifier, policy=policy)
    assert keyed.ok and keyed.checkpoints == 4 and keyed.covered == {"events/0": N}


def test_only_the_watched_records_are_kept_for_their_age(golden):
    """`seq in watch and not yet kept` (-> `or`): keeping every record would hold the trail in memory."""
    from auditor.trail.source import FileSource
    from auditor.trail.verify import VerifyReport, _scan_chunk

    trail, _ = golden
    first: dict = {}
    chains: dict = {}
    for chunk in FileSource(trail).chunks():
        _scan_chunk(chunk, chains, {}, {"events/0": {150}}, first, VerifyReport())
    assert list(first) == [("events/0", 150)]


def test_witness_coverage_allows_records_up_to_exactly_the_age_limit(golden):
    """The unwitnessed check: `age is None or age > limit` (-> `is not None`, `>=`)."""
    from datetime import timedelta

    from auditor.trail.canonical import record_from_bytes
    from auditor.trail.verify import Policy, VerifyReport, _check_coverage

    trail, _ = golden
    data = segment_records(only_segment(trail))[3]
    at = record_from_bytes(data).processed_at
    limit = timedelta(minutes=15)
    policy = Policy(min_witnesses=1)

    def check(now):
        report = VerifyReport(records=5, chains={"events/0": 5}, checkpoints=1, covered={"events/0": 5},
                              witnessed={"events/0": 3})
        _check_coverage(report, policy, now, {("events/0", 3): data}, limit, "why")
        return report.issues

    assert check(at + limit) == []
    (issue,) = check(at + limit + timedelta(seconds=1))
    assert (issue.kind, issue.seq) == ("unwitnessed", 3)
    assert issue.message == ("2 records after size 3 have no checkpoint cosigned by 1 witness(es) and are older "
                             "than 15m0s")


# ---------------------------------------------------------------- anchor.check_extends / proof_from_leaves:
# every outcome carries the trusted checkpoint, `ok` exactly True or False, and the trail's latest size
# (each argument of each `Anchored(...)` mutated; `findings` reads all three).

def _outcome(result, trusted, ok, latest, needs_records=False):
    assert result.trusted is trusted
    assert result.ok is ok and result.latest == latest and result.needs_records is needs_records


def test_every_check_extends_outcome_names_the_trusted_checkpoint_and_the_latest_size(anchored, keys, tmp_path):
    from trailkit import signed_checkpoints

    from auditor.trail.anchor import check_extends, findings, proof_from_leaves

    signed = signed_checkpoints(anchored, keys)
    history, stored = _history(anchored, keys)
    t50, t100 = signed[0], signed[1]
    _outcome(check_extends(t100, [], {}), t100, False, 0)
    (none,) = findings([check_extends(t100, [], {})])
    assert (none.kind, none.seq) == ("rollback", 0)
    _outcome(check_extends(t100, history[:1], stored), t100, False, 50)
    _outcome(check_extends(t50, history, stored), t50, True, 200)
    other = tmp_path / "other"
    write_trail(other, keys, 200, batch=25, checkpoint_every=50, seed=5)
    forked = signed_checkpoints(other, keys)[1]
    _outcome(check_extends(forked, history, stored), forked, False, 200)
    broken = dict(stored)
    broken[150] = dataclasses.replace(stored[150], proof=(bytes(32), *stored[150].proof[1:]))
    _outcome(check_extends(t100, history, broken), t100, False, 200)
    unlinked = dict(stored)
    unlinked[150] = dataclasses.replace(stored[150], prev_size=50)
    _outcome(check_extends(t100, history, unlinked), t100, False, 200, needs_records=True)
    leaves = chain_leaves(as_source(anchored), "events/0", 200)
    _outcome(proof_from_leaves(t50, history[-1], leaves[:10]), t50, False, 200)
    _outcome(proof_from_leaves(t50, history[-1], [bytes(32), *leaves[1:]]), t50, False, 200)
    _outcome(proof_from_leaves(t50, history[-1], leaves), t50, True, 200)


def test_the_root_of_an_empty_compact_range_is_the_empty_tree():
    from auditor.trail.merkle import EMPTY_ROOT, root_from_range, root_of

    assert root_from_range(0, []) == EMPTY_ROOT == root_of([])
    assert root_from_range(-1, []) is None


# ---------------------------------------------------------------- verify.load_checkpoints: after a fork
# (two roots for one size) the other checkpoints still count (`continue` -> `break`); a stored proof that
# was stripped from an entry that still names its previous size is checked (`or` -> `and`).

def test_checkpoints_after_a_forked_one_still_count(tmp_path, golden, keys):
    fork = tmp_path / "fork"
    write_trail(fork, keys, N, seed=123)
    trail = tmp_path / "t"
    shutil.copytree(golden[0], trail)
    entries = stored_checkpoints(trail)
    write_stored(trail, [entries[0], stored_checkpoints(fork)[0], *entries[1:]])
    report = verify_trail(trail, keys.verifier)
    assert [(i.kind, i.seq) for i in report.issues] == [("fork", 49)]
    assert report.covered == {"events/0": N} and [cp.size for cp in report.history["events/0"]] == [50, 100, 150, 200]


def test_a_stored_consistency_proof_stripped_from_its_entry_is_named(copy, keys):
    entries = stored_checkpoints(copy)
    assert entries[2].prev_size == 100 and entries[2].proof
    entries[2] = dataclasses.replace(entries[2], proof=())
    write_stored(copy, entries)
    (issue,) = verify_trail(copy, keys.verifier).issues
    assert (issue.kind, issue.seq) == ("proof", 149)
    assert issue.message == "checkpoint line 3: the stored consistency proof from size 100 to 150 does not verify"


# ---------------------------------------------------------------- merkle.verify_consistency: sizes out of
# order and nodes that are not 32 bytes fail before any hashing (`or` -> `and`).

def test_a_consistency_proof_needs_sizes_in_order_and_nodes_of_32_bytes():
    from auditor.trail.merkle import consistency_proof, verify_consistency

    leaves, node, root = _tree(13)
    _, _, root7 = _tree(7)
    proof = consistency_proof(7, 13, node)
    assert verify_consistency(7, 13, root7, root, proof)
    assert not verify_consistency(7, 13, root7, root, [proof[0][:31], *proof[1:]])
    assert not verify_consistency(7, 13, root7, root, [*proof, bytes(31)])
    from auditor.trail.hashing import node_hash

    x, y = bytes(range(32)), bytes(range(1, 33))
    # hashes a shrinking "proof" would need: the algorithm run on sizes 3 -> 2 would accept them
    assert not verify_consistency(3, 2, x, node_hash(x, y), [x, y])
    for old, new in ((13, 7), (8, 7), (-1, 13)):
        for p in (proof, proof[:1], [], [root7], [root, root7, root]):
            assert not verify_consistency(old, new, root7, root, p)
            assert not verify_consistency(old, new, root, root7, p)


# ---------------------------------------------------------------- note.open_note: the refusal names the keys.

def test_a_note_signed_only_by_unknown_keys_names_them():
    from auditor.trail.note import NoteError, NoteSigner, open_note, sign_note

    signed = sign_note("hello\n", NoteSigner("b.example/log", Ed25519PrivateKey.generate()))
    other = NoteSigner("a.example/log", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match=r"^signed by unknown key\(s\) only \(b.example/log\)$"):
        open_note(signed, [other.verifier])


# ---------------------------------------------------------------- proof.InclusionProof.from_json: the record
# is strict base64 (`validate=True` -> False would drop stray characters and read a damaged file).

def test_a_proof_file_with_a_stray_character_in_the_record_is_not_a_proof(golden, keys):
    import json

    from auditor.trail.proof import InclusionProof

    trail, _ = golden
    proof = make_proof(trail, 4, None, keys.verifier)
    m = json.loads(proof.to_json())
    assert InclusionProof.from_json(json.dumps(m)) == proof
    m["record"] = m["record"][:8] + "*" + m["record"][8:]
    with pytest.raises(TrailError, match="^not a proof file: "):
        InclusionProof.from_json(json.dumps(m))


# ---------------------------------------------------------------- source.merge_cosignatures / cosigned_notes:
# a damaged cosignature line or stored note is skipped, not the end of the list (`continue` -> `break`).

def test_cosignatures_after_a_damaged_line_still_reach_their_checkpoints(copy):
    import json

    from auditor.trail.note import Note, NoteSigner, sign_note
    from auditor.trail.source import FileSource, Located, merge_cosignatures

    entries = list(FileSource(copy).checkpoints())
    witness = NoteSigner("w.example/witness", Ed25519PrivateKey.generate())
    last = Note.parse(entries[-1].entry.note)
    cosigned = sign_note(last.text, witness).to_bytes()
    (copy / "cosignatures.jsonl").write_text("not json\n" + json.dumps({"note": cosigned.decode()}) + "\n")
    assert FileSource(copy).cosigned_notes() == [cosigned]
    damaged = Located("checkpoint line 0", dataclasses.replace(entries[0].entry, note=b"damaged"))
    merged = merge_cosignatures([damaged, *entries], [b"damaged line", cosigned])
    assert len(merged) == len(entries) + 1 and merged[0] is damaged
    names = {s.name for s in Note.parse(merged[-1].entry.note).signatures}
    assert "w.example/witness" in names and len(names) == 2


# ---------------------------------------------------------------- checkpoint.Checkpoint.parse / _unb64 /
# StoredCheckpoint.from_json: the body is at least three lines each ending in a newline (`<` -> `<=`,
# `or` -> `and`); the root is strict base64; an entry of another format is refused.

def test_the_checkpoint_body_stored_entry_and_root_are_read_strictly(golden):
    import json

    from auditor.errors import TrailCorruption
    from auditor.trail.checkpoint import FORMAT, Checkpoint, StoredCheckpoint
    from auditor.trail.note import Note

    text = Note.parse(stored_checkpoints(golden[0])[0].note).text
    origin, size, root, *ext = text.split("\n")
    assert Checkpoint.parse(text).size == int(size) == 50
    with pytest.raises(TrailCorruption, match="at least three non-empty lines, each ending in a newline"):
        Checkpoint.parse(text[:-1])
    with pytest.raises(TrailCorruption, match="no 'time' or 'head' extension line"):
        Checkpoint.parse(f"{origin}\n{size}\n{root}\n")
    with pytest.raises(TrailCorruption, match="not base64"):
        Checkpoint.parse(text.replace(root, root[:4] + "*" + root[4:]))
    with pytest.raises(TrailCorruption, match="unreadable checkpoint entry"):
        StoredCheckpoint.from_json(json.dumps({"format": FORMAT + "-other", "note": "x\n"}))
    assert StoredCheckpoint.from_json(json.dumps({"format": FORMAT, "note": "x\n"})).note == b"x\n"


# ---------------------------------------------------------------- third run (docs/mutation.md, "Third run")

def _sig_line(name: str, blob: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def test_checkpoint_extension_lines_are_read_in_any_order_and_the_first_time_counts():
    """Checkpoint.parse: `key == "time" and time is None` -> `or` read the head line as a time."""
    from auditor.trail.checkpoint import Checkpoint

    root = base64.b64encode(b"\x01" * 32).decode()
    head = base64.b64encode(b"\x02" * 32).decode()
    cp = Checkpoint.parse(f"o\n5\n{root}\nhead {head}\ntime 2024-05-01T12:00:00.000000Z\n")
    assert cp.head == b"\x02" * 32 and cp.time.year == 2024
    t1, t2 = "time 2024-05-01T12:00:00.000000Z", "time 2025-01-01T00:00:00.000000Z"
    twice = Checkpoint.parse(f"o\n5\n{root}\n{t1}\nhead {head}\n{t2}\n")
    assert twice.time.year == 2024 and twice.extensions == (t2,)


def test_a_signature_line_with_a_space_or_no_data_is_malformed_and_non_base64_is_refused():
    """note._parse_signature: `not b64 or " " in b64` -> `and`; `validate=True` -> `False`."""
    from auditor.trail.note import Note, NoteError

    with pytest.raises(NoteError, match="malformed signature line"):
        Note.parse("text\n\n\u2014 k AAAAAAA= AAAA\n")
    with pytest.raises(NoteError, match="malformed signature line"):
        Note.parse("text\n\n\u2014 k \n")
    good = base64.b64encode(b"\x00\x00\x00\x07" + b"s" * 64).decode()
    with pytest.raises(NoteError, match="not base64"):
        Note.parse(f"text\n\n\u2014 k {good[:8]}!{good[8:]}\n")


def test_note_bounds_are_inclusive_five_byte_signature_max_size_max_signatures():
    """note._parse_signature `len(blob) < 5` -> `<=`; Note.parse `len(raw) > MAX_NOTE_BYTES` and
    `len(lines) > MAX_SIGNATURES` -> `>=`; `split < 0` -> `<=` (a note whose text is one empty line)."""
    from auditor.trail.note import MAX_NOTE_BYTES, MAX_SIGNATURES, Note, NoteError

    five = Note.parse("t\n\n" + _sig_line("k", b"\x00\x00\x00\x07x"))
    assert five.signatures[0].key_id == 7 and five.signatures[0].data == b"x"
    with pytest.raises(NoteError, match="too short"):
        Note.parse("t\n\n" + _sig_line("k", b"\x00\x00\x00\x07"))
    lines = "".join(_sig_line(f"k{i}", b"\x00\x00\x00\x01" + b"s" * 64) for i in range(MAX_SIGNATURES))
    assert len(Note.parse("t\n\n" + lines).signatures) == MAX_SIGNATURES
    with pytest.raises(NoteError, match="signatures, more than"):
        Note.parse("t\n\n" + lines + _sig_line("kx", b"\x00\x00\x00\x01" + b"s" * 64))
    sig = _sig_line("k", b"\x00\x00\x00\x01" + b"s" * 64)
    pad = MAX_NOTE_BYTES - len(("\n\n" + sig).encode())
    exact = "a" * pad + "\n\n" + sig
    assert len(exact.encode()) == MAX_NOTE_BYTES and Note.parse(exact).text == "a" * pad + "\n"
    with pytest.raises(NoteError, match="larger than"):
        Note.parse("a" + exact)
    assert Note.parse("\n\n" + sig).text == "\n"



def test_a_segment_that_vanishes_while_verifying_is_reported_and_later_segments_still_read(tmp_path, keys):
    """FileSource.chunks: `continue` -> `break` after a segment that cannot be read dropped every
    later segment (here: a segment file removed after the headers were read)."""
    from auditor.trail.source import Chunk, FileSource

    trail = tmp_path / "t"
    segs = segmented_trail(trail, keys)
    assert len(segs) >= 3
    it = FileSource(trail).chunks()
    first = next(it)  # every header has been read; segment 0 is open
    assert isinstance(first, Chunk)
    segs[1].unlink()
    rest = list(it)
    assert [type(x).__name__ for x in rest] == ["Issue"] + ["Chunk"] * (len(segs) - 2)
    assert rest[0].kind == "damaged"


def test_a_torn_block_is_placed_at_the_end_or_in_the_middle_of_the_trail(tmp_path, keys):
    """FileSource.chunks: `pos == len(ordered) - 1` -> `!=`, `and False`, `or True` (the message)."""
    from auditor.trail.source import FileSource

    trail = tmp_path / "t"
    segs = segmented_trail(trail, keys)

    def torn_issues():
        return [x.message for x in FileSource(trail).chunks() if isinstance(x, Issue)]

    with segs[-1].open("r+b") as fh:
        fh.truncate(segs[-1].stat().st_size - 5)
    (only,) = torn_issues()
    assert "at the end of the trail" in only
    with segs[0].open("r+b") as fh:
        fh.truncate(segs[0].stat().st_size - 5)
    first, last = torn_issues()
    assert "in the middle of the trail" in first and "at the end of the trail" in last


@pytest.mark.timeout(60)
def test_scan_segment_tears_at_each_kind_of_damaged_block(copy):
    """segment.scan_segment: a varint cut short (`torn = True` -> `None`/`False`, `break` -> `return`),
    a damaged sync marker (`or` -> `and`), a block of zero records (`count <= 0` -> `< 0`, `and`), a
    negative size pointing back at the previous sync marker (`size_ < 0 or ...` -> `and`: loops), and
    an empty block that is otherwise well formed, which is read (`size_ < 0` -> `<= 0`)."""
    from auditor.trail.segment import scan_segment

    seg = only_segment(copy)
    pristine = seg.read_bytes()
    whole = scan_segment(seg, 0)
    assert not whole.torn and len(whole.blocks) >= 3
    b1 = whole.blocks[1]
    after_b0 = whole.base + b1.offset

    def torn_at(good_end):
        s = scan_segment(seg, 0)
        assert s.torn is True and s.good_end == good_end
        seg.write_bytes(pristine)

    seg.write_bytes(pristine[:after_b0 + 1])          # block 1's count read, its size cut off
    torn_at(after_b0)
    sync_at = whole.base + whole.blocks[1].data_end
    seg.write_bytes(pristine[:sync_at] + bytes([pristine[sync_at] ^ 1]) + pristine[sync_at + 1:])
    torn_at(after_b0)                                  # block 1 complete, its sync marker damaged
    assert pristine[after_b0] != 0
    seg.write_bytes(pristine[:after_b0] + b"\x00" + pristine[after_b0 + 1:])
    torn_at(after_b0)                                  # block 1 claims zero records
    size_len = b1.data_start - b1.offset - 1                 # bytes of block 1's size varint
    back = -(16 + 1 + size_len)                        # from after the size back to block 0's sync
    zz = (back << 1) ^ (back >> 63)
    varint = bytes([(zz >> (7 * i)) & 0x7F | (0x80 if i < size_len - 1 else 0) for i in range(size_len)])
    seg.write_bytes(pristine[:after_b0 + 1] + varint + pristine[after_b0 + 1 + size_len:])
    torn_at(after_b0)                                  # a negative size: torn, not a loop
    seg.write_bytes(pristine[:after_b0] + b"\x02\x00" + whole.sync + pristine[after_b0:])
    empty = scan_segment(seg, 0)                       # one record claimed in zero bytes: framed, read on
    assert not empty.torn and len(empty.blocks) == len(whole.blocks) + 1
    assert empty.blocks[1].data_start == empty.blocks[1].data_end


def _zz(v: int) -> bytes:
    z, out = (v << 1) ^ (v >> 63), bytearray()
    while True:
        out.append(z & 0x7F | (0x80 if z > 0x7F else 0))
        z >>= 7
        if not z:
            return bytes(out)


def _header(meta: dict[str, bytes], sync: bytes) -> bytes:
    body = b"".join(_zz(len(k.encode())) + k.encode() + _zz(len(v)) + v for k, v in meta.items())
    return b"Obj\x01" + _zz(len(meta)) + body + _zz(0) + sync


def test_a_segment_header_with_an_empty_key_or_the_most_entries_allowed_is_read(copy):
    """segment._parse_header: key length `n < 0` -> `<= 0` (an empty key refused); `len(meta) + count >
    _MAX_META_ENTRIES` -> `>=` (a header with exactly the most entries refused)."""
    from auditor.trail.segment import _MAX_META_ENTRIES, _parse_header

    meta, sync, end = _parse_header(only_segment(copy).read_bytes()[:1 << 16])
    with_empty = _parse_header(_header({**meta, "": b"x"}, sync))[0]
    assert with_empty[""] == b"x"
    fill = {f"k{i}": b"" for i in range(_MAX_META_ENTRIES - len(meta))}
    assert len(_parse_header(_header({**meta, **fill}, sync))[0]) == _MAX_META_ENTRIES
    with pytest.raises(ValueError, match="implausible"):
        _parse_header(_header({**meta, **fill, "one": b"more"}, sync))


def test_range_nodes_straddling_the_compact_range_end_and_a_wrong_number_of_roots():
    """merkle.RangeNodes.__call__: `hi - lo < 2` -> `<= 2` refused the node (2, 4) of a tree grown from
    3 leaves (leaf 2 is the compact range's last root); `self(lo, ...)`/`self(..., hi)` -> None crashed
    there. RangeNodes.__init__: `zip(..., strict=True)` -> `False`/`None` took too few roots silently."""
    from auditor.trail.merkle import RangeNodes, range_sizes, root_of

    leaves = [bytes([i]) * 32 for i in range(6)]
    roots, lo = [], 0
    for size in range_sizes(3):
        roots.append(root_of(leaves[lo:lo + size]))
        lo += size
    nodes = RangeNodes(3, roots, leaves[3:])
    assert nodes(2, 4) == root_of(leaves[2:4]) and nodes(0, 6) == root_of(leaves)
    with pytest.raises(ValueError):
        RangeNodes(3, roots[:1], leaves[3:])


# ---------------------------------------------------------------- fourth run, tier 2 (numbers)
# verify._check_beyond: a chain with a signed checkpoint and no record left in the trail holds 0 records
# (`report.chains.get(chain_id, 0)` -> `1`: the removal of a one-record chain went unreported and verify
# passed).

def test_a_checkpointed_chain_whose_only_record_was_removed_fails_verify(tmp_path, keys):
    trail = tmp_path / "trail"
    write_trail(trail, keys, 1, batch=1, checkpoint_every=1)
    assert verify_trail(trail, keys.verifier).ok
    rewrite_segment(only_segment(trail), [])
    report = verify_trail(trail, keys.verifier)
    (issue,) = [i for i in report.issues if i.kind == "truncated"]
    assert issue.seq == 0 and "the chain ends at 0 records" in issue.message
    assert not report.ok


# verify.verify_source / _check_coverage: with witnesses required and none yet, the first record of each
# chain (seq 0) is the one whose age decides; records younger than the limit raise only the trail-wide
# "no checkpoint carries" issue (`witnessed.get(c, 0)` -> `None`/`1`/no default watched the wrong record, or
# looked at the wrong one: "records after size 0 ... of unknown age" was added).

def test_young_records_without_any_witness_raise_only_the_trail_wide_issue(golden, keys):
    from datetime import timedelta

    from trailkit import T0

    from auditor.trail.verify import Policy

    policy = Policy(min_witnesses=1, now=T0 + timedelta(minutes=1), max_unsigned_age=timedelta(minutes=15))
    report = verify_trail(golden.trail, keys.verifier, policy=policy)
    assert [(i.kind, i.message) for i in report.issues] == [
        ("unwitnessed", "no checkpoint carries 1 valid witness cosignature(s)")]


# checkpoint.Checkpoint.parse: every line of a body is non-empty (`lines[:-1]` -> `[:+1]`, `[:-2]` checked
# only the first line, or all but the last: an empty extension line, or one at the end, was read).

def test_a_checkpoint_body_with_an_empty_line_anywhere_is_refused(golden, keys):
    from trailkit import signed_checkpoints

    from auditor.errors import TrailCorruption
    from auditor.trail.checkpoint import Checkpoint

    text = signed_checkpoints(golden.trail, keys)[0].checkpoint.text()
    assert Checkpoint.parse(text).text() == text
    lines = text.split("\n")
    for bad in ("\n".join([*lines[:3], "", *lines[3:]]), text[:-1] + "\n\n"):
        with pytest.raises(TrailCorruption, match="at least three non-empty lines"):
            Checkpoint.parse(bad)


# verify._scan_chunk: a chain with no checkpoint yet (beside one that has them) has its first record (seq 0)
# watched: its age decides whether the unsigned tail passes (`watch.get(chain, (0,))` -> `(1,)`: "of unknown
# age", verify failed a trail whose unsigned records are a minute old).

def test_a_young_chain_without_a_checkpoint_beside_a_checkpointed_one_passes(tmp_path, keys):
    from datetime import timedelta

    from trailkit import T0

    from auditor.trail.verify import Policy

    trail = tmp_path / "trail"
    write_trail(trail, keys, 70, batch=10, checkpoint_every=50, partitions=2)
    write_stored(trail, [e for e in stored_checkpoints(trail) if e.open(keys.verifier).chain_id == "events/0"])
    report = verify_trail(trail, keys.verifier, policy=Policy(now=T0 + timedelta(minutes=1)))
    assert report.ok, report.issues
    assert report.notes == ["events/1: the last 35 records are not yet covered by a checkpoint (the oldest 59s "
                            "old, within 15m0s)"]


# source.segment_order: every index below the highest is looked for (`range(max + 1)` -> `max - 1`: the
# segment before the last, deleted, was not named; its records still show as deleted).

def test_a_deleted_segment_before_the_last_is_named(tmp_path, keys):
    trail = tmp_path / "t"
    segs = segmented_trail(trail, keys)
    assert len(segs) >= 3
    segs[-2].unlink()
    report = verify_trail(trail, keys.verifier)
    assert f"segment {len(segs) - 2} is missing" in [i.message for i in report.issues if i.kind == "reordered"]


# source.segment_order: no segment, no problem (`default=-1` -> `+1` named segments 0 and 1 missing); and
# segments are read in their headers' order, segment 0 first (`meta_index or 0` -> `or 1` tied it with
# segment 1: after swapping the files of 0 and 1 the records were read out of order, a chain issue beside
# the rename).

def test_segments_are_read_in_header_order_from_segment_0_and_none_is_no_problem(tmp_path, keys):
    from auditor.trail.source import segment_order

    assert segment_order([]) == ([], [])
    trail = tmp_path / "t"
    a, b = segmented_trail(trail, keys)[:2]
    a.rename(a.with_suffix(".x"))
    b.rename(a)
    a.with_suffix(".x").rename(b)
    assert {i.kind for i in verify_trail(trail, keys.verifier).issues} == {"reordered"}


# segment._parse_header: an Avro map block may give its count negated, followed by its size in bytes (the
# Avro spec; this writer never does): `count = -count` -> `+count` read no entry of such a block.

def test_a_header_map_block_with_a_negative_count_is_read():
    from auditor.trail.segment import MAGIC, _parse_header, enc_long, header_bytes

    sync = bytes(range(16))
    meta, _, _ = _parse_header(header_bytes(0, sync))
    entries = b"".join(enc_long(len(k.encode())) + k.encode() + enc_long(len(v)) + v for k, v in meta.items())
    header = MAGIC + enc_long(-len(meta)) + enc_long(len(entries)) + entries + enc_long(0) + sync
    assert _parse_header(header + b"rest") == (meta, sync, len(header))


# checkpoint.StoredCheckpoint.from_json: an entry read back is the entry written, its `at` (segment, offset)
# in order (`(at[1], at[1])`), and an entry that names no previous size has none (`prev` defaulting to 1
# would send verify looking for a consistency proof from size 1).

def test_a_stored_checkpoint_entry_reads_back_as_written_and_prev_defaults_to_none(golden):
    import json

    from auditor.trail import StoredCheckpoint

    entries = stored_checkpoints(golden.trail)
    assert any(e.at is not None and e.at[0] != e.at[1] for e in entries)
    for e in entries:
        back = StoredCheckpoint.from_json(e.to_json())
        assert (back.at, back.prev_size, back.range, back.proof) == (e.at, e.prev_size, e.range, e.proof)
    doc = json.loads(entries[0].to_json())
    del doc["prev"]
    assert StoredCheckpoint.from_json(json.dumps(doc)).prev_size == 0
