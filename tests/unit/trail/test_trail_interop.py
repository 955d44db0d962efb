"""Checkpoints and proofs checked by independent implementations.

* pymerkle (PyPI): the roots our checkpoints sign, and consistency between them, recomputed
  from the records by another RFC 9162 implementation;
* Go: golang.org/x/mod/sumdb/note opens our signed notes, transparency-dev/formats parses the
  checkpoint bodies and checks our witness cosignatures (and cosigns one, which we check),
  transparency-dev/merkle verifies our inclusion and consistency proofs
  (``tests/interop/go``; needs the Go toolchain and the Go module proxy).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trailkit import signed_checkpoints, stored_checkpoints, write_trail

from auditor.trail import KeyRing, iter_records, make_proof
from auditor.trail.canonical import record_to_bytes
from auditor.trail.merkle import consistency_proof, list_nodes
from auditor.trail.note import CosignatureVerifier, Note, NoteSigner, open_note, parse_vkey

GO_DIR = Path(__file__).resolve().parents[2] / "interop" / "go"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyRing.generate(tmp_path_factory.mktemp("k") / "keys", "example.com/auditor")


@pytest.fixture(scope="module")
def trail(tmp_path_factory, keys):
    path = tmp_path_factory.mktemp("t") / "trail"
    write_trail(path, keys, 333, batch=20, checkpoint_every=37)
    return path


def test_pymerkle_recomputes_every_signed_root_and_their_consistency(trail, keys):
    pymerkle = pytest.importorskip("pymerkle")
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for record in iter_records(trail):
        tree.append_entry(record_to_bytes(record)[:-32])  # pymerkle hashes 0x00 || entry itself
    signed = signed_checkpoints(trail, keys)
    assert len(signed) > 5
    for cp in signed:
        assert tree.get_root(cp.size) == cp.root, cp.size
    for old, new in zip(signed, signed[1:], strict=False):
        proof = tree.prove_consistency(old.size, new.size)
        pymerkle.verify_consistency(old.root, new.root, proof)  # raises InvalidProof if not
    other = signed_checkpoints(trail, keys)[-1].root[::-1]
    with pytest.raises(pymerkle.InvalidProof):
        pymerkle.verify_consistency(signed[0].root, other, tree.prove_consistency(signed[0].size, signed[-1].size))


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@pytest.fixture(scope="module")
def go_interop(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed")
    out = tmp_path_factory.mktemp("go") / "interop"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_DIR, check=True, env=env, timeout=600)
    return out


@pytest.mark.slow
def test_go_opens_our_notes_and_verifies_our_proofs_and_cosignatures(trail, keys, go_interop):
    entries = stored_checkpoints(trail)
    signed = [e.open(keys.verifier) for e in entries]
    witness = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate(), cosign=True)
    cosigned = [Note.parse(e.note).with_signatures([witness.sign(s.note.text)]).to_bytes().decode()
                for e, s in zip(entries, signed, strict=True)]
    tampered = cosigned[0].replace("\n", "\nx", 1)  # an altered origin: signatures no longer hold
    leaves = [r.record_hash for r in iter_records(trail)]
    consistency = [{"Size1": e.prev_size, "Size2": s.size, "Root1": _b64(p.root), "Root2": _b64(s.root),
                    "Proof": [_b64(h) for h in e.proof]}
                   for p, e, s in zip(signed, entries[1:], signed[1:], strict=False)]
    consistency.append({**consistency[-1], "Root2": _b64(bytes(32))})  # must fail
    extra = consistency_proof(5, 333, list_nodes(leaves))
    consistency.append({"Size1": 5, "Size2": 333, "Root1": _b64(_root(leaves[:5])), "Root2": _b64(signed[-1].root),
                        "Proof": [_b64(h) for h in extra]})
    inclusion = []
    for seq in (0, 1, 36, 200, 332):
        proof = make_proof(trail, seq, "events/0", keys.verifier)
        inclusion.append({"Index": seq, "Size": proof.tree_size, "Leaf": _b64(leaves[seq]),
                          "Root": _b64(signed[-1].root), "Proof": [_b64(h) for h in proof.audit_path]})
    request = {"LogVKey": keys.signer.note_signer.verifier.vkey(), "WitnessVKey": witness.verifier.vkey(),
               "Notes": [e.note.decode() for e in entries] + [tampered], "Cosigned": cosigned + [tampered],
               "Consistency": consistency, "Inclusion": inclusion}
    done = subprocess.run([str(go_interop)], input=json.dumps(request), capture_output=True, text=True,
                          check=True, timeout=120)
    report = json.loads(done.stdout)
    parsed = report["Notes"]
    assert parsed[-1] is None  # the tampered note does not open in Go either
    for got, cp in zip(parsed[:-1], signed, strict=True):
        assert (got["Origin"], got["Size"], base64.b64decode(got["Hash"])) == \
               (cp.checkpoint.origin, cp.size, cp.root)
    assert report["Cosigned"] == [True] * len(cosigned) + [False]
    assert report["Consistency"] == [True] * (len(consistency) - 2) + [False, True]
    assert report["Inclusion"] == [True] * len(inclusion)
    # and the other way round: a cosignature made by Go verifies with our witness verifier
    go_witness = parse_vkey(report["GoWitnessVKey"])
    assert isinstance(go_witness, CosignatureVerifier)
    _, good = open_note(report["GoCosignedNote"], [go_witness])
    assert [s.name for _, s in good] == ["go-witness.example/w1"]


def _root(leaves):
    from auditor.trail.merkle import root_of

    return root_of(leaves)
