"""Two holes attlg left open (ledger, session 9), decided with the seeds.

**Birth dates were in force whatever their recorded time.** A birth date recorded after an event
changed what the event was judged to be: a producer's later "correction" to an adult birth date turned a
known minor's violations into CORRECTIONs to ALLOW, and a birth date learnt later made a minor of a
subject nobody knew to be one. The seeds tie every duty toward children to what is known: inper "We do
not knowingly collect personal data from children under the age of 18"; ipasar 5 "We have no way to
distinguish the age of individuals who access our Site"; waimaotong F "we can not differentiate between
the ages of individuals who visited our site" (a guardian asks for deletion afterwards); the packs read
"a known minor". So a birth date is in force at t only once it was on record by t (and, when the broker
stamped it, logged), like a grant: what was known then decides, in both directions.

**A withdrawal scoped ``third_party_sharing`` answered no question.** The packs read a consent named
``third_party_sharing`` (inper bullet 8 "If you consent to our disclosure of data to a third party, such
as business partners"; thisproduct 3.A "disclosure to third parties with your prior consent"), and the
ledger asks it as "consent for the event's purpose to its recipient": a consent platform recording the
person's "no third-party sharing" under that name had no effect (a warning for an undeclared purpose).
Such a scope now covers every disclosure (a question with a recipient), whatever its purpose.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.late import DecisionIndex, DecisionReads
from auditor.ledger.model import Entry, FactType, Scope
from auditor.ledger.store import LedgerStore
from auditor.ledger.vocabulary import UndeclaredScopes
from auditor.policy.decision import Verdict
from tests.unit.ledger.ledgerkit import at, entry, fact, us
from tests.unit.ledger.test_ledger_join import MKT, PACKS, judge, sample
from tests.unit.ledger.test_ledger_late import KEY, U1

B, W = FactType.BIRTH_DATE, FactType.CONSENT_WITHDRAWN
SHARING = Scope("third_party_sharing")
MINOR, ADULT = date(2012, 1, 1), date(1990, 1, 1)


def view(*entries: Entry, minutes: float) -> SubjectView:
    return SubjectView(normalise(entries), at(minutes))


def test_a_later_adult_birth_date_does_not_make_a_known_minor_an_adult_before_it_was_recorded() -> None:
    known = entry(B, -10**6, born=MINOR)
    later = entry(B, -10**6, recorded=60, born=ADULT)
    assert view(known, later, minutes=30).minor(18).value is True
    assert view(known, later, minutes=61).minor(18).value is False


def test_a_birth_date_recorded_after_the_event_is_not_known_at_it() -> None:
    later = entry(B, -10**6, recorded=60, born=MINOR)
    assert view(later, minutes=30).minor(18).value is None  # the event's own claim stands
    assert view(later, minutes=60).minor(18).value is True


def _decided(store: LedgerStore, index: DecisionIndex, minutes: float) -> None:
    v = store.view(0, U1, us(minutes))
    v.minor(18)
    index.record([DecisionReads(0, U1, v.at_us, "events/0", 1, "ev-1", tuple(v.reads))])


def test_a_late_adult_birth_date_corrects_no_known_minors_decision(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(B, -10**6, born=MINOR))], KEY)
        _decided(store, index, 30)
        late = fact(B, -10**6, recorded=60, born=ADULT)
        assert index.affected(store.apply(0, [(1, late)], KEY).applied).corrections == ()


def test_a_birth_date_learnt_after_the_event_corrects_nothing(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(B, -10**6, born=ADULT))], KEY)
        _decided(store, index, 30)
        late = fact(B, -10**6, recorded=60, born=MINOR)
        assert index.affected(store.apply(0, [(1, late)], KEY).applied).corrections == ()


def test_a_birth_date_on_record_before_the_event_but_read_late_still_corrects_it(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger", KEY.key_id) as store:
        index = DecisionIndex(store)
        store.apply(0, [(0, fact(B, -10**6, born=ADULT))], KEY)
        _decided(store, index, 30)
        lagging = fact(B, -10**6, recorded=20, born=MINOR)
        (c,) = index.affected(store.apply(0, [(1, lagging)], KEY).applied).corrections
        assert c.changes[0].after.value == MINOR


def test_ipasar_a_known_minors_marketing_stays_a_violation_after_a_later_adult_birth_date() -> None:
    e = replace(MKT, occurred_at=at(30))
    known = entry(B, -10**6, offset=1, born=MINOR)
    later = entry(B, -10**6, offset=2, recorded=60, born=ADULT)
    assert "ipasar.minors.no-marketing" in judge("ipasar", e, known, later).decision.violated_rule_ids


def test_a_third_party_sharing_scope_covers_every_disclosure_and_nothing_else() -> None:
    w = entry(W, 0, scope=SHARING)
    v = view(w, minutes=30)
    assert v.consent("service_provision", "business_partner", "drone-insure-partners").value is False
    assert v.consent("marketing", "affiliate", "inper-parent-ads").value is False
    assert v.consent("marketing").value is None  # our own marketing has no recipient: not a disclosure
    assert Scope("Third-Party Sharing", recipient_type="business_partner").covers("x", "business_partner", "a")
    assert not Scope("third_party_sharing", recipient_type="business_partner").covers("x", "bank", "b")


def test_inper_and_thisproduct_disclosures_stop_when_third_party_sharing_is_withdrawn() -> None:
    w = entry(W, 0, offset=4, scope=SHARING)
    for pack, event_id in (("inper", "inper-52"), ("thisproduct", "thisproduct-16")):
        e = replace(sample(pack, event_id), occurred_at=at(30))
        assert judge(pack, e).decision.verdict is Verdict.ALLOW, event_id  # its own consent claim
        assert judge(pack, e, w).decision.verdict is Verdict.VIOLATION, event_id


def test_third_party_sharing_is_a_declared_scope_name() -> None:
    assert UndeclaredScopes(PACKS.values()).check(SHARING, "line 1") is None
