"""The witness: add-checkpoint decisions with the spec's status codes, persistence, HTTP, client, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from trailkit import make_records, signed_checkpoints, stored_checkpoints, write_trail

from auditor.cli import main
from auditor.trail import KeyRing, TrailWriter
from auditor.trail.note import Note
from auditor.witness import keys as witness_keys
from auditor.witness.client import WitnessClient, WitnessError, request_body
from auditor.witness.core import SIZE_CONTENT_TYPE, TrustedLog, Witness
from auditor.witness.server import make_server, serve_in_thread
from auditor.witness.state import WitnessState


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


@pytest.fixture(scope="module")
def trails(tmp_path_factory, keys):
    base = tmp_path_factory.mktemp("trails")
    write_trail(base / "good", keys, 200, batch=25, checkpoint_every=50)
    write_trail(base / "fork", keys, 200, batch=25, checkpoint_every=50, seed=77)  # same key, other history
    return base


@pytest.fixture
def witness(tmp_path, keys):
    signer = witness_keys.generate(tmp_path / "wkey", "dpo.example.com/witness")
    log = TrustedLog(keys.signer.note_signer.verifier, "example.com/auditor/")
    return Witness(signer, [log], WitnessState(tmp_path / "state.json"))


def history(trails, keys, name="good"):
    return list(zip(stored_checkpoints(trails / name), signed_checkpoints(trails / name, keys), strict=True))


def test_cosigns_a_first_checkpoint_then_only_checkpoints_that_extend_it(witness, trails, keys):
    (e50, s50), (e100, s100), (_, s150), _ = history(trails, keys)
    reply = witness.add_checkpoint(request_body(0, [], e50.note))
    assert reply.status == 200
    sigs = Note.parse(s50.note.text + "\n" + reply.body.decode()).signatures
    assert witness.signer.verifier.verify(s50.note.text.encode(), sigs[0].data)
    assert witness.add_checkpoint(request_body(50, e100.proof, e100.note)).status == 200
    state = witness.state.load()["example.com/auditor/events/0"]
    assert (state.size, state.root) == (100, s100.root)
    assert "dpo.example.com/witness" in state.note  # the cosigned checkpoint is kept as well


def test_a_stale_old_size_gets_409_with_the_witness_size(witness, trails, keys):
    (e50, _), (e100, _), *_ = history(trails, keys)
    witness.add_checkpoint(request_body(0, [], e50.note))
    reply = witness.add_checkpoint(request_body(0, [], e100.note))
    assert (reply.status, reply.body, reply.content_type) == (409, b"50\n", SIZE_CONTENT_TYPE)


def test_a_checkpoint_that_does_not_extend_the_last_one_is_refused_with_422(witness, trails, keys):
    (e50, _), *_ = history(trails, keys)
    fork = history(trails, keys, "fork")
    witness.add_checkpoint(request_body(0, [], e50.note))
    reply = witness.add_checkpoint(request_body(50, fork[1][0].proof, fork[1][0].note))
    assert reply.status == 422 and b"does not extend" in reply.body
    assert witness.state.load()["example.com/auditor/events/0"].size == 50  # unchanged


def test_same_size_other_root_is_a_conflict(witness, trails, keys):
    (e50, _), *_ = history(trails, keys)
    fork = history(trails, keys, "fork")
    witness.add_checkpoint(request_body(0, [], e50.note))
    assert witness.add_checkpoint(request_body(50, [], fork[0][0].note)).status == 409


def test_unknown_origin_bad_signature_and_malformed_requests(witness, trails, keys, tmp_path):
    (e50, s50), *_ = history(trails, keys)
    stranger = KeyRing.generate(tmp_path / "stranger", "example.com/auditor")  # same name, other key
    forged = Note(s50.note.text, (stranger.signer.note_signer.sign(s50.note.text),)).to_bytes()
    assert witness.add_checkpoint(request_body(0, [], forged)).status == 403
    other = KeyRing.generate(tmp_path / "other", "other.example/log")
    write_trail(tmp_path / "o", other, 10, checkpoint_every=5)
    assert witness.add_checkpoint(request_body(0, [], stored_checkpoints(tmp_path / "o")[0].note)).status == 404
    assert witness.add_checkpoint(request_body(51, [], e50.note)).status == 400  # old > size
    assert witness.add_checkpoint(b"old 01\n\n" + e50.note).status == 400
    assert witness.add_checkpoint(b"garbage").status == 400
    assert witness.add_checkpoint(request_body(0, [bytes(32)], e50.note)).status == 422
    assert witness.state.load() == {}


def test_the_witness_remembers_across_restarts_and_refuses_a_rollback(witness, trails, keys, tmp_path):
    (e50, _), (e100, _), *_ = history(trails, keys)
    witness.add_checkpoint(request_body(0, [], e50.note))
    witness.add_checkpoint(request_body(50, e100.proof, e100.note))
    again = Witness(witness.signer, witness.logs, WitnessState(tmp_path / "state.json"))
    assert again.add_checkpoint(request_body(0, [], e50.note)).body == b"100\n"
    assert again.add_checkpoint(request_body(100, [], e50.note)).status == 400


def test_over_http_the_client_learns_the_witness_size_and_gets_verified_cosignatures(witness, trails, keys):
    server = make_server(witness, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = WitnessClient(url, witness.signer.verifier)  # type: ignore[arg-type]
        hist = history(trails, keys)
        leaves_proof = {e.prev_size: e.proof for e, _ in hist}
        (e50, s50), (e100, s100), (e150, s150), _ = hist
        origin = s50.checkpoint.origin
        assert client.cosign(e50.note, origin, 50, lambda old: [])
        fresh = WitnessClient(url, witness.signer.verifier)  # type: ignore[arg-type]
        sigs = fresh.cosign(e100.note, origin, 100, lambda old: leaves_proof[old])  # 409 -> learns 50 -> proof
        assert sigs[0].name == "dpo.example.com/witness" and fresh.known[origin] == 100
        fork = history(trails, keys, "fork")
        with pytest.raises(WitnessError, match="422"):
            fresh.cosign(fork[2][0].note, origin, 150, lambda old: fork[2][0].proof)
    finally:
        server.shutdown()
        server.server_close()


def test_push_then_verify_requires_the_witness_cosignature(trails, keys, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUDITOR_KEYS", str(keys.directory))
    trail = tmp_path / "trail"
    shutil.copytree(trails / "good", trail)
    signer = witness_keys.generate(tmp_path / "wkey", "dpo.example.com/witness")
    vkey = str(tmp_path / "wkey" / witness_keys.VKEY)
    w = Witness(signer, [TrustedLog(keys.signer.note_signer.verifier, "example.com/auditor/")],
                WitnessState(tmp_path / "state.json"))
    server = make_server(w, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["verify", str(trail), "--witness-key", vkey, "--min-witnesses", "1"]) == 1
        assert "UNSIGNED  unwitnessed" in capsys.readouterr().out
        assert main(["witness", "push", str(trail), "--witness", url, "--witness-key", vkey]) == 0
        assert "cosigned  events/0 size 200" in capsys.readouterr().out
        assert main(["verify", str(trail), "--witness-key", vkey, "--min-witnesses", "1"]) == 0
        with TrailWriter.open(trail, keys, checkpoint_every=50) as tw:  # the log grows; push again
            tw.append(make_records(keys, 30, seed=5))
        assert main(["witness", "push", str(trail), "--witness", url, "--witness-key", vkey]) == 0
        assert "cosigned  events/0 size 230" in capsys.readouterr().out
        # a tampered cosignature of a known witness is named, not counted
        lines = (trail / "cosignatures.jsonl").read_text().splitlines()
        note = Note.parse(json.loads(lines[-1])["note"])
        sig = note.signatures[-1]
        bad = dataclasses.replace(sig, data=bytes([sig.data[0] ^ 1]) + sig.data[1:])
        tampered = Note(note.text, note.signatures[:-1] + (bad,))
        (trail / "cosignatures.jsonl").write_text(lines[0] + "\n" + json.dumps({"note": str(tampered)}) + "\n")
        assert main(["verify", str(trail), "--witness-key", vkey, "--min-witnesses", "1"]) == 1
        out = capsys.readouterr().out
        assert "bad signature by dpo.example.com/witness" in out and "size 200" in out
    finally:
        server.shutdown()
        server.server_close()
