"""C2SP signed notes, cosignatures, vkeys and checkpoint bodies, against published vectors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.errors import TrailCorruption
from auditor.trail.checkpoint import Checkpoint, chain_of, origin_for
from auditor.trail.note import (
    ALG_COSIGNATURE_V1,
    CosignatureVerifier,
    Ed25519Verifier,
    Note,
    NoteError,
    NoteSigner,
    cosignature_time,
    key_id,
    open_note,
    parse_vkey,
    raw_public,
    sign_note,
)

# golang.org/x/mod/sumdb/note (note_test.go and its package example): key, text and signature
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_NOTE = (PETER_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
              "KvqfqdngotpRZb6KE6RyyBwJnAM=\n")
# transparency-dev/formats note tests: a plain Ed25519 vkey whose base64 holds '+', and a 0x04 one
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
COSIG_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def peter_signer() -> NoteSigner:
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_signing_reproduces_the_go_reference_note_byte_for_byte():
    assert sign_note(PETER_TEXT, peter_signer()).to_bytes() == PETER_NOTE.encode()
    assert peter_signer().verifier.vkey() == PETER_VKEY


def test_the_go_reference_note_opens_with_its_vkey_and_not_when_altered():
    verifier = parse_vkey(PETER_VKEY)
    note, good = open_note(PETER_NOTE, [verifier])
    assert note.text == PETER_TEXT and [s.name for _, s in good] == ["PeterNeumann"]
    with pytest.raises(NoteError, match="bad signature"):
        open_note(PETER_NOTE.replace("cryptography", "cryptographY"), [verifier])


def test_published_vkeys_parse_with_their_key_ids():
    assert isinstance(parse_vkey(PLUS_VKEY), Ed25519Verifier)  # base64 with a '+' in it
    cosig = parse_vkey(COSIG_VKEY)
    assert isinstance(cosig, CosignatureVerifier) and cosig.key_id == 0xDA77ADE7
    for bad in ("bananas.sigstore.dev+12344556", "x+12345678+THIS_IS_NOT_BASE64!", "x+12345678+AwEB",
                PETER_VKEY.replace("c74f20a3", "00000000"), "with space+c74f20a3+ARpc"):
        with pytest.raises(ValueError):
            parse_vkey(bad)


def test_key_id_is_the_spec_hash_of_name_type_and_key():
    signer = NoteSigner("example.com/log", Ed25519PrivateKey.generate())
    import hashlib

    pub = raw_public(signer.verifier.public)
    want = int.from_bytes(hashlib.sha256(b"example.com/log\n\x01" + pub).digest()[:4], "big")
    assert signer.key_id == key_id("example.com/log", 1, pub) == want


def test_unknown_keys_are_ignored_and_a_known_bad_one_rejects_the_note():
    log = NoteSigner("log.example/a", Ed25519PrivateKey.generate())
    stranger = NoteSigner("other.example/x", Ed25519PrivateKey.generate())
    note = Note("hello\n", (stranger.sign("hello\n"), log.sign("hello\n")))
    _, good = open_note(note.to_bytes(), [log.verifier])
    assert [s.name for _, s in good] == ["log.example/a"]
    with pytest.raises(NoteError, match="unknown key"):
        open_note(Note("hello\n", (stranger.sign("hello\n"),)).to_bytes(), [log.verifier])
    # same name, different key: still unknown (name and ID must both match)
    impostor = NoteSigner("log.example/a", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="unknown key"):
        open_note(Note("hello\n", (impostor.sign("hello\n"),)).to_bytes(), [log.verifier])
    forged = Note("hello\n", (log.sign("other\n"),))
    with pytest.raises(NoteError, match="bad signature"):
        open_note(forged.to_bytes(), [log.verifier])


@pytest.mark.parametrize("raw", [
    "no blank line\n\u2014 a AAAAAAAA\n".encode(),
    b"text\n\n",                                     # no signature lines
    b"text\n\n- a AAAAAAAA\n",                       # ASCII dash
    "text\n\n\u2014 a AAAAAAAA".encode(),                   # no final newline
    "te\x01xt\n\n\u2014 a AAAAAAAA\n".encode(),             # control character
    b"\xff\xfe\n\n",                                          # not UTF-8
    "text\n\n\u2014 a+b AAAAAAAA\n".encode(),               # '+' in a key name
    "text\n\n\u2014 a !!!!\n".encode(),                     # not base64
])
def test_malformed_notes_are_rejected(raw):
    with pytest.raises(NoteError):
        Note.parse(raw)


def test_cosignatures_sign_the_cosignature_v1_message_with_a_timestamp():
    t = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    witness = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate(), cosign=True, clock=lambda: t)
    text = "log.example/a/events/0\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    sig = witness.sign(text)
    assert witness.verifier.alg == ALG_COSIGNATURE_V1 and len(sig.data) == 72
    assert cosignature_time(sig) == t
    message = b"cosignature/v1\ntime %d\n" % int(t.timestamp()) + text.encode()
    witness.verifier.public.verify(sig.data[8:], message)  # raises if the message differs
    assert witness.verifier.verify(text.encode(), sig.data)
    assert not witness.verifier.verify(text.replace("\n3\n", "\n4\n").encode(), sig.data)
    plain = Ed25519Verifier(witness.name, witness.verifier.public)
    assert plain.key_id != witness.key_id  # the 0x04 key ID differs from the 0x01 one of the same key


def test_checkpoint_text_is_the_c2sp_body_with_time_and_head_extensions():
    cp = Checkpoint("log.example/a/events/0", 20852163, bytes(range(32)), bytes(32),
                    datetime(2026, 3, 2, 9, 15, 0, 5, tzinfo=UTC))
    text = cp.text()
    assert text.split("\n") == ["log.example/a/events/0", "20852163", base64.b64encode(bytes(range(32))).decode(),
                                "time 2026-03-02T09:15:00.000005Z", "head " + base64.b64encode(bytes(32)).decode(),
                                ""]
    assert Checkpoint.parse(text) == cp
    for bad in (text.replace("20852163", "020852163"), text.replace("20852163", "-1"), "a\n1\n",
                text.replace("head ", "hed ")):
        with pytest.raises(TrailCorruption):
            Checkpoint.parse(bad)


@pytest.mark.parametrize("chain", ["events/3", "file:events 2024+.jsonl", "file:caf\u00e9%x", "tab\there"])
def test_origins_escape_chain_ids_without_spaces_or_plus(chain):
    origin = origin_for("example.com/auditor", chain)
    assert not any(c.isspace() or c == "+" for c in origin)
    assert chain_of(origin, "example.com/auditor") == chain
    assert chain_of(origin, "example.com/other") is None
