"""Hostile input to the subject ledger (att12): what a producer of events or facts can send."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditor.errors import DecodeError
from auditor.ledger.codec import FactDecoder, decode_fact_line, encode_fact_single_object
from auditor.ledger.late import DecisionIndex, DecisionReads
from auditor.ledger.model import to_us
from auditor.ledger.store import LedgerStore
from auditor.trail.chain import ChainHead
from auditor.trail.keys import Pseudonymizer
from tests.unit.ledger.ledgerkit import T0, fact
from tests.unit.stream.streamkit import ledger_feed

KEY = Pseudonymizer(b"k" * 32)
U1, U2 = KEY("u-1"), KEY("u-2")
NOW_S = T0.timestamp() + 86_400  # the instance's clock: a day after the audited events
FAR = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as s:
        yield s


def audited(store: LedgerStore, index: DecisionIndex, pseudonym: str, occurred_us: int, seq: int) -> None:
    v = store.view(0, pseudonym, occurred_us)
    v.consent("marketing")
    index.record([DecisionReads(0, pseudonym, v.at_us, "events/0", seq, f"ev-{seq}", tuple(v.reads))])


def test_an_event_dated_in_the_far_future_does_not_push_every_other_decision_out_of_the_window(
        store: LedgerStore) -> None:
    """The window is kept in event time, from the newest indexed event. Before the fix one event
    with ``occurred_at`` 9999-12-31 (the events codec takes it) moved the newest to year 9999: every
    other decision of the instance was dropped at once, for good (the newest is stored), and every
    late fact after it counted as beyond the window, never corrected."""
    index = DecisionIndex(store, clock=lambda: NOW_S)
    store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    audited(store, index, U1, to_us(T0) + 30 * 60_000_000, seq=1)
    audited(store, index, U2, to_us(FAR), seq=2)  # a hostile producer's event
    assert index.count() == 2 and index.horizon_us() is None
    late = store.apply(0, [(1, fact("CONSENT_WITHDRAWN", 10, recorded=40))], KEY)
    report = index.affected(late.applied)
    assert [c.event_id for c in report.corrections] == ["ev-1"] and report.beyond_window == 0


def test_a_store_whose_newest_was_already_pushed_to_the_far_future_prunes_by_the_clock(store: LedgerStore) -> None:
    """A store written before the fix keeps the poisoned newest: it is read no further ahead than
    the clock allows, so the next decisions are kept."""
    store._write(lambda txn: txn.put(b"idx_newest", str(to_us(FAR)).encode(), db=store.meta))
    index = DecisionIndex(store, clock=lambda: NOW_S)
    audited(store, index, U1, to_us(T0) + 30 * 60_000_000, seq=1)
    assert index.count() == 1


def _line(subject: str) -> str:
    return json.dumps({"fact_id": "f-1", "subject_id": subject, "type": "CONSENT_WITHDRAWN",
                       "effective_at": "2026-03-01T09:00:00Z", "recorded_at": "2026-03-01T09:00:01Z",
                       "source_system": "consent-platform", "scope": {"purpose": "marketing"}})


@pytest.mark.parametrize("subject", ["\u200bu-10293", "u-10293\u200b", "\ufeffu-10293", "u-10293\u2060",
                                     "u-10293\x00", "\x7fu-10293", "u-10293\u00ad"])
def test_a_subject_id_with_invisible_characters_at_either_end_is_refused(subject: str) -> None:
    """A zero-width space, a byte-order mark, a word joiner, a soft hyphen or a control character
    at either end of the id is invisible in every log and console, like a blank, and makes another
    subject whose withdrawal never meets the events (before the fix only str.strip()'s blanks were
    refused: these were stored)."""
    with pytest.raises(DecodeError) as info:
        decode_fact_line(_line(subject))
    assert info.value.reason == "bad_subject_id" and "u-10293" not in str(info.value)
    good = decode_fact_line(_line("u-10293"))
    with pytest.raises(DecodeError) as info:
        FactDecoder().decode(encode_fact_single_object(dataclasses.replace(good, subject_id=subject)))
    assert info.value.reason == "bad_subject_id"


def test_invisible_characters_inside_a_subject_id_and_confusable_letters_are_the_producers_business() -> None:
    for subject in ("u-\u200b10293", "\u0443-10293"):  # a zero-width space inside; a Cyrillic u
        assert decode_fact_line(_line(subject)).subject_id == subject


def test_a_chain_marker_beyond_the_restored_head_is_not_resumed_from(tmp_path: Path) -> None:
    """Before att12 the read-back advanced a chain's marker to the highest seq it read, forged records
    included: a forged record at seq 5 of a chain of 3 records left the marker at 5, and the restart
    then skipped the instance's own records 3 to 5 (never indexed: their late facts never
    corrected). Such a marker is not resumed from: the chain is indexed again in full."""
    feed = ledger_feed(tmp_path)
    try:
        chain = "events/1"
        feed.processor.set_head(chain, ChainHead(chain, 3, b"h" * 32))
        feed.index.mark({(1, chain): 2})
        assert feed._resumable(("events", 1), 0) is not None  # the marker at the head's last record: resumed
        feed.index.mark({(1, chain): 5})
        assert feed._resumable(("events", 1), 0) is None
    finally:
        feed.close()
