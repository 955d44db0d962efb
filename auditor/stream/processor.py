"""Turn a batch of consumed messages into the outputs of one transaction. No Kafka here.

For each message, in order: size gate and decode (or reject), pick the pack named by the
event, evaluate, build the audit record, seal it into its chain, and route it: the audit
topic always; the violations topic for violations; the dead-letter topic for rejects.

One message never stops the batch. Any exception while auditing it (decode, evaluate, build,
seal, route) turns it into a dead letter with a bounded reason (``evaluate_failed``, ...) and a
REJECTION record in its chain; only a :class:`~auditor.errors.TransientError` (a dependency is
down) propagates, so the runner retries the batch. Every output fits its topic
(:class:`~auditor.stream.budget.OutputBudget`): an audit record over budget becomes a rejection
(``record_too_large``), a dead letter whose original does not fit carries a reference to it.
Chain heads advance only in a working copy; :meth:`BatchProcessor.commit_heads` makes them
current once the transaction that carries the records has committed, and
:meth:`BatchProcessor.discard_heads` drops them when it aborts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from auditor.errors import BrokerError, DecodeError, TransientError
from auditor.events.codec import _EPOCH
from auditor.events.model import Event
from auditor.events.wire import EventDecoder
from auditor.ledger.join import Judged
from auditor.ledger.late import DecisionReads
from auditor.ledger.model import to_us
from auditor.logging import get_logger
from auditor.memo import BytesMemo
from auditor.native import (
    FACT_MEMO_BUILT,
    Decoded,
    FactMemo,
    NativeEventDecoder,
    NativeLazyRecord,
    NativeSealer,
    SealedBytes,
)
from auditor.policy import CompiledPack, Decision, Verdict
from auditor.policy.decision import decision_to_dict
from auditor.policy.engine import MemoEvaluator
from auditor.stream.budget import HeadersLike, OutputBudget, dead_letter, message_size
from auditor.stream.factpath import (
    ITEM_CHAIN,
    ITEM_DECISION,
    ITEM_DIGEST,
    ITEM_FACTS,
    ITEM_OFFSET,
    ITEM_PARTITION,
    ITEM_SUBJECT,
    ITEM_TOPIC,
    REFUSALS_MAX,
    FactPath,
)
from auditor.stream.hotpath import DecodeResult, NativePath, SealResult, hot_path
from auditor.trail import chainid
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead, SealedBatch, seal_bytes
from auditor.trail.chainid import audit_partition as _audit_partition
from auditor.trail.keys import Pseudonymizer
from auditor.trail.record import (
    MAX_TEXT,
    AuditRecord,
    DecisionFacts,
    SourceRef,
    bound_text,
    build_record,
    build_rejection,
    decision_facts,
    long_texts,
)

UNDECLARED = "undeclared"
#: the reason of an input whose outputs the broker refuses (stream/split.py isolates it)
UNWRITABLE = "unwritable"
log = get_logger("auditor.stream")


class LedgerJoin(Protocol):
    """The subject ledger as the processor uses it: judge an event as of its time."""

    def judge(self, event: Event, evaluator: MemoEvaluator, partition: int, msg: Any = None) -> Judged: ...


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the processor reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> HeadersLike | None: ...


class Outgoing(NamedTuple):
    """A message for the transaction: one per audit record, violation or dead letter."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...] = ()


#: what the memo of decision record forms may hold
DECIDED_MAX_BYTES = 8 * 1024 * 1024

#: one decision latency in this many is observed (timing every evaluation costs more than it tells)
DECISION_TIMING_SAMPLE = 16


@dataclass
class BatchResult:
    outgoing: list[Outgoing] = field(default_factory=list)
    #: (unsealed record, seq, prev_hash, record_hash); ``records`` builds the sealed records on demand.
    #: A record sealed from its facts tuple is a :class:`LazyRecord` (built from its bytes when read).
    sealed: list[tuple[AuditRecord, int, bytes, bytes]] = field(default_factory=list)
    #: (pack, kind, verdict) counts; violation label tuples; dead letter reasons; decision seconds
    audited: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    decision_seconds: list[float] = field(default_factory=list)
    occurred_at: list[float] = field(default_factory=list)
    #: what each decision read from the subject ledger (indexed once committed: late facts)
    ledger_reads: list[DecisionReads] = field(default_factory=list)

    @property
    def records(self) -> SealedBatch:
        return SealedBatch(self.sealed)


@dataclass(frozen=True)
class Routing:
    audit_topic: str
    violations_topic: str
    dead_letter_topic: str
    audit_partitions: int


class BatchProcessor:
    def __init__(self, decoder: EventDecoder | NativeEventDecoder, packs: Mapping[str, CompiledPack],
                 pseudonymizer: Any, routing: Routing, instance_id: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 budget: OutputBudget | None = None, sealer: NativeSealer | None = None) -> None:
        self.decoder = decoder
        #: decodes and seals whole batches: compiled with a NativeEventDecoder, else the Python reference
        self.hot = hot_path(decoder, sealer)
        self.packs = dict(packs)
        self.evaluators = {pid: MemoEvaluator(p) for pid, p in self.packs.items()}
        #: decisions from the facts tuple where the memo knows them (compiled path, no ledger)
        self.facts = FactPath(decoder.fact_names, self.evaluators) if isinstance(decoder, NativeEventDecoder) else None
        #: the record form of each memoised decision template, by the template's id (bounded by bytes)
        self._decided: BytesMemo[int, _Template] = BytesMemo(DECIDED_MAX_BYTES, 64 * 1024)
        #: the sealer's layout of records sealed from a facts tuple, and what it was made for
        self._layout: tuple[int, tuple[str, str]] | None = None
        self._chains: dict[tuple[str, int], str] = {}
        self._timed = 0
        #: a shadow of the decision memo in compiled code (made on first use), and what it mirrors now
        self._shadow: FactMemo | None = None
        self._shadow_for: tuple[Any, ...] | None = None
        #: the compiled packs, numbered (the shadow counts its hits per number)
        self._owners: list[CompiledPack] = [e.compiled for e in self.evaluators.values()]
        self._owner_of = {id(c): i for i, c in enumerate(self._owners)}
        #: decision seconds per event of the last batch the shadow decided in
        self._hit_seconds = 0.0
        #: the fact path's refusals the shadow holds (at most REFUSALS_MAX; none after a reset)
        self._refusals_taught = 0
        self.pseudonymizer = pseudonymizer
        self.routing = routing
        self.instance_id = instance_id
        self.clock = clock
        self.heads: dict[str, ChainHead] = {}
        self._working: dict[str, ChainHead] = {}
        #: what each output topic accepts; the runner reads the real limits at start (budget.read_budget)
        self.budget = budget or OutputBudget.stock()
        #: the subject ledger's join (auditor.stream.ledgerfeed.LedgerFeed), None without a ledger
        self.ledger: LedgerJoin | None = None
        #: violation messages of events audited from their facts tuple built here, in Python (the
        #: memo's shadow builds those of its hits in compiled code)
        self.python_violations = 0

    # ------------------------------------------------------------------ chains
    def set_head(self, chain_id: str, head: ChainHead | None) -> None:
        self.heads[chain_id] = head if head is not None else ChainHead.genesis(chain_id)

    def forget(self, chain_ids: Iterable[str]) -> None:
        for c in chain_ids:
            self.heads.pop(c, None)
            self._working.pop(c, None)

    def commit_heads(self, upto: Mapping[str, ChainHead] | None = None) -> None:
        """The transaction committed: its working heads become current. ``upto`` (``batch.pipeline``):
        the working heads as they were at the end of the committed batch (:meth:`working_heads`); the
        working heads of a later batch, processed meanwhile, stay working."""
        if upto is None:
            self.heads.update(self._working)
            self._working.clear()
        else:
            self.heads.update(upto)

    def working_heads(self) -> dict[str, ChainHead]:
        """A copy of the working heads (``batch.pipeline``: what the batch just processed ends at)."""
        return dict(self._working)

    def discard_heads(self) -> None:
        self._working.clear()

    def audit_partition(self, source: SourceRef) -> int:
        return chainid.audit_partition(source.partition, self.routing.audit_partitions)

    # ------------------------------------------------------------------ batch
    def process(self, messages: Iterable[MessageLike]) -> BatchResult:
        """Decode the batch in one call, audit each event, seal the records in one call, route."""
        out = BatchResult()
        now = self.clock()
        batch = list(messages)
        values = [m.value() for m in batch]
        if self.facts is not None and self.ledger is None and isinstance(self.hot, NativePath):
            if self._shadowed(out, batch, values, self.hot, self.facts, now):
                return out
            items = self._audit_facts(batch, values, self.hot, self.facts, now, self.hot.decode_facts(values))
        else:
            audit = self._audit
            items = [audit(m, v, d, now) for m, v, d in zip(batch, values, self.hot.decode(values), strict=True)]
        self._seal_and_route(out, items, now)
        return out

    def _shadowed(self, out: BatchResult, batch: list[MessageLike], values: list[bytes | None], hot: NativePath,
                  facts: FactPath, now: datetime) -> bool:
        """The batch through the shadow of the memo (False: there is none for it): the events it
        decides are sealed and routed in compiled code, their outputs built there too, with the
        records of the others (:meth:`_audit_facts`) in input order (:meth:`_seal_hits`)."""
        layout = self._fact_layout(hot)
        shadow = self._shadow_ready(hot) if layout is not None else None
        if shadow is None:
            return False
        assert layout is not None
        start = time.perf_counter()
        try:
            misses, results, teach, hits = shadow.decide(hot.sealer, layout, values, batch, (now,))
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - the fact path alone decides this batch
            return False
        taken = shadow.take_hits()
        if any(taken):
            for owner, n in enumerate(taken):
                if owner < len(self._owners):  # else the fact path's refusals (_teach)
                    self._owners[owner].memo_hits += n
            facts.hits += sum(taken)
            self._hit_seconds = (time.perf_counter() - start) / len(values)
        sampled: list[int] = []
        items = self._audit_facts(batch, values, hot, facts, now, results, misses, teach, shadow, sampled)
        try:
            rejected = self._seal_hits(out, shadow, hits, misses, items, batch, values, layout, now)
        except _SealFailed as exc:  # a fault of the compiled call: this batch the fact path's way
            log.error("sealing a batch with the memo's shadow failed; the batch is sealed without it",
                      error_class=type(exc.__cause__).__name__)
            return False
        # the hits whose decision is timed (one decision in DECISION_TIMING_SAMPLE) and was placed
        if sampled:
            n = len(sampled) - (len(rejected.intersection(sampled)) if rejected else 0)
            out.decision_seconds += [self._hit_seconds] * n
        return True

    def _audit_facts(self, batch: list[MessageLike], values: list[bytes | None], hot: NativePath, facts: FactPath,
                     now: datetime, results: list[Any], misses: list[int] | None = None, teach: bytes | None = None,
                     shadow: FactMemo | None = None, sampled: list[int] | None = None) -> list[_Item]:
        """The events at the positions ``misses`` (all without a shadow), whose facts tuples are
        ``results``: what the memo already decided is audited from the tuple (sealed by the
        compiled sealer from the tuple too); the rest is decoded into Events (one more call) and
        audited the full way. The shadow learns each non-violation the memo decides, from its
        first sighting (the full way) on, where ``teach`` says it could then decide its key.
        The events between the misses are the shadow's hits: they count as decisions, in input
        order with the fact path's, and ``sampled`` gets the positions of those whose decision is
        timed (one decision in DECISION_TIMING_SAMPLE is).

        An event audited from its tuple becomes one :data:`_Fact` item. The loop is written out
        with its lookups bound once per batch: it runs once per event of every batch."""
        items: list[_Item | None] = []
        rest: list[int] = []
        positions = range(len(values)) if misses is None else misses
        lookup, actor_at, subject_at = facts.lookup, facts.actor_at, facts.subject_at
        chains, chain_of = self._chains, self._chain_of
        decided_memo, template_of = self._decided.data, self._template
        pseudonymize = self.pseudonymizer
        known: Mapping[str, str] | None = getattr(pseudonymize, "known", None)
        if known is None:  # a pseudonymizer without a memo to read
            known = {}
        perf_counter = time.perf_counter
        timed, last = self._timed, -1
        for k, (i, result) in enumerate(zip(positions, results, strict=True)):
            if sampled is not None and i > last + 1:  # the hits since the last miss
                timed = _count_hits(sampled, timed, last + 1, i)
            last = i
            msg, raw = batch[i], values[i]
            item = None
            if type(result) is Decoded and raw is not None and len(raw) <= MAX_TEXT:
                try:
                    timed += 1
                    t0 = perf_counter() if timed % DECISION_TIMING_SAMPLE == 1 else -1.0
                    t = result.facts
                    hit = lookup(t)
                    if hit is None:
                        timed -= 1
                    else:
                        seconds = perf_counter() - t0 if t0 >= 0 else -1.0
                        template, evaluator, key_of = hit
                        topic, partition = msg.topic() or "", msg.partition() or 0
                        chain = chains.get((topic, partition)) or chain_of(topic, partition)
                        decided = decided_memo.get(id(template))
                        if decided is None or decided.template is not template:
                            decided = template_of(template)
                        actor, subject = t[actor_at], t[subject_at]
                        item = (t, chain, topic, partition, msg.offset() or 0, result.digest,
                                known.get(actor) or pseudonymize(actor), known.get(subject) or pseudonymize(subject),
                                decided.raw, msg, raw, decided, evaluator, seconds)
                        if shadow is not None and teach is not None and teach[k]:
                            self._teach(shadow, raw, key_of, decided, evaluator, t)  # the shadow decides the next ones
                except Exception:  # noqa: BLE001 - the full path judges it again and names any failure
                    item = None
            if item is None:
                rest.append(k)
            items.append(item)
        if sampled is not None and len(values) > last + 1:
            timed = _count_hits(sampled, timed, last + 1, len(values))
        self._timed = timed
        if rest:
            decoded = hot.decode([values[positions[k]] for k in rest])
            for k, d in zip(rest, decoded, strict=True):
                i = positions[k]
                audited = items[k] = self._audit(batch[i], values[i], d, now)
                if shadow is not None and teach is not None and teach[k] and type(audited) is _Audit:
                    self._first_sighting(shadow, values[i], results[k], facts)
        return items  # type: ignore[return-value]  # every None was replaced

    def _teach(self, shadow: FactMemo, raw: bytes, key_of: Any, decided: _Template, evaluator: MemoEvaluator,
               t: tuple[Any, ...]) -> None:
        """Teach the shadow that the memo decides ``raw`` (facts ``t``) as ``decided``, or the fact
        path's refusal of the names it gives (``key_of`` None: the shadow's plan key holds those
        names; at most REFUSALS_MAX of them between resets); a violation with its message's parts
        (whole and truncated) and its labels, which the shadow's hits of it then place as
        :meth:`_fact_violation` would (the same bytes)."""
        facts = self.facts
        assert facts is not None
        compiled = evaluator.compiled
        # key_of None: the engine's refusal of the names the event gives (FactPath.lookup), which
        # its plan's key holds: no fact more is read; its hits are the fact path's, not the memo's
        if key_of is None and self._refusals_taught >= REFUSALS_MAX:
            return
        read, owner = (key_of.facts, self._owner_of[id(compiled)]) if key_of is not None else ((), len(self._owners))
        violation = None
        if decided.violation:
            labels = self._violation_labels(decided, compiled, t[facts.rtype_at], t[facts.purpose_at])
            parts = decided.parts or self._message_parts(decided)
            assert decided.cut is not None
            violation = (parts, decided.cut, tuple(labels))
        if shadow.learn(raw, read, compiled.pack.minor_age, owner, (decided.pack_id, t[facts.kind_at], decided.verdict),
                        decided.raw, violation) and key_of is None:
            self._refusals_taught += 1

    def _first_sighting(self, shadow: FactMemo, raw: bytes | None, result: Any, facts: FactPath) -> None:
        """An event audited the full way whose decision the memo now holds (it was its first
        sighting): the shadow learns it now, as from the fact path's hit of the next one (the same
        memo entry, so the same decision); it then decides the key from its second sighting on."""
        if type(result) is not Decoded or raw is None or len(raw) > MAX_TEXT:
            return
        try:
            hit = facts.lookup(result.facts, count=False)
            if hit is None:
                return
            template, evaluator, key_of = hit
            decided = self._decided.data.get(id(template))
            if decided is None or decided.template is not template:
                decided = self._template(template)
            self._teach(shadow, raw, key_of, decided, evaluator, result.facts)
        except Exception:  # noqa: BLE001 - not taught: the fact path's next hit teaches it
            return

    def _shadow_ready(self, hot: NativePath) -> FactMemo | None:
        """The shadow of the decision memo, mirroring the memo as it is now (None: no shadow for
        this pseudonymizer). Dropped whole whenever a pack's memo was dropped (``memo_epoch``) or
        the pseudonymizer changed: it never holds a decision the memo does not."""
        p = self.pseudonymizer
        if type(p).__call__ is not Pseudonymizer.__call__:  # pseudonyms of its own making: not mirrored
            return None
        if not FACT_MEMO_BUILT:  # a compiled module built before the shadow existed: the fact path alone
            return None
        shadow = self._shadow
        if shadow is None:
            shadow = self._shadow = FactMemo(hot.decoder)
        made_for = (p, tuple(c.memo_epoch for c in self._owners), self.facts.refusal_epoch if self.facts else 0)
        if made_for != self._shadow_for:
            shadow.reset()
            self._refusals_taught = 0
            shadow.set_key(p._key)
            self._shadow_for = made_for
        return shadow

    def _chain_of(self, topic: str, partition: int) -> str:
        if len(self._chains) > 10_000:
            self._chains.clear()
        chain = self._chains[(topic, partition)] = chainid.chain_id(topic, partition)
        return chain

    def _fact_layout(self, hot: NativePath) -> int | None:
        """The sealer's layout of records sealed from a facts tuple (made once per instance id and key)."""
        if self.facts is None:
            return None
        made_for = (self.instance_id, self.pseudonymizer.key_id)
        if self._layout is None or self._layout[1] != made_for:
            self._layout = (hot.sealer.add_layout(self.facts.layout(*made_for)), made_for)
        return self._layout[0]

    def _full_way(self, item: _Fact, now: datetime) -> _Audit | _Reject:
        """An event audited from its tuple whose record the compiled sealer did not build: its
        record is built as a Python object (the same record) and sealed as any other."""
        assert self.facts is not None
        t, decided = item[ITEM_FACTS], item[_DECIDED]
        source = SourceRef(item[ITEM_TOPIC], item[ITEM_PARTITION], item[ITEM_OFFSET])
        try:
            decision = Decision(t[self.facts.id_at], *decided.template[1:])
            record = self.facts.record(t, decided.facts, source, item[ITEM_DIGEST], self.pseudonymizer,
                                       self.instance_id, now)
        except Exception as exc:  # noqa: BLE001 - one message never stops the batch
            return self._faulted(item[_MSG], source, item[_RAW], exc, "build", now)
        return _Audit(item[_MSG], source, item[_RAW], record, None, decision, item[_EVALUATOR], True, item[_SECONDS],
                      now)

    def _audit(self, msg: MessageLike, raw: bytes | None, decoded: DecodeResult, now: datetime) -> _Audit | _Reject:
        """One message's unsealed record, or its rejection. Nothing here changes any state."""
        partition = msg.partition() or 0
        source = SourceRef(msg.topic() or "", partition, msg.offset() or 0)
        stage = "decode"
        try:
            if isinstance(decoded, Exception):
                raise decoded
            event = decoded.event
            evaluator = self.evaluators.get(event.policy_id)
            if evaluator is None:
                # the policy_id is payload: name the packs loaded, never the value received
                raise DecodeError(f"the event names a policy this auditor does not load (loaded: "
                                  f"{', '.join(sorted(self.packs))})", reason="unknown_policy")
            stage = "evaluate"
            self._timed += 1
            seconds = -1.0
            t0 = time.perf_counter() if self._timed % DECISION_TIMING_SAMPLE == 1 else -1.0
            judged = None
            if self.ledger is not None:  # l12: judged with the subject's facts as of occurred_at
                judged = self.ledger.judge(event, evaluator, partition, msg)  # msg: its Kafka time (ledger)
                decision = template = judged.decision
            else:
                decision, template = evaluator(event)
            if t0 >= 0:
                seconds = time.perf_counter() - t0
            stage = "build"
            short = raw is not None and len(raw) <= MAX_TEXT
            record = build_record(event, decision, source, self.pseudonymizer, self.instance_id, now,
                                  digest=decoded.digest, decided=self._facts_of(decision, template), short=short,
                                  ledger=judged.ledger if judged is not None else None)
        except TransientError:
            raise
        except DecodeError as exc:
            return self._rejected(msg, source, raw, exc.reason, str(exc), exc, stage, now)
        except Exception as exc:  # noqa: BLE001 - one message never stops the batch
            return self._faulted(msg, source, raw, exc, stage, now)
        return _Audit(msg, source, raw, record, event, decision, evaluator, short, seconds, now, judged)

    def _seal_and_route(self, out: BatchResult, items: list[_Item], now: datetime | None = None) -> None:
        """Seal every record after its chain's working head (one call), route them, advance the heads.

        An audit record that cannot be sealed or routed (over the audit topic's budget, a fault)
        becomes a rejection in its place, and the batch is sealed again: the records after it in
        its chain link to the rejection, as if it had been rejected from the start. An event
        audited from its facts tuple whose record the compiled sealer could not build is audited
        again with its record built in Python (:meth:`_full_way`), and the batch sealed again.
        Each record's outputs go into ``out`` as it is routed; a batch sealed again first takes
        back what its earlier round put there."""
        hot = self.hot
        layout = None
        if isinstance(hot, NativePath) and any(type(it) is tuple for it in items):
            layout = self._fact_layout(hot)
        mark = [len(getattr(out, name)) for name in _RESULT_LISTS]
        while True:
            records: list[Any] = [it if type(it) is tuple else it.record for it in items]  # type: ignore[union-attr]
            chains = {r[ITEM_CHAIN] if type(r) is tuple else r.chain_id for r in records}
            heads = {c: self._working.get(c) or self.heads.get(c) or ChainHead.genesis(c) for c in chains}
            if layout is not None:
                assert isinstance(hot, NativePath) and now is not None
                sealed, new_heads = hot.seal(records, heads, layout, (now,), tuples=True)
            else:
                sealed, new_heads = hot.seal(records, heads)
            replaced = False
            route = self._route_one
            for i, (item, seal) in enumerate(zip(items, sealed, strict=True)):
                reject = route(out, item, seal, now)
                if reject is not None:
                    items[i], replaced = reject, True
            if not replaced:
                break
            for name, n in zip(_RESULT_LISTS, mark, strict=True):
                del getattr(out, name)[n:]
        self._working.update(new_heads)

    def _route_one(self, out: BatchResult, item: _Item, seal: Any, now: datetime | None) -> _Audit | _Reject | None:
        """Place one sealed record's outputs in ``out``, or return the item that replaces it (the
        batch is then sealed again)."""
        if type(item) is tuple:  # a _Fact
            assert now is not None
            if isinstance(seal, Exception):  # the compiled sealer could not build it: the full way
                _drop_tracebacks(seal)  # its frames link back to these results: a reference cycle
                return self._full_way(item, now)
            return self._place_fact(out, item, seal, now)
        if isinstance(item, _Reject):
            if isinstance(seal, Exception):
                raise seal  # a rejection that cannot be sealed: the batch fails (as it always did)
            out.sealed.append((item.record, seal[1], seal[2], seal[3]))
            self._dead_letter(out, item, seal[0], seal[1])
            return None
        assert isinstance(item, _Audit)
        route = self._route(item, seal)
        if isinstance(route, _Reject):
            return route
        self._place(out, route)
        return None

    def _seal_hits(self, out: BatchResult, shadow: FactMemo, hits: Any, misses: list[int], items: list[_Item],
                   batch: list[MessageLike], values: list[bytes | None], layout: int, now: datetime) -> set[int]:
        """:meth:`_seal_and_route` of a batch the shadow decided in: its hits are sealed with the
        records of ``items`` (at the positions ``misses``) in input order, in one compiled call that
        also builds the hits' outputs; only the misses are routed here, one by one.

        The same records and outputs, in the same order, as every event's item through
        :meth:`_seal_and_route`: a hit over the audit topic's budget becomes a rejection in its
        place (``record_too_large``, stage ``seal``) and the batch is sealed again, as is a miss
        that cannot be sealed or routed (and the records after it in its chain link to what
        replaced it). Returns the positions of the hits rejected so."""
        hot = self.hot
        assert isinstance(hot, NativePath)
        rejected: set[int] = set()
        routing = self.routing
        part = functools.partial(_audit_partition, audit_partitions=routing.audit_partitions)
        mark = [len(getattr(out, name)) for name in _RESULT_LISTS]
        while True:
            records: list[Any] = [it if type(it) is tuple else it.record for it in items]  # type: ignore[union-attr]
            try:
                (seals, over, hit_out, hit_sealed, labels, whens, cuts, new_heads, out_cuts, hit_violations,
                 violation_cuts) = shadow.seal(
                    hits, hot.sealer, layout, (now,), misses, records, self._working, self.heads, self.budget.audit,
                    routing.audit_topic, part, Outgoing, LazyRecord, routing.violations_topic,
                    self.budget.violations, _slot_text(self.pseudonymizer.key_id))
            except TransientError:
                raise
            except Exception as exc:
                _drop_tracebacks(exc)
                raise _SealFailed from exc
            if over:  # each one's rejection at its place, and sealed again
                rejected.update(i for i, _ in over)
                pairs = [*zip(misses, items, strict=True),
                         *((i, self._too_large(batch[i], values[i], size, now)) for i, size in over)]
                pairs.sort(key=itemgetter(0))
                misses, items = [i for i, _ in pairs], [it for _, it in pairs]
                continue
            replaced, done, done_out, done_v = False, 0, 0, 0
            route = self._route_one
            for k, (item, seal) in enumerate(zip(items, seals, strict=True)):
                upto = cuts[k]
                if upto > done:  # the hits before this miss, in order
                    upto_out, upto_v = out_cuts[k], violation_cuts[k]
                    out.outgoing += hit_out[done_out:upto_out]
                    out.sealed += hit_sealed[done:upto]
                    out.audited += labels[done:upto]
                    out.occurred_at += whens[done:upto]
                    if upto_v > done_v:
                        out.violations += hit_violations[done_v:upto_v]
                    done, done_out, done_v = upto, upto_out, upto_v
                reject = route(out, item, seal, now)
                if reject is not None:
                    items[k], replaced = reject, True
            if done < len(hit_sealed):
                out.outgoing += hit_out[done_out:]
                out.sealed += hit_sealed[done:]
                out.audited += labels[done:]
                out.occurred_at += whens[done:]
                out.violations += hit_violations[done_v:]
            if not replaced:
                break
            for name, n in zip(_RESULT_LISTS, mark, strict=True):
                del getattr(out, name)[n:]
        self._working.update({c: ChainHead(c, size, h) for c, (size, h) in new_heads.items()})
        return rejected

    def _too_large(self, msg: MessageLike, raw: bytes | None, size: int, now: datetime) -> _Reject:
        """The rejection of an input whose audit record (``size`` bytes with its key) is over budget."""
        source = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        exc = self._over_budget(size)
        return self._rejected(msg, source, raw, exc.reason, str(exc), exc, "seal", now)

    def _place(self, out: BatchResult, p: _Route) -> None:
        """The outputs of one sealed record into the batch's result."""
        item, seal = p.item, p.sealed
        out.sealed.append((item.record, seal.seq, seal.prev_hash, seal.record_hash))
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(item.source), p.key, seal.data))
        out.audited.append(p.labels)
        out.occurred_at.append(p.when)
        if p.violation is not None:
            out.outgoing.append(p.violation[0])
            out.violations.extend(p.violation[1])
        if item.seconds >= 0:
            out.decision_seconds.append(item.seconds)
        judged, event = item.judged, item.event
        if judged is not None and judged.reads and item.record.facts is not None and event is not None:
            out.ledger_reads.append(DecisionReads(
                item.source.partition or 0, item.record.facts.subject_pseudonym, to_us(event.occurred_at),
                item.record.chain_id, seal.seq, event.event_id, judged.reads, seal.data))

    def _place_fact(self, out: BatchResult, item: _Fact, seal: tuple[bytes, int, bytes, bytes], now: datetime
                    ) -> _Reject | None:
        """:meth:`_route` and :meth:`_place` of a record sealed from a facts tuple (the same outputs;
        its AuditRecord is built only if read), or the rejection that replaces it."""
        facts = self.facts
        assert facts is not None
        t, chain = item[ITEM_FACTS], item[ITEM_CHAIN]
        data, seq = seal[0], seal[1]
        stage = "seal"
        try:
            key = chain.encode()
            if len(data) + len(key) > self.budget.audit:
                self._check_budget(data, key)
            stage = "route"
            decided: _Template = item[_DECIDED]
            violation = self._fact_violation(item, seq, seal[3]) if decided.violation else None
            kind = t[facts.kind_at]
            labels = decided.audited.get(kind) or decided.audited.setdefault(
                kind, (decided.pack_id, kind, decided.verdict))
            when = t[facts.time_at] / 1_000_000  # int / int: correctly rounded, as occurred_at.timestamp()
        except TransientError:
            raise
        except DecodeError as exc:
            source = SourceRef(item[ITEM_TOPIC], item[ITEM_PARTITION], item[ITEM_OFFSET])
            return self._rejected(item[_MSG], source, item[_RAW], exc.reason, str(exc), exc, stage, now)
        except Exception as exc:  # noqa: BLE001 - one message never stops the batch
            source = SourceRef(item[ITEM_TOPIC], item[ITEM_PARTITION], item[ITEM_OFFSET])
            return self._faulted(item[_MSG], source, item[_RAW], exc, stage, now)
        routing = self.routing
        record: Any = LazyRecord(chain, data)
        out.sealed.append((record, seq, seal[2], seal[3]))
        out.outgoing.append(_outgoing(Outgoing, (routing.audit_topic, _audit_partition(
            item[ITEM_PARTITION], routing.audit_partitions), key, data, ())))
        out.audited.append(labels)
        out.occurred_at.append(when)
        if violation is not None:
            out.outgoing.append(violation[0])
            out.violations.extend(violation[1])
        if item[_SECONDS] >= 0:
            out.decision_seconds.append(item[_SECONDS])
        return None

    def append_record(self, out: BatchResult, record: AuditRecord) -> tuple[int, bytes]:
        """Seal ``record`` after its chain's working head and route it to the audit topic (a
        CORRECTION record, :mod:`auditor.stream.ledgerfeed`); returns its seq and hash."""
        data, seq, record_hash = self._seal(out, record)
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(record.source),
                                     record.chain_id.encode(), data))
        return seq, record_hash

    def _route(self, item: _Audit, seal: SealResult) -> _Route | _Reject:
        """The outputs of one sealed audit record, or the rejection that replaces it."""
        event, decision, record, source = item.event, item.decision, item.record, item.source
        stage = "seal"
        try:
            if isinstance(seal, Exception):
                raise seal
            seal = SealedBytes._make(seal)  # a plain tuple when the batch was sealed with tuples=True
            key = record.chain_id.encode()
            self._check_budget(seal.data, key)
            stage = "route"
            violation = None
            if decision.verdict is Verdict.VIOLATION:
                head = ChainHead(record.chain_id, seal.seq + 1, seal.record_hash)
                violation = self._violations(event, decision, item.evaluator, record, head, source, item.short)
            facts = record.facts
            if facts is None:
                raise TypeError("a decision record without facts")
            labels = (item.evaluator.compiled.id, facts.kind.value, decision.verdict.value)
            when = facts.occurred_at.timestamp()
        except TransientError:
            raise
        except DecodeError as exc:
            return self._rejected(item.msg, source, item.raw, exc.reason, str(exc), exc, stage, item.now)
        except Exception as exc:  # noqa: BLE001 - one message never stops the batch
            return self._faulted(item.msg, source, item.raw, exc, stage, item.now)
        return _Route(item, seal, key, labels, when, violation)

    def _check_budget(self, data: bytes, key: bytes) -> None:
        if len(data) + len(key) > self.budget.audit:
            raise self._over_budget(len(data))

    def _over_budget(self, size: int) -> DecodeError:
        """The error of an audit record of ``size`` bytes over the audit topic's budget."""
        return DecodeError(f"the audit record would be {size} bytes, over the audit topic's "
                           f"budget of {self.budget.audit} bytes", reason="record_too_large")

    def _violations(self, event: Any, decision: Decision, evaluator: MemoEvaluator,
                    record: AuditRecord, head: ChainHead, source: SourceRef,
                    short: bool) -> tuple[Outgoing, list[tuple[str, str, str, str, str]]]:
        """The violation message of one event and its metric labels (nothing is stored here)."""
        pack = evaluator.compiled
        # from the facts tuple (event None, a short input): the record's facts are the event's, uncut
        recipient, purpose = (event.recipient, event.purpose) if event is not None else \
            (record.facts.recipient, record.facts.purpose)  # type: ignore[union-attr]
        rtype = recipient.type if recipient is not None else "none"
        if rtype != "none" and rtype not in pack.pack.recipients:
            rtype = UNDECLARED
        purpose = purpose if purpose in pack.pack.purposes else UNDECLARED
        labels = [(pack.id, v.rule_id, v.rule.severity, rtype, purpose) for v in decision.violations]
        message = self._violation_message(decision, record, head.size - 1, head.head_hash, source,
                                          () if short else long_texts(event))
        return message, labels

    def _facts_of(self, decision: Decision, template: Decision) -> DecisionFacts:
        """The record form of a decision, built once per memoised template.

        Only a template the evaluator's memo shares (``decision is not template``) is worth keeping:
        an event the memo did not keep (large facts) has a template of its own, seen once."""
        if decision is template:
            return decision_facts(template)
        return self._template(template).facts

    def _template(self, template: Decision) -> _Template:
        """What is built once per memoised decision template: its record form, that form encoded
        (the compiled path), its violation message's fixed parts (on the first violation)."""
        hit = self._decided.data.get(id(template))
        if hit is None or hit.template is not template:
            facts = decision_facts(template)
            hot = self.hot
            raw = hot.sealer.encode_field("decision", facts) if isinstance(hot, NativePath) else b""
            size = sum(len(v.reason) + len(v.rule_id) + len(v.clause) + 300 for v in facts.violations)
            size += sum(len(v.reason) + 300 for v in template.considered)
            # the template's size too, and the message parts made on its first violation
            hit = self._decided.put(id(template), _Template(template, facts, raw), 1024 + 4 * size + 2 * len(raw))
        return hit

    def _fact_violation(self, it: _Fact, seq: int, record_hash: bytes
                        ) -> tuple[Outgoing, list[tuple[str, str, str, str, str]]]:
        """:meth:`_violations` of an event audited from its facts tuple: the message is the
        template's fixed JSON parts with this event's values put in (the same bytes)."""
        facts = self.facts
        assert facts is not None
        decided: _Template = it[_DECIDED]
        t = it[ITEM_FACTS]
        rtype, purpose = t[facts.rtype_at], t[facts.purpose_at]
        labels = self._violation_labels(decided, it[_EVALUATOR].compiled, rtype, purpose)
        parts = decided.parts or self._message_parts(decided)
        topic, partition, offset, eid = it[ITEM_TOPIC], it[ITEM_PARTITION], it[ITEM_OFFSET], t[facts.id_at]
        occurred = (_EPOCH + timedelta(microseconds=t[facts.time_at])).isoformat()
        slots = {"event_id": eid, "source": f"{topic}/{partition}@{offset}", "chain_id": it[ITEM_CHAIN],
                 "seq": seq, "record_hash": record_hash.hex(), "kind": t[facts.kind_at], "purpose": purpose,
                 "recipient_type": rtype, "subject_pseudonym": it[ITEM_SUBJECT],
                 "pseudonym_key_id": self.pseudonymizer.key_id, "occurred_at": occurred}
        text = [parts[0]]
        for k in range(1, len(parts), 2):
            text.append(_slot_text(slots[parts[k]]))
            text.append(parts[k + 1])
        key = (eid or "").encode()
        value = "".join(text).encode()
        if message_size(value, key) > self.budget.violations:
            value = self._truncated(json.loads(value), decided.template)
        self.python_violations += 1
        return Outgoing(self.routing.violations_topic, None, key, value), labels

    @staticmethod
    def _violation_labels(decided: _Template, pack: CompiledPack, rtype: str | None, purpose: str
                          ) -> list[tuple[str, str, str, str, str]]:
        """The violation metric labels of an event decided as ``decided`` (one per violation), by
        its recipient type and purpose (kept per pair in the template)."""
        labels = decided.labels.get((rtype, purpose))
        if labels is None:
            # as _violations: a recipient type that reads "none" is "none", declared or not
            r = "none" if rtype is None or rtype == "none" else rtype if rtype in pack.pack.recipients else UNDECLARED
            p = purpose if purpose in pack.pack.purposes else UNDECLARED
            labels = decided.labels[(rtype, purpose)] = [
                (pack.id, v.rule_id, v.rule.severity, r, p) for v in decided.template.violations]
        return labels

    @staticmethod
    def _message_parts(decided: _Template) -> list[str]:
        """The violation message of a template as JSON text cut at each per-event value:
        ``[text, slot name, text, slot name, ..., text]`` (and in ``decided.cut`` its truncated
        form, :meth:`_truncated`, cut the same way: what the compiled path fills in)."""
        doc: dict[str, Any] = decision_to_dict(decided.template)
        doc.update({name: f"\0{name}\0" for name in _MESSAGE_SLOTS})
        decided.parts = _SLOT.split(json.dumps(doc, separators=(",", ":")))
        decided.cut = _SLOT.split(BatchProcessor._truncated(doc, decided.template).decode())
        return decided.parts

    def _seal_after(self, record: AuditRecord) -> tuple[bytes, bytes, ChainHead]:
        """The record sealed after its chain's working head: (its bytes, the previous hash, the new
        head). The new head is not stored: the caller does that once nothing else can fail."""
        chain = record.chain_id
        head = self._working.get(chain) or self.heads.get(chain) or ChainHead.genesis(chain)
        data, new_head = seal_bytes(head, record)
        return data, head.head_hash, new_head

    def _seal(self, out: BatchResult, record: AuditRecord) -> tuple[bytes, int, bytes]:
        """Seal after the chain's working head and advance it: (the record's bytes, its seq, its hash)."""
        data, prev_hash, new_head = self._seal_after(record)
        self._working[record.chain_id] = new_head
        out.sealed.append((record, new_head.size - 1, prev_hash, new_head.head_hash))
        return data, new_head.size - 1, new_head.head_hash

    def _violation_message(self, d: Decision, record: AuditRecord, seq: int, record_hash: bytes,
                           source: SourceRef, long_values: tuple[str, ...] = ()) -> Outgoing:
        doc: dict[str, Any] = decision_to_dict(d)
        facts = record.facts
        doc.update({
            "event_id": record.event_id,
            "source": str(source), "chain_id": record.chain_id, "seq": seq,
            "record_hash": record_hash.hex(),
            "kind": facts.kind.value if facts else None,
            "purpose": facts.purpose if facts else None,
            "recipient_type": facts.recipient.type if facts and facts.recipient else None,
            "subject_pseudonym": facts.subject_pseudonym if facts else None,
            "pseudonym_key_id": record.pseudonym_key_id,
            "occurred_at": facts.occurred_at.isoformat() if facts else None,
        })
        if long_values:
            doc = _bounded_doc(doc, long_values)
        key = (record.event_id or "").encode()
        value = json.dumps(doc, separators=(",", ":")).encode()
        if message_size(value, key) > self.budget.violations:
            value = self._truncated(doc, d)
        return Outgoing(self.routing.violations_topic, None, key, value)

    @staticmethod
    def _truncated(doc: dict[str, Any], d: Decision) -> bytes:
        """A violation message over its budget: the rule ids and the record's place in the trail
        still fit; the reasons are in the record."""
        doc = {k: doc[k] for k in ("event_id", "verdict", "pack", "pack_hash", "source", "chain_id", "seq",
                                   "record_hash", "subject_pseudonym", "pseudonym_key_id")}
        doc["violations"] = [{"rule": v.rule_id} for v in d.violations]
        doc["truncated"] = True
        return json.dumps(doc, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ rejects
    def reject_unwritable(self, msg: MessageLike, error: str) -> BatchResult:
        """One message whose outputs the broker refuses however its batch is split (the runner's
        batch split calls this, see stream/split.py): a REJECTION record and a dead letter that
        carries only a reference to the original (its SHA-256, size, topic, partition, offset).
        The broker's error text is logged by the caller, not kept (a bounded label is)."""
        out = BatchResult()
        source = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        message = "the broker refused this input's outputs (too large or against a topic policy)"
        self._seal_and_route(out, [self._rejected(msg, source, msg.value(), UNWRITABLE, message, BrokerError(message),
                                                  "produce", self.clock(), reference_only=True)])
        return out

    def _faulted(self, msg: MessageLike, source: SourceRef, raw: bytes | None,
                 exc: Exception, stage: str, now: datetime) -> _Reject:
        """An unexpected exception while auditing one message: an auditor fault, dead-lettered.

        Neither the exception's text nor its traceback's values are kept (they may quote the
        payload): the log names the stage, the exception class and the line that raised it."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb is not None else "?"
        log.error("auditing one message failed; it is dead-lettered", stage=stage, error_class=type(exc).__name__,
                  where=where, topic=source.topic, partition=source.partition, offset=source.offset)
        message = (f"{stage} failed with {type(exc).__name__} (a fault of the auditor, not necessarily of "
                   f"the input; the daemon log names where)")
        return self._rejected(msg, source, raw, f"{stage}_failed", message, exc, stage, now)

    def _rejected(self, msg: MessageLike, source: SourceRef, raw: bytes | None, reason: str, message: str,
                  exc: Exception, stage: str, now: datetime, reference_only: bool = False) -> _Reject:
        """The REJECTION record of one input (unsealed) and what its dead letter needs.

        The exception's traceback is dropped (nothing reads it after this): an exception kept as a
        decode or seal result links, through its traceback's frames, back to that result list and to
        the batch's BatchResult. That cycle kept the whole batch (every record, item and output)
        alive until a garbage collection found it, whenever one message of the batch was refused.
        The exceptions it was raised from or while handling (``__cause__``, ``__context__``) drop
        theirs too: their frames link back to the same calls (a truncated Avro body's DecodeError
        is raised from fastavro's error)."""
        _drop_tracebacks(exc)
        message = message[:500]
        value = raw or b""
        record = build_rejection(hashlib.sha256(value).digest(), reason, message, source,
                                 pseudonym_key_id=self.pseudonymizer.key_id,
                                 instance_id=self.instance_id, now=now)
        return _Reject(msg, source, value, record, reason, message, type(exc), stage, reference_only)

    def _dead_letter(self, out: BatchResult, item: _Reject, data: bytes, seq: int) -> None:
        """The sealed rejection to the audit topic, the input to the dead-letter topic."""
        record, source = item.record, item.source
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(source),
                                     record.chain_id.encode(), data))
        out.dead_letters.append(item.reason)
        try:
            original_key, original_headers = item.msg.key(), item.msg.headers()
        except (ValueError, TypeError, UnicodeError):  # a client that cannot decode them: the bytes still go
            original_key, original_headers = None, None
        key, value, headers = dead_letter(
            self.budget.dead_letter, source, item.value, original_key, original_headers, error_class=item.error_class,
            reason=item.reason, message=item.message, stage=item.stage, chain=record.chain_id, seq=seq,
            task=self.instance_id, reference_only=item.reference_only)
        out.outgoing.append(Outgoing(self.routing.dead_letter_topic, None, key, value, headers))


class _SealFailed(Exception):
    """The compiled call that seals a batch with the shadow's hits failed as a whole (nothing placed)."""


class _Audit(NamedTuple):
    """One event audited: its record, not sealed yet, and what routing it needs."""

    msg: MessageLike
    source: SourceRef
    raw: bytes | None
    record: AuditRecord
    event: Event | None  # None: audited from the facts tuple (stream/factpath.py)
    decision: Decision
    evaluator: MemoEvaluator
    short: bool
    seconds: float
    now: datetime
    judged: Judged | None = None  # l12: the ledger's part of the decision


class _Reject(NamedTuple):
    """One input that could not be audited: its REJECTION record (not sealed yet) and its dead letter."""

    msg: MessageLike
    source: SourceRef
    value: bytes
    record: AuditRecord
    reason: str
    message: str
    error_class: type[BaseException]
    stage: str
    reference_only: bool


class _Route(NamedTuple):
    """One sealed audit record and its outputs besides the record itself."""

    item: _Audit
    sealed: SealedBytes
    key: bytes
    labels: tuple[str, str, str]
    when: float
    violation: tuple[Outgoing, list[tuple[str, str, str, str, str]]] | None


class _Template:
    """What is built once per memoised decision template (:meth:`BatchProcessor._template`)."""

    __slots__ = ("template", "facts", "raw", "parts", "cut", "labels", "verdict", "violation", "pack_id", "audited")

    def __init__(self, template: Decision, facts: DecisionFacts, raw: bytes) -> None:
        self.template = template
        #: what routing reads of every event (an Enum's .value costs a descriptor call)
        self.verdict, self.violation, self.pack_id = (
            template.verdict.value, template.verdict is Verdict.VIOLATION, template.pack_id)
        #: the record form, and that form encoded as the record's decision field (compiled path)
        self.facts, self.raw = facts, raw
        #: the violation message cut at its per-event values (made on the first violation)
        self.parts: list[str] | None = None
        #: the truncated violation message, cut the same way (made with ``parts``)
        self.cut: list[str] | None = None
        #: violation metric labels per (recipient type, purpose)
        self.labels: dict[tuple[str | None, str], list[tuple[str, str, str, str, str]]] = {}
        #: audited metric labels (pack, kind, verdict) per event kind
        self.audited: dict[str, tuple[str, str, str]] = {}


#: One event audited from its facts tuple: the item the compiled sealer builds its record from
#: (``ITEM_*`` of :mod:`auditor.stream.factpath`, positions 0-8), then what routing needs (``_MSG`` ...).
#: A plain tuple: the sealer reads it as it is, and no object per event is made besides it.
_Fact = tuple[Any, ...]
_MSG, _RAW, _DECIDED, _EVALUATOR, _SECONDS = range(ITEM_DECISION + 1, ITEM_DECISION + 6)
#: what the batch's audit holds per message, in order
_Item = _Audit | _Reject | _Fact
#: the lists of a BatchResult (a batch sealed again takes back what its earlier round put in them)
_RESULT_LISTS = ("outgoing", "sealed", "audited", "violations", "dead_letters", "decision_seconds", "occurred_at",
                 "ledger_reads")
_outgoing = tuple.__new__  # Outgoing(...) without the NamedTuple's Python-level __new__


class PyLazyRecord:
    """The unsealed :class:`AuditRecord` of a record the compiled sealer built from a facts tuple:
    built from the record's bytes on first use (few callers ever look at it; the chain id is at hand).
    The reference of the compiled ``LazyRecord`` (:data:`LazyRecord`), which the memo's shadow
    makes without a Python call and untracked by the garbage collector."""

    __slots__ = ("chain_id", "_data", "_record")

    def __init__(self, chain_id: str, data: bytes) -> None:
        self.chain_id = chain_id
        self._data = data
        self._record: AuditRecord | None = None

    def record(self) -> AuditRecord:
        if self._record is None:
            self._record = record_from_bytes(self._data)._replace(seq=-1, prev_hash=b"", record_hash=b"")
        return self._record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record(), name)

    def __eq__(self, other: object) -> bool:
        return self.record() == (other.record() if isinstance(other, PyLazyRecord | LazyRecord) else other)

    def __hash__(self) -> int:
        return hash(self.record())

    def __repr__(self) -> str:
        return f"LazyRecord({self.record()!r})"


#: what BatchResult.sealed holds for a record sealed from its facts tuple: the compiled form where
#: the module has it (the same equality, hash, attributes and repr as :class:`PyLazyRecord`)
LazyRecord: Any = NativeLazyRecord if NativeLazyRecord is not None else PyLazyRecord


#: the per-event values of a violation message (:meth:`BatchProcessor._violation_message`)
_MESSAGE_SLOTS = ("event_id", "source", "chain_id", "seq", "record_hash", "kind", "purpose", "recipient_type",
                  "subject_pseudonym", "pseudonym_key_id", "occurred_at")
_SLOT = re.compile(r'"\\u0000(\w+)\\u0000"')
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str


def _slot_text(v: Any) -> str:
    """A per-event value of a violation message as JSON text (a str, None or an int)."""
    return _json_str(v) if type(v) is str else "null" if v is None else str(v)


def _count_hits(sampled: list[int], timed: int, start: int, stop: int) -> int:
    """The hits at the positions ``start`` to ``stop`` counted as decisions after ``timed``: the
    positions of those timed (the count at them is 1 modulo DECISION_TIMING_SAMPLE) go into
    ``sampled``; returns the count after them."""
    first = start + (-timed) % DECISION_TIMING_SAMPLE  # the count at position start + k is timed + 1 + k
    sampled.extend(range(first, stop, DECISION_TIMING_SAMPLE))
    return timed + stop - start


def _drop_tracebacks(exc: BaseException) -> None:
    """Drop the traceback of ``exc`` and of every exception it was raised from or while handling."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += (e.__cause__, e.__context__)


def _bounded_doc(node: Any, long_values: tuple[str, ...]) -> Any:
    """A JSON document with every string bounded (a violation message of an event with long values)."""
    if isinstance(node, str):
        return bound_text(node, long_values)
    if isinstance(node, dict):
        return {k: _bounded_doc(v, long_values) for k, v in node.items()}
    if isinstance(node, list):
        return [_bounded_doc(v, long_values) for v in node]
    return node
