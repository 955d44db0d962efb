"""An event's own claims about consent and age, checked against the ledger.

Producers put consent flags and the subject's age in their events. With a ledger configured,
the ledger is the authority; a claim is **contradicted** when the ledger holds a fact, in force
at the event's time, that says otherwise, and the claim is the permissive one (the event says
consent was given and the ledger says it was withdrawn; the event says "not opted out" for a
marketing event and the ledger says opted out; the event says adult and the birth date says
minor). A claim the ledger is silent on is *unsupported*, not contradicted: the policy's own
conditions, reading the ledger, already judge that case. A restrictive claim the ledger does
not back (the event says no consent, the ledger says granted) is harmless and not reported.

Which question each claim is:

=============================  =================================================================
``consent.marketing``          consent for purpose ``marketing``, to the event's recipient if any
``consent.third_party_sharing`` consent for the event's purpose, to its recipient (disclosures only)
``consent.guardian``           guardian consent for the event's purpose and recipient
``consent.marketing_opt_out``  (false, on an event whose purpose is ``marketing``) opted out
``subject.age``/``is_minor``   the subject is a minor by the ledger's birth date
=============================  =================================================================

One withdrawal is reported once where claims ask the same question: a withdrawn marketing consent
that answers the opt-out question too is reported as the consent claim (9272054), and so is the
sharing claim of a marketing disclosure, whose question (consent for marketing, to this recipient)
is the marketing claim's (attlg).
"""

from __future__ import annotations

from typing import NamedTuple

from auditor.events.model import Event
from auditor.ledger.asof import MARKETING, SubjectView
from auditor.ledger.model import FactRef, same_name

__all__ = ["MARKETING", "Contradiction", "contradicted_claims"]


class Contradiction(NamedTuple):
    claim: str                    # the event's field, e.g. "consent.marketing"
    event_says: bool | int
    ledger_says: bool | int
    refs: tuple[FactRef, ...]     # the facts that contradict it
    since_us: int | None          # when the contradicting fact took effect

    def reason(self) -> str:
        return _REASONS[self.claim].format(event=self.event_says, ledger=self.ledger_says)


_REASONS = {
    "consent.marketing": "the event claims marketing consent, but the consent record says the subject "
                         "withdrew it",
    "consent.third_party_sharing": "the event claims consent to share with this recipient, but the consent "
                                   "record says the subject withdrew it",
    "consent.guardian": "the event claims a guardian's consent, but the consent record says it was withdrawn",
    "consent.marketing_opt_out": "the event claims the subject has not opted out of marketing, but the "
                                 "preference record says they have",
    "subject.age": "the event gives the subject's age as {event}, but by the recorded birth date they were "
                   "{ledger}, a minor",
    "subject.is_minor": "the event says the subject is not a minor, but by the recorded birth date they were "
                        "{ledger}",
}


def contradicted_claims(e: Event, view: SubjectView, minor_age: int) -> tuple[Contradiction, ...]:
    """Every permissive claim of ``e`` that the ledger, as of the event's time, contradicts."""
    out: list[Contradiction] = []
    rtype = e.recipient.type if e.recipient is not None else None
    rid = e.recipient.id if e.recipient is not None else None
    c = e.consent
    if c.marketing:
        r = view.consent(MARKETING, rtype, rid)
        if r.value is False:
            out.append(Contradiction("consent.marketing", True, False, r.refs, r.since_us))
    if c.third_party_sharing and e.recipient is not None:
        r = view.consent(e.purpose, rtype, rid)
        if r.value is False and not (same_name(MARKETING, e.purpose) and any(  # the marketing question again
                x.claim == "consent.marketing" and x.refs == r.refs for x in out)):
            out.append(Contradiction("consent.third_party_sharing", True, False, r.refs, r.since_us))
    if c.guardian:
        r = view.guardian_consent(e.purpose, rtype, rid)
        if r.value is False:
            out.append(Contradiction("consent.guardian", True, False, r.refs, r.since_us))
    if not c.marketing_opt_out and e.purpose == MARKETING:
        r = view.opted_out(e.purpose, rtype, rid)
        if r.value is True and all(r.refs != x.refs for x in out):  # a withdrawn consent is reported once
            out.append(Contradiction("consent.marketing_opt_out", False, True, r.refs, r.since_us))
    s = e.subject
    if s.age is not None or s.is_minor is False:
        age = view.age()
        if isinstance(age.value, int) and age.value < minor_age:
            if s.age is not None and s.age >= minor_age:
                out.append(Contradiction("subject.age", s.age, age.value, age.refs, age.since_us))
            elif s.is_minor is False:
                out.append(Contradiction("subject.is_minor", False, age.value, age.refs, age.since_us))
    return tuple(out)
