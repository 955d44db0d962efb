"""Adversarial inputs for the fact path (events audited from their facts tuple and sealed by the
compiled sealer, stream/factpath.py and processor.py) against the Python reference processor:
hostile text in the values the violation message quotes, template reuse within a batch, event
times at the edges of the accepted range."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from streamkit import PACK_IDS, messages, violating, wire
from test_stream_factseal import outputs, pair

from auditor.events.model import Event
from auditor.stream.processor import BatchResult


def second_pass(values: list[bytes]) -> tuple[BatchResult, BatchResult, int]:
    """Both processors over the values twice (the first pass fills the memo); the second results
    and how many events the fact path audited in the second pass."""
    reference, native = pair()
    for p in (reference, native):
        p.process(messages(values))
        p.commit_heads()
    assert native.facts is not None
    before = native.facts.hits
    again = messages(values, first_offset=len(values))
    a, b = reference.process(again), native.process(again)
    return a, b, native.facts.hits - before


def violation_values(r: BatchResult) -> list[bytes]:
    return [o.value for o in r.outgoing if o.topic == "violations"]


BASE = [violating(p, i) for p in PACK_IDS for i in range(3)]

HOSTILE_TEXT = {
    "nul": "x\0y",
    "slot-lookalike": "\0seq\0",
    "quote-backslash": 'a"b\\c</script>',
    "rtl-and-bidi": "u\u202e1\u2066",
    "astral": "\U0001f600\U0010ffff",
    "controls": "\x1f\x7f\u2028\u2029",
}


def _hostile(e: Event, text: str) -> Event:
    return dataclasses.replace(
        e, event_id=e.event_id + text,
        actor=dataclasses.replace(e.actor, id=e.actor.id + text, role=text),
        attributes={**(e.attributes or {}), "note": text, text: "v"})


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXT))
def test_hostile_text_in_quoted_values_gives_the_reference_violation_message(name: str):
    events = [_hostile(e, HOSTILE_TEXT[name]) for e in BASE]
    a, b, hits = second_pass([wire(e) for e in events])
    assert hits >= len(events) // 2
    assert outputs(b) == outputs(a)
    messages_b = violation_values(b)
    assert messages_b == violation_values(a) and len(messages_b) == len(events)
    for m, e in zip(messages_b, events, strict=True):
        assert json.loads(m)["event_id"] == e.event_id


def test_events_sharing_a_template_keep_their_own_values_in_one_batch():
    # the same facts the rules read, different ids: one memo template, three messages
    e = next(x for x in BASE if second_pass([wire(x)])[2] == 1)
    events = [dataclasses.replace(e, event_id=f"{e.event_id}-{k}\"{k}",
                                  actor=dataclasses.replace(e.actor, id=f"emp-{k}\\"),
                                  subject=dataclasses.replace(e.subject, id=f"u-{k}"))
              for k in range(3)]
    a, b, hits = second_pass([wire(x) for x in events])
    assert hits == len(events)
    assert outputs(b) == outputs(a)
    docs = [json.loads(m) for m in violation_values(b)]
    assert [d["event_id"] for d in docs] == [x.event_id for x in events]
    assert len({d["subject_pseudonym"] for d in docs}) == 3 and len({d["record_hash"] for d in docs}) == 3


def _at(e: Event, when: datetime) -> Event:
    return dataclasses.replace(e, occurred_at=when)


@pytest.mark.parametrize("when", [
    datetime(2300, 6, 1, 12, 0, 0, 1, tzinfo=UTC),   # beyond 2**53 microseconds: float(micros) rounds
    datetime(2999, 6, 1, 12, 0, 0, 2, tzinfo=UTC),
    datetime(9999, 12, 29, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1, 1, 2, 0, 0, 0, 1, tzinfo=UTC),
])
def test_event_times_far_from_now_give_the_reference_event_time(when: datetime):
    """The batch's event times (what the lag metrics read) are the reference's
    ``occurred_at.timestamp()``: the fact path read them as ``micros / 1e6``, which rounds the
    micros to a float first and differed by an ulp beyond 2**53 microseconds (after 2255)."""
    events = [_at(e, when) for e in BASE]
    a, b, hits = second_pass([wire(e) for e in events])
    assert hits >= len(events) // 2
    assert b.occurred_at == a.occurred_at == [when.timestamp()] * len(events)
    assert outputs(b) == outputs(a)

