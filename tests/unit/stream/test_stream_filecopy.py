"""FileCopy mirrors the Kafka chains byte for byte: appends the topic's bytes unchanged, skips replays,
backfills gaps, refuses divergence."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamkit import compliant, messages, processor, wire
from structlog.testing import capture_logs

from auditor.errors import TrailCorruption
from auditor.stream.filecopy import FileCopy
from auditor.trail.canonical import encode_head, iter_frames, record_from_bytes
from auditor.trail.hashing import leaf_hash
from auditor.trail.keys import KeyRing
from auditor.trail.segment import list_segments
from auditor.trail.store import TrailWriter
from auditor.trail.verify import verify_trail


class Topic(list[bytes]):
    """Audit-topic values of one chain (records' canonical bytes)."""

    @property
    def chain_id(self) -> str:
        return next(iter_frames(self[0], 1)).chain_id


def kafka_chain(n: int, partition: int = 0, pack: str = "ipasar") -> Topic:
    """What the daemon would have committed to the audit topic for one source partition."""
    p = processor()
    out = p.process(messages([wire(compliant(pack, i)) for i in range(n)], partition=partition)).outgoing
    return Topic(o.value for o in out if o.topic == "audit")


def seq_of(data: bytes) -> int:
    return next(iter_frames(data, 1)).seq


Calls = list[tuple[str, int, int]]


def file_copy(tmp_path: Path, topic_records: list[bytes]) -> tuple[FileCopy, Calls]:
    keys = KeyRing.generate(tmp_path / "keys")
    calls: Calls = []

    def backfill(chain: str, first: int, stop: int) -> list[bytes]:
        calls.append((chain, first, stop))
        return [r for r in topic_records if first <= seq_of(r) < stop]

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
    assert report.chains == {records.chain_id: 10} and calls == []


def test_replayed_records_are_skipped(tmp_path: Path):
    records = kafka_chain(6)
    copy, _ = file_copy(tmp_path, records)
    copy.append(records[:4])
    copy.append(records)  # a restart replays what the file already holds
    assert copy.writer.head(records.chain_id).size == 6
    copy.close()
    assert verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier).records == 6


def test_gap_is_backfilled_from_the_topic(tmp_path: Path):
    records = kafka_chain(9)
    copy, calls = file_copy(tmp_path, records)
    copy.append(records[:3])
    with capture_logs() as logs:
        copy.append(records[7:])  # the process died after committing seq 3..6 to Kafka, before the file
    assert calls == [(records.chain_id, 3, 7)]
    assert [(e["log_level"], e["records"]) for e in logs] == [("warning", 4)]
    copy.close()
    report = verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier)
    assert report.ok and report.chains == {records.chain_id: 9}


def test_record_that_diverges_from_the_file_chain_is_refused(tmp_path: Path):
    records = kafka_chain(4)
    other = kafka_chain(5, pack="inper")
    copy, _ = file_copy(tmp_path, records)
    copy.append(records)
    with pytest.raises(TrailCorruption) as info:
        copy.append([other[4]])  # seq 4 sealed after a different history
    assert info.value.seq == 4
    copy.close()


def test_catch_up_backfills_a_chain_that_gets_no_new_records(tmp_path: Path):
    records = kafka_chain(5)
    chain = records.chain_id
    copy, calls = file_copy(tmp_path, records)
    copy.append(records[:2])
    with capture_logs():
        copy.catch_up(chain, 5)  # on assignment: the topic's committed head is at size 5
        copy.catch_up(chain, 5)
        copy.catch_up(chain, 3)
    assert calls == [(chain, 2, 5)] and copy.writer.head(chain).size == 5
    copy.close()
    assert verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier).chains == {chain: 5}


def other_encoder(data: bytes) -> bytes:
    """The same record as another (valid Avro) encoder may write it: the auditor_version string's length
    as a two-byte varint, re-hashed. Decoding and re-sealing it gives other bytes and another hash."""
    frame = next(iter_frames(data, 1))
    record = record_from_bytes(data)
    version = record.auditor_version.encode()
    minimal = bytes([len(version) << 1]) + version
    body = data[frame.body_start:frame.end - 32]
    assert body.count(minimal) >= 1
    body = body.replace(minimal, bytes([(len(version) << 1) | 0x80, 0x00]) + version, 1)
    unhashed = encode_head(frame.chain_id, frame.seq, frame.prev_hash, len(body)) + body
    return unhashed + leaf_hash(unhashed)


def test_the_topic_bytes_are_appended_unchanged_whatever_encoder_wrote_them(tmp_path: Path):
    records = kafka_chain(1)
    odd = other_encoder(records[0])
    assert odd != records[0] and record_from_bytes(odd).auditor_version == record_from_bytes(records[0]).auditor_version
    copy, _ = file_copy(tmp_path, [odd])
    copy.append([odd])  # re-sealing it (before: decode + seal) gave another hash: "diverges"
    copy.close()
    segments = list_segments(tmp_path / "trail")
    assert odd in b"".join(p.read_bytes() for _, p in segments)
    report = verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier)
    assert report.ok and report.records == 1, report.issues


def test_bytes_that_do_not_hash_to_their_record_hash_are_refused(tmp_path: Path):
    records = kafka_chain(2)
    bad = records[1][:-33] + bytes([records[1][-33] ^ 1]) + records[1][-32:]
    copy, _ = file_copy(tmp_path, records)
    copy.append(records[:1])
    with pytest.raises(TrailCorruption, match="do not hash"):
        copy.append([bad])
    copy.close()
