"""Evidence archives: built from a real trail, checked offline, and every changed byte named."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.policy import load_pack
from auditor.trail import KeyRing, iter_records
from auditor.trail.evidence import MANIFEST, SUMMARY, build_evidence, pack_archive, verify_evidence
from auditor.trail.keys import Verifier, fingerprint

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events" / "ipasar.jsonl"


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    base = tmp_path_factory.mktemp("ev")
    assert main(["keys", "generate", "--out", str(base / "keys"), "--name", "example.com/auditor"]) == 0
    assert main(["check", "--policy", "ipasar", str(EVENTS), "--trail", str(base / "trail"),
                 "--keys", str(base / "keys")]) in (0, 1)
    return base


@pytest.fixture(scope="module")
def keys(trail):
    return KeyRing.load(trail / "keys")


@pytest.fixture(scope="module")
def record(trail):
    return next(r for r in iter_records(trail / "trail") if r.decision is not None and r.decision.violations)


@pytest.fixture(scope="module")
def archive(trail, keys, record):
    return build_evidence(trail / "trail", keys.verifier, event_id=record.event_id)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def rezip(parts: dict[str, bytes]) -> bytes:
    """The archive as the tool writes it, with the given parts (so only the parts differ)."""
    return pack_archive(parts)


def test_the_archive_holds_every_part_and_verifies_offline(archive, keys, record):
    parts = members(archive)
    assert set(parts) == {MANIFEST, SUMMARY, "record/record.avro", "record/record.json", "proof/inclusion.json",
                          "checkpoint/checkpoint.note", "keys/log.pem", "keys/log.vkey", "pack/ipasar.yaml"}
    findings, got = verify_evidence(archive, keys.verifier)
    assert findings == [] and got == record
    facts = json.loads(parts["record/record.json"])
    assert facts["event_id"] == record.event_id
    assert facts["decision"]["violations"][0]["rule_id"] == record.decision.rule_ids[0]
    assert load_pack("ipasar").content_hash == record.decision.pack_hash
    summary = parts[SUMMARY].decode()
    assert record.event_id in summary and fingerprint(keys.signer.public_key()) in summary
    assert record.facts.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC") in summary
    assert "Violation     rule " in summary and len(summary.splitlines()) < 60  # one page


def test_the_summary_and_the_facts_name_the_organisation_and_the_request_reference(trail, keys):
    """Audit record revision 3: the actor's organisation and the legal request's reference."""
    record = next(r for r in iter_records(trail / "trail") if r.legal_request_reference)
    parts = members(build_evidence(trail / "trail", keys.verifier, event_id=record.event_id))
    summary = parts[SUMMARY].decode()
    org = {"OURS": "ours", "PROCESSOR": "a processor acting for us", "THIRD_PARTY": "a third party"}
    assert f"Organisation  {org[record.actor_organisation.value]}" in summary
    assert f"{record.facts.legal_request_type.value}, reference {record.legal_request_reference}" in summary
    facts = json.loads(parts["record/record.json"])
    assert facts["actor_organisation"] == record.actor_organisation.value
    assert facts["legal_request_reference"] == record.legal_request_reference


def test_by_chain_and_seq_and_a_clear_error_when_the_pack_is_unknown(trail, keys, record, tmp_path):
    data = build_evidence(trail / "trail", keys.verifier, chain=record.chain_id, seq=record.seq)
    assert verify_evidence(data)[0] == []
    from auditor.errors import TrailError

    with pytest.raises(TrailError, match="no record of event nope"):
        build_evidence(trail / "trail", keys.verifier, event_id="nope")


def test_every_changed_byte_of_every_part_fails_and_names_that_part(archive):
    parts = members(archive)
    for name, data in parts.items():
        for where in sorted({0, len(data) // 2, len(data) - 2}):
            changed = dict(parts)
            changed[name] = data[:where] + bytes([data[where] ^ 0x01]) + data[where + 1:]
            findings, _ = verify_evidence(rezip(changed))
            assert findings and findings[0].part == name, (name, where, findings)


def test_a_missing_or_extra_part_is_named(archive):
    parts = members(archive)
    for name in parts:
        if name == MANIFEST:
            continue
        fewer = {n: d for n, d in parts.items() if n != name}
        findings, _ = verify_evidence(rezip(fewer))
        assert findings and findings[0].part == name, (name, findings)
    findings, _ = verify_evidence(rezip({**parts, "extra.txt": b"hi"}))
    assert findings and findings[0].part == MANIFEST


def test_any_flipped_byte_of_the_zip_file_fails(archive):
    for i in range(len(archive)):
        damaged = archive[:i] + bytes([archive[i] ^ 0x40]) + archive[i + 1:]
        findings, _ = verify_evidence(damaged)
        assert findings, i


def test_a_whole_archive_re_signed_with_another_key_fails_against_the_published_key(trail, record, tmp_path):
    other = KeyRing.generate(tmp_path / "other")
    fake = tmp_path / "fake"
    shutil.copytree(trail / "trail", fake)
    (fake / "checkpoints.jsonl").unlink()
    from auditor.trail import TrailWriter

    with TrailWriter.open(fake, other) as w:  # the forger re-signs the same records with their own key
        w.checkpoint()
    data = build_evidence(fake, other.verifier, event_id=record.event_id)
    assert verify_evidence(data)[0] == []  # self-consistent ...
    published = Verifier.from_file(trail / "keys" / "signing.pub")
    findings, _ = verify_evidence(data, published)  # ... but not under the published key
    assert findings[0].part == "keys/log.pem" and "not the key you trust" in findings[0].message


def test_cli_evidence_and_verify_evidence(trail, record, tmp_path, capsys):
    out = tmp_path / "ev.zip"
    assert main(["evidence", str(trail / "trail"), "--event-id", record.event_id, "--out", str(out),
                 "--keys", str(trail / "keys")]) == 0
    assert main(["verify-evidence", str(out), "--pubkey", str(trail / "keys" / "signing.pub")]) == 0
    assert "evidence holds" in capsys.readouterr().out
    parts = members(out.read_bytes())
    parts["pack/ipasar.yaml"] = parts["pack/ipasar.yaml"].replace(b"pack:", b"pack: ", 1) + b"\nx: 1\n"
    out.write_bytes(rezip(parts))
    assert main(["verify-evidence", str(out)]) == 1
    assert "INVALID  pack/ipasar.yaml" in capsys.readouterr().out
    assert main(["evidence", str(trail / "trail"), "--chain", "x", "--out", str(out),
                 "--keys", str(trail / "keys")]) == 2
