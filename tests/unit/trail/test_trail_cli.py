"""The trail commands, end to end through ``auditor.cli.main``."""

from __future__ import annotations

import json

import pytest
from trailkit import flip_body_byte, rewrite_segment, segment_records, write_trail

from auditor.cli import main
from auditor.trail import KeyRing
from auditor.trail.segment import list_segments


@pytest.fixture
def setup(tmp_path, monkeypatch):
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    monkeypatch.setenv("AUDITOR_KEYS", str(tmp_path / "keys"))
    keys = KeyRing.load(tmp_path / "keys")
    write_trail(tmp_path / "trail", keys, 120, checkpoint_every=50,
                subjects={i: "bob-42" for i in range(0, 120, 12)})
    return tmp_path, keys


def test_verify_exit_codes(setup, capsys):
    tmp, _ = setup
    assert main(["verify", str(tmp / "trail"), "--pubkey", str(tmp / "keys" / "signing.pub")]) == 0
    assert "intact" in capsys.readouterr().out
    (_, seg), = list_segments(tmp / "trail")
    recs = segment_records(seg)
    recs[5] = flip_body_byte(recs[5])
    rewrite_segment(seg, recs)
    assert main(["verify", str(tmp / "trail")]) == 1
    out = capsys.readouterr().out
    assert "modified: [events/0 seq 5]" in out and "NOT intact" in out
    assert main(["verify", str(tmp / "trail"), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["issues"][0]["seq"] == 5


def test_missing_keys_is_a_usage_error_that_says_how(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AUDITOR_KEYS", raising=False)
    (tmp_path / "trail").mkdir()
    assert main(["verify", str(tmp_path / "trail")]) == 2
    assert "auditor keys generate --out DIR" in capsys.readouterr().err


def test_prove_and_verify_proof(setup, capsys):
    tmp, _ = setup
    proof = tmp / "p.json"
    assert main(["prove", str(tmp / "trail"), "--seq", "42", "--out", str(proof)]) == 0
    assert main(["verify-proof", str(proof), "--pubkey", str(tmp / "keys" / "signing.pub")]) == 0
    assert "proof holds" in capsys.readouterr().out
    assert main(["verify", str(tmp / "trail"), "--trusted-checkpoint", str(proof)]) == 0
    doc = json.loads(proof.read_text())
    doc["seq"] = 43
    proof.write_text(json.dumps(doc))
    assert main(["verify-proof", str(proof)]) == 1


def test_replay_by_raw_subject_and_stats(setup, capsys):
    tmp, keys = setup
    assert main(["replay", str(tmp / "trail"), "--subject", "bob-42", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 10 and {r["facts"]["subject_pseudonym"] for r in rows} == {keys.pseudonymizer("bob-42")}
    assert main(["replay", str(tmp / "trail"), "--stats"]) == 0
    assert "records: 120" in capsys.readouterr().out
    assert main(["replay", str(tmp / "trail"), "--purpose", "billing", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("chain_id,seq,prev_hash,body_len,record_type,source.topic,")


def test_replay_reevaluate_under_a_bundled_pack(setup, capsys):
    tmp, _ = setup
    assert main(["replay", str(tmp / "trail"), "--reevaluate", "--policy", "ipasar"]) == 0
    assert "re-judged 120 event(s) under ipasar" in capsys.readouterr().out
    assert main(["replay", str(tmp / "trail"), "--reevaluate"]) == 2
