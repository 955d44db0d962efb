"""Tests on the facts of an event: the building blocks of a rule's scope (``when``) and conditions.

Each test is a small frozen value with ``holds`` (pure: the event and its derived facts only), a
plain-words ``reason`` it failed, ``source`` (the test as the pack wrote it) and two sets of fact
names: ``reads`` (every fact it looks at: the memo key and the probe use it) and ``unknown_unhandled``
(optional facts it reads without saying what their absence means: lint warns about them unless the
pack states a reading under ``absent:``).

Absent facts: a fact the producer may leave out (age, region, role, organisation, on_our_behalf,
countries, legal basis, attributes) is *unknown*. A test matches an unknown fact only when its list
names ``unknown`` (``~`` for attributes). Consent flags, opt-out, legal request, identifiability,
actor type and cross_border have schema defaults (false, false, NONE, IDENTIFIED, OTHER, false):
absent means the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from auditor.events.model import (
    ActorOrganisation,
    ActorType,
    Event,
    EventKind,
    Identifiability,
    LegalRequestType,
    Safeguard,
    Subject,
)


def subject_minor(s: Subject, minor_age: int) -> bool | None:
    """Whether the subject is a minor: True when ``is_minor`` says so **or** ``age`` is under
    ``minor_age`` (the strict reading: either fact suffices, so an event saying ``age: 16,
    is_minor: false`` is judged a minor's); False when a stated fact says adult and neither says
    minor; None (unknown age) when neither is stated."""
    age, flag = s.age, s.is_minor
    if flag is True or (age is not None and age < minor_age):
        return True
    if flag is None and age is None:
        return None
    return False


class Derived:
    """Facts derived once per evaluation: the data elements the event holds, the subject's minority."""

    __slots__ = ("atoms", "minor", "minor_age")

    def __init__(self, atoms: frozenset[str], minor: bool | None, minor_age: int) -> None:
        self.atoms, self.minor, self.minor_age = atoms, minor, minor_age


class Condition(Protocol):
    @property
    def source(self) -> str: ...

    @property
    def reads(self) -> frozenset[str]: ...

    @property
    def unknown_unhandled(self) -> frozenset[str]: ...

    def holds(self, e: Event, x: Derived) -> bool: ...

    def reason(self, e: Event, x: Derived) -> str: ...


def words(values: object) -> str:
    out = []
    for v in values:  # type: ignore[attr-defined]
        v = getattr(v, "value", v)
        out.append("unknown" if v is None else str(v).lower().replace("_", " "))
    return ", ".join(sorted(set(out)))   # 'legal_obligation' and 'legal obligation' read the same


def _show(v: object) -> str:
    v = getattr(v, "value", v)
    return "unknown" if v is None else str(v)


# ---------------------------------------------------------------- one fact against a set of values

#: bound of the reasons one test keeps (see FactIn.reason)
_REASONS_MAX = 64

@dataclass(frozen=True, slots=True)
class FactIn:
    """``<test>: [values]``: the fact named ``fact`` has one of ``accepted`` (None = unknown)."""

    test: str
    fact: str
    accepted: frozenset[object]
    source: str
    optional: bool = False
    reads: frozenset[str] = field(default=frozenset())
    unknown_unhandled: frozenset[str] = field(default=frozenset())
    get: Callable[[Event, Derived], object] = field(default=lambda e, x: None, compare=False, repr=False)
    #: reasons already written, by (value read, minor age): a reason is a function of those alone
    _reasons: dict[tuple[object, int], str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset({self.fact}))
        object.__setattr__(self, "get", FACTS[self.fact])
        if self.optional and None not in self.accepted:
            object.__setattr__(self, "unknown_unhandled", frozenset({self.fact}))

    def holds(self, e: Event, x: Derived) -> bool:
        return self.get(e, x) in self.accepted

    def reason(self, e: Event, x: Derived) -> str:
        have = self.get(e, x)
        key = (have, x.minor_age)
        hit = self._reasons.get(key)
        if hit is None:
            hit = self._reason(have, x.minor_age)
            # bounded: free-text facts (role, recipient id) can take countless values
            if len(self._reasons) < _REASONS_MAX and (not isinstance(have, str) or len(have) <= 64):
                self._reasons[key] = hit
        return hit

    def _reason(self, have: object, minor_age: int) -> str:
        special = SPECIAL_REASONS.get((self.fact, have))
        if special is not None:
            return special.format(minor_age=minor_age)
        label = FACT_LABELS.get(self.fact, self.fact)
        return f"{label} is {words([have])}, not {'one of: ' if len(self.accepted) > 1 else ''}{words(self.accepted)}"


def _region(code: str | None) -> str | None:
    return code.upper() if code else None


def recipient_abroad(e: Event) -> bool | None:
    """Whether the recipient's country differs from the subject's (a disclosure abroad, whether or not
    the event states a transfer); None when there is no recipient or either country is unknown."""
    r = e.recipient
    if r is None:
        return None
    theirs, ours = _region(r.country), _region(e.subject.region)
    if theirs is None or ours is None:
        return None
    return theirs != ours


#: How each fact is read from an event. Optional facts may be None (unknown).
FACTS = {
    "kind": lambda e, x: e.kind,
    "purpose": lambda e, x: e.purpose,
    "recipient.type": lambda e, x: None if e.recipient is None else e.recipient.type,
    "recipient.id": lambda e, x: None if e.recipient is None else e.recipient.id,
    "recipient.country": lambda e, x: None if e.recipient is None else _region(e.recipient.country),
    "recipient.on_our_behalf": lambda e, x: None if e.recipient is None else e.recipient.on_our_behalf,
    "identifiability": lambda e, x: e.identifiability,
    "legal_request.type": lambda e, x: e.legal_request.type,
    "legal_basis": lambda e, x: e.legal_basis.lower() if e.legal_basis else None,
    "actor.type": lambda e, x: e.actor.type,
    "actor.role": lambda e, x: e.actor.role,
    "actor.organisation": lambda e, x: None if e.actor.organisation == ActorOrganisation.UNKNOWN  # or "UNKNOWN"
    else e.actor.organisation,
    "actor.is_subject": lambda e, x: e.actor.id == e.subject.id,
    "subject.minor": lambda e, x: x.minor,
    "subject.region": lambda e, x: _region(e.subject.region),
    "transfer.cross_border": lambda e, x: e.transfer.cross_border,
    "transfer.destination_country": lambda e, x: _region(e.transfer.destination_country),
    "transfer.safeguard": lambda e, x: e.transfer.safeguard,
    "recipient.abroad": lambda e, x: recipient_abroad(e),
}

FACT_LABELS = {
    "kind": "the kind", "purpose": "the purpose", "recipient.type": "the recipient type",
    "recipient.id": "the recipient", "recipient.country": "the recipient's country",
    "recipient.on_our_behalf": "on-our-behalf processing", "identifiability": "the data's identifiability",
    "legal_request.type": "the legal request", "legal_basis": "the legal basis", "actor.type": "the actor type",
    "actor.role": "the actor's role", "actor.organisation": "the actor's organisation",
    "actor.is_subject": "the actor being the subject",
    "subject.minor": "the subject being a minor", "subject.region": "the subject's region",
    "transfer.cross_border": "cross-border", "transfer.destination_country": "the transfer destination",
    "transfer.safeguard": "the transfer safeguard", "recipient.abroad": "the recipient being abroad",
}

SPECIAL_REASONS: dict[tuple[str, object], str] = {
    ("recipient.on_our_behalf", False): "the recipient uses the data for its own purposes, not only on our behalf",
    ("recipient.on_our_behalf", None): "it is not established that the recipient processes the data only on our behalf",
    ("subject.minor", True): "the subject is a minor (under {minor_age})",
    ("subject.minor", False): "the subject is an adult ({minor_age} or over)",
    ("subject.minor", None): "the subject's age is unknown",
    ("actor.role", None): "the actor has no stated role",
    ("actor.is_subject", True): "the actor is the data subject themselves",
    ("actor.is_subject", False): "the actor is someone other than the data subject",
    ("recipient.abroad", None): "the recipient's or the subject's country is not stated",
    ("legal_request.type", LegalRequestType.NONE): "no legal request backs it",
}

#: Facts the producer may leave out: tests on them must say what unknown means.
OPTIONAL_FACTS = frozenset({
    "recipient.country", "recipient.on_our_behalf", "legal_basis", "actor.role", "actor.organisation",
    "subject.minor", "subject.region", "transfer.destination_country", "recipient.abroad",
})


# ---------------------------------------------------------------- data categories

@dataclass(frozen=True, slots=True)
class CategoriesAny:
    """``categories: [...]``: the event holds at least one data element of these categories."""

    names: frozenset[str]
    atoms: frozenset[str]
    source: str
    reads: frozenset[str] = frozenset({"data_categories"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e: Event, x: Derived) -> bool:
        return not self.atoms.isdisjoint(x.atoms)

    def reason(self, e: Event, x: Derived) -> str:
        return f"the data ({', '.join(e.data_categories)}) holds nothing of {', '.join(sorted(self.names))}"


@dataclass(frozen=True, slots=True)
class OnlyCategories:
    """``only_categories: [...]``: every data element the event holds belongs to these categories."""

    allowed: frozenset[str]
    atoms: frozenset[str]
    source: str
    reads: frozenset[str] = frozenset({"data_categories"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e: Event, x: Derived) -> bool:
        return x.atoms <= self.atoms

    def reason(self, e: Event, x: Derived) -> str:
        extra = sorted(x.atoms - self.atoms)
        return (f"it includes {', '.join(extra)}, which is outside {', '.join(sorted(self.allowed))}")


# ---------------------------------------------------------------- consent

CONSENT_FLAGS = ("marketing", "third_party_sharing", "guardian")


@dataclass(frozen=True, slots=True)
class Consent:
    """``consent: marketing|third_party_sharing|guardian``: the flag is true (absent = not given)."""

    flag: str
    source: str
    reads: frozenset[str] = frozenset()
    unknown_unhandled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset({f"consent.{self.flag}"}))

    def holds(self, e: Event, x: Derived) -> bool:
        return bool(getattr(e.consent, self.flag))

    def reason(self, e: Event, x: Derived) -> str:
        who = "a parent or guardian has not" if self.flag == "guardian" else "the subject has not"
        return f"{who} given {self.flag.replace('_', '-')} consent"


@dataclass(frozen=True, slots=True)
class NotOptedOut:
    """``not_opted_out: marketing``: the subject has not opted out (absent = not opted out)."""

    source: str = "not_opted_out: marketing"
    reads: frozenset[str] = frozenset({"consent.marketing_opt_out"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e: Event, x: Derived) -> bool:
        return not e.consent.marketing_opt_out

    def reason(self, e: Event, x: Derived) -> str:
        return "the subject has opted out of marketing"


# ---------------------------------------------------------------- attributes

#: attribute values read as true/false in any case, quoted or not
BOOL_TEXT = frozenset({"true", "false"})

@dataclass(frozen=True, slots=True)
class AttributeEquals:
    """``attribute: {name: value | [values]}``: attribute ``key`` is one of ``values`` (None = absent).

    Attributes are strings. With ``booleans`` (the pack wrote ``true``/``false``, quoted or not), an
    attribute whose text is true or false in any case (``True``, ``FALSE``) is compared lower-cased."""

    key: str
    values: frozenset[str | None]
    source: str
    booleans: bool = False
    reads: frozenset[str] = frozenset()
    unknown_unhandled: frozenset[str] = frozenset()
    #: reasons already written, by the attribute's text (bounded, as FactIn's)
    _reasons: dict[str | None, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset({f"attributes.{self.key}"}))
        if None not in self.values:
            object.__setattr__(self, "unknown_unhandled", frozenset({f"attributes.{self.key}"}))

    @property
    def value(self) -> str:
        """One accepted value (the demo generator uses it to build a witness)."""
        return sorted(v for v in self.values if v is not None)[0]

    def holds(self, e: Event, x: Derived) -> bool:
        have = e.attributes.get(self.key)
        if self.booleans and have is not None and have.lower() in BOOL_TEXT:
            have = have.lower()
        return have in self.values

    def reason(self, e: Event, x: Derived) -> str:
        have = e.attributes.get(self.key)
        hit = self._reasons.get(have)
        if hit is None:
            hit = f"fact '{self.key}' is {'not stated' if have is None else repr(have)}, needs {words(self.values)}"
            if len(self._reasons) < _REASONS_MAX and (have is None or len(have) <= 64):
                self._reasons[have] = hit
        return hit


# ---------------------------------------------------------------- transfers

@dataclass(frozen=True, slots=True)
class TransferOutside:
    """``transfer_outside: [regions]``: the data goes to a destination outside them.

    A stated destination decides, whatever the ``cross_border`` flag says (a producer cannot keep a
    transfer to the US in scope of nothing by clearing the flag). With no destination stated, a
    cross-border transfer counts as outside (nothing shows it stays inside)."""

    inside: frozenset[str]
    source: str
    reads: frozenset[str] = frozenset({"transfer.cross_border", "transfer.destination_country"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e: Event, x: Derived) -> bool:
        dest = _region(e.transfer.destination_country)
        if dest is None:
            return e.transfer.cross_border
        return dest not in self.inside

    def reason(self, e: Event, x: Derived) -> str:
        dest = _region(e.transfer.destination_country)
        if dest is None:
            return "no destination is stated and the transfer is not cross-border"
        return f"the destination {dest} is inside the region"


@dataclass(frozen=True, slots=True)
class SafeguardIfCrossBorder:
    """``safeguard_if_cross_border``: not cross-border; or destination and subject both ``within`` one
    region (e.g. intra-EEA); or the destination is on an ``adequate`` list; or the transfer states an
    accepted safeguard. An unknown destination is neither within nor adequate. A transfer is
    cross-border when it says so, or when its stated destination differs from the subject's country."""

    safeguards: frozenset[Safeguard]
    adequate: frozenset[str]
    within: tuple[frozenset[str], ...]
    source: str
    reads: frozenset[str] = frozenset({"transfer.cross_border", "transfer.destination_country", "transfer.safeguard",
                                       "subject.region"})
    unknown_unhandled: frozenset[str] = frozenset()

    def holds(self, e: Event, x: Derived) -> bool:
        t = e.transfer
        dest, region = _region(t.destination_country), _region(e.subject.region)
        crosses = t.cross_border or (dest is not None and region is not None and dest != region)
        if not crosses or t.safeguard in self.safeguards:
            return True
        if dest is None:
            return False
        if dest in self.adequate:
            return True
        return any(dest in group and region in group for group in self.within)

    def reason(self, e: Event, x: Derived) -> str:
        have = words([e.transfer.safeguard])   # a Safeguard, or its plain string in a hand-built event
        dest = _show(_region(e.transfer.destination_country))
        needs = words(self.safeguards) or "none"
        return (f"the cross-border transfer to {dest} relies on safeguard '{have}'; needs one of: {needs}"
                + (", or an adequate destination" if self.adequate else ""))


# ---------------------------------------------------------------- combinators

@dataclass(frozen=True, slots=True)
class Not:
    inner: Condition
    source: str
    reads: frozenset[str] = frozenset()
    unknown_unhandled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", self.inner.reads)
        object.__setattr__(self, "unknown_unhandled", self.inner.unknown_unhandled)

    def holds(self, e: Event, x: Derived) -> bool:
        return not self.inner.holds(e, x)

    def reason(self, e: Event, x: Derived) -> str:
        return f"it is the case that {self.inner.source}, which this rule excludes"


@dataclass(frozen=True, slots=True)
class AnyOf:
    options: tuple[Condition, ...]
    source: str
    reads: frozenset[str] = frozenset()
    unknown_unhandled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset().union(*(c.reads for c in self.options)))
        object.__setattr__(self, "unknown_unhandled",
                           frozenset().union(*(c.unknown_unhandled for c in self.options)))

    def holds(self, e: Event, x: Derived) -> bool:
        for c in self.options:  # noqa: SIM110 - a plain loop: no generator per call (hot path)
            if c.holds(e, x):
                return True
        return False

    def reason(self, e: Event, x: Derived) -> str:
        reasons: dict[str, None] = {}   # each distinct reason once, in order
        for c in self.options:
            reasons[c.reason(e, x)] = None
        if len(reasons) == 1:
            return next(iter(reasons))
        return "none of the alternatives holds: " + "; or ".join(reasons)


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]
    source: str
    reads: frozenset[str] = frozenset()
    unknown_unhandled: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset().union(*(c.reads for c in self.parts)))
        object.__setattr__(self, "unknown_unhandled",
                           frozenset().union(*(c.unknown_unhandled for c in self.parts)))

    def holds(self, e: Event, x: Derived) -> bool:
        for c in self.parts:  # noqa: SIM110 - a plain loop: no generator per call (hot path)
            if not c.holds(e, x):
                return False
        return True

    def reason(self, e: Event, x: Derived) -> str:
        return "; ".join([c.reason(e, x) for c in self.parts if not c.holds(e, x)])


# ---------------------------------------------------------------- enum names the parser accepts

ENUMS: dict[str, type] = {
    "kind": EventKind, "identifiability": Identifiability, "legal_request.type": LegalRequestType,
    "actor.type": ActorType, "actor.organisation": ActorOrganisation, "safeguard": Safeguard,
    "transfer.safeguard": Safeguard,
}

#: Named sets of legal requests. ``binding`` compels us; an AUTHORITY_REQUEST is a voluntary ask.
LEGAL_REQUEST_SETS: dict[str, frozenset[LegalRequestType]] = {
    "binding": frozenset({LegalRequestType.COURT_ORDER, LegalRequestType.SUBPOENA, LegalRequestType.WARRANT,
                          LegalRequestType.REQUIRED_BY_LAW}),
    "voluntary": frozenset({LegalRequestType.AUTHORITY_REQUEST}),
    "any": frozenset(t for t in LegalRequestType if t is not LegalRequestType.NONE),
    "none": frozenset({LegalRequestType.NONE}),
}
