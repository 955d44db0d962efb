"""Hostile offline input: each case is refused with a clear line, in bounded time and memory,
and the rest of the input is still audited where that makes sense (auditor check).

Every command runs as a real subprocess under RLIMIT_AS (clikit.MEMORY_LIMIT) and a timeout, so a
regression that spins or balloons fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import fastavro
import pytest
from clikit import assert_one_line_error, run_cli

from auditor.events.codec import event_schema, schema_path

DATA = Path(__file__).resolve().parents[2] / "data"
GOOD = [json.loads(line) for line in (DATA / "events" / "ipasar.jsonl").read_text().splitlines()
        if line.startswith("{")][:5]
TIMEOUT = 90


def _lines(*middle: str) -> bytes:
    """Two good events, the hostile line(s), two more good events."""
    good = [json.dumps(e) for e in GOOD[:4]]
    return ("\n".join([good[0], good[1], *middle, good[2], good[3]]) + "\n").encode()


def _check(tmp_path: Path, data: bytes, *extra: str, name: str = "events.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return run_cli("check", path, "--format", "jsonl", *extra, timeout=TIMEOUT, cwd=tmp_path)


def _summary(r) -> dict:
    return json.loads(r.err.strip().splitlines()[-1])["summary"]


def _errors(r) -> list[dict]:
    return [d for d in map(json.loads, r.out.splitlines()) if "error" in d]


def _assert_rest_audited(r, *needles: str) -> dict:
    assert r.code == 0, r.err[-2000:]
    assert "Traceback" not in r.err
    s = _summary(r)
    assert s["events"] == 4 and s["malformed"] == 1, s
    (err,) = _errors(r)
    assert err["line"] == 3
    for needle in needles:
        assert needle in err["error"], err
    return err


def test_integer_occurred_at_of_ten_to_the_thirty(tmp_path):
    e = dict(GOOD[4], occurred_at=10**30)
    r = _check(tmp_path, _lines(json.dumps(e)))
    _assert_rest_audited(r, "occurred_at", "out of range")


def test_json_nested_100000_deep(tmp_path):
    deep = '{"event_id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = _check(tmp_path, _lines(deep))
    _assert_rest_audited(r, "nested too deeply")


def test_line_of_64_megabytes_is_skipped_unread(tmp_path):
    huge = '{"event_id": "' + "x" * (64 * 1024 * 1024) + '"}'
    r = _check(tmp_path, _lines(huge))
    _assert_rest_audited(r, "longer than")


def test_unknown_key_is_an_error_naming_it(tmp_path):
    e = dict(GOOD[4], consent={"marketting": True})
    r = _check(tmp_path, _lines(json.dumps(e)))
    _assert_rest_audited(r, "unknown field 'consent.marketting'", "did you mean 'consent.marketing'")


def test_bad_enum_value_is_not_repeated(tmp_path):
    e = dict(GOOD[4], kind="u-123-SECRET")
    r = _check(tmp_path, _lines(json.dumps(e)))
    err = _assert_rest_audited(r, "field 'kind' is not one of")
    assert "SECRET" not in json.dumps(err)


def test_lone_surrogate_with_trail_is_rejected_and_the_trail_stays_consistent(tmp_path):
    keys = tmp_path / "keys"
    assert run_cli("keys", "generate", "--out", keys).code == 0
    line = json.dumps(dict(GOOD[4], event_id="ev-surrogate")).replace("ev-surrogate", "ev-\\ud800")
    r = _check(tmp_path, _lines(line), "--trail", tmp_path / "trail", "--keys", keys)
    _assert_rest_audited(r, "lone UTF-16 surrogate")
    assert _summary(r)["trail"] == {"recorded": 5, "already_recorded": 0}  # 4 events + 1 rejection
    v = run_cli("verify", tmp_path / "trail", "--keys", keys, "--format", "json", timeout=TIMEOUT)
    report = json.loads(v.out)
    assert v.code == 0 and report["ok"] and report["records"] == 5, v.out


# ---------------------------------------------------------------- Avro container files

def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes(b: bytes) -> bytes:
    return _long(len(b)) + b


SYNC = b"S" * 16


def _header(codec: str = "null", schema: bytes | None = None) -> bytes:
    schema = schema if schema is not None else schema_path("privacy_event.avsc").read_bytes()
    meta = _bytes(b"avro.schema") + _bytes(schema) + _bytes(b"avro.codec") + _bytes(codec.encode())
    return b"Obj\x01" + _long(2) + meta + _long(0) + SYNC


def _one_record() -> bytes:
    from auditor.events.codec import event_from_mapping, event_to_mapping

    body = io.BytesIO()
    fastavro.schemaless_writer(body, event_schema(), event_to_mapping(event_from_mapping(GOOD[0])))
    return body.getvalue()


def test_avro_block_declaring_two_to_the_forty_records(tmp_path):
    record = _one_record()
    data = _header() + _long(2**40) + _long(len(record)) + record + SYNC
    r = _check(tmp_path, data, name="bomb.avro")
    assert r.code == 0 and "Traceback" not in r.err, r.err[-2000:]
    (err,) = _errors(r)
    assert "declares 1099511627776 records" in err["error"]


def test_avro_deflate_block_expanding_to_a_gigabyte(tmp_path):
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(16 * 1024 * 1024)
    compressed = b"".join(deflate.compress(chunk) for _ in range(64)) + deflate.flush()  # 1 GiB of zeros
    record = zlib.compressobj(9, zlib.DEFLATED, -15)
    good = record.compress(_one_record()) + record.flush()
    data = (_header("deflate") + _long(1) + _long(len(good)) + good + SYNC
            + _long(1000) + _long(len(compressed)) + compressed + SYNC)
    assert len(data) < 2 * 1024 * 1024
    r = _check(tmp_path, data, name="bomb.avro")
    assert r.code == 0 and "Traceback" not in r.err, r.err[-2000:]
    assert _summary(r)["events"] == 1  # the block before the bomb is audited
    (err,) = _errors(r)
    assert "expands beyond" in err["error"]


@pytest.mark.parametrize(("data", "needle"), [
    (b"Obj\x01" + _long(1) + _long(2**40), "impossible length"),
    (b"Obj\x01" + _long(1) + _bytes(b"avro.schema"), "ends inside"),
    (b"Obj\x01" + _long(1) + _bytes(b"avro.schema") + _bytes(b"[" * 100_000) + _long(0) + SYNC, "does not parse"),
    (_header(schema=b'{"type": "record", "name": "X", "fields": []}'), "not an allow-listed event schema"),
    (_header(codec="snappy"), "codec 'snappy' is not supported"),
])
def test_unusable_avro_header_is_exit_2_in_one_line(tmp_path, data, needle):
    r = _check(tmp_path, data, name="bad.avro")
    assert_one_line_error(r, 2, needle)


def test_avro_sync_mismatch_names_the_block(tmp_path):
    record = _one_record()
    block = _long(1) + _long(len(record)) + record
    data = _header() + block + SYNC + block + b"X" * 16
    r = _check(tmp_path, data, name="torn.avro")
    assert r.code == 0 and _summary(r)["events"] == 1
    assert "sync marker" in _errors(r)[0]["error"]


def test_standard_input(tmp_path):
    r = run_cli("check", "-", "--format", "jsonl", stdin=_lines(), timeout=TIMEOUT)
    assert r.code == 0 and _summary(r)["events"] == 4
    r = run_cli("check", "-", "--format", "jsonl", stdin=(DATA / "events" / "inper.jsonl").read_bytes())
    assert r.code == 0 and _summary(r)["events"] > 0


def test_missing_file_is_exit_2_in_one_line(tmp_path):
    assert_one_line_error(run_cli("check", tmp_path / "nope.jsonl"), 2, "no such events file")
