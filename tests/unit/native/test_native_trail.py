"""The compiled trail step (``TrailWriter.append_encoded``: frame, hash, link, compact range, block
bytes) against its Python reference, auditor.trail.encoded.chain_encoded_py: the same result on
every example event and on generated batches (damaged ones included), the same trail files byte
for byte, the same errors, and the same Merkle root as an independent RFC 9162 implementation."""

from __future__ import annotations

import hashlib
import random
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from nativekit import sealed  # noqa: E402
from trailkit import T0, make_decision, make_records  # noqa: E402

from auditor.errors import TrailCorruption  # noqa: E402
from auditor.events.codec import iter_json_lines  # noqa: E402
from auditor.trail import (  # noqa: E402
    ChainHead,
    KeyRing,
    MerkleRange,
    SourceRef,
    TrailWriter,
    build_record,
    store,  # noqa: E402
)
from auditor.trail import encoded as enc  # noqa: E402
from auditor.trail.verify import verify_trail  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (ROOT / "tests/data/events").glob("*.jsonl") if p.name != "malformed.jsonl")




def example_records(keys: KeyRing) -> list:
    events = [d.event for f in EXAMPLES for d in iter_json_lines(f)]
    assert len(events) > 200 and all(e is not None for e in events)
    return [build_record(e, make_decision(e), SourceRef.kafka("events", i % 3, i // 3), keys.pseudonymizer, "t-1",
                         T0 + timedelta(seconds=i)) for i, e in enumerate(events)]


def state(records: list[bytes]) -> tuple[dict[str, ChainHead], dict[str, MerkleRange]]:
    """Heads and ranges after ``records`` (chains continued mid-way, as after a reopen)."""
    batch = enc.chain_encoded_py(records, {}, {})
    assert batch.bad is None
    return ({a.chain_id: ChainHead(a.chain_id, a.size, a.head_hash) for a in batch.chains},
            {a.chain_id: MerkleRange().reset(a.range_size, a.roots) for a in batch.chains})


def same(records: list[bytes], heads=None, ranges=None) -> enc.EncodedBatch:
    heads, ranges = heads or {}, ranges or {}
    before = (dict(heads), {c: (r.size, r.subtree_roots) for c, r in ranges.items()})
    ours = enc.chain_encoded_native(records, heads, ranges)
    theirs = enc.chain_encoded_py(records, heads, ranges)
    assert ours == theirs
    assert before == (heads, {c: (r.size, r.subtree_roots) for c, r in ranges.items()})  # only read
    return ours


def test_the_writer_uses_the_compiled_step():
    assert store.chain_encoded is enc.chain_encoded is enc.chain_encoded_native


def test_every_example_event_chains_as_the_reference_chains_it(keys):
    data = sealed(example_records(keys))
    whole = same(data)
    assert whole.accepted == len(data) and whole.bad is None and len(whole.chains) == 3
    assert whole.data == b"".join(data)
    heads, ranges = state(data[:100])  # continuing chains, as after a reopen
    rest = same(data[100:], heads, ranges)
    ends = {a.chain_id: (a.size, a.head_hash, a.range_size, a.roots) for a in whole.chains}
    assert {a.chain_id: (a.size, a.head_hash, a.range_size, a.roots) for a in rest.chains} == ends


def test_the_merkle_root_matches_an_independent_rfc9162_tree(keys):
    data = sealed(make_records(keys, 77))
    heads, ranges = state(data[:23])
    (a,) = same(data[23:], heads, ranges).chains
    import pymerkle  # the project's independent RFC 9162 implementation (a test dependency)
    other = pymerkle.InmemoryTree(algorithm="sha256")
    for d in data:
        other.append_entry(d[:-32])  # pymerkle hashes 0x00 || entry itself
    assert MerkleRange().reset(a.range_size, a.roots).root() == other.get_root()
    assert a.leaves == [hashlib.sha256(b"\x00" + d[:-32]).digest() for d in data[23:]]


def _varint_stretch(d: bytes, extra: int) -> bytes:
    """The chain id's length written with ``extra`` non-minimal continuation bytes."""
    n, rest = d[0], d[1:]
    return bytes([n | 0x80] + [0x80] * (extra - 1) + [0x00]) + rest if extra else d


MUTATIONS = ("flip", "truncate", "extend", "drop", "swap", "duplicate", "stretch", "empty", "foreign")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(2, 40), st.integers(1, 4), st.integers(0, 30), st.lists(st.sampled_from(MUTATIONS), max_size=3),
       st.randoms(use_true_random=False))
@example(n=2, partitions=1, cut=0, mutations=["truncate", "foreign"], rnd=random.Random(0))  # found in a CI run
def test_generated_batches_damaged_or_not_chain_as_the_reference(keys, n, partitions, cut, mutations, rnd):
    data = sealed(make_records(keys, n + 1, seed=rnd.randrange(1000), partitions=partitions,
                               reject_every=rnd.choice([0, 3])))
    cut = min(cut, n)
    heads, ranges = state(data[:cut])
    batch = data[cut:]
    for m in mutations:
        i = rnd.randrange(len(batch))
        d = batch[i]
        if not d:
            continue
        if m == "flip":
            pos = rnd.randrange(len(d))
            batch[i] = d[:pos] + bytes([d[pos] ^ (1 << rnd.randrange(8))]) + d[pos + 1:]
        elif m == "truncate":
            batch[i] = d[:rnd.randrange(len(d))]
        elif m == "extend":
            batch[i] = d + b"\x00"
        elif m == "drop" and len(batch) > 1:
            del batch[i]
        elif m == "swap" and len(batch) > 1:
            j = rnd.randrange(len(batch))
            batch[i], batch[j] = batch[j], batch[i]
        elif m == "duplicate":
            batch.insert(i, d)
        elif m == "stretch":
            batch[i] = _varint_stretch(d, rnd.randrange(1, 11))  # 11 bytes: refused
        elif m == "empty":
            batch[i] = b""
        elif m == "foreign":  # another chain's head, as a forger would splice
            # (d may be an earlier mutation's truncation: pad its tail to a 32-byte head hash)
            head = d[-32:].rjust(32, b"\0")
            batch[i] = sealed(make_records(keys, 1, topic="other"), {"other/0": ChainHead("other/0", 0, head)})[0]
    same(batch, heads, ranges)


def test_a_seq_beyond_64_bits_is_refused_as_the_reference_refuses_it(keys):
    d = sealed(make_records(keys, 1))[0]
    n = d[0] >> 1
    assert d[1 + n] == 0  # seq 0, re-written as 2**64: 0 in 64 bits, a Python int that does not link
    unhashed = d[:1 + n] + bytes([0x80] * 9 + [0x04]) + d[2 + n:-32]
    forged = unhashed + hashlib.sha256(b"\x00" + unhashed).digest()
    batch = same([forged])
    assert batch.bad == 0 and batch.accepted == 0
    with pytest.raises(TrailCorruption, match=f"seq {2**64} does not link"):
        enc.check_encoded(forged, ChainHead.genesis("events/0"))


# ---------------------------------------------------------------- the writer, both ways

def write(path: Path, keys: KeyRing, batches: list[list[bytes]], monkeypatch, *, reference: bool) -> None:
    if reference:
        monkeypatch.setattr(store, "chain_encoded", enc.chain_encoded_py)
    monkeypatch.setattr("auditor.trail.segment.os.urandom", lambda n: b"\x5a" * n)
    with TrailWriter.open(path, keys, checkpoint_every=40, checkpoint_seconds=3600, segment_bytes=60_000,
                          clock=lambda: T0) as w:
        for b in batches:
            w.append_encoded(iter(b))  # any iterable
            w.commit()
    monkeypatch.undo()


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_writer_makes_the_same_trail_files_byte_for_byte(keys, tmp_path, monkeypatch):
    data = sealed(example_records(keys)[:300])
    rnd = random.Random(5)
    batches, i = [], 0
    while i < len(data):
        k = rnd.randrange(1, 60)
        batches.append(data[i:i + k])
        i += k
    write(tmp_path / "native", keys, batches, monkeypatch, reference=False)
    write(tmp_path / "python", keys, batches, monkeypatch, reference=True)
    ours, theirs = files(tmp_path / "native"), files(tmp_path / "python")
    assert len([f for f in ours if f.startswith("segments/")]) > 1  # rolled over segments
    assert ours == theirs
    report = verify_trail(tmp_path / "native", keys.verifier)
    assert report.ok and report.records == len(data)


@pytest.mark.parametrize("damage", ["link", "hash", "frame"])
def test_a_refused_record_raises_the_reference_error_after_appending_those_before(keys, tmp_path, monkeypatch,
                                                                                damage):
    data = sealed(make_records(keys, 12, partitions=2))
    bad = {"link": data[10], "hash": data[8][:-1] + bytes([data[8][-1] ^ 1]), "frame": data[8][:5]}[damage]
    batch = [*data[:8], bad, *data[9:]]
    seen = []
    for reference in (False, True):
        if reference:
            monkeypatch.setattr(store, "chain_encoded", enc.chain_encoded_py)
        w = TrailWriter.open(tmp_path / str(reference), keys, clock=lambda: T0)
        with pytest.raises(TrailCorruption) as exc:
            w.append_encoded(batch)
        e = exc.value
        seen.append((str(e), e.chain, e.seq, e.expected, e.actual, dict(w.heads),
                     {c: (r.size, r.subtree_roots) for c, r in w.ranges.items()},
                     {c: list(s.since) for c, s in w._state.items()}, w._pending_count, w._pending_bytes))
        w.close()
    assert seen[0] == seen[1]
    assert seen[0][8] == 8  # the records before the refused one are appended
