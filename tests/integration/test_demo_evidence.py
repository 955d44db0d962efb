"""Issue 11, "Must show": an evidence archive from the demo verifies offline, and a changed byte in
any part of it fails with that part named. The demo runs on the local broker (``--bootstrap-servers``),
then ``auditor evidence`` is made from its trail copy and from the audit topic itself."""

from __future__ import annotations

import io
import zipfile

import pytest

from auditor.cli import main
from auditor.trail import iter_records
from auditor.trail.evidence import pack_archive, verify_evidence
from auditor.trail.keys import Verifier

pytestmark = pytest.mark.kafka


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_an_evidence_archive_from_the_demo_verifies_offline_and_names_a_changed_part(kafka_bootstrap, tmp_path,
                                                                                  capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--events", "400", "--bootstrap-servers", kafka_bootstrap, "--workdir", str(work),
                 "--http-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "signed checkpoints, intact" in out
    assert "auditor evidence " in out and "auditor verify-evidence " in out  # the demo points at it
    (trail,) = work.glob("run-*/trail")
    keys = work / "keys"
    pub = keys / "signing.pub"
    violation = next(r for r in iter_records(trail) if r.decision is not None and r.decision.violations)
    archive = tmp_path / "evidence.zip"
    assert main(["evidence", str(trail), "--event-id", violation.event_id, "--pubkey", str(pub),
                 "--out", str(archive)]) == 0
    capsys.readouterr()
    # offline: a copy of the archive and the published key, nothing else
    assert main(["verify-evidence", str(archive), "--pubkey", str(pub)]) == 0
    assert f"evidence holds: {violation.chain_id} seq {violation.seq}" in capsys.readouterr().out
    # the same record's evidence straight from the audit topic verifies too
    topic = next(line.split("-> ")[1].split(",")[0] for line in out.splitlines() if "topics:" in line)
    from_kafka = tmp_path / "from-kafka.zip"
    assert main(["evidence", f"kafka://{kafka_bootstrap}/{topic}", "--event-id", violation.event_id,
                 "--keys", str(keys), "--out", str(from_kafka)]) == 0
    assert main(["verify-evidence", str(from_kafka), "--pubkey", str(pub)]) == 0
    capsys.readouterr()
    parts = members(archive.read_bytes())
    assert {"record/record.avro", "proof/inclusion.json", "checkpoint/checkpoint.note", "keys/log.pem"} <= set(parts)
    assert any(name.startswith("pack/") for name in parts)
    verifier = Verifier.from_file(pub)
    for name, data in parts.items():
        where = len(data) // 2
        changed = {**parts, name: data[:where] + bytes([data[where] ^ 0x01]) + data[where + 1:]}
        findings, _ = verify_evidence(pack_archive(changed), verifier)
        assert findings and findings[0].part == name, (name, findings)
        damaged = tmp_path / f"damaged-{name.replace('/', '_')}.zip"
        damaged.write_bytes(pack_archive(changed))
        assert main(["verify-evidence", str(damaged), "--pubkey", str(pub)]) == 1
        assert name in capsys.readouterr().out, name

