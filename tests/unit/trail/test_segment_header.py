"""Every length and count read from a segment header is checked where it is read, and the error
names the field and its byte (a test per check: each fails when its check is switched off)."""

from __future__ import annotations

import pytest
from trailkit import T0, write_trail

from auditor.errors import TrailCorruption
from auditor.trail import KeyRing, Policy, TrailWriter, iter_records, verify_trail
from auditor.trail.canonical import enc_long, read_long
from auditor.trail.segment import list_segments


@pytest.fixture
def segment(tmp_path):
    keys = KeyRing.generate(tmp_path / "keys")
    write_trail(tmp_path / "t", keys, 30, batch=10, checkpoint_every=10)
    (_, seg), = list_segments(tmp_path / "t")
    return tmp_path / "t", seg, keys


def _offsets(data: bytes) -> dict[str, int]:
    """Byte offsets of the header's first metadata count, first key length, first value length."""
    count_at = 4
    _, pos = read_long(data, count_at)
    key_at = pos
    n, pos = read_long(data, key_at)
    return {"count": count_at, "key": key_at, "value": pos + n}


def _replace_long(data: bytes, at: int, value: int) -> bytes:
    _, end = read_long(data, at)
    return data[:at] + enc_long(value) + data[end:]


def _assert_named(trail, seg, keys, pattern: str) -> None:
    report = verify_trail(trail, keys.verifier, policy=Policy(now=T0))
    damaged = [str(i) for i in report.issues if i.kind == "damaged"]
    assert not report.ok and any(seg.name in d and _search(pattern, d) for d in damaged), report.issues
    with pytest.raises(TrailCorruption, match=pattern):
        list(iter_records(trail))
    with pytest.raises(TrailCorruption, match=pattern):
        TrailWriter.open(trail, keys)


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("field", "value", "pattern"), [
    ("value", 2**40, r"header value length 1099511627776 at byte \d+ is out of bounds"),
    ("value", -3, r"header value length -3 at byte \d+ is out of bounds"),
    ("key", 2**33, r"header key length 8589934592 at byte \d+ is out of bounds"),
    ("count", 10**6, r"header metadata count 1000000 at byte 4 is implausible"),
])
def test_a_bad_length_or_count_in_a_segment_header_is_named(segment, field, value, pattern):
    trail, seg, keys = segment
    data = seg.read_bytes()
    seg.write_bytes(_replace_long(data, _offsets(data)[field], value))
    _assert_named(trail, seg, keys, pattern)
