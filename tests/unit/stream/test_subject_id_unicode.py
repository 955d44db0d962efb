"""Unicode tricks on a subject id beyond 7cc34e7's blank and Cc/Cf edges, across every decode path.

Two ids the ledger keys apart must be two ids a person can tell apart, and every path (the events
codec's JSON, Avro datum and compiled facts tuple, and the ledger's facts codec, JSON lines and
Avro) must take or refuse the same id. Unicode's Default_Ignorable_Code_Point characters that are
not Cc/Cf (variation selectors, the combining grapheme joiner, Hangul fillers, Khmer inherent
vowels, Mongolian free variation selectors) render as nothing, like a zero-width space: at an
id's edge they make an invisible second subject. A lone surrogate escaped in a facts JSON line is
not Unicode text (the events codec refuses it as undecodable); the facts codec must not hand it on.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest
from streamkit import compliant, messages, processor, wire

from auditor.cli import main
from auditor.errors import DecodeError
from auditor.events.codec import _EPOCH, decode_json_line, event_from_datum, event_from_mapping, event_to_mapping
from auditor.events.wire import encode_single_object
from auditor.ledger.codec import FactDecoder, decode_fact_line, encode_fact_single_object, fact_from_mapping
from auditor.native import NativeEventDecoder, NativeSealer
from auditor.stream.processor import BatchProcessor
from auditor.trail.keys import Pseudonymizer

#: default-ignorable, not Cc/Cf: each renders as nothing
IGNORABLE = ["\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u180b", "\u180f", "\u3164", "\ufe00",
             "\ufe0f", "\uffa0", "\U000e0100", "\U000e01ef"]
#: visible, or inside the id: still taken on every path (NFD and NFC of one name are two ids, as
#: documented: nothing normalises)
TAKEN = ["u-1", "u\u200d-1", "u\ufe0f-1", "e\u0301", "\u00e9", "u-1\u0301", "\u4e2d", "u-\U0001f600"]

FACT = {"fact_id": "f", "type": "CONSENT_WITHDRAWN", "effective_at": 0, "recorded_at": 0,
        "source_system": "crm"}


def _event(sid: str) -> dict:
    event = compliant("inper", 3)
    return event_to_mapping(dataclasses.replace(event, subject=dataclasses.replace(event.subject, id=sid)))


def _native() -> BatchProcessor:
    ref = processor()
    return BatchProcessor(NativeEventDecoder(None), ref.packs, Pseudonymizer(b"k" * 32), ref.routing, "unit-1",
                          clock=ref.clock, sealer=NativeSealer())


def _verdicts(sid: str) -> list[str]:
    """What each path makes of ``sid``: 'ok' or the refusal's reason, in a fixed order."""
    out = []
    m = _event(sid)
    datum = {**m, "occurred_at": (m["occurred_at"] - _EPOCH) // timedelta(microseconds=1)}
    for build, arg in ((event_from_mapping, m), (event_from_datum, datum)):
        try:
            build(arg)
            out.append("ok")
        except DecodeError as exc:
            out.append(str(exc.reason))
    for proc in (processor(), _native()):
        result = proc.process(messages([encode_single_object(_event(sid))]))
        out.append(result.dead_letters[0] if result.dead_letters else "ok")
    try:
        fact = fact_from_mapping({**FACT, "subject_id": sid})
        FactDecoder().decode(encode_fact_single_object(fact))
        out.append("ok")
    except DecodeError as exc:
        out.append(str(exc.reason))
    return out


@pytest.mark.parametrize("front", [True, False], ids=["leading", "trailing"])
@pytest.mark.parametrize("ch", IGNORABLE, ids=[f"U+{ord(c):04X}" for c in IGNORABLE])
def test_a_default_ignorable_edge_is_refused_on_every_path(ch: str, front: bool) -> None:
    sid = ch + "u-1" if front else "u-1" + ch
    assert _verdicts(sid) == ["bad_subject_id"] * 5


@pytest.mark.parametrize("sid", TAKEN, ids=[ascii(s) for s in TAKEN])
def test_visible_ids_and_invisibles_inside_are_taken_on_every_path(sid: str) -> None:
    assert _verdicts(sid) == ["ok"] * 5


def test_the_compiled_path_does_not_judge_an_ignorable_edge_from_the_clean_ids_memo() -> None:
    proc = _native()
    clean = wire(compliant("inper", 3))
    assert len(proc.process(messages([clean, clean])).audited) == 2
    edged = [encode_single_object(_event("u" + ch if i % 2 else ch + "u")) for i, ch in enumerate(IGNORABLE)]
    result = proc.process(messages(edged, first_offset=2))
    assert result.dead_letters == ["bad_subject_id"] * len(edged)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\uDBFF"])
def test_a_lone_surrogate_in_a_facts_line_is_refused_as_the_events_codec_refuses_it(escape: str) -> None:
    event = json.dumps(_event("u-1"), default=str).replace('"u-1"', f'"u-1{escape}"')
    with pytest.raises(DecodeError) as info:
        decode_json_line(event)
    assert info.value.reason == "undecodable"
    for field in ("subject_id", "fact_id"):
        line = json.dumps({**FACT, "subject_id": "u-1"}).replace(f'"{field}": "', f'"{field}": "{escape}')
        with pytest.raises(DecodeError) as info:
            decode_fact_line(line)
        assert info.value.reason == "undecodable"


def test_check_with_a_lone_surrogate_in_the_facts_file_names_the_line_instead_of_crashing(tmp_path, capsys) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(_event("u-1"), default=str) + "\n")
    facts = tmp_path / "facts.jsonl"
    good = json.dumps({**FACT, "subject_id": "u-1"})
    facts.write_text(good + "\n" + good.replace('"u-1"', '"u-1\\ud800"') + "\n")
    assert main(["check", str(events), "--ledger", str(facts)]) == 0
    out, err = capsys.readouterr()
    assert f"{facts}:2:" in err and "internal error" not in err
    assert "ledger: 1 fact(s), 1 malformed" in out


def test_an_id_the_facts_codec_cannot_take_is_refused_by_the_events_codec_too() -> None:
    """The facts codec takes at most 1,024 characters in any field: no fact can ever be recorded for
    a longer subject id, so an event for it was judged on its own consent claim alone. Before, the
    events codec audited such an event on every path."""
    assert _verdicts("u" * 1024) == ["ok"] * 5
    assert _verdicts("u" * 1025) == ["bad_subject_id"] * 4 + ["bad_field"]
