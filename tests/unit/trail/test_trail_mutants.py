"""Tests written to kill mutants that survived the trail's mutation run (docs/mutation.md).

Each test names the comparison it pins; without it a changed operator or constant went unnoticed.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trailkit import write_trail

from auditor.trail import KeyRing, make_proof
from auditor.trail.chain import ChainHead
from auditor.trail.checkpoint import _escape, _unescape
from auditor.trail.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    CosignatureVerifier,
    NoteSigner,
    cosigned_message,
    format_vkey,
    key_id,
    parse_vkey,
    raw_public,
    sign_note,
)
from auditor.trail.proof import chain_ids
from auditor.trail.record import SourceRef
from auditor.trail.source import as_source

TEXT = b"example.com/auditor/events/0\n3\nAAAA\n"


def _cosig(key: Ed25519PrivateKey, timestamp: int, text: bytes = TEXT) -> bytes:
    return struct.pack(">Q", timestamp) + key.sign(cosigned_message(text, timestamp))


@pytest.fixture
def witness():
    key = Ed25519PrivateKey.generate()
    return key, CosignatureVerifier("w.example/witness", key.public_key())


# ---------------------------------------------------------------- note.CosignatureVerifier.verify

def test_a_cosignature_verifies_only_over_its_own_text_and_time(witness):
    key, verifier = witness
    sig = _cosig(key, 1_700_000_000)
    assert verifier.verify(TEXT, sig) is True
    assert verifier.verify(TEXT + b"x", sig) is False  # another note
    assert verifier.verify(TEXT, struct.pack(">Q", 1_700_000_001) + sig[8:]) is False  # another time
    assert verifier.verify(TEXT, sig[:-1] + bytes([sig[-1] ^ 1])) is False


@pytest.mark.parametrize("length", [0, 8, 71, 73])
def test_a_cosignature_of_the_wrong_length_is_refused(witness, length):
    key, verifier = witness
    sig = (_cosig(key, 5) * 2)[:length]
    assert verifier.verify(TEXT, sig) is False


@pytest.mark.parametrize("timestamp", [1 << 63, (1 << 63) + 1, (1 << 64) - 1])
def test_a_cosignature_time_of_2_to_the_63_or_more_is_refused_even_when_signed(witness, timestamp):
    """C2SP tlog-cosignature: the timestamp is a uint64 below 2^63; a signature made over a larger
    one must not verify (the bound is >= 1 << 63, exactly)."""
    key, verifier = witness
    assert verifier.verify(TEXT, _cosig(key, timestamp)) is False


def test_the_largest_allowed_cosignature_time_verifies(witness):
    key, verifier = witness
    assert verifier.verify(TEXT, _cosig(key, (1 << 63) - 1)) is True


# ---------------------------------------------------------------- note.parse_vkey

def _vkey(name: str, alg: int = ALG_ED25519) -> str:
    return format_vkey(name, alg, raw_public(Ed25519PrivateKey.generate().public_key()))


def test_a_vkey_round_trips_for_both_key_types():
    for alg in (ALG_ED25519, ALG_COSIGNATURE_V1):
        text = _vkey("example.com/auditor", alg)
        v = parse_vkey(text)
        assert v.vkey() == text and v.key_id == key_id("example.com/auditor", alg, raw_public(v.public))


def _parts(v: str) -> tuple[str, str, str]:
    name, h, b64 = v.split("+", 2)
    return name, h, b64


@pytest.mark.parametrize("mangle", [
    lambda v: f"{_parts(v)[0]}+{_parts(v)[1][:7]}+{_parts(v)[2]}",  # a 7-digit hash, valid data
    lambda v: f"bad name+{_parts(v)[1]}+{_parts(v)[2]}",  # a key name with a space
    lambda v: f"{_parts(v)[0]}+{_parts(v)[1]}+",          # no key data
])
def test_a_malformed_vkey_is_named_as_not_a_vkey(mangle):
    with pytest.raises(ValueError, match="is not a vkey"):
        parse_vkey(mangle(_vkey("example.com/auditor")))


def test_a_vkey_error_names_the_vkey():
    with pytest.raises(ValueError, match=r"^'nonsense' is not a vkey \(name\+hash\+key\)$"):
        parse_vkey("nonsense")


# ---------------------------------------------------------------- note.sign_note, chain.ChainHead.after

def test_sign_note_requires_a_final_newline_and_says_so():
    signer = NoteSigner("example.com/auditor", Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="^note text must end in a newline$"):
        sign_note("no newline", signer)


def test_the_head_after_an_unsealed_record_is_refused_with_the_reason(tmp_path):
    keys = KeyRing.generate(tmp_path / "k")
    from trailkit import make_records

    unsealed = make_records(keys, 1)[0]
    with pytest.raises(ValueError, match="^the record is not sealed$"):
        ChainHead.after(unsealed)


# ---------------------------------------------------------------- checkpoint origin escaping

@pytest.mark.parametrize("text, plain", [
    ("a%2Fb", "a/b"), ("a%2fb", "a/b"),        # both hex cases decode
    ("a%zzb", "a%zzb"), ("a%2", "a%2"),        # not two hex digits: kept as written
    ("a%2Fz%", "a/z%"), ("%%41", "%A"),
])
def test_origin_unescaping_decodes_exactly_two_hex_digits(text, plain):
    assert _unescape(text) == plain


def test_every_chain_id_survives_escaping():
    for chain in ("events/3", "file:my events.jsonl", "file:100%+x", "t/0", "file:ü\tz"):
        assert _unescape(_escape(chain)) == chain


# ---------------------------------------------------------------- proof.chain_ids

def test_chain_ids_lists_every_checkpointed_chain_and_a_single_chain_needs_no_name(tmp_path):
    keys = KeyRing.generate(tmp_path / "k")
    write_trail(tmp_path / "two", keys, 40, partitions=2, checkpoint_every=10)
    assert chain_ids(as_source(tmp_path / "two")) == [SourceRef.kafka("events", p, 0).chain_id for p in (0, 1)]
    write_trail(tmp_path / "one", keys, 20, checkpoint_every=10)
    assert chain_ids(as_source(tmp_path / "one")) == ["events/0"]
    proof = make_proof(tmp_path / "one", 3, None, keys.verifier)  # no --chain needed with one chain
    assert proof.chain_id == "events/0" and proof.seq == 3


# ---------------------------------------------------------------- anchor.chain_leaves / proof_from_leaves

@pytest.fixture(scope="module")
def two_chains(tmp_path_factory):
    path = tmp_path_factory.mktemp("two") / "trail"
    keys = KeyRing.generate(path.parent / "keys")
    records = write_trail(path, keys, 80, partitions=2, batch=10, checkpoint_every=10)
    return path, keys, records


def test_chain_leaves_are_exactly_the_first_n_hashes_of_that_chain(two_chains):
    from auditor.trail.anchor import chain_leaves

    path, _, records = two_chains
    want = [r.record_hash for r in records if r.chain_id == "events/1"]
    for n in (1, 7, 15, len(want)):
        assert chain_leaves(as_source(path), "events/1", n) == want[:n]


def test_a_proof_from_leaves_needs_every_signed_leaf_and_the_same_history(two_chains):
    from auditor.trail import verify_trail
    from auditor.trail.anchor import chain_leaves, proof_from_leaves

    path, keys, _ = two_chains
    history = verify_trail(path, keys.verifier).history["events/0"]
    trusted, latest = history[0], history[-1]
    leaves = chain_leaves(as_source(path), "events/0", latest.size)
    ok = proof_from_leaves(trusted, latest, leaves)
    assert ok.ok is True and ok.latest == latest.size and "extends the trusted" in ok.how
    short = proof_from_leaves(trusted, latest, leaves[:-1])
    assert short.ok is False and short.latest == latest.size
    assert short.how == f"the chain holds only {latest.size - 1} of the {latest.size} records its checkpoint signs"
    forged = proof_from_leaves(trusted, latest, [bytes(32), *leaves[1:]])
    assert forged.ok is False and forged.trusted is trusted and "diverge at or before size" in forged.how


# ---------------------------------------------------------------- proof.choose_checkpoint / make_proof

def test_a_proof_sits_under_the_largest_checkpoint_of_its_own_chain_that_covers_the_record(two_chains):
    from auditor.errors import TrailError
    from auditor.trail import verify_trail

    path, keys, _ = two_chains
    sizes = {chain: [cp.size for cp in cps] for chain, cps in verify_trail(path, keys.verifier).history.items()}
    for chain in ("events/0", "events/1"):
        latest = max(sizes[chain])
        for verifier in (keys.verifier, None):
            proof = make_proof(path, latest - 1, chain, verifier)
            assert (proof.chain_id, proof.seq, proof.tree_size) == (chain, latest - 1, latest)
        with pytest.raises(TrailError, match=f"^no signed checkpoint of chain {chain} covers seq {latest} yet$"):
            make_proof(path, latest, chain, keys.verifier)
    with pytest.raises(TrailError, match=r"the trail has 2 chains; name one with --chain"):
        make_proof(path, 0, None, keys.verifier)
