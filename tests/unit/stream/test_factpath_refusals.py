"""rust (session 9): an event naming a category, purpose or recipient type its policy does not
declare is audited from its facts tuple (FactPath keeps the engine's refusal by those names),
with the records, violation messages and labels of the full way.

The engine plans and memoises no such event (a hostile stream of new names must not grow its
caches), so each one went the full way: an Event, a Python record, the Python violation message
(1.5% of bench/batchcpu.py's stream, 75 events per 5,000, each ~45 us of the main thread)."""

from __future__ import annotations

import dataclasses

import pytest
from streamkit import PACK_IDS, messages, native, processor, violating, wire
from test_stream_native import outputs

from auditor.events.model import Event
from auditor.stream import factpath


def _recipient(e: Event, rtype: str) -> Event:
    if e.recipient is None:
        return e
    return dataclasses.replace(e, recipient=dataclasses.replace(e.recipient, type=rtype))  # type: ignore[arg-type]


#: ways of naming what a pack does not declare
UNDECLARED = {
    "purpose": lambda e: dataclasses.replace(e, purpose="data_brokerage"),
    "category": lambda e: dataclasses.replace(e, data_categories=(*e.data_categories, "palm_lines")),
    "recipient": lambda e: _recipient(e, "astrologer"),
    "recipient-none": lambda e: _recipient(e, "none"),
    "all-three": lambda e: _recipient(dataclasses.replace(
        e, purpose="data_brokerage", data_categories=("palm_lines", "aura")), "astrologer"),
    "hostile-names": lambda e: dataclasses.replace(
        e, purpose='p"\\\0seq\0\u202e\U0001f600', data_categories=("\0record_hash\0", "x</script>")),
}


def events(how: str) -> list[Event]:
    out = []
    for p in PACK_IDS:
        for i in range(4):
            e = UNDECLARED[how](violating(p, i))
            out.append(dataclasses.replace(e, event_id=f"{p}-{how}-{i}"))
    return out


@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize("how", sorted(UNDECLARED))
def test_undeclared_names_are_audited_from_the_tuple_as_the_full_way_audits_them(how: str, shadow: bool):
    """Twice through the reference and the compiled processor: the same outputs (audit records
    byte for byte, violation messages, labels, audited counts) both times, and the second time
    every event was audited from its tuple (before: none was; checked on main, this test's
    hits assertion fails for every case)."""
    values = [wire(e) for e in events(how)]
    reference, compiled = processor(), native(shadow)
    assert compiled.facts is not None
    offset = 0
    for round_ in range(2):
        before = compiled.facts.hits
        batch = messages(values, first_offset=offset)
        a, b = reference.process(batch), compiled.process(batch)
        reference.commit_heads()
        compiled.commit_heads()
        offset += len(values)
        assert outputs(b) == outputs(a)
        assert list(b.records) == list(a.records)
        assert len(b.violations) >= len(values)
        undeclared = sum(1 for o in b.outgoing if o.topic == "violations")
        assert undeclared == len(values)
        if round_ == 1:
            assert compiled.facts.hits - before == len(values)


def test_a_recipient_type_that_reads_none_is_labelled_none_as_the_full_way_labels_it():
    """_violations labels a recipient type "none" as "none" even when the pack does not declare
    it; the fact path did not (UNDECLARED). Unreachable before (an undeclared type was never
    memoised); with refusals on the fact path it is: checked failing without the fix."""
    values = [wire(e) for e in events("recipient-none")]
    values = [v for v, e in zip(values, events("recipient-none"), strict=True) if e.recipient is not None]
    assert values
    reference, compiled = processor(), native(False)
    for offset in (0, len(values)):
        a, b = reference.process(messages(values, first_offset=offset)), compiled.process(
            messages(values, first_offset=offset))
        reference.commit_heads()
        compiled.commit_heads()
        assert b.violations == a.violations
        assert any(label[3] == "none" for label in b.violations)


def test_names_too_long_to_keep_go_the_full_way(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(factpath, "REFUSAL_MAX_TEXT", 5)
    values = [wire(e) for e in events("purpose")]
    reference, compiled = processor(), native(False)
    assert compiled.facts is not None
    for offset in (0, len(values)):
        before = compiled.facts.hits
        a, b = reference.process(messages(values, first_offset=offset)), compiled.process(
            messages(values, first_offset=offset))
        reference.commit_heads()
        compiled.commit_heads()
        assert outputs(b) == outputs(a)
        assert compiled.facts.hits == before
    assert not compiled.facts._refusals


def test_the_refusals_kept_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(factpath, "REFUSALS_MAX", 8)
    base = violating("ipasar", 0)
    values = [wire(dataclasses.replace(base, purpose=f"brokerage_{i}", event_id=f"b-{i}")) for i in range(40)]
    reference, compiled = processor(), native(False)
    assert compiled.facts is not None
    for offset in (0, len(values)):
        a, b = reference.process(messages(values, first_offset=offset)), compiled.process(
            messages(values, first_offset=offset))
        reference.commit_heads()
        compiled.commit_heads()
        assert outputs(b) == outputs(a)
        assert len(compiled.facts._refusals) <= 8

