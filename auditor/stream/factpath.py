"""Decisions from the facts tuple, without an Event, where the decision memo knows the answer.

The compiled decoder's :meth:`~auditor.native.NativeEventDecoder.decode_facts` gives each event
as one flat tuple (``fact_names`` order). The policy engine's memo keys each plan on the facts
its rules read (``plan.key_of.facts``); this module reads the same key from the tuple and looks the
decision up: no :class:`~auditor.events.model.Event`, no nested dicts, for the events the memo
already judged. The record is not built as a Python object either: :meth:`FactPath.layout` tells
the compiled sealer which item of the tuple (or of the processor's per-event item: pseudonyms,
source, digest, the decision encoded once per template) each field of the record takes, and the
sealer writes the record's bytes from them in one call per batch. :meth:`FactPath.record` builds
the same record as a Python object, for an item the compiled sealer could not build.

Anything else goes the full way (:meth:`FactPath.decide` returns None): an event the memo has
not seen, a plan that is not memoised, an input longer than
:data:`~auditor.trail.record.MAX_TEXT` (its texts may need cutting), or one that
:func:`~auditor.events.codec.event_from_datum` would not take on its fast path (its own checks
then name the field). A violation's message and labels read the record's facts, which are the
event's for such a short input. The records are byte for byte those of the full path
(tests/unit/stream/test_stream_native.py compares the two on every example and generated event).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

from auditor import __version__
from auditor.events.codec import _EPOCH, MAX_MICROS, MIN_MICROS, subject_id_edges_clean
from auditor.events.model import ActorOrganisation, ActorType, EventKind, Identifiability, LegalRequestType, Safeguard
from auditor.policy import Decision
from auditor.policy.conditions import recipient_abroad, subject_minor
from auditor.policy.engine import ANY, MemoEvaluator, _refused, _undeclared
from auditor.trail.record import AuditRecord, DecisionFacts, Facts, RecipientFacts, RecordType, SourceRef

_KINDS = {k.value: k for k in EventKind}
_ACTORS = {a.value: a for a in ActorType}
_ORGS = {o.value: o for o in ActorOrganisation}
_IDENT = {i.value: i for i in Identifiability}
_LEGAL = {t.value: t for t in LegalRequestType}
_SAFE = {t.value: t for t in Safeguard}


class _Subject(NamedTuple):  # what subject_minor reads
    age: int | None
    is_minor: bool | None


class _Recipient(NamedTuple):
    country: str | None


class _Event(NamedTuple):  # what recipient_abroad reads
    recipient: _Recipient | None
    subject: Any


class _Region(NamedTuple):
    region: str | None


class _Names(NamedTuple):  # what the engine's _undeclared reads of an event
    data_categories: tuple[str, ...]
    purpose: str
    recipient: _Type | None


class _Type(NamedTuple):
    type: str


class _Refusal(NamedTuple):  # what the engine's _refused reads of an event and of its plan
    event_id: str
    undeclared: tuple[Any, ...]


#: the refusals kept (per policy, recipient type, purpose and categories: what they are a function of)
REFUSALS_MAX = 4096
#: the refusals of names longer than this (in all) are not kept: such events go the full way, as before
REFUSAL_MAX_TEXT = 1024
#: nor those of more categories than this
REFUSAL_MAX_CATEGORIES = 16


#: what an item of :meth:`FactPath.layout` holds, by position: the sealer builds the record from it
ITEM_FACTS, ITEM_CHAIN, ITEM_TOPIC, ITEM_PARTITION, ITEM_OFFSET, ITEM_DIGEST, ITEM_ACTOR, ITEM_SUBJECT, \
    ITEM_DECISION = range(9)
#: what the batch values of :meth:`FactPath.layout` hold: the records' processed_at
BATCH_NOW = 0


def _plain(eid: Any, policy: Any, system: Any, purpose: Any, aid: Any, sid: Any, cats: Any, age: Any, when: Any,
           kind: Any, rtype: Any, rid: Any) -> bool:
    """What event_from_datum checks before it builds an Event (else its slow path names the field)."""
    if not (eid and policy and system and purpose and aid and subject_id_edges_clean(sid) and cats and all(cats)):
        return False
    if age is not None and not 0 <= age < 200:
        return False
    if not MIN_MICROS <= when <= MAX_MICROS:
        return False
    if (rtype is None) is (kind == "DISCLOSURE"):
        return False
    return rtype is None or bool(rtype and rid)


class FactPath:
    """Audits an event from its facts tuple when the memo of its pack already holds the decision."""

    def __init__(self, fact_names: Sequence[str], evaluators: Mapping[str, MemoEvaluator]) -> None:
        self.at = {n: i for i, n in enumerate(fact_names)}
        self.evaluators = evaluators
        #: events audited from their tuple (tests and benchmarks read it)
        self.hits = 0
        self._keys: dict[int, tuple[object, Callable[[tuple[Any, ...]], tuple[object, ...]]]] = {}
        #: the decision of an event naming what its policy does not declare, by those names (bounded)
        self._refusals: dict[tuple[Any, ...], Decision | None] = {}
        #: how many times the refusals kept were dropped (a shadow that mirrors them drops them too)
        self.refusal_epoch = 0
        at = self.at
        (self._id, self._time, self._kind, self._policy, self._system, self._atype, self._aid, self._role,
         self._sid, self._age, self._minor, self._region, self._cats, self._purpose, self._rtype, self._rid,
         self._rcountry, self._rbehalf, self._ident, self._basis, self._legal, self._cm, self._ct, self._cg,
         self._co, self._cross, self._dest, self._safe, self._attrs) = (at[n] for n in (
            "event_id", "occurred_at", "kind", "policy_id", "source_system", "actor.type", "actor.id",
            "actor.role", "subject.id", "subject.age", "subject.is_minor", "subject.region", "data_categories",
            "purpose", "recipient.type", "recipient.id", "recipient.country", "recipient.on_our_behalf",
            "identifiability", "legal_basis", "legal_request.type", "consent.marketing",
            "consent.third_party_sharing", "consent.guardian", "consent.marketing_opt_out",
            "transfer.cross_border", "transfer.destination_country", "transfer.safeguard", "attributes"))
        self._org, self._reference = at["actor.organisation"], at["legal_request.reference"]
        #: where the processor reads what it routes by, in the tuple
        self.id_at, self.kind_at, self.time_at, self.purpose_at, self.rtype_at = (
            self._id, self._kind, self._time, self._purpose, self._rtype)
        self.actor_at, self.subject_at = self._aid, self._sid
        #: what lookup reads of every event, in one call
        self._read = itemgetter(self._policy, self._kind, self._rtype, self._purpose, self._cats, self._id,
                                self._system, self._aid, self._sid, self._age, self._time, self._rid)

    def decide(self, t: tuple[Any, ...]) -> tuple[Decision, Decision, MemoEvaluator] | None:
        """(decision, template, evaluator) the memo holds for these facts, else None."""
        hit = self.lookup(t)
        if hit is None:
            return None
        template, evaluator, _ = hit
        eid = t[self._id]
        if template.event_id == eid:
            return template, template, evaluator
        return Decision(eid, *template[1:]), template, evaluator

    def lookup(self, t: tuple[Any, ...], count: bool = True) -> tuple[Decision, MemoEvaluator, Any] | None:
        """(template, evaluator, the plan's key function) the memo holds for these facts, else None.
        The event's decision is the template with the event's id (:meth:`decide` builds it; the
        sealer does not need it). The key function's ``facts`` are what a shadow of the memo keys
        on (:class:`~auditor.native.FactMemo`). ``count``: a hit counts as the memo's (False: a
        look at what the memo holds, not a decision)."""
        policy, kind, rtype, purpose, cats, eid, system, aid, sid, age, when, rid = self._read(t)
        evaluator = self.evaluators.get(policy)
        if evaluator is None or not _plain(eid, policy, system, purpose, aid, sid, cats, age, when, kind, rtype, rid):
            return None
        compiled = evaluator.compiled
        plan = compiled._plans.get((kind, ANY if rtype is None else rtype, purpose, cats))
        if plan is None:  # not planned yet, or never planned: it names what its policy does not declare
            template = self._refusal(policy, evaluator, rtype, purpose, cats, eid)
            if template is None:
                return None
            if count:
                self.hits += 1  # not the memo's: the engine keeps no plan or memo for these
            return template, evaluator, None
        if plan.memo is None or plan.key_of is None:
            return None
        hit = self._keys.get(id(plan.key_of))
        key_of = hit[1] if hit is not None and hit[0] is plan.key_of else \
            self._key_of(plan.key_of, compiled.pack.minor_age)
        if key_of is None:
            return None
        template = plan.memo.get(key_of(t))
        if template is None:
            return None
        if count:
            compiled.memo_hits += 1
            self.hits += 1
        return template, evaluator, plan.key_of

    def _refusal(self, policy: str, evaluator: MemoEvaluator, rtype: str | None, purpose: str,
                 cats: tuple[str, ...], eid: str) -> Decision | None:
        """The engine's decision for an event that names a category, purpose or recipient type its
        policy does not declare (``_refused``): a function of those names alone, so kept here by
        them (the engine plans and memoises no such event: each went the full way). None: the
        event names nothing undeclared (its plan is made the full way), or its names are too long
        to keep (the full way, as before)."""
        key = (policy, rtype, purpose, cats)
        if key in self._refusals:
            return self._refusals[key]
        if len(cats) > REFUSAL_MAX_CATEGORIES or \
                sum(map(len, cats)) + len(purpose) + len(rtype or "") > REFUSAL_MAX_TEXT:
            return None
        compiled = evaluator.compiled
        names = _Names(cats, purpose, None if rtype is None else _Type(rtype))
        undeclared = tuple(_undeclared(names, compiled.pack))  # type: ignore[arg-type]
        refusal: Any = _Refusal(eid, undeclared)  # the event and the plan, as _refused reads them
        template = _refused(refusal, compiled, refusal) if undeclared else None
        if len(self._refusals) >= REFUSALS_MAX:
            self._refusals.clear()
            self.refusal_epoch += 1
        self._refusals[key] = template
        return template

    def _plain(self, t: tuple[Any, ...]) -> bool:
        """What event_from_datum checks before it builds an Event (else its slow path names the field)."""
        policy, kind, rtype, purpose, cats, eid, system, aid, sid, age, when, rid = self._read(t)
        return _plain(eid, policy, system, purpose, aid, sid, cats, age, when, kind, rtype, rid)

    def _key_of(self, key_of: Any, minor_age: int) -> Callable[[tuple[Any, ...]], tuple[object, ...]] | None:
        """The plan's memo key read from the tuple: the same values, in the same order, as ``key_of(event)``."""
        hit = self._keys.get(id(key_of))
        if hit is not None and hit[0] is key_of:
            return hit[1]
        facts = getattr(key_of, "facts", None)
        if facts is None:
            return None
        at = self.at
        consts: dict[str, object] = {"_minor": subject_minor, "_abroad": recipient_abroad, "_S": _Subject,
                                     "_E": _Event, "_R": _Recipient, "_G": _Region}
        exprs: list[str] = []
        needs_attrs = False
        for fact in facts:
            if fact.startswith("attributes."):
                name = f"_a{len(consts)}"
                consts[name] = fact.removeprefix("attributes.")
                exprs.append(f"a.get({name})")
                needs_attrs = True
            elif fact == "actor.is_subject":
                exprs.append(f"t[{at['actor.id']}] == t[{at['subject.id']}]")
            elif fact == "subject.minor":
                exprs.append(f"_minor(_S(t[{at['subject.age']}], t[{at['subject.is_minor']}]), {int(minor_age)})")
            elif fact == "recipient.abroad":
                exprs.append(f"_abroad(_E(_R(t[{at['recipient.country']}]), _G(t[{at['subject.region']}])))")
            elif fact in at:
                exprs.append(f"t[{at[fact]}]")
            else:
                return None
        body = f"    a = dict(t[{self._attrs}])\n" if needs_attrs else ""
        src = f"def key(t):\n{body}    return ({''.join(x + ', ' for x in exprs)})\n"
        exec(compile(src, "<factpath-memo-key>", "exec"), consts)  # noqa: S102 - fixed expressions only
        fn: Callable[[tuple[Any, ...]], tuple[object, ...]] = consts["key"]  # type: ignore[assignment]
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[id(key_of)] = (key_of, fn)  # keeping key_of alive keeps its id unique
        return fn

    def layout(self, instance_id: str, pseudonym_key_id: str) -> dict[str, Any]:
        """How the compiled sealer builds the record of an event decided from its facts tuple, field
        by field (a spec for :meth:`~auditor.native.NativeSealer.add_layout`), from an item
        ``(facts, chain_id, topic, partition, offset, digest, actor pseudonym, subject pseudonym,
        decision bytes)`` (the ``ITEM_*`` positions) and the batch's ``(processed_at,)``. The same
        record :meth:`record` builds, without the Python objects; the sealer refuses a spec that
        misses a field of the schema."""

        def fact(index: int) -> tuple[str, int]:
            return ("fact", index)

        recipient = ("record", fact(self._rtype), {
            "type": fact(self._rtype), "id": fact(self._rid), "country": fact(self._rcountry),
            "on_our_behalf": fact(self._rbehalf)})
        facts = {
            "kind": fact(self._kind), "occurred_at": fact(self._time), "policy_id": fact(self._policy),
            "source_system": fact(self._system), "actor_type": fact(self._atype),
            "actor_pseudonym": ("item", ITEM_ACTOR), "actor_role": fact(self._role),
            "subject_pseudonym": ("item", ITEM_SUBJECT), "subject_age": fact(self._age),
            "subject_is_minor": fact(self._minor), "subject_region": fact(self._region),
            "data_categories": fact(self._cats), "purpose": fact(self._purpose), "recipient": recipient,
            "identifiability": fact(self._ident), "legal_basis": fact(self._basis),
            "legal_request_type": fact(self._legal), "consent_marketing": fact(self._cm),
            "consent_third_party_sharing": fact(self._ct), "consent_guardian": fact(self._cg),
            "consent_marketing_opt_out": fact(self._co), "cross_border": fact(self._cross),
            "destination_country": fact(self._dest), "safeguard": fact(self._safe), "attributes": fact(self._attrs),
        }
        source = {"topic": ("item", ITEM_TOPIC), "partition": ("item", ITEM_PARTITION),
                  "offset": ("item", ITEM_OFFSET), "file": ("const", None), "line": ("const", None)}
        return {
            "record_type": ("const", RecordType.DECISION.value), "source": ("record", None, source),
            "event_id": fact(self._id), "input_digest": ("item", ITEM_DIGEST), "processed_at": ("batch", BATCH_NOW),
            "auditor_version": ("const", __version__), "instance_id": ("const", instance_id),
            "pseudonym_key_id": ("const", pseudonym_key_id), "facts": ("record", None, facts),
            "decision": ("raw", ITEM_DECISION), "rejection": ("const", None), "ledger": ("const", None),
            "actor_organisation": fact(self._org), "legal_request_reference": fact(self._reference),
        }

    def record(self, t: tuple[Any, ...], decided: DecisionFacts, source: SourceRef, digest: bytes,
               pseudonymize: Any, instance_id: str, now: datetime) -> AuditRecord:
        """The unsealed record of a decided event, as build_record makes it for a short input."""
        rtype = t[self._rtype]
        facts = Facts(
            _KINDS[t[self._kind]], _EPOCH + timedelta(microseconds=t[self._time]), t[self._policy], t[self._system],
            _ACTORS[t[self._atype]], pseudonymize(t[self._aid]), t[self._role],
            pseudonymize(t[self._sid]), t[self._age], t[self._minor], t[self._region],
            t[self._cats], t[self._purpose],
            None if rtype is None else RecipientFacts(rtype, t[self._rid], t[self._rcountry], t[self._rbehalf]),
            _IDENT[t[self._ident]], t[self._basis], _LEGAL[t[self._legal]],
            t[self._cm], t[self._ct], t[self._cg], t[self._co],
            t[self._cross], t[self._dest], _SAFE[t[self._safe]],
            t[self._attrs],
        )
        return AuditRecord(source.chain_id, RecordType.DECISION, source, t[self._id], digest, now, __version__,
                           instance_id, pseudonymize.key_id, facts, decided,
                           actor_organisation=_ORGS[t[self._org]], legal_request_reference=t[self._reference])
