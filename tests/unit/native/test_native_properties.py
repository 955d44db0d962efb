"""Property tests: events generated from the schema itself, through the native codec, fastavro
and the reference's re-encode-and-compare rule."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nativekit import PARSED_RAW, RAW_EVENT_SCHEMA, blocked, canonical, datums, plain, sort_maps

from auditor.events.wire import SINGLE_OBJECT_MAGIC, SchemaAllowList
from auditor.native import Decoded, NativeEventDecoder

FP = SchemaAllowList().reader_fp
DECODER = NativeEventDecoder()
EVENTS = datums(RAW_EVENT_SCHEMA)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def native(body: bytes, datum: bool = False) -> Any:
    return DECODER._codec.decode_batch([SINGLE_OBJECT_MAGIC + FP + body], datum=datum)[0]


def fastavro_read(body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), PARSED_RAW, None)


@SETTINGS
@given(EVENTS)
def test_generated_events_decode_like_fastavro_and_canonicalise_like_the_reference(datum):
    body = plain(datum)
    r = native(body, datum=True)
    assert isinstance(r, Decoded), r.message
    assert r.facts == fastavro_read(body)
    assert r.canonical == canonical(datum)
    assert r.digest == hashlib.sha256(canonical(datum)).digest()
    if sort_maps(RAW_EVENT_SCHEMA, datum) == datum and list(datum["attributes"]) == sorted(
            datum["attributes"], key=str.encode):
        assert r.canonical == body  # already canonical: the reference's own bytes


@SETTINGS
@given(EVENTS, st.randoms(use_true_random=False))
def test_any_blocking_and_map_order_give_the_same_canonical_bytes(datum, rnd: random.Random):
    alt = blocked(RAW_EVENT_SCHEMA, datum, rnd)
    assert fastavro_read(alt) == fastavro_read(plain(datum))  # fastavro agrees it is the same event
    r = native(alt)
    assert isinstance(r, Decoded), r.message
    assert r.canonical == canonical(datum)


@SETTINGS
@given(EVENTS, st.data())
def test_damaged_bodies_are_refused_or_read_exactly_as_fastavro_reads_them(datum, data):
    body = bytearray(plain(datum))
    how = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
    at = data.draw(st.integers(0, len(body) - 1))
    if how == "flip":
        body[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "set":
        body[at] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del body[at:]
    else:
        body.insert(at, data.draw(st.integers(0, 255)))
    damaged = bytes(body)
    try:
        read = fastavro_read(damaged)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, PARSED_RAW, read)
        reference_accepts = buf.getvalue() == damaged
    except Exception:
        read, reference_accepts = None, False
    r = native(damaged)
    if reference_accepts:
        assert isinstance(r, Decoded), r.message
    if isinstance(r, Decoded):
        assert read is not None, "native accepted what fastavro cannot read"
        assert r.canonical == canonical(read)
