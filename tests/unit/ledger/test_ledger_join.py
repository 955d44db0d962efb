"""The ledger join: ledger facts as of the event's time overlaid onto the event, claims checked,
provenance recorded; and the same decision again from the record's own ledger reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from auditor.events.codec import iter_event_file
from auditor.events.model import ConsentState, Event, Subject
from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.join import PackJoin, RecordedView, ledger_facts
from auditor.ledger.model import Entry, FactRef, Scope
from auditor.policy import evaluate, load_pack
from auditor.policy.decision import Verdict, ViolationKind
from tests.unit.ledger.ledgerkit import at, entry

PACKS = {name: load_pack(name) for name in ("ipasar", "inper", "thisproduct", "waimaotong", "ipmart")}


def sample(pack: str, event_id: str) -> Event:
    for row in iter_event_file(f"tests/data/events/{pack}.jsonl"):
        if row.event is not None and row.event.event_id == event_id:
            return row.event
    raise KeyError(event_id)


def judge(pack: str, e: Event, *entries: Entry):
    compiled = PACKS[pack]
    view = SubjectView(normalise(entries), e.occurred_at, partition=0, through_offset=99)
    return PackJoin(compiled).judge(e, view, lambda ev: evaluate(ev, compiled))


MKT = sample("ipasar", "ipasar-mkt-consent")  # marketing by us, claims consent: allowed on its own word


def test_marketing_claimed_after_the_subject_withdrew_is_a_violation_citing_the_consent_clause() -> None:
    assert evaluate(MKT, PACKS["ipasar"]).verdict is Verdict.ALLOW
    withdrawn = entry("CONSENT_WITHDRAWN", 0, offset=7, scope=Scope("marketing"))
    e = replace(MKT, occurred_at=at(30))
    j = judge("ipasar", e, entry("CONSENT_GRANTED", -600, offset=3), withdrawn)
    assert j.decision.verdict is Verdict.VIOLATION
    kinds = {(v.rule_id, v.kind) for v in j.decision.violations}
    assert ("ipasar.marketing.consent-required", ViolationKind.CONSTRAINT_FAILED) in kinds
    (claim,) = [v for v in j.decision.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED]
    assert claim.rule.rule_id == "ipasar.marketing.consent-required" and claim.rule.clause == "2.7"
    assert "withdrew" in claim.reason and "0@7" in claim.reason
    assert j.ledger.partition == 0 and j.ledger.through_offset == 99
    assert ("consent", "marketing", False, (7,)) in {(r.question, r.purpose, r.value, r.fact_offsets)
                                                      for r in j.ledger.reads}


def test_the_same_event_dated_before_the_withdrawal_is_allowed() -> None:
    withdrawn = entry("CONSENT_WITHDRAWN", 0, offset=7, scope=Scope("marketing"))
    j = judge("ipasar", replace(MKT, occurred_at=at(-30)), entry("CONSENT_GRANTED", -600, offset=3), withdrawn)
    assert j.decision.verdict is Verdict.ALLOW
    assert [r.fact_offsets for r in j.ledger.reads if r.question == "consent"] == [(3,)]


def test_a_grant_on_record_allows_marketing_the_event_did_not_claim() -> None:
    e = replace(MKT, consent=ConsentState(), occurred_at=at(30))
    assert evaluate(e, PACKS["ipasar"]).verdict is Verdict.VIOLATION
    assert judge("ipasar", e, entry("CONSENT_GRANTED", 0, scope=Scope("marketing"))).decision.verdict is Verdict.ALLOW


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_with_a_silent_ledger_every_decision_is_todays(pack: str) -> None:
    compiled = PACKS[pack]
    n = 0
    for row in iter_event_file(f"tests/data/events/{pack}.jsonl"):
        if row.event is None:
            continue
        j = judge(pack, row.event)
        assert j.decision == evaluate(row.event, compiled), row.event.event_id
        assert j.ledger.reads == () and j.contradictions == ()
        n += 1
    assert n > 50


def test_an_opt_out_on_record_stops_marketing_that_needs_only_no_opt_out() -> None:
    e = replace(sample("inper", "inper-mkt-noconsent"), occurred_at=at(30))
    assert evaluate(e, PACKS["inper"]).verdict is Verdict.ALLOW
    j = judge("inper", e, entry("MARKETING_OPT_OUT", 0, offset=4))
    assert j.decision.verdict is Verdict.VIOLATION
    claim = [v for v in j.decision.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED]
    assert [v.failed for v in claim] == [("consent.marketing_opt_out",)]
    assert judge("inper", e, entry("MARKETING_OPT_OUT", 0), entry("MARKETING_OPT_IN", 10)).decision.verdict \
        is Verdict.ALLOW


def test_a_birth_date_makes_a_claimed_adult_a_minor_as_of_the_event() -> None:
    e = replace(MKT, occurred_at=at(0), subject=Subject("u-1", age=30, region="ID"))
    born = entry("BIRTH_DATE", -10_000_000, offset=2, born=date(2010, 6, 1))  # 15 at T0 (2026-03-01)
    j = judge("ipasar", e, born)
    assert "ipasar.minors.no-marketing" in j.decision.violated_rule_ids
    (claim,) = [v for v in j.decision.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED]
    assert claim.rule.clause == "5" and claim.failed == ("subject.age",)
    assert [(r.question, r.value) for r in j.ledger.reads if r.question == "birth_date"] == [
        ("birth_date", "2010-06-01")]
    later = replace(e, occurred_at=e.occurred_at.replace(year=2029))  # 19 by then
    assert judge("ipasar", later, born).decision.verdict is Verdict.ALLOW


def test_a_service_that_ended_before_the_event_is_no_longer_serving() -> None:
    e = sample("thisproduct", "thisproduct-access-tp-serving")
    assert evaluate(e, PACKS["thisproduct"]).verdict is Verdict.ALLOW
    start = entry("SERVICE_STARTED", -100, service="joint-1")
    end = entry("SERVICE_ENDED", 0, offset=9, service="joint-1")
    assert judge("thisproduct", replace(e, occurred_at=at(30)), start, end).decision.verdict is Verdict.VIOLATION
    assert judge("thisproduct", replace(e, occurred_at=at(-30)), start, end).decision.verdict is Verdict.ALLOW


def test_a_deletion_request_counts_as_the_guardians_only_while_the_subject_is_a_minor() -> None:
    e = replace(sample("waimaotong", "waimaotong-atk-minor-deletion-false"), occurred_at=at(30))
    assert evaluate(e, PACKS["waimaotong"]).verdict is Verdict.ALLOW
    asked = entry("DELETION_REQUESTED", 0, offset=5)
    minor = entry("BIRTH_DATE", -100, born=date(2014, 1, 1))
    adult = entry("BIRTH_DATE", -100, born=date(1990, 1, 1))
    assert "waimaotong.minors.delete-on-guardian-request" in judge(
        "waimaotong", e, minor, asked).decision.violated_rule_ids
    assert judge("waimaotong", e, adult, asked).decision.verdict is Verdict.ALLOW


def test_the_records_own_ledger_reads_reproduce_the_decision() -> None:
    facts = (entry("CONSENT_GRANTED", -600, offset=3), entry("CONSENT_WITHDRAWN", 0, offset=7),
             entry("BIRTH_DATE", -10_000_000, offset=2, born=date(2010, 6, 1)))
    for e in (replace(MKT, occurred_at=at(30), subject=Subject("u-1", age=30)), replace(MKT, occurred_at=at(-30))):
        first = judge("ipasar", e, *facts)
        again = PackJoin(PACKS["ipasar"]).judge(e, RecordedView(first.ledger, e.occurred_at),
                                                lambda ev: evaluate(ev, PACKS["ipasar"]))
        assert again.decision == first.decision
        assert ledger_facts(RecordedView(first.ledger, e.occurred_at)).reads == ()  # nothing asked yet
        assert again.ledger == first.ledger


def test_a_contradiction_no_rule_of_the_pack_reads_cites_the_packs_default_clause() -> None:
    e = replace(MKT, occurred_at=at(30), consent=ConsentState(guardian=True))
    pack = PACKS["ipmart"]
    j = PackJoin(pack).judge(replace(e, policy_id="ipmart"),
                             SubjectView(normalise([entry("GUARDIAN_CONSENT_WITHDRAWN", 0)]), at(30)),
                             lambda ev: evaluate(ev, pack))
    (claim,) = [v for v in j.decision.violations if v.kind is ViolationKind.CLAIM_CONTRADICTED]
    assert claim.rule.rule_id == "ipmart.ledger.claim-contradicted"
    assert claim.rule.clause == pack.pack.default.clause


def test_provenance_names_each_deciding_fact_once() -> None:
    view = SubjectView(normalise([entry("CONSENT_WITHDRAWN", 0, offset=7)]), at(1), partition=4, through_offset=9)
    view.consent("marketing")
    view.consent("marketing")
    view.opted_out("marketing")  # no fact: not listed
    lf = ledger_facts(view)
    assert lf.partition == 4 and [(r.question, r.fact_offsets) for r in lf.reads] == [("consent", (7,))]
    assert FactRef(4, 7) in RecordedView(lf, at(1)).consent("marketing").refs


@pytest.mark.parametrize("pack,event_id", [("ipmart", "ipmart-mkt-noconsent")])
def test_marketing_follows_the_subjects_latest_word_across_consent_and_opt_out(pack: str, event_id: str) -> None:
    """attperm: consent and opt-out are one conversation about marketing. ipmart only honours an
    opt-out: a withdrawn marketing consent on record is the subject saying no, so the alert is a
    violation (it was ALLOW: the pack never reads consent). A consent given after an opt-out lifts it."""
    out = entry("MARKETING_OPT_OUT", -600, offset=2)
    grant = entry("CONSENT_GRANTED", -300, offset=5, scope=Scope("marketing"))
    withdrawn = entry("CONSENT_WITHDRAWN", 0, offset=7, scope=Scope("marketing"))
    e = replace(sample(pack, event_id), occurred_at=at(30))
    assert judge(pack, e).decision.verdict is Verdict.ALLOW
    assert judge(pack, e, out).decision.verdict is Verdict.VIOLATION
    assert judge(pack, e, out, grant).decision.verdict is Verdict.ALLOW
    j = judge(pack, e, out, grant, withdrawn)
    assert j.decision.verdict is Verdict.VIOLATION
    assert ("opt_out", "marketing", True, (7,)) in {(r.question, r.purpose, r.value, r.fact_offsets)
                                                    for r in j.ledger.reads}
    assert judge(pack, e, grant, withdrawn).decision.verdict is Verdict.VIOLATION
