"""Hostile producers (not poison for today's code, kept as regressions): encodings built to
crash or exhaust a decoder, and malformed or spoofed headers. Each becomes a dead letter with
the valid events around it audited, and the daemon stays healthy.
"""

from __future__ import annotations

import struct

import pytest
from daemonkit import hostile_inputs, make_setup
from faultkit import Expect, Supervisor, assert_trail_intact, healthy_through, mid_stream, read_committed, valid_events

from auditor.stream.produce import encode

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


def test_hostile_producer_input_mid_stream(kafka_bootstrap, tmp_path):
    """Truncated Avro, a wrong magic byte, an unknown schema id, huge counts, tombstones, empty values."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=True)
    event = next(e for e in valid_events(50, 64) if e.legal_basis is None and len(e.data_categories) == 1)
    good = encode(event)
    hostile = {name: v for name, (v, _) in hostile_inputs(event).items()}
    hostile.update({
        "truncated_avro": good[:-7],
        "truncated_in_header": good[:6],
        "wrong_magic_byte": b"\xc4\x01" + good[2:],
        "confluent_schema_id_unknown": b"\x00" + struct.pack(">I", 2**31 - 1) + good[10:],
        "confluent_negative_schema_id": b"\x00\xff\xff\xff\xff" + good[10:],
        "huge_string_length": good[:10] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        "empty": b"",
        "one_byte": b"\xc3",
    })
    sup = Supervisor(setup, "hostile")
    try:
        sup.current.wait_ready(90)
        sent, bad = mid_stream(setup, [(v, None) for v in hostile.values()], seed=65)
        healthy_through(sup, setup, len(sent), "past the hostile inputs")
        assert sup.stop(within=40) == 0, sup.describe()
    finally:
        sup.kill_all()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events, {(b.partition, b.offset): "" for b in bad}),
                        file_copies=[sup.trail_dir])


def test_malformed_and_spoofed_headers(kafka_bootstrap, tmp_path):
    """Input headers never crash the daemon, never reach the trail, and never replace the auditor's
    own dead-letter headers (a producer spoofing auditor.trail.seq must not redirect an auditor)."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=True)
    good = encode(valid_events(1, 66)[0])
    spoof = [("auditor.trail.seq", b"999999"), ("auditor.source.offset", b"0"), ("auditor.trail.chain", b"x/0"),
             ("auditor.error.reason", b"none")]
    odd: list[list[tuple[str, bytes | None]]] = [
        [("\udcff-not-utf8".encode("utf-8", "surrogateescape").decode("latin-1"), b"\xff\xfe\x00")],
        [("k", None), ("k", b"twice"), ("", b"empty name")],
        [(f"h{i}", b"v" * 10) for i in range(500)],
        [("big", b"x" * 200_000)],
        spoof,
    ]
    poison = [(good, h) for h in odd] + [(b"\x00not avro", h) for h in odd]
    sup = Supervisor(setup, "headers")
    try:
        sup.current.wait_ready(90)
        sent, bad = mid_stream(setup, poison, seed=67)
        healthy_through(sup, setup, len(sent), "past the odd headers")
        assert sup.stop(within=40) == 0, sup.describe()
    finally:
        sup.kill_all()
    assert sup.trail_dir is not None
    rejected = {(b.partition, b.offset): "" for b in bad[len(odd):]}
    got = assert_trail_intact(setup, Expect(sent, setup.events, rejected), file_copies=[sup.trail_dir])
    for p, o, _k, _v, headers in read_committed(setup.bootstrap, setup.dead_letter):
        names = [k for k, _ in headers if k.startswith("auditor.")]
        doubled = sorted({k for k in names if names.count(k) > 1})
        assert not doubled, f"{setup.dead_letter}/{p}@{o}: auditor headers given twice (spoofable): {doubled}"
        h = dict(headers)
        assert h["auditor.trail.seq"] != b"999999" and h["auditor.trail.chain"] != b"x/0", "spoofed header won"
    assert len(got.rows) == len(sent)
