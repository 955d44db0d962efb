"""The on-disk ledger: restore, incremental apply, resume, as-of lookups, pseudonyms only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import LedgerError
from auditor.ledger.asof import answer, normalise
from auditor.ledger.model import FactRef, FactType, Family, Query, Scope, entry_of
from auditor.ledger.store import (
    IdHider,
    LedgerStore,
    decode_entry,
    encode_entry,
    pseudonym_bytes,
    resume_from,
    stored_entry,
)
from auditor.trail.keys import Pseudonymizer
from tests.unit.ledger.ledgerkit import fact, us

KEY = Pseudonymizer(b"k" * 32)
OTHER_KEY = Pseudonymizer(b"z" * 32)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as s:
        yield s


def test_apply_then_view_answers_as_of_event_time(store: LedgerStore) -> None:
    res = store.apply(3, [(10, fact("CONSENT_GRANTED", 0)), (11, fact("CONSENT_WITHDRAWN", 60))], KEY)
    assert (res.written, res.skipped, res.high_offset) == (2, 0, 11)
    before = store.view(3, KEY("u-1"), us(30))
    after = store.view(3, KEY("u-1"), us(61))
    assert before.consent("marketing").value is True and before.consent("marketing").refs == (FactRef(3, 10),)
    assert after.consent("marketing").value is False
    assert after.provenance() == (3, 11, (11,))


def test_subjects_and_partitions_are_kept_apart(store: LedgerStore) -> None:
    store.apply(0, [(0, fact("CONSENT_WITHDRAWN", 0, subject="u-1"))], KEY)
    store.apply(1, [(0, fact("CONSENT_GRANTED", 0, subject="u-1"))], KEY)
    store.apply(0, [(1, fact("CONSENT_GRANTED", 0, subject="u-2"))], KEY)
    assert store.view(0, KEY("u-1"), us(1)).consent("x").value is False
    assert store.view(1, KEY("u-1"), us(1)).consent("x").value is True
    assert store.view(0, KEY("u-2"), us(1)).consent("x").value is True
    assert store.view(0, KEY("u-3"), us(1)).consent("x").value is None


def test_applying_the_same_range_twice_changes_nothing(store: LedgerStore) -> None:
    items = [(5, fact("CONSENT_GRANTED", 0)), (6, fact("MARKETING_OPT_OUT", 1))]
    store.apply(0, items, KEY)
    again = store.apply(0, items, KEY)
    assert (again.written, again.skipped, again.high_offset) == (0, 2, 6)
    assert len(store.history(0, KEY("u-1"))) == 2


def test_high_offsets_survive_reopen_and_restore_resumes(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    with LedgerStore(path, KEY.key_id) as s:
        assert s.high_offset(2) == -1
        s.restore(2, ((i, fact("CONSENT_GRANTED", i, subject=f"u-{i % 7}")) for i in range(50)), KEY, chunk=8)
        assert s.high_offset(2) == 49
    with LedgerStore(path, KEY.key_id) as s:
        assert s.positions() == {2: 49}
        assert resume_from(s.high_offset(2), low=0, high=80) == 50
        assert s.stats()["facts"] == 50


@pytest.mark.parametrize(("stored", "low", "high", "start"), [
    (-1, 0, 10, 0),       # nothing applied: from the start
    (-1, 40, 90, 40),     # nothing applied, retention moved the start: from the low watermark
    (9, 0, 10, 10),       # caught up
    (5, 0, 10, 6),        # resume after the last applied
    (5, 6, 10, 6),        # retention removed only facts already applied
    (5, 7, 10, None),     # retention removed facts never applied: start over
    (12, 0, 10, None),    # the topic is shorter than what was applied (recreated): start over
])
def test_resume_from(stored: int, low: int, high: int, start: int | None) -> None:
    assert resume_from(stored, low, high) == start


def test_drop_partition_forgets_only_that_partition(store: LedgerStore) -> None:
    store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    store.apply(1, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    store.drop_partition(0)
    assert store.history(0, KEY("u-1")) == () and store.high_offset(0) == -1
    assert len(store.history(1, KEY("u-1"))) == 1 and store.high_offset(1) == 0


def test_another_pseudonym_key_starts_the_store_empty(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    with LedgerStore(path, KEY.key_id) as s:
        s.apply(0, [(0, fact("CONSENT_GRANTED", 0))], KEY)
    with LedgerStore(path, OTHER_KEY.key_id) as s:
        assert s.reset_reason is not None and "key" in s.reset_reason
        assert s.high_offset(0) == -1 and s.stats()["facts"] == 0
    with LedgerStore(path, OTHER_KEY.key_id) as s:
        assert s.reset_reason is None


def test_raw_subject_ids_never_reach_the_store_file(tmp_path: Path) -> None:
    raw = "alice.example@mail.test"
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as s:
        s.restore(0, [(i, fact("CONSENT_GRANTED", i, subject=raw, fact_id=f"{raw}/consent/{i}")) for i in range(20)],
                  KEY)
        s.apply(0, [(20, fact("BIRTH_DATE", 0, subject=raw, born=date(2001, 2, 3))),
                    (21, fact("SERVICE_STARTED", 0, subject=raw, service=f"subscription-{raw}"))], KEY)
        assert len(s.history(0, KEY(raw))) == 22
    blob = b"".join((tmp_path / "ledger" / f).read_bytes() for f in os.listdir(tmp_path / "ledger"))
    assert raw.encode() not in blob
    assert pseudonym_bytes(KEY(raw)) in blob  # the check can see what is there


def test_the_store_refuses_anything_but_a_pseudonym(store: LedgerStore) -> None:
    with pytest.raises(LedgerError, match="pseudonym"):
        store.view(0, "u-10293", us(0))
    with pytest.raises(LedgerError):
        store.apply(0, [(0, fact("CONSENT_GRANTED", 0))], lambda raw: raw)


def test_entry_encoding_round_trips_every_field() -> None:
    f = fact("SERVICE_STARTED", -5, recorded=-7, scope=Scope("p", "t", "i"), service="svc")
    e = entry_of(f, FactRef(9, 123456789))
    assert decode_entry(*encode_entry(pseudonym_bytes(KEY("u")), e)) == e
    b = entry_of(fact("BIRTH_DATE", 0, born=date(1899, 12, 31)), FactRef(0, 0))
    assert decode_entry(*encode_entry(pseudonym_bytes(KEY("u")), b)) == b


def test_keys_sort_in_precedence_order_including_times_before_1970() -> None:
    es = [entry_of(fact("CONSENT_GRANTED", m, recorded=r), FactRef(0, o))
          for m, r, o in [(-10**8, 0, 3), (0, 5, 1), (0, 5, 2), (0, -1, 9), (10**6, 0, 0)]]
    p = pseudonym_bytes(KEY("u"))
    assert sorted(es, key=lambda e: encode_entry(p, e)[0]) == sorted(es)


def test_a_full_map_grows_instead_of_failing(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id, map_size=64 * 1024) as s:
        s.restore(0, [(i, fact("CONSENT_GRANTED", i, subject=f"u-{i}")) for i in range(3000)], KEY)
        assert s.stats()["facts"] == 3000


FAMILY_QUERIES = [Query(Family.CONSENT, "marketing"), Query(Family.CONSENT, "marketing", "business_partner", "acme"),
                  Query(Family.OPT_OUT, "marketing"), Query(Family.ACCOUNT_CLOSED), Query(Family.BIRTH_DATE),
                  Query(Family.SERVICE_ACTIVE, None, "business_partner", "acme")]


@st.composite
def fact_logs(draw: st.DrawFn) -> list[tuple[int, int, object]]:
    n = draw(st.integers(1, 25))
    out = []
    for offset in range(n):
        ftype = draw(st.sampled_from(list(FactType)))
        scope = None
        if ftype.value.startswith(("CONSENT", "MARKETING", "GUARDIAN")) or ftype is FactType.SERVICE_STARTED:
            scope = draw(st.sampled_from([None, Scope("marketing"), Scope(recipient_id="acme")]))
        out.append((draw(st.integers(0, 1)), offset, fact(
            ftype, draw(st.integers(0, 5)), recorded=draw(st.integers(0, 2)), subject=draw(st.sampled_from(["a", "b"])),
            fact_id=f"f{draw(st.integers(0, 30))}", scope=scope,
            born=date(2000, 1, 1) if ftype is FactType.BIRTH_DATE else None,
            service="s" if ftype.value.startswith("SERVICE") else None)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fact_logs(), st.integers(1, 7))
def test_store_answers_equal_the_pure_model(tmp_path_factory: pytest.TempPathFactory, log, chunk: int) -> None:  # type: ignore[no-untyped-def]
    with LedgerStore(tmp_path_factory.mktemp("l") / "ledger", KEY.key_id) as s:
        for partition in (0, 1):
            items = [(o, f) for p, o, f in log if p == partition]
            half = len(items) // 2
            s.restore(partition, items[:half], KEY, chunk=chunk)   # restore, then incremental apply
            s.apply(partition, items, KEY)                        # overlapping: the first half is skipped
        for partition in (0, 1):
            for subject in ("a", "b"):
                pure = normalise(stored_entry(f, FactRef(p, o), IdHider(KEY)) for p, o, f in log
                                 if p == partition and f.subject_id == subject)
                assert s.history(partition, KEY(subject)) == pure
                for minute in range(-1, 7):
                    v = s.view(partition, KEY(subject), us(minute))
                    for q in FAMILY_QUERIES:
                        assert v.ask(q) == answer(pure, us(minute), q)


def test_a_facts_file_loads_with_line_numbers_as_offsets_and_names_bad_lines(tmp_path: Path) -> None:
    from auditor.ledger.codec import fact_to_json
    from auditor.ledger.offline import load_facts_file

    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join([
        "# exported from the consent platform",
        fact_to_json(fact("CONSENT_GRANTED", 0)),
        '{"fact_id": "x", "subject_id": "u-1", "type": "CONSENT_GRANTED"}',
        fact_to_json(fact("CONSENT_WITHDRAWN", 60)),
    ]) + "\n")
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as s:
        report = load_facts_file(path, s, KEY)
        assert report.applied == 2
        assert [str(e) for e in report.errors] == [f"{path}:3: missing required field 'effective_at'"]
        reading = s.view(0, KEY("u-1"), us(61)).consent("marketing")
        assert reading.value is False and reading.refs == (FactRef(0, 4),)


def test_unconfirmed_facts_are_read_again_after_a_crash_and_confirmed_ones_are_not(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    items = [(0, fact("CONSENT_GRANTED", 0, fact_id="a")), (1, fact("CONSENT_WITHDRAWN", 10, fact_id="b"))]
    with LedgerStore(path, KEY.key_id) as s:
        first = s.apply(0, items, KEY, advance=False)
        assert (first.written, first.high_offset, s.high_offset(0)) == (2, 1, -1)
        assert s.view(0, KEY("u-1"), us(11)).consent("m").value is False  # visible before confirmation
    with LedgerStore(path, KEY.key_id) as s:            # the daemon died before its transaction committed
        again = s.apply(0, items, KEY, advance=False)
        assert [a.entry.offset for a in again.applied] == [0, 1]  # late-fact checks run again
        assert len(s.history(0, KEY("u-1"))) == 2                # rewriting the same keys added nothing
        s.confirm(0, again.high_offset)
        s.confirm(0, 0)                                          # never moves back
        assert s.high_offset(0) == 1
        assert s.apply(0, items, KEY).skipped == 2
