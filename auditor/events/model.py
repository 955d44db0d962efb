"""The Event domain type: one access, use or disclosure of personal data.

Mirrors ``schemas/privacy_event.avsc`` field by field. Instances are immutable;
decoders in :mod:`auditor.events.codec` are the only way in from the outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Mapping


class EventKind(str, Enum):
    ACCESS = "ACCESS"
    USE = "USE"
    DISCLOSURE = "DISCLOSURE"


class ActorType(str, Enum):
    EMPLOYEE = "EMPLOYEE"
    CONTRACTOR = "CONTRACTOR"
    SERVICE = "SERVICE"
    AGENT = "AGENT"
    OTHER = "OTHER"


class ActorOrganisation(str, Enum):
    """Whose organisation the actor belongs to. UNKNOWN when the producer does not say."""

    UNKNOWN = "UNKNOWN"
    OURS = "OURS"                  # the policy's own company: its staff and systems
    PROCESSOR = "PROCESSOR"        # a service provider acting for us, on our instructions
    THIRD_PARTY = "THIRD_PARTY"    # anyone else


class Identifiability(str, Enum):
    IDENTIFIED = "IDENTIFIED"
    PSEUDONYMISED = "PSEUDONYMISED"
    DEIDENTIFIED = "DEIDENTIFIED"
    AGGREGATE = "AGGREGATE"


class LegalRequestType(str, Enum):
    NONE = "NONE"
    COURT_ORDER = "COURT_ORDER"
    SUBPOENA = "SUBPOENA"
    WARRANT = "WARRANT"
    AUTHORITY_REQUEST = "AUTHORITY_REQUEST"
    REQUIRED_BY_LAW = "REQUIRED_BY_LAW"


class Safeguard(str, Enum):
    NONE = "NONE"
    ADEQUACY_DECISION = "ADEQUACY_DECISION"
    STANDARD_CONTRACTUAL_CLAUSES = "STANDARD_CONTRACTUAL_CLAUSES"
    BINDING_CORPORATE_RULES = "BINDING_CORPORATE_RULES"
    CONSENT = "CONSENT"


@dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    id: str
    role: str | None = None
    organisation: ActorOrganisation = ActorOrganisation.UNKNOWN


@dataclass(frozen=True, slots=True)
class Subject:
    id: str
    age: int | None = None
    is_minor: bool | None = None
    region: str | None = None

    def minor(self, minor_age: int) -> bool | None:
        """True when ``is_minor`` says so or ``age`` is under ``minor_age`` (either suffices); False
        when a stated fact says adult and neither says minor; None when neither is stated (packs say
        what that means). The policy engine reads it through ``conditions.subject_minor``, the same rule."""
        if self.is_minor or (self.age is not None and self.age < minor_age):
            return True
        return None if self.is_minor is None and self.age is None else False


@dataclass(frozen=True, slots=True)
class Recipient:
    type: str
    id: str
    country: str | None = None
    on_our_behalf: bool | None = None


@dataclass(frozen=True, slots=True)
class LegalRequest:
    type: LegalRequestType = LegalRequestType.NONE
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentState:
    marketing: bool = False
    third_party_sharing: bool = False
    guardian: bool = False
    marketing_opt_out: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    cross_border: bool = False
    destination_country: str | None = None
    safeguard: Safeguard = Safeguard.NONE


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    occurred_at: datetime
    kind: EventKind
    policy_id: str
    source_system: str
    actor: Actor
    subject: Subject
    data_categories: tuple[str, ...]
    purpose: str
    recipient: Recipient | None = None
    identifiability: Identifiability = Identifiability.IDENTIFIED
    legal_basis: str | None = None
    legal_request: LegalRequest = field(default_factory=LegalRequest)
    consent: ConsentState = field(default_factory=ConsentState)
    transfer: Transfer = field(default_factory=Transfer)
    attributes: Mapping[str, str] = field(default_factory=dict)
