"""FileCopy mirrors the Kafka chains byte for byte: skips replays, backfills gaps, refuses divergence."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamkit import compliant, messages, processor, wire
from structlog.testing import capture_logs

from auditor.errors import TrailCorruption
from auditor.stream.filecopy import FileCopy
from auditor.trail.keys import KeyRing
from auditor.trail.record import AuditRecord
from auditor.trail.store import TrailWriter
from auditor.trail.verify import verify_trail


def kafka_chain(n: int, partition: int = 0) -> list[AuditRecord]:
    """What the daemon would have committed to the audit topic for one source partition."""
    p = processor()
    return p.process(messages([wire(compliant("ipasar", i)) for i in range(n)], partition=partition)).records


Calls = list[tuple[str, int, int]]


def file_copy(tmp_path: Path, topic_records: list[AuditRecord]) -> tuple[FileCopy, Calls]:
    keys = KeyRing.generate(tmp_path / "keys")
    calls: Calls = []

    def backfill(chain: str, first: int, stop: int) -> list[AuditRecord]:
        calls.append((chain, first, stop))
        return [r for r in topic_records if r.chain_id == chain and first <= r.seq < stop]

    writer = TrailWriter.open(tmp_path / "trail", keys, checkpoint_every=4)
    return FileCopy(writer, backfill), calls


def test_records_in_order_are_copied_and_verify(tmp_path: Path):
    records = kafka_chain(10)
    copy, calls = file_copy(tmp_path, records)
    copy.append(records[:6])
    copy.commit()
    copy.append(records[6:])
    copy.close()
    report = verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier)
    assert report.ok, report.issues
    assert report.chains == {records[0].chain_id: 10} and calls == []


def test_replayed_records_are_skipped(tmp_path: Path):
    records = kafka_chain(6)
    copy, _ = file_copy(tmp_path, records)
    copy.append(records[:4])
    copy.append(records)  # a restart replays what the file already holds
    assert copy.writer.head(records[0].chain_id).size == 6
    copy.close()
    assert verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier).records == 6


def test_gap_is_backfilled_from_the_topic(tmp_path: Path):
    records = kafka_chain(9)
    copy, calls = file_copy(tmp_path, records)
    copy.append(records[:3])
    with capture_logs() as logs:
        copy.append(records[7:])  # the process died after committing seq 3..6 to Kafka, before the file
    assert calls == [(records[0].chain_id, 3, 7)]
    assert [(e["log_level"], e["records"]) for e in logs] == [("warning", 4)]
    copy.close()
    report = verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier)
    assert report.ok and report.chains == {records[0].chain_id: 9}


def test_record_that_diverges_from_the_file_chain_is_refused(tmp_path: Path):
    records = kafka_chain(4)
    other = processor().process(messages([wire(compliant("inper", i)) for i in range(5)])).records
    copy, _ = file_copy(tmp_path, records)
    copy.append(records)
    with pytest.raises(TrailCorruption) as info:
        copy.append([other[4]])  # seq 4 sealed after a different history
    assert info.value.seq == 4
    copy.close()


def test_catch_up_backfills_a_chain_that_gets_no_new_records(tmp_path: Path):
    records = kafka_chain(5)
    chain = records[0].chain_id
    copy, calls = file_copy(tmp_path, records)
    copy.append(records[:2])
    with capture_logs():
        copy.catch_up(chain, 5)  # on assignment: the topic's committed head is at size 5
        copy.catch_up(chain, 5)
        copy.catch_up(chain, 3)
    assert calls == [(chain, 2, 5)] and copy.writer.head(chain).size == 5
    copy.close()
    assert verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier).chains == {chain: 5}
