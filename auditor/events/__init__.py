"""Domain types for privacy events and their codecs (JSON lines and Avro)."""

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

__all__ = [
    "Actor",
    "ActorOrganisation",
    "ActorType",
    "ConsentState",
    "Event",
    "EventKind",
    "Identifiability",
    "LegalRequest",
    "LegalRequestType",
    "Recipient",
    "Safeguard",
    "Subject",
    "Transfer",
]
