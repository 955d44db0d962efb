"""An insider's edits to sealed records handed to ``TrailWriter.append_encoded`` (the compiled
step, native/src/trail.rs) and checkpoint ranges extended a batch at a time (native/src/merkle.rs),
against the Python references: a record re-hashed after its link, seq or chain was changed is
refused exactly as the reference refuses it; chain ids the reference takes are taken alike; the
Merkle ranges across checkpoints and a reopen are the ones built record by record."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from nativekit import sealed  # noqa: E402
from trailkit import T0, make_records  # noqa: E402

from auditor.errors import TrailCorruption  # noqa: E402
from auditor.trail import ChainHead, KeyRing, MerkleRange, TrailWriter, store  # noqa: E402
from auditor.trail import encoded as enc  # noqa: E402
from auditor.trail.canonical import enc_id, enc_long, iter_frames  # noqa: E402
from auditor.trail.chainlog import ChainLog  # noqa: E402
from auditor.trail.hashing import genesis_hash, leaf_hash  # noqa: E402
from auditor.trail.verify import verify_trail  # noqa: E402


def parts(data: bytes) -> tuple[str, int, bytes, bytes]:
    (f,) = iter_frames(data, 1)
    return f.chain_id, f.seq, f.prev_hash, data[f.body_start:f.end - 32]


def forge(chain_id: str, seq: int, prev: bytes, body: bytes) -> bytes:
    """A record an insider made: any head, any body, hashed as a real one (its hash is valid)."""
    head = enc_id(chain_id) + enc_long(seq) + prev + enc_long(len(body))
    return head + body + leaf_hash(head + body)


def refused_alike(batch: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The writer's error and state after the batch, compiled step and reference: must be equal."""
    seen = []
    for reference in (False, True):
        if reference:
            monkeypatch.setattr(store, "chain_encoded", enc.chain_encoded_py)
        w = TrailWriter.open(tmp_path / str(reference), KeyRing.generate(tmp_path / f"k{reference}"),
                             clock=lambda: T0)
        try:
            w.append_encoded(batch)
            err = None
        except TrailCorruption as e:
            err = (str(e), e.chain, e.seq, e.expected, e.actual)
        seen.append((err, dict(w.heads), {c: (r.size, r.subtree_roots) for c, r in w.ranges.items()},
                     {c: list(s.since) for c, s in w._state.items()}, w._pending_count, w._pending_bytes))
        w.close()
    assert seen[0] == seen[1]
    return seen[0]


EDITS = {
    # a valid hash over a wrong link: the previous record's hash with one bit flipped
    "wrong-link": lambda d, i: forge(d[i][0], d[i][1], bytes([d[i][2][0] ^ 1]) + d[i][2][1:], d[i][3]),
    # moved to the other chain, linked to that chain's genesis: a chain it does not belong in
    "wrong-chain": lambda d, i: forge("events/1" if d[i][0] == "events/0" else "events/0", d[i][1],
                                      genesis_hash("events/1" if d[i][0] == "events/0" else "events/0"), d[i][3]),
    "seq-gap": lambda d, i: forge(d[i][0], d[i][1] + 1, d[i][2], d[i][3]),
    "seq-back": lambda d, i: forge(d[i][0], d[i][1] - 1, d[i][2], d[i][3]),
    "replayed": lambda d, i: forge(*d[i - 2]),
    "body-edited": lambda d, i: forge(d[i][0], d[i][1], d[i][2], d[i][3][:-1] + bytes([d[i][3][-1] ^ 1])),
    "negative-seq": lambda d, i: forge(d[i][0], -1, d[i][2], d[i][3]),
    "seq-2**63": lambda d, i: forge(d[i][0], d[i][1] + (1 << 63), d[i][2], d[i][3]),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_insiders_rehashed_edit_is_refused_as_the_reference_refuses_it(keys, tmp_path, monkeypatch, edit):
    data = sealed(make_records(keys, 14, partitions=2))
    decoded = [parts(d) for d in data]
    edited = EDITS[edit](decoded, 9)
    assert edited != data[9]
    err, heads, *_ , count, _ = refused_alike([*data[:9], edited, *data[10:]], tmp_path, monkeypatch)
    # a valid record of other content in the right place is taken, and the next of its chain (two
    # chains alternate), which links to the original, refused (as by the reference)
    assert err is not None and count == (11 if edit == "body-edited" else 9)


@pytest.mark.parametrize("chain_id", ["", "événements/0", "a\0b", "\u202eevents/0", "\U0001f600/7", "x" * 300])
def test_chain_ids_the_reference_seals_chain_alike(tmp_path, monkeypatch, chain_id):
    body = b"\x00" * 5
    first = forge(chain_id, 0, genesis_hash(chain_id), body)
    second = forge(chain_id, 1, leaf_hash(first[:-32]), body + b"\x01")
    batch = [first, second] * 1 + [forge(chain_id, 1, genesis_hash(chain_id), body)]
    ours = enc.chain_encoded_native(batch, {}, {})
    assert ours == enc.chain_encoded_py(batch, {}, {})
    assert ours.accepted == 2 and ours.bad == 2
    err, heads, *_ = refused_alike(batch, tmp_path, monkeypatch)
    assert err is not None and heads[chain_id] == ChainHead(chain_id, 2, leaf_hash(second[:-32]))


def test_an_undecodable_chain_id_is_refused_by_both(tmp_path, monkeypatch):
    body = b"\x00"
    raw = b"\xed\xa0\x80"  # a surrogate's UTF-8 form: not UTF-8
    head = enc_long(len(raw)) + raw + enc_long(0) + b"\x00" * 32 + enc_long(len(body))
    bad = head + body + leaf_hash(head + body)
    assert enc.chain_encoded_native([bad], {}, {}) == enc.chain_encoded_py([bad], {}, {})
    err, *_ = refused_alike([forge("events/0", 0, genesis_hash("events/0"), body), bad], tmp_path, monkeypatch)
    assert err is None or err[0]


# ---------------------------------------------------------------- Merkle ranges, a batch at a time

@pytest.mark.parametrize("cuts", [(0, 1, 8, 9, 40), (7, 8, 15, 16, 17), (3, 64, 65, 200)])
def test_a_chain_log_extended_in_batches_across_checkpoints_is_the_one_extended_record_by_record(keys, cuts):
    data = sealed(make_records(keys, 230))
    hashes = [d[-32:] for d in data]
    ours, theirs = ChainLog.genesis("events/0"), ChainLog.genesis("events/0")
    bounds = [0, *cuts, len(hashes)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        ours.extend_many(a, hashes[a:b])
        for seq in range(a, b):
            theirs.extend(hashes[seq], seq)
        assert (ours.head, ours.range.size, ours.range.subtree_roots, ours.since) == \
            (theirs.head, theirs.range.size, theirs.range.subtree_roots, theirs.since)
        if n % 2:  # a checkpoint between batches
            when = T0 + timedelta(seconds=n)
            a_cp, b_cp = ours.checkpoint(when, keys.signer), theirs.checkpoint(when, keys.signer)
            assert a_cp == b_cp
    rng = MerkleRange()
    for h in hashes:
        rng.append(h)
    assert ours.range.root() == rng.root()


def test_a_batch_that_does_not_follow_the_head_is_refused_and_leaves_the_log(keys):
    data = sealed(make_records(keys, 20))
    hashes = [d[-32:] for d in data]
    log = ChainLog.genesis("events/0")
    log.extend_many(0, hashes[:10])
    before = (log.head, log.range.size, log.range.subtree_roots, list(log.since))
    for first in (9, 11, 0):
        with pytest.raises(TrailCorruption):
            log.extend_many(first, hashes[10:])
        assert (log.head, log.range.size, log.range.subtree_roots, list(log.since)) == before


def test_encoded_records_across_reopens_and_checkpoints_verify(keys, tmp_path):
    data = sealed(make_records(keys, 150, partitions=3))
    for cut in ((0, 1), (1, 70), (70, 71), (71, 150)):
        w = TrailWriter.open(tmp_path / "t", keys, checkpoint_every=9, clock=lambda: T0)
        w.append_encoded(data[cut[0]:cut[1]])
        w.close()
    report = verify_trail(tmp_path / "t", keys.verifier)
    assert report.ok and report.records == len(data)
