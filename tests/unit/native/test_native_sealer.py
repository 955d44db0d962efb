"""The native record encoder and chain sealer against the Python reference (trail.canonical,
trail.chain), and the RFC 6962 Merkle tree over the record hashes it makes."""

from __future__ import annotations

import hashlib
import io
import random
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from trailkit import make_records  # noqa: E402

from auditor.events.model import (  # noqa: E402
    ActorOrganisation,
    ActorType,
    EventKind,
    Identifiability,
    LegalRequestType,
    Safeguard,
)
from auditor.native import NativeSealer, SealedBytes  # noqa: E402
from auditor.native import genesis_hash as native_genesis
from auditor.policy.decision import Verdict  # noqa: E402
from auditor.trail import ChainHead, SourceRef, record_from_bytes  # noqa: E402
from auditor.trail.canonical import encode_body, record_schema  # noqa: E402
from auditor.trail.chain import genesis_hash, seal_bytes  # noqa: E402
from auditor.trail.merkle import MerkleRange, root_of  # noqa: E402
from auditor.trail.record import (  # noqa: E402
    AuditRecord,
    CorrectedRecord,
    DecisionFacts,
    Facts,
    LedgerFacts,
    LedgerRead,
    RecipientFacts,
    RecordType,
    Rejection,
    ViolationFacts,
)

SEALER = NativeSealer()



def reference_seal(records, heads=None):
    heads = dict(heads or {})
    out = []
    for r in records:
        head = heads.get(r.chain_id) or ChainHead.genesis(r.chain_id)
        data, new = seal_bytes(head, r)
        out.append(SealedBytes(data, head.size, head.head_hash, new.head_hash))
        heads[r.chain_id] = new
    return out, heads


def test_bodies_are_the_reference_bytes(keys):
    for r in make_records(keys, 300, partitions=3, reject_every=7):
        assert SEALER.encode_body(r) == encode_body(r)


def test_a_batch_over_several_chains_is_sealed_as_the_reference_seals_it(keys):
    records = make_records(keys, 500, partitions=4, reject_every=11)
    ours, heads = SEALER.seal_batch(records, {})
    theirs, ref_heads = reference_seal(records)
    assert ours == theirs
    assert heads == ref_heads and len(heads) == 4
    # the next batch continues from the returned heads
    more = make_records(keys, 40, seed=9, partitions=4)
    ours2, heads2 = SEALER.seal_batch(more, heads)
    theirs2, ref_heads2 = reference_seal(more, ref_heads)
    assert ours2 == theirs2 and heads2 == ref_heads2


def test_sealed_bytes_decode_and_hash_like_any_avro_reader(keys):
    records = make_records(keys, 60, reject_every=5)
    sealed, _ = SEALER.seal_batch(records, {})
    for r, s in zip(records, sealed, strict=True):
        assert hashlib.sha256(b"\x00" + s.data[:-32]).digest() == s.record_hash == s.data[-32:]
        back = record_from_bytes(s.data)
        assert back.seq == s.seq and back.prev_hash == s.prev_hash and back.record_hash == s.record_hash
        assert back._replace(seq=-1, prev_hash=b"", record_hash=b"") == r
        m = fastavro.schemaless_reader(io.BytesIO(s.data), record_schema(), None)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, record_schema(), m)
        assert buf.getvalue() == s.data
    assert sealed[0].prev_hash == genesis_hash("events/0") == native_genesis("events/0")
    for a, b in zip(sealed, sealed[1:], strict=False):
        assert b.prev_hash == a.record_hash and b.seq == a.seq + 1


def test_merkle_root_over_native_record_hashes_matches_an_independent_rfc6962_tree(keys):
    sealed, _ = SEALER.seal_batch(make_records(keys, 37), {})

    def mth(items: list[bytes]) -> bytes:  # RFC 6962 section 2.1, straight from the text
        if len(items) == 1:
            return hashlib.sha256(b"\x00" + items[0]).digest()
        k = 1 << ((len(items) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + mth(items[:k]) + mth(items[k:])).digest()

    tree = MerkleRange()
    tree.extend(s.record_hash for s in sealed)
    assert tree.root() == root_of([s.record_hash for s in sealed]) == mth([s.data[:-32] for s in sealed])
    import pymerkle  # the project's independent RFC 9162 implementation (a test dependency)
    other = pymerkle.InmemoryTree(algorithm="sha256")
    for s in sealed:
        other.append_entry(s.data[:-32])  # pymerkle hashes 0x00 || entry itself
    assert other.get_root() == tree.root()


def test_a_bad_record_names_its_field_and_leaves_the_heads_alone(keys):
    records = make_records(keys, 5)
    bad = records[3]._replace(input_digest=b"short")
    heads = {"events/0": ChainHead("events/0", 9, b"\x07" * 32)}
    with pytest.raises(ValueError, match="input_digest"):
        SEALER.seal_batch([*records[:3], bad], heads)
    assert heads == {"events/0": ChainHead("events/0", 9, b"\x07" * 32)}
    facts = records[0].facts
    assert facts is not None
    with pytest.raises(ValueError, match="facts.purpose"):
        SEALER.encode_body(records[0]._replace(facts=facts._replace(purpose=7)))


def test_times_with_offsets_and_naive_times_encode_as_the_reference(keys):
    r = make_records(keys, 1)[0]
    for t in (datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
              datetime(2026, 3, 1, 12, 0, 0, 5),  # naive: UTC
              datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
        x = r._replace(processed_at=t)
        assert SEALER.encode_body(x) == encode_body(x), t


# ---------------------------------------------------------------- generated records

text = st.text(max_size=10)
opt_text = st.none() | text
opt_int = st.none() | st.integers(-2**31, 2**31 - 1)
opt_bool = st.none() | st.booleans()
times = st.datetimes(timezones=st.just(UTC))
facts_st = st.builds(
    Facts, st.sampled_from(list(EventKind)), times, text, text, st.sampled_from(list(ActorType)), text, opt_text,
    text, opt_int, opt_bool, opt_text, st.lists(text, max_size=4).map(tuple), text,
    st.none() | st.builds(RecipientFacts, text, text, opt_text, opt_bool),
    st.sampled_from(list(Identifiability)), opt_text, st.sampled_from(list(LegalRequestType)),
    st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), opt_text,
    st.sampled_from(list(Safeguard)),
    st.dictionaries(text, text, max_size=4).map(lambda d: tuple(sorted(d.items()))))
decision_st = st.builds(DecisionFacts, st.sampled_from(list(Verdict)), text, text,
                        st.lists(st.builds(ViolationFacts, text, text, text, text, text), max_size=3).map(tuple),
                        opt_text, opt_text)
source_st = st.builds(SourceRef, opt_text, opt_int, st.none() | st.integers(0, 2**63 - 1), opt_text,
                      st.none() | st.integers(0, 2**40))
offsets = st.lists(st.integers(0, 2**62), max_size=3).map(tuple)
ledger_st = st.builds(
    LedgerFacts, st.integers(0, 2**31 - 1), st.integers(-1, 2**62),
    st.lists(st.builds(LedgerRead, text, opt_text, opt_text, opt_text, st.none() | st.booleans() | text, offsets),
             max_size=3).map(tuple),
    st.none() | st.builds(CorrectedRecord, text, st.integers(0, 2**40), offsets))
record_st = st.builds(
    AuditRecord, st.sampled_from(["events/0", "events/1", "file:x"]), st.sampled_from(list(RecordType)), source_st,
    opt_text, st.binary(min_size=32, max_size=32), times, text, text, text,
    st.none() | facts_st, st.none() | decision_st, st.none() | st.builds(Rejection, text, text),
    ledger=st.none() | ledger_st, actor_organisation=st.none() | st.sampled_from(list(ActorOrganisation)),
    legal_request_reference=opt_text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_st, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_generated_records_seal_exactly_as_the_reference(records, rnd: random.Random):
    heads = {"events/0": ChainHead("events/0", rnd.randrange(2**40), rnd.randbytes(32))}
    ours, our_heads = SEALER.seal_batch(records, heads)
    theirs, ref_heads = reference_seal(records, heads)
    assert ours == theirs
    assert {**heads, **our_heads} == ref_heads
