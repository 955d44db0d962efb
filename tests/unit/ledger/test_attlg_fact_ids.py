"""attlg: a repeated fact id that says something else (a hostile or careless producer).

A repeated ``fact_id`` was applied once, the first in the log winning, whatever the repeat said. The
README calls the id "unique id from the producer": two systems of record (a consent platform and a
preference centre, each numbering its own facts) can give the same id to two facts of one subject, and
the second system's withdrawal vanished. Anyone who can write to the facts topic and guess the next id
of the consent platform (ids are often sequential: ``cmp-88121``) could publish a harmless fact under it
first, and the subject's real withdrawal, when it came, was never applied: no answer cited it, no
decision was corrected by it, and nothing said it was dropped. A repeat with the same content (a
producer's retry) is still applied once.
"""

from __future__ import annotations

from pathlib import Path

from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.late import DecisionIndex
from auditor.ledger.model import Entry, FactType, Scope
from auditor.ledger.store import LedgerStore
from tests.unit.ledger.ledgerkit import at, entry, fact
from tests.unit.ledger.test_ledger_late import KEY, U1, audit

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN


def view(*entries: Entry, minutes: float = 30) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


def test_a_withdrawal_is_applied_though_another_fact_took_its_id_first() -> None:
    squatter = entry(G, -600, offset=3, fact_id="cmp-88122", scope=Scope("analytics"))
    withdrawal = entry(W, -300, offset=9, fact_id="cmp-88122", scope=Scope("marketing"))
    v = view(squatter, withdrawal)
    assert v.consent("marketing").value is False
    assert v.opted_out("marketing").value is True
    assert v.consent("analytics").value is True


def test_two_systems_numbering_their_facts_alike_both_count() -> None:
    platform = entry(G, -600, offset=3, fact_id="1001", scope=Scope("marketing"))
    centre = entry(FactType.MARKETING_OPT_OUT, -300, offset=9, fact_id="1001")
    assert view(platform, centre).opted_out("marketing").value is True


def test_a_retry_is_still_applied_once() -> None:
    first = entry(W, -300, offset=3, fact_id="cmp-1", scope=Scope("marketing"))
    retry = first._replace(offset=9, recorded_us=first.recorded_us + 5_000_000)  # restamped by the retry
    assert normalise([retry, first]) == (first,)


def test_the_store_applies_the_withdrawal_and_corrects_the_decision_it_changes(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(G, -600, fact_id="cmp-7", scope=Scope("marketing")))], KEY)
        audit(store, index, U1, 30, seq=1)
        late = store.apply(0, [(1, fact(W, 10, recorded=40, fact_id="cmp-7", scope=Scope("marketing")))], KEY)
        (c,) = index.affected(late.applied).corrections
        assert {ch.after.value for ch in c.changes} == {False, True}  # consent withdrawn, opted out
