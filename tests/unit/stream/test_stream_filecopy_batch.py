"""FileCopy appends a batch of audit-topic values in runs (one compiled ``append_encoded`` call per
run), with the outcome of appending them one by one: skips, backfills and refusals included."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamkit import compliant, messages, processor, wire
from structlog.testing import capture_logs

from auditor.errors import TrailCorruption
from auditor.stream.filecopy import FileCopy
from auditor.trail.canonical import iter_frames
from auditor.trail.keys import KeyRing
from auditor.trail.store import TrailWriter
from auditor.trail.verify import verify_trail


def topic(n: int, partitions: int = 2) -> list[bytes]:
    """What the daemon commits to the audit topic for ``partitions`` source partitions, interleaved."""
    p = processor()
    chains = [[o.value for o in p.process(messages([wire(compliant("ipasar", i)) for i in range(n)],
                                                   partition=part)).outgoing if o.topic == "audit"]
              for part in range(partitions)]
    return [r for group in zip(*chains, strict=True) for r in group]


def frame(data: bytes) -> tuple[str, int]:
    f = next(iter_frames(data, 1))
    return f.chain_id, f.seq


class CountingWriter(TrailWriter):
    calls: list[int]

    def append_encoded(self, encoded):  # type: ignore[no-untyped-def]
        encoded = list(encoded)
        self.calls.append(len(encoded))
        super().append_encoded(encoded)


def file_copy(tmp_path: Path, records: list[bytes], name: str = "trail") -> tuple[FileCopy, list[tuple[str, int, int]]]:
    keys = tmp_path / "keys"
    if not keys.exists():
        KeyRing.generate(keys)
    asked: list[tuple[str, int, int]] = []

    def backfill(chain: str, first: int, stop: int) -> list[bytes]:
        asked.append((chain, first, stop))
        return [r for r in records if frame(r)[0] == chain and first <= frame(r)[1] < stop]

    writer = CountingWriter.open(tmp_path / name, KeyRing.load(keys), checkpoint_every=4)
    writer.calls = []
    return FileCopy(writer, backfill), asked


def test_a_batch_of_several_chains_is_appended_in_one_call(tmp_path: Path):
    records = topic(6)
    copy, _ = file_copy(tmp_path, records)
    copy.append(iter(records))
    assert copy.writer.calls == [12]  # one by one, it was twelve calls of one record
    copy.close()
    report = verify_trail(tmp_path / "trail", KeyRing.load(tmp_path / "keys").verifier)
    assert report.ok and report.records == 12, report.issues


def test_replays_and_gaps_inside_a_batch_end_as_one_by_one(tmp_path: Path):
    records = topic(8)
    a, b = frame(records[0])[0], frame(records[1])[0]
    a_recs = [r for r in records if frame(r)[0] == a]
    b_recs = [r for r in records if frame(r)[0] == b]
    first = a_recs[:3] + b_recs[:2]
    # a replay of a's 1..2, then a's 5.. (3..4 missing: backfilled), b's 1..3 (1 replayed), a replay of b's 0
    batch = a_recs[1:3] + [b_recs[1]] + a_recs[5:] + b_recs[1:4] + [b_recs[0]]
    batched, asked = file_copy(tmp_path, records, "batched")
    batched.append(first)
    with capture_logs() as logs:
        batched.append(batch)
    assert asked == [(a, 3, 5)] and [e["records"] for e in logs] == [2]
    assert batched.writer.calls == [5, 2, 5]  # first; a's backfill; a's 5..7 and b's 2..3
    one, _ = file_copy(tmp_path, records, "one")
    for r in first + batch:
        one.append([r])
    assert batched.writer.heads == one.writer.heads
    batched.close()
    one.close()
    verifier = KeyRing.load(tmp_path / "keys").verifier
    assert verify_trail(tmp_path / "batched", verifier).chains == {a: 8, b: 4}
    assert verify_trail(tmp_path / "one", verifier).chains == {a: 8, b: 4}


def test_records_before_a_refused_one_are_appended_and_none_after(tmp_path: Path):
    records = topic(4, partitions=1)
    bad = records[2][:-33] + bytes([records[2][-33] ^ 1]) + records[2][-32:]
    copy, _ = file_copy(tmp_path, records)
    with pytest.raises(TrailCorruption, match="do not hash") as info:
        copy.append([records[0], records[1], bad, records[3]])
    assert info.value.seq == 2
    assert copy.writer.head(frame(records[0])[0]).size == 2
    copy.close()


def test_records_before_one_that_does_not_frame_are_appended(tmp_path: Path):
    records = topic(3, partitions=1)
    copy, _ = file_copy(tmp_path, records)
    with pytest.raises(TrailCorruption, match="cannot be framed"):
        copy.append([records[0], records[1], b"\x07"])
    assert copy.writer.head(frame(records[0])[0]).size == 2
    copy.close()
