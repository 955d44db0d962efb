"""An event's own consent and age claims against the ledger."""

from __future__ import annotations

from datetime import date

from auditor.events.model import Actor, ActorType, ConsentState, Event, EventKind, Recipient, Subject
from auditor.ledger.asof import SubjectView, normalise
from auditor.ledger.claims import contradicted_claims
from auditor.ledger.model import Entry, FactRef, Scope
from tests.unit.ledger.ledgerkit import at, entry, us


def event(minutes: float = 30, *, purpose: str = "marketing", consent: ConsentState | None = None,
          recipient: Recipient | None = None, age: int | None = None, is_minor: bool | None = None) -> Event:
    return Event("ev-1", at(minutes), EventKind.DISCLOSURE if recipient else EventKind.USE, "ipasar", "mailer",
                 Actor(ActorType.SERVICE, "svc"), Subject("u-1", age, is_minor), ("marketing_data",), purpose,
                 recipient, consent=consent or ConsentState())


def claims(e: Event, *entries: Entry) -> list[str]:
    view = SubjectView(normalise(entries), e.occurred_at)
    return [c.claim for c in contradicted_claims(e, view, 18)]


def test_marketing_consent_claimed_after_the_withdrawal_is_contradicted() -> None:
    g, w = entry("CONSENT_GRANTED", 0), entry("CONSENT_WITHDRAWN", 20, offset=42)
    e = event(30, consent=ConsentState(marketing=True))
    view = SubjectView(normalise([g, w]), e.occurred_at)
    (c,) = contradicted_claims(e, view, 18)
    assert (c.claim, c.event_says, c.ledger_says, c.refs, c.since_us) == (
        "consent.marketing", True, False, (FactRef(0, 42),), us(20))
    assert "withdrew" in c.reason()
    assert claims(event(10, consent=ConsentState(marketing=True)), g, w) == []


def test_a_claim_the_ledger_is_silent_on_is_not_a_contradiction() -> None:
    assert claims(event(consent=ConsentState(marketing=True, guardian=True))) == []


def test_a_restrictive_claim_is_never_a_contradiction() -> None:
    g = entry("CONSENT_GRANTED", 0)
    assert claims(event(consent=ConsentState(marketing=False, marketing_opt_out=True)), g) == []


def test_third_party_sharing_is_checked_for_the_recipient_of_a_disclosure() -> None:
    acme = Recipient("business_partner", "acme")
    w = entry("CONSENT_WITHDRAWN", 0, scope=Scope(recipient_id="acme"))
    sharing = ConsentState(third_party_sharing=True)
    assert claims(event(purpose="analytics", consent=sharing, recipient=acme), w) == ["consent.third_party_sharing"]
    other = Recipient("business_partner", "globex")
    assert claims(event(purpose="analytics", consent=sharing, recipient=other), w) == []
    assert claims(event(purpose="analytics", consent=sharing), w) == []  # no recipient: nothing shared


def test_not_opted_out_is_checked_on_marketing_only() -> None:
    out = entry("MARKETING_OPT_OUT", 0)
    assert claims(event(purpose="marketing"), out) == ["consent.marketing_opt_out"]
    assert claims(event(purpose="customer_service"), out) == []


def test_guardian_consent_claim() -> None:
    w = entry("GUARDIAN_CONSENT_WITHDRAWN", 0)
    assert claims(event(consent=ConsentState(guardian=True)), w) == ["consent.guardian"]


def test_an_adult_age_claim_against_a_minor_birth_date() -> None:
    born = entry("BIRTH_DATE", -10**7, born=date(2012, 5, 1))
    assert claims(event(age=30), born) == ["subject.age"]
    assert claims(event(is_minor=False), born) == ["subject.is_minor"]
    assert claims(event(age=13), born) == []
    assert claims(event(age=30), entry("BIRTH_DATE", -10**7, born=date(1990, 5, 1))) == []


def test_each_claim_is_reported_once_with_its_own_facts() -> None:
    es = [entry("CONSENT_WITHDRAWN", 0, offset=1), entry("MARKETING_OPT_OUT", 0, offset=2),
          entry("GUARDIAN_CONSENT_WITHDRAWN", 0, offset=3)]
    e = event(consent=ConsentState(marketing=True, guardian=True))
    view = SubjectView(normalise(es), e.occurred_at)
    out = contradicted_claims(e, view, 18)
    assert [(c.claim, c.refs) for c in out] == [("consent.marketing", (FactRef(0, 1),)),
                                                ("consent.guardian", (FactRef(0, 3),)),
                                                ("consent.marketing_opt_out", (FactRef(0, 2),))]
    assert view.provenance().fact_offsets == (1, 2, 3)
