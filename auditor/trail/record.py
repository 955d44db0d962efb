"""The AuditRecord domain type and the builders that make one from an Event and its Decision.

A record keeps the facts an investigator needs, and enough of them to rebuild an Event with
pseudonymous ids (:func:`record_to_event`) for what-if re-evaluation. Subject and actor appear
only as keyed pseudonyms; the raw identifiers never reach a record. A rejected input gets a
record too, with a bounded reason label and a redacted message instead of facts.

Records are built unsealed (``seq == -1``); :func:`auditor.trail.chain.seal` places them in their
chain.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Mapping, NamedTuple, Protocol

from auditor import __version__
from auditor.events.model import (
    Actor,
    ActorType,
    ConsentState,
    Event,
    EventKind,
    Identifiability,
    LegalRequest,
    LegalRequestType,
    Recipient,
    Safeguard,
    Subject,
    Transfer,
)
from auditor.policy.decision import Decision, Verdict
from auditor.trail.chainid import chain_id, file_chain_id


class RecordType(StrEnum):
    DECISION = "DECISION"
    REJECTION = "REJECTION"
    CORRECTION = "CORRECTION"  # an earlier record's event judged again after a late ledger fact


class Pseudonymize(Protocol):
    key_id: str

    def __call__(self, identifier: str) -> str: ...


class SourceRef(NamedTuple):
    """Where the input came from: a Kafka topic/partition/offset, or a file and line."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = None

    @classmethod
    def kafka(cls, topic: str, partition: int, offset: int) -> SourceRef:
        return cls(topic=topic, partition=partition, offset=offset)

    @classmethod
    def from_file(cls, file: str, line: int) -> SourceRef:
        return cls(file=file, line=line)

    @property
    def chain_id(self) -> str:
        """One chain per source partition: ``"<topic>/<partition>"`` or ``"file:<name>"``."""
        return chain_id(self.topic, self.partition) if self.topic is not None else file_chain_id(self.file)

    def __str__(self) -> str:
        if self.topic is not None:
            return f"{self.topic}/{self.partition}@{self.offset}"
        return f"{self.file}:{self.line}"


class RecipientFacts(NamedTuple):
    type: str
    id: str
    country: str | None = None
    on_our_behalf: bool | None = None


class Facts(NamedTuple):
    """What happened, with subject and actor pseudonymised.

    A NamedTuple rather than a frozen dataclass: one is built per audited event, and a frozen
    dataclass of 25 fields costs several times more to construct.
    """

    kind: EventKind
    occurred_at: datetime
    policy_id: str
    source_system: str
    actor_type: ActorType
    actor_pseudonym: str
    actor_role: str | None
    subject_pseudonym: str
    subject_age: int | None
    subject_is_minor: bool | None
    subject_region: str | None
    data_categories: tuple[str, ...]
    purpose: str
    recipient: RecipientFacts | None
    identifiability: Identifiability
    legal_basis: str | None
    legal_request_type: LegalRequestType
    consent_marketing: bool
    consent_third_party_sharing: bool
    consent_guardian: bool
    consent_marketing_opt_out: bool
    cross_border: bool
    destination_country: str | None
    safeguard: Safeguard
    attributes: tuple[tuple[str, str], ...] = ()


class ViolationFacts(NamedTuple):
    rule_id: str
    clause: str
    kind: str
    severity: str
    reason: str


class DecisionFacts(NamedTuple):
    verdict: Verdict
    pack_id: str
    pack_hash: str
    violations: tuple[ViolationFacts, ...]
    permitted_by: str | None = None
    permitted_clause: str | None = None

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(v.rule_id for v in self.violations)


class Rejection(NamedTuple):
    reason: str
    message: str


class LedgerRead(NamedTuple):
    """One question a decision asked the subject ledger, and the answer a fact gave."""

    question: str                 # the ledger family: consent, opt_out, birth_date, ...
    purpose: str | None
    recipient_type: str | None
    recipient_id: str | None
    value: bool | str | None      # a birth date as YYYY-MM-DD
    fact_offsets: tuple[int, ...]


class CorrectedRecord(NamedTuple):
    chain_id: str
    seq: int
    cause_offsets: tuple[int, ...]


class LedgerFacts(NamedTuple):
    """Which ledger facts a decision read (see :mod:`auditor.ledger.join`)."""

    partition: int
    through_offset: int
    reads: tuple[LedgerRead, ...]
    corrects: CorrectedRecord | None = None


class AuditRecord(NamedTuple):
    """One trail entry. ``seq``/``prev_hash``/``record_hash`` are set when the record is sealed.

    A NamedTuple (immutable, compared by value) because one is built per audited event.
    """

    chain_id: str
    record_type: RecordType
    source: SourceRef
    event_id: str | None
    input_digest: bytes
    processed_at: datetime
    auditor_version: str
    instance_id: str
    pseudonym_key_id: str
    facts: Facts | None = None
    decision: DecisionFacts | None = None
    rejection: Rejection | None = None
    seq: int = -1
    prev_hash: bytes = b""
    record_hash: bytes = b""
    #: last in the tuple so positional construction keeps working; in the schema it precedes record_hash
    ledger: LedgerFacts | None = None

    @property
    def sealed(self) -> bool:
        return self.seq >= 0 and len(self.record_hash) == 32


# ---------------------------------------------------------------- builders

def decision_facts(decision: Decision) -> DecisionFacts:
    return DecisionFacts(
        verdict=decision.verdict,
        pack_id=decision.pack_id,
        pack_hash=decision.pack_hash,
        violations=tuple(ViolationFacts(v.rule.rule_id, v.rule.clause, v.kind.value,
                                        v.rule.severity, v.reason) for v in decision.violations),
        permitted_by=decision.permitted_by.rule_id if decision.permitted_by else None,
        permitted_clause=decision.permitted_by.clause if decision.permitted_by else None,
    )


def event_facts(event: Event, pseudonymize: Pseudonymize) -> Facts:
    # Positional, in Facts' field order: this runs once per audited event.
    r, actor, subject, consent, transfer = event.recipient, event.actor, event.subject, event.consent, event.transfer
    return Facts(
        event.kind, event.occurred_at, event.policy_id, event.source_system,
        actor.type, pseudonymize(actor.id), actor.role,
        pseudonymize(subject.id), subject.age, subject.is_minor, subject.region,
        tuple(event.data_categories), event.purpose,
        None if r is None else RecipientFacts(r.type, r.id, r.country, r.on_our_behalf),
        event.identifiability, event.legal_basis, event.legal_request.type,
        consent.marketing, consent.third_party_sharing, consent.guardian, consent.marketing_opt_out,
        transfer.cross_border, transfer.destination_country, transfer.safeguard,
        tuple(sorted(event.attributes.items())) if event.attributes else (),
    )


def event_digest(event: Event) -> bytes:
    """SHA-256 of the event's canonical bytes: its Avro encoding under the bundled schema.

    The Kafka path and the file path both digest these bytes, so one event has one digest.
    """
    from auditor.events.codec import canonical_bytes

    return hashlib.sha256(canonical_bytes(event)).digest()


def build_record(event: Event, decision: Decision, source: SourceRef, pseudonymizer: Pseudonymize,
                 instance_id: str, now: datetime, *, digest: bytes | None = None,
                 version: str = __version__, decided: DecisionFacts | None = None,
                 ledger: LedgerFacts | None = None, record_type: RecordType = RecordType.DECISION) -> AuditRecord:
    """An unsealed record of one audited event. ``digest`` defaults to :func:`event_digest`;
    ``decided`` may pass ``decision_facts(decision)`` when the caller already has it; ``ledger``
    says which subject-ledger facts the decision read (CORRECTION records: and what it corrects)."""
    return AuditRecord(
        chain_id=source.chain_id,
        record_type=record_type,
        source=source,
        event_id=event.event_id,
        input_digest=digest if digest is not None else event_digest(event),
        processed_at=now,
        auditor_version=version,
        instance_id=instance_id,
        pseudonym_key_id=pseudonymizer.key_id,
        facts=event_facts(event, pseudonymizer),
        decision=decided if decided is not None else decision_facts(decision),
        ledger=ledger,
    )


def build_rejection(raw_digest: bytes, reason: str, message: str, source: SourceRef, *,
                    pseudonym_key_id: str, instance_id: str, now: datetime,
                    event_id: str | None = None, version: str = __version__) -> AuditRecord:
    """An unsealed record of an input that could not be audited.

    ``reason`` is a bounded label (e.g. DecodeError.reason); ``message`` must already be
    redacted (DecodeError messages never carry payload values). Pass ``raw_digest`` as the
    SHA-256 of the raw input bytes (see :func:`raw_digest`).
    """
    return AuditRecord(
        chain_id=source.chain_id,
        record_type=RecordType.REJECTION,
        source=source,
        event_id=event_id,
        input_digest=raw_digest,
        processed_at=now,
        auditor_version=version,
        instance_id=instance_id,
        pseudonym_key_id=pseudonym_key_id,
        rejection=Rejection(reason=reason[:64], message=message[:500]),
    )


def raw_digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def record_to_event(record: AuditRecord) -> Event:
    """Rebuild the audited Event from a record's facts, with pseudonyms in place of ids."""
    f = record.facts
    if f is None:
        raise ValueError(f"record {record.chain_id}#{record.seq} is a rejection and has no event")
    attributes: Mapping[str, str] = dict(f.attributes)
    return Event(
        event_id=record.event_id or "",
        occurred_at=f.occurred_at,
        kind=f.kind,
        policy_id=f.policy_id,
        source_system=f.source_system,
        actor=Actor(type=f.actor_type, id=f.actor_pseudonym, role=f.actor_role),
        subject=Subject(id=f.subject_pseudonym, age=f.subject_age, is_minor=f.subject_is_minor,
                        region=f.subject_region),
        data_categories=f.data_categories,
        purpose=f.purpose,
        recipient=None if f.recipient is None else Recipient(
            f.recipient.type, f.recipient.id, f.recipient.country, f.recipient.on_our_behalf),
        identifiability=f.identifiability,
        legal_basis=f.legal_basis,
        legal_request=LegalRequest(type=f.legal_request_type),
        consent=ConsentState(marketing=f.consent_marketing,
                             third_party_sharing=f.consent_third_party_sharing,
                             guardian=f.consent_guardian,
                             marketing_opt_out=f.consent_marketing_opt_out),
        transfer=Transfer(cross_border=f.cross_border, destination_country=f.destination_country,
                          safeguard=f.safeguard),
        attributes=attributes,
    )
