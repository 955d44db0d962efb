"""Domain types of the subject ledger: facts about one data subject, and what they answer.

A :class:`SubjectFact` is what a producing system says (it carries the raw subject id and is
never stored). Once applied, a fact becomes an :class:`Entry`: the same fact without the subject
id, placed in the facts log by a :class:`FactRef` (partition and offset; for a file, partition 0
and the line number). The ledger keeps entries under the subject's keyed pseudonym.

Facts come in families. Within a family the fact in force at an instant answers the question
(see :mod:`auditor.ledger.asof`). Consent, opt-out, guardian consent and services carry a
:class:`Scope` saying what they cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import IntEnum, StrEnum
from typing import NamedTuple


class FactType(StrEnum):
    CONSENT_GRANTED = "CONSENT_GRANTED"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    MARKETING_OPT_OUT = "MARKETING_OPT_OUT"
    MARKETING_OPT_IN = "MARKETING_OPT_IN"
    GUARDIAN_CONSENT_GRANTED = "GUARDIAN_CONSENT_GRANTED"
    GUARDIAN_CONSENT_WITHDRAWN = "GUARDIAN_CONSENT_WITHDRAWN"
    BIRTH_DATE = "BIRTH_DATE"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    ACCOUNT_REOPENED = "ACCOUNT_REOPENED"
    DELETION_REQUESTED = "DELETION_REQUESTED"
    DELETION_CANCELLED = "DELETION_CANCELLED"
    SERVICE_STARTED = "SERVICE_STARTED"
    SERVICE_ENDED = "SERVICE_ENDED"


class Family(StrEnum):
    """What a fact is about. One question per family; the answer's value type is in brackets."""

    CONSENT = "consent"                   # consent given [bool]
    OPT_OUT = "opt_out"                   # opted out of marketing [bool]
    GUARDIAN_CONSENT = "guardian_consent"  # a parent or guardian consented [bool]
    BIRTH_DATE = "birth_date"             # date of birth [date]
    ACCOUNT_CLOSED = "account_closed"     # the account is closed [bool]
    DELETION_REQUESTED = "deletion_requested"  # deletion was requested and not cancelled [bool]
    SERVICE_ACTIVE = "service_active"     # a service covering the processing is running [bool]


#: each fact type: its family, and the value it sets (None for BIRTH_DATE: the date is the value)
FACT_FAMILY: dict[FactType, tuple[Family, bool | None]] = {
    FactType.CONSENT_GRANTED: (Family.CONSENT, True),
    FactType.CONSENT_WITHDRAWN: (Family.CONSENT, False),
    FactType.MARKETING_OPT_OUT: (Family.OPT_OUT, True),
    FactType.MARKETING_OPT_IN: (Family.OPT_OUT, False),
    FactType.GUARDIAN_CONSENT_GRANTED: (Family.GUARDIAN_CONSENT, True),
    FactType.GUARDIAN_CONSENT_WITHDRAWN: (Family.GUARDIAN_CONSENT, False),
    FactType.BIRTH_DATE: (Family.BIRTH_DATE, None),
    FactType.ACCOUNT_CLOSED: (Family.ACCOUNT_CLOSED, True),
    FactType.ACCOUNT_REOPENED: (Family.ACCOUNT_CLOSED, False),
    FactType.DELETION_REQUESTED: (Family.DELETION_REQUESTED, True),
    FactType.DELETION_CANCELLED: (Family.DELETION_REQUESTED, False),
    FactType.SERVICE_STARTED: (Family.SERVICE_ACTIVE, True),
    FactType.SERVICE_ENDED: (Family.SERVICE_ACTIVE, False),
}

#: the value that restricts processing, per family: at the same effective time it wins over the other
#: (a grant and a withdrawal both effective at 10:00 leave the consent withdrawn at 10:00, whatever
#: order they were recorded or logged in: the conservative reading). Birth dates are not ordered so.
RESTRICTIVE: dict[Family, bool] = {
    Family.CONSENT: False,
    Family.OPT_OUT: True,
    Family.GUARDIAN_CONSENT: False,
    Family.ACCOUNT_CLOSED: True,
    Family.DELETION_REQUESTED: True,
    Family.SERVICE_ACTIVE: False,
}

#: families whose facts carry a scope and whose questions name a purpose and a recipient
SCOPED_FAMILIES: frozenset[Family] = frozenset(
    {Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT, Family.SERVICE_ACTIVE})

#: fact types that may carry a scope (SERVICE_ENDED ends the service named by its id, whatever it covered)
SCOPED_TYPES: frozenset[FactType] = frozenset(
    t for t, (fam, _) in FACT_FAMILY.items() if fam in SCOPED_FAMILIES and t is not FactType.SERVICE_ENDED)


class Scope(NamedTuple):
    """What a consent, opt-out, guardian consent or service covers. ``None`` means "any".

    A scope is a filter: ``Scope("marketing")`` covers all marketing, by us and by any
    recipient; ``Scope(recipient_type="business_partner")`` covers disclosures to business
    partners for any purpose. A scope that names a recipient type or id covers disclosures only
    (processing by ourselves has no recipient to match). A scope naming a recipient id covers
    that recipient under any type. The purpose ``third_party_sharing`` (the packs' consent of that
    name) covers every disclosure, whatever its purpose: ``Scope("third_party_sharing")`` is consent,
    or its withdrawal, to disclosure to any third party.
    """

    purpose: str | None = None
    recipient_type: str | None = None
    recipient_id: str | None = None

    def covers(self, purpose: str | None, recipient_type: str | None, recipient_id: str | None) -> bool:
        """Names are compared as words (:func:`same_name`): a withdrawal the consent platform spells
        ``Marketing`` or ``travel_partner_cn`` is not slipped past by an event's ``marketing`` or
        ``Travel-Partner-CN``. A scope naming a recipient id covers that recipient whatever type the
        event gives it (an event must not escape a withdrawal from partner X by calling X an affiliate)."""
        if self.purpose is not None and not same_name(self.purpose, purpose) and not (
                (recipient_type is not None or recipient_id is not None) and _words(self.purpose) == _SHARING):
            return False  # a purpose named third-party sharing covers every disclosure, whatever its purpose
        if self.recipient_id is not None:
            return same_name(self.recipient_id, recipient_id)
        return self.recipient_type is None or same_name(self.recipient_type, recipient_type)


#: the scope purpose that means "disclosure to any third party" (the packs' consent flag third_party_sharing:
#: inper bullet 8 "our disclosure of data to a third party"; thisproduct 3.A "disclosure to third parties")
THIRD_PARTY_SHARING = "third_party_sharing"


def same_name(fact: str, event: str | None) -> bool:
    """Whether a fact's scope name and an event's name are the same words: case, blanks at either end
    and runs of blanks, ``_`` and ``-`` do not count."""
    if event is None:
        return False
    return fact == event or _words(fact) == _words(event)


def _words(name: str) -> str:
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())


_SHARING = _words(THIRD_PARTY_SHARING)


def name_key(name: str) -> str:
    """A scope or vocabulary name as :func:`same_name` compares it (case, blanks, ``_``/``-`` ignored)."""
    return _words(name)


EVERYTHING = Scope()


@dataclass(frozen=True, slots=True)
class SubjectFact:
    """One fact as the producing system states it (``schemas/subject_fact.avsc``)."""

    fact_id: str
    subject_id: str
    type: FactType
    effective_at: datetime
    recorded_at: datetime
    source_system: str
    scope: Scope | None = None
    birth_date: date | None = None
    service_id: str | None = None

    @property
    def family(self) -> Family:
        return FACT_FAMILY[self.type][0]


class FactRef(NamedTuple):
    """Where a fact sits in the facts log: Kafka partition and offset (a file: 0 and its line)."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}@{self.offset}"


class LogTime(IntEnum):
    """Whose clock a fact's Kafka timestamp is (Kafka's own codes): none (a file), the producing
    client's (``CreateTime``: a claim, like ``recorded_at``) or the broker's (``LogAppendTime``).
    ``BOUND`` is ours: a producer-stamped fact logged after broker-stamped ones in its partition (the
    topic's timestamp type was changed back for it); its time is a lower bound of when it was logged,
    from the log's order and the auditor's own reads (:class:`auditor.ledger.store.LogBound`)."""

    NONE = 0
    CREATE = 1
    APPEND = 2
    BOUND = 3


class Entry(NamedTuple):
    """A fact as the ledger keeps it: no subject id; ordered by its first four fields.

    Order (the precedence of facts): effective time, then recorded time, then log position.
    ``logged_us`` is the fact's Kafka timestamp (-1: none, a file) and ``logged_by`` whose clock
    it is (:class:`LogTime`): a permissive fact is in force only once the broker's clock says it
    was in the log (:func:`auditor.ledger.asof.known_us`).
    """

    effective_us: int
    recorded_us: int
    partition: int
    offset: int
    fact_id: str
    type: FactType
    source_system: str
    scope: Scope | None = None
    birth_date: date | None = None
    service_id: str | None = None
    logged_us: int = -1
    logged_by: LogTime = LogTime.NONE

    @property
    def ref(self) -> FactRef:
        return FactRef(self.partition, self.offset)

    @property
    def family(self) -> Family:
        return FACT_FAMILY[self.type][0]

    @property
    def value(self) -> bool | date | None:
        family, value = FACT_FAMILY[self.type]
        return self.birth_date if family is Family.BIRTH_DATE else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(t: datetime) -> int:
    """Microseconds since the Unix epoch (UTC) of an aware datetime, exactly."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def entry_of(fact: SubjectFact, ref: FactRef) -> Entry:
    return Entry(to_us(fact.effective_at), to_us(fact.recorded_at), ref.partition, ref.offset, fact.fact_id,
                 fact.type, fact.source_system, fact.scope, fact.birth_date, fact.service_id)


class Query(NamedTuple):
    """One question to the ledger. ``purpose`` and the recipient are used by scoped families only."""

    family: Family
    purpose: str | None = None
    recipient_type: str | None = None
    recipient_id: str | None = None


class Reading(NamedTuple):
    """The ledger's answer: ``value`` is None when no fact answers the question (an age is an int).

    ``refs`` are the facts that decided it (for a service that ended, the end); ``since_us``
    is the effective time of the deciding fact.
    """

    value: bool | int | date | None
    refs: tuple[FactRef, ...] = ()
    since_us: int | None = None


UNKNOWN = Reading(None)


class Provenance(NamedTuple):
    """Which ledger facts a decision read: the partition, how far it had been applied
    (``through_offset``, -1 for none), and the offsets of the facts that decided an answer.
    Replaying the facts up to ``through_offset`` reproduces every answer."""

    partition: int
    through_offset: int
    fact_offsets: tuple[int, ...]
