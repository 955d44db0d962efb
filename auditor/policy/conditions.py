"""Conditions a rule can require, each a small value with ``holds`` and a plain-words ``reason``.

Conditions are pure functions of the event (and the pack's minor age). ``reason`` explains,
for a privacy officer, why the condition failed for this event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from auditor.events.model import ActorType, Event, Identifiability, LegalRequestType, Safeguard


class Condition(Protocol):
    @property
    def name(self) -> str: ...

    def holds(self, e: Event, minor_age: int) -> bool: ...

    def reason(self, e: Event, minor_age: int) -> str: ...


def _words(values: frozenset[str] | tuple[str, ...]) -> str:
    return ", ".join(sorted(v.lower().replace("_", " ") for v in values))


@dataclass(frozen=True, slots=True)
class Consent:
    flag: str  # marketing | third_party_sharing | guardian
    name: str = "consent"

    def holds(self, e: Event, minor_age: int) -> bool:
        return bool(getattr(e.consent, self.flag))

    def reason(self, e: Event, minor_age: int) -> str:
        return f"the subject has not given {self.flag.replace('_', '-')} consent"


@dataclass(frozen=True, slots=True)
class NotOptedOut:
    topic: str = "marketing"
    name: str = "not_opted_out"

    def holds(self, e: Event, minor_age: int) -> bool:
        return not e.consent.marketing_opt_out

    def reason(self, e: Event, minor_age: int) -> str:
        return "the subject has opted out of marketing"


@dataclass(frozen=True, slots=True)
class LegalRequestRequired:
    accepted: frozenset[LegalRequestType]
    name: str = "legal_request"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.legal_request.type in self.accepted

    def reason(self, e: Event, minor_age: int) -> str:
        if e.legal_request.type is LegalRequestType.NONE:
            return f"no legal request backs it (needs: {_words(frozenset(t.value for t in self.accepted))})"
        return (f"a {e.legal_request.type.value.lower().replace('_', ' ')} is not an accepted legal "
                f"request here (needs: {_words(frozenset(t.value for t in self.accepted))})")


@dataclass(frozen=True, slots=True)
class IdentifiabilityIn:
    accepted: frozenset[Identifiability]
    name: str = "identifiability"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.identifiability in self.accepted

    def reason(self, e: Event, minor_age: int) -> str:
        return (f"the data is {e.identifiability.value.lower()}; only "
                f"{_words(frozenset(i.value for i in self.accepted))} data is allowed")


@dataclass(frozen=True, slots=True)
class OnOurBehalf:
    name: str = "on_our_behalf"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.recipient is not None and e.recipient.on_our_behalf is True

    def reason(self, e: Event, minor_age: int) -> str:
        if e.recipient is None or e.recipient.on_our_behalf is None:
            return "it is not established that the recipient processes the data only on our behalf"
        return "the recipient uses the data for its own purposes, not only on our behalf"


@dataclass(frozen=True, slots=True)
class GuardianConsentIfMinor:
    name: str = "guardian_consent_if_minor"

    def holds(self, e: Event, minor_age: int) -> bool:
        return not e.subject.minor(minor_age) or e.consent.guardian

    def reason(self, e: Event, minor_age: int) -> str:
        return f"the subject is a minor (under {minor_age}) and no parent or guardian consented"


@dataclass(frozen=True, slots=True)
class SafeguardIfCrossBorder:
    accepted: frozenset[Safeguard]
    name: str = "safeguard_if_cross_border"

    def holds(self, e: Event, minor_age: int) -> bool:
        return not e.transfer.cross_border or e.transfer.safeguard in self.accepted

    def reason(self, e: Event, minor_age: int) -> str:
        have = e.transfer.safeguard.value.lower().replace("_", " ")
        return (f"the cross-border transfer relies on safeguard '{have}'; needs one of: "
                f"{_words(frozenset(s.value for s in self.accepted))}")


@dataclass(frozen=True, slots=True)
class OnlyCategories:
    allowed: frozenset[str]
    name: str = "only_categories"

    def holds(self, e: Event, minor_age: int) -> bool:
        return all(c in self.allowed for c in e.data_categories)

    def reason(self, e: Event, minor_age: int) -> str:
        extra = sorted(set(e.data_categories) - self.allowed)
        return f"it includes {', '.join(extra)}, which this rule does not cover"


@dataclass(frozen=True, slots=True)
class PurposeIn:
    purposes: frozenset[str]
    name: str = "purposes"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.purpose in self.purposes

    def reason(self, e: Event, minor_age: int) -> str:
        return f"purpose {e.purpose} is not one this rule allows ({', '.join(sorted(self.purposes))})"


@dataclass(frozen=True, slots=True)
class RoleIn:
    roles: frozenset[str]
    name: str = "roles"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.actor.role in self.roles

    def reason(self, e: Event, minor_age: int) -> str:
        who = e.actor.role or "an actor with no role"
        return f"{who} is not among the roles with a need to know ({', '.join(sorted(self.roles))})"


@dataclass(frozen=True, slots=True)
class ActorTypeIn:
    types: frozenset[ActorType]
    name: str = "actor_types"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.actor.type in self.types

    def reason(self, e: Event, minor_age: int) -> str:
        return f"the actor is a {e.actor.type.value.lower()}, not {_words(frozenset(t.value for t in self.types))}"


@dataclass(frozen=True, slots=True)
class AttributeEquals:
    key: str
    value: str
    name: str = "attribute"

    def holds(self, e: Event, minor_age: int) -> bool:
        return e.attributes.get(self.key) == self.value

    def reason(self, e: Event, minor_age: int) -> str:
        return f"fact '{self.key}' is {e.attributes.get(self.key, 'not stated')!r}, needs {self.value!r}"


@dataclass(frozen=True, slots=True)
class AnyOf:
    options: tuple[Condition, ...]
    name: str = "any_of"

    def holds(self, e: Event, minor_age: int) -> bool:
        return any(c.holds(e, minor_age) for c in self.options)

    def reason(self, e: Event, minor_age: int) -> str:
        return "none of the alternatives holds: " + "; or ".join(c.reason(e, minor_age) for c in self.options)

