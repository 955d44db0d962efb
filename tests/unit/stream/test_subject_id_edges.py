"""An event whose subject id is edged by a blank or an invisible character is refused, on every path.

The ledger's facts codec refuses such an id (``bad_subject_id``, att12): ``"u-1\\u200b"`` is
another subject (another pseudonym, another ledger key) that prints like ``u-1``. If the events
codec took it, an event could step around ``u-1``'s recorded withdrawal: the ledger would be silent
for the edged id and the event's own consent claim would stand. So the events codec refuses it the
same way, on the JSON path, the Avro datum path and the compiled facts-tuple path (which must not
judge it from the memo even when the clean id's decision is known).
"""

from __future__ import annotations

import dataclasses

import pytest
from streamkit import compliant, messages, processor, wire

from auditor.errors import DecodeError
from auditor.events.codec import event_from_datum, event_from_mapping, event_to_mapping
from auditor.events.wire import encode_single_object
from auditor.native import NativeEventDecoder, NativeSealer
from auditor.stream.processor import BatchProcessor
from auditor.trail.keys import Pseudonymizer

EDGES = [" ", "\t", "\n", "\u200b", "\ufeff", "\u00ad", "\u2060", "\x00", "\x7f"]


def _edged(ch: str, front: bool) -> dict:
    event = compliant("inper", 3)
    sid = ch + event.subject.id if front else event.subject.id + ch
    return event_to_mapping(dataclasses.replace(event, subject=dataclasses.replace(event.subject, id=sid)))


def _native() -> BatchProcessor:
    ref = processor()
    return BatchProcessor(NativeEventDecoder(None), ref.packs, Pseudonymizer(b"k" * 32), ref.routing, "unit-1",
                          clock=ref.clock, sealer=NativeSealer())


@pytest.mark.parametrize("front", [True, False], ids=["leading", "trailing"])
@pytest.mark.parametrize("ch", EDGES, ids=[f"U+{ord(c):04X}" for c in EDGES])
def test_the_json_and_datum_paths_refuse_it(ch: str, front: bool) -> None:
    m = _edged(ch, front)
    for build in (event_from_mapping, event_from_datum):
        with pytest.raises(DecodeError) as info:
            build(m)
        assert info.value.reason == "bad_subject_id"
        assert m["subject"]["id"].strip("\u200b\ufeff\u00ad\u2060\x00\x7f ") not in str(info.value)


def test_an_id_with_an_invisible_character_inside_is_still_taken() -> None:
    m = _edged("", True)
    m["subject"]["id"] = "u\u200b-1"
    assert event_from_mapping(m).subject.id == "u\u200b-1"


@pytest.mark.parametrize("path", ["python", "native"])
def test_the_daemon_dead_letters_it_even_when_the_memo_knows_the_clean_ids_decision(path: str) -> None:
    proc = processor() if path == "python" else _native()
    clean = wire(compliant("inper", 3))
    warm = proc.process(messages([clean, clean]))
    assert not warm.dead_letters and len(warm.audited) == 2
    edged = [encode_single_object(_edged(ch, f)) for ch in EDGES for f in (True, False)]
    result = proc.process(messages(edged, first_offset=2))
    assert result.dead_letters == ["bad_subject_id"] * len(edged)
    assert not result.audited
