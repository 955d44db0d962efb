"""The AuditRecord domain type and the builders that make one from an Event and its Decision.

A record keeps the facts an investigator needs, and enough of them to rebuild an Event with
pseudonymous ids (:func:`record_to_event`) for what-if re-evaluation. Subject and actor appear
only as keyed pseudonyms; the raw identifiers never reach a record. A rejected input gets a
record too, with a bounded reason label and a redacted message instead of facts.

Records are built unsealed (``seq == -1``); :func:`auditor.trail.chain.seal` places them in their
chain.

A record has a size budget: a text fact longer than :data:`MAX_TEXT` characters is cut to its first
:data:`CUT_KEEP` characters followed by a marker with its full length and SHA-256
(``…[cut: 262000 chars, sha256:9f2c…]``), and a reason that quotes such a value quotes the cut
form, so no reason repeats an unbounded value (:func:`cut_text`, :func:`bound_text`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Mapping, NamedTuple, Protocol

from auditor import __version__
from auditor.events.model import (
    Actor,
    ActorOrganisation,
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

#: text facts up to this many characters are kept whole; longer ones are cut (see cut_text)
MAX_TEXT = 1024
#: how many leading characters of a cut text are kept in front of the marker
CUT_KEEP = 256
#: a reason longer than this, after the long values it quotes are cut, is cut itself
MAX_REASON = 4096


def cut_text(text: str, keep: int = CUT_KEEP) -> str:
    """``text`` when it has at most :data:`MAX_TEXT` characters, else its first ``keep`` characters
    and a marker naming the full length and the SHA-256 of the full text (UTF-8)."""
    if len(text) <= MAX_TEXT:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:keep]}…[cut: {len(text)} chars, sha256:{digest}]"


def _opt_cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_TEXT else cut_text(text)


def long_texts(event: Event) -> tuple[str, ...]:
    """The event's text values longer than :data:`MAX_TEXT` (what a reason must not repeat)."""
    r, a = event.recipient, event.actor
    texts = (event.event_id, event.policy_id, event.source_system, event.purpose, a.id, a.role,
             event.subject.id, event.subject.region, event.legal_basis, event.legal_request.reference,
             event.transfer.destination_country, *event.data_categories,
             *(() if r is None else (r.type, r.id, r.country)), *event.attributes.keys(), *event.attributes.values())
    return tuple(sorted({t for t in texts if t is not None and len(t) > MAX_TEXT}, key=len, reverse=True))


_LONG_RUN = re.compile(rf"\S{{{MAX_TEXT + 1},}}")


def bound_text(text: str, long_values: tuple[str, ...] = (), limit: int = MAX_REASON) -> str:
    """``text`` with every long value it quotes (as is, or lower-cased as reasons print it, or any
    run of more than :data:`MAX_TEXT` non-space characters) replaced by its cut form, then cut
    itself when it is still longer than ``limit`` (a reason, a violation message)."""
    if len(text) <= MAX_TEXT:
        return text
    for value in long_values:
        for form in {value, value.lower()}:
            if form in text:
                text = text.replace(form, cut_text(form))
    if len(text) > MAX_TEXT:
        text = _LONG_RUN.sub(lambda m: cut_text(m.group(0)), text)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:CUT_KEEP]}…[cut: {len(text)} chars, sha256:{digest}]"


def bound_decision(d: DecisionFacts, long_values: tuple[str, ...]) -> DecisionFacts:
    """``d`` with every reason bounded (:func:`bound_text`); ``d`` itself when all are short."""
    if all(len(v.reason) <= MAX_TEXT for v in d.violations):
        return d
    return d._replace(violations=tuple(v._replace(reason=bound_text(v.reason, long_values))
                                       for v in d.violations))


def bounded_facts(f: Facts) -> Facts:
    """``f`` with every text fact cut to the budget (:func:`cut_text`)."""
    r = f.recipient
    return f._replace(
        policy_id=cut_text(f.policy_id), source_system=cut_text(f.source_system),
        actor_role=_opt_cut(f.actor_role), subject_region=_opt_cut(f.subject_region),
        data_categories=tuple(cut_text(c) for c in f.data_categories), purpose=cut_text(f.purpose),
        recipient=None if r is None else r._replace(type=cut_text(r.type), id=cut_text(r.id),
                                                    country=_opt_cut(r.country)),
        legal_basis=_opt_cut(f.legal_basis), destination_country=_opt_cut(f.destination_country),
        attributes=tuple((cut_text(k), cut_text(v)) for k, v in f.attributes),
    )


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
    #: last in the tuple so positional construction keeps working; in the schema they precede record_hash
    ledger: LedgerFacts | None = None                  # revision 2
    #: revision 3: facts of the event that revisions 1 and 2 did not store (None in their records)
    actor_organisation: ActorOrganisation | None = None
    legal_request_reference: str | None = None

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
                 ledger: LedgerFacts | None = None, record_type: RecordType = RecordType.DECISION,
                 short: bool = False) -> AuditRecord:
    """An unsealed record of one audited event, within the size budget (long texts cut, reasons
    bounded). ``digest`` defaults to :func:`event_digest`; ``decided`` may pass
    ``decision_facts(decision)`` when the caller already has it; ``ledger`` says which
    subject-ledger facts the decision read (CORRECTION records: and what it corrects); ``short``
    says the caller knows no text of the event is longer than :data:`MAX_TEXT` (its input was
    shorter), which skips the cuts."""
    facts = event_facts(event, pseudonymizer)
    decided = decided if decided is not None else decision_facts(decision)
    event_id, reference = event.event_id, event.legal_request.reference
    if not short:
        long_values = long_texts(event)
        if long_values:
            facts = bounded_facts(facts)
            event_id, reference = cut_text(event_id), _opt_cut(reference)
        decided = bound_decision(decided, long_values)
    return AuditRecord(
        chain_id=source.chain_id,
        record_type=record_type,
        source=source,
        event_id=event_id,
        input_digest=digest if digest is not None else event_digest(event),
        processed_at=now,
        auditor_version=version,
        instance_id=instance_id,
        pseudonym_key_id=pseudonymizer.key_id,
        facts=facts,
        decision=decided,
        ledger=ledger,
        actor_organisation=event.actor.organisation,
        legal_request_reference=reference,
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
    """Rebuild the audited Event from a record's facts, with pseudonyms in place of ids.

    A record of revision 1 or 2 did not store the actor's organisation or the legal request's
    reference: the event gets ``UNKNOWN`` and no reference, as a producer that did not state them."""
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
        actor=Actor(type=f.actor_type, id=f.actor_pseudonym, role=f.actor_role,
                    organisation=record.actor_organisation or ActorOrganisation.UNKNOWN),
        subject=Subject(id=f.subject_pseudonym, age=f.subject_age, is_minor=f.subject_is_minor,
                        region=f.subject_region),
        data_categories=f.data_categories,
        purpose=f.purpose,
        recipient=None if f.recipient is None else Recipient(
            f.recipient.type, f.recipient.id, f.recipient.country, f.recipient.on_our_behalf),
        identifiability=f.identifiability,
        legal_basis=f.legal_basis,
        legal_request=LegalRequest(type=f.legal_request_type, reference=record.legal_request_reference),
        consent=ConsentState(marketing=f.consent_marketing,
                             third_party_sharing=f.consent_third_party_sharing,
                             guardian=f.consent_guardian,
                             marketing_opt_out=f.consent_marketing_opt_out),
        transfer=Transfer(cross_border=f.cross_border, destination_country=f.destination_country,
                          safeguard=f.safeguard),
        attributes=attributes,
    )
