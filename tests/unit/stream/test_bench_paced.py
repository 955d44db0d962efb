"""bench/stream.py's paced producer: occurred_at patched into a pre-encoded event gives the bytes
that encoding the event with that time gives (the latency phase's events are then honest)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from itertools import islice

import fastavro
import pytest

from auditor.events.model import Event
from auditor.stream.generate import stream
from auditor.stream.produce import encode
from bench.stream import _long_at, avro_long, occurred_at_slot, paced_pool, packs, stamped

T0 = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)


def micros(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def events() -> list[Event]:
    """The bench's events, and some with event ids whose length takes one, two and three bytes."""
    evs = [e for e in islice(stream(packs(), seed=5, clock=lambda: T0), 400) if isinstance(e, Event)]
    return evs + [dataclasses.replace(evs[0], event_id="x" * n) for n in (0, 1, 63, 64, 200, 8191, 8192)]


@pytest.mark.parametrize("later", [timedelta(0), timedelta(microseconds=1), timedelta(seconds=1234.567891),
                                   timedelta(days=-3000), timedelta(days=300_000)])
def test_stamped_gives_the_bytes_of_encoding_the_event_at_that_time(later: timedelta) -> None:
    for e in events():
        value = encode(e)
        at = T0 + later
        assert stamped(value, occurred_at_slot(value), micros(at)) == encode(dataclasses.replace(e, occurred_at=at))


def test_a_time_of_another_length_is_refused() -> None:
    value = encode(events()[0])
    slot = occurred_at_slot(value)
    for at in (datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)):
        with pytest.raises(ValueError, match="bytes, the slot"):
            stamped(value, slot, micros(at))


def test_a_value_that_is_not_single_object_encoded_is_refused() -> None:
    with pytest.raises(ValueError, match="single-object"):
        occurred_at_slot(b"\x00" + encode(events()[0])[1:])


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, 2**31, -(2**31), micros(T0), 2**63 - 1, -(2**63)])
def test_avro_long_is_fastavros_encoding(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert avro_long(n) == buf.getvalue()
    assert _long_at(b"\xff" + avro_long(n) + b"\xff", 1) == (n, 1 + len(buf.getvalue()))


def test_the_pool_keeps_malformed_messages_as_they_are() -> None:
    pool = paced_pool(300)
    assert any(slot is None for _, _, slot in pool)  # the stream's ~1% malformed
    for key, _value, slot in pool:
        assert (slot is None) == (key is None)
        if slot is not None:
            assert slot[1] - slot[0] == 8
