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

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from auditor.native import FACT_MEMO_BUILT, Decoded, FactMemo, NativeEventDecoder, NativeSealer, SealedBytes
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

    def judge(self, event: Event, evaluator: MemoEvaluator, partition: int) -> Judged: ...


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
        self._chain_keys: dict[str, bytes] = {}
        #: decision seconds per event of the last batch the shadow decided in, and the ids of the
        #: batch's hit tuples whose decision is observed (one decision in DECISION_TIMING_SAMPLE)
        self._hit_seconds = 0.0
        self._sampled: set[int] = set()
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
            items = self._audit_facts(batch, values, self.hot, self.facts, now)
        else:
            audit = self._audit
            items = [audit(m, v, d, now) for m, v, d in zip(batch, values, self.hot.decode(values), strict=True)]
        self._seal_and_route(out, items, now)
        return out

    def _audit_facts(self, batch: list[MessageLike], values: list[bytes | None], hot: NativePath, facts: FactPath,
                     now: datetime) -> list[_Item]:
        """The batch as facts tuples (one call): what the memo already decided is audited from the
        tuple (sealed by the compiled sealer from the tuple too); the rest is decoded into Events
        (one more call) and audited the full way.

        An event audited from its tuple becomes one :data:`_Fact` item. The loop is written out
        with its lookups bound once per batch: it runs once per event of every batch."""
        items: list[_Item | None] = []
        rest: list[int] = []
        lookup, actor_at, subject_at, kind_at = facts.lookup, facts.actor_at, facts.subject_at, facts.kind_at
        chains, chain_of = self._chains, self._chain_of
        decided_memo, template_of = self._decided.data, self._template
        pseudonymize = self.pseudonymizer
        known: Mapping[str, str] | None = getattr(pseudonymize, "known", None)
        if known is None:  # a pseudonymizer without a memo to read
            known = {}
        perf_counter = time.perf_counter
        layout = self._fact_layout(hot)
        shadow = self._shadow_ready(hot) if layout is not None else None
        if shadow is not None:
            assert layout is not None
            start = perf_counter()
            results = hot.decide(shadow, layout, values, batch, (now,))
            hits = shadow.take_hits()
            if any(hits):
                for owner, n in enumerate(hits):
                    self._owners[owner].memo_hits += n
                facts.hits += sum(hits)
                self._hit_seconds = (perf_counter() - start) / len(values)
        else:
            results = hot.decode_facts(values)
        owner_of = self._owner_of
        timed = self._timed
        sampled = self._sampled
        sampled.clear()
        for i, (msg, raw, result) in enumerate(zip(batch, values, results, strict=True)):
            if type(result) is tuple:  # the shadow decided it and built its record's body
                timed += 1
                if timed % DECISION_TIMING_SAMPLE == 1:
                    sampled.add(id(result))
                items.append(result)
                continue
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
                        if shadow is not None and not decided.violation:  # the shadow decides the next ones
                            compiled = evaluator.compiled
                            kind = t[kind_at]
                            shadow.learn(raw, key_of.facts, compiled.pack.minor_age, owner_of[id(compiled)],
                                         (decided.pack_id, kind, decided.verdict), decided.raw)
                except Exception:  # noqa: BLE001 - the full path judges it again and names any failure
                    item = None
            if item is None:
                rest.append(i)
            items.append(item)
        self._timed = timed
        if rest:
            decoded = hot.decode([values[i] for i in rest])
            for i, d in zip(rest, decoded, strict=True):
                items[i] = self._audit(batch[i], values[i], d, now)
        return items  # type: ignore[return-value]  # every None was replaced

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
        made_for = (p, tuple(c.memo_epoch for c in self._owners))
        if made_for != self._shadow_for:
            shadow.reset()
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
                judged = self.ledger.judge(event, evaluator, partition)
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
            place_fact, dead_letter = self._place_fact, self._dead_letter
            for i, (item, seal) in enumerate(zip(items, sealed, strict=True)):
                reject: _Audit | _Reject | None
                if type(item) is tuple and type(item[HIT_BODY]) is bytes:  # decided by the shadow
                    assert now is not None
                    if isinstance(seal, Exception):  # not sealed: decoded and audited the full way
                        _drop_tracebacks(seal)
                        reject = self._audit(item[HIT_MSG], item[HIT_RAW], self.hot.decode([item[HIT_RAW]])[0], now)
                    else:
                        reject = self._place_hit(out, item, seal, now)
                elif type(item) is tuple:  # a _Fact
                    assert now is not None
                    if isinstance(seal, Exception):  # the compiled sealer could not build it: the full way
                        _drop_tracebacks(seal)  # its frames link back to these results: a reference cycle
                        reject = self._full_way(item, now)
                    else:
                        reject = place_fact(out, item, seal, now)
                elif isinstance(item, _Reject):
                    if isinstance(seal, Exception):
                        raise seal  # a rejection that cannot be sealed: the batch fails (as it always did)
                    out.sealed.append((item.record, seal[1], seal[2], seal[3]))
                    dead_letter(out, item, seal[0], seal[1])
                    continue
                else:
                    assert isinstance(item, _Audit)
                    route = self._route(item, seal)
                    if isinstance(route, _Reject):
                        reject = route
                    else:
                        self._place(out, route)
                        continue
                if reject is not None:
                    items[i], replaced = reject, True
            if not replaced:
                break
            for name, n in zip(_RESULT_LISTS, mark, strict=True):
                del getattr(out, name)[n:]
        self._working.update(new_heads)

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

    def _place_hit(self, out: BatchResult, item: _Hit, seal: tuple[bytes, int, bytes, bytes], now: datetime
                   ) -> _Reject | None:
        """:meth:`_place_fact` of a record the shadow of the memo built (never a violation), or the
        rejection that replaces it."""
        chain, data = item[HIT_CHAIN], seal[0]
        key = self._chain_keys.get(chain)
        if key is None:
            if len(self._chain_keys) > 10_000:
                self._chain_keys.clear()
            key = self._chain_keys[chain] = chain.encode()
        if len(data) + len(key) > self.budget.audit:
            msg = item[HIT_MSG]
            source = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            try:
                self._check_budget(data, key)
            except DecodeError as exc:
                return self._rejected(msg, source, item[HIT_RAW], exc.reason, str(exc), exc, "seal", now)
        routing = self.routing
        record: Any = LazyRecord(chain, data)
        out.sealed.append((record, seal[1], seal[2], seal[3]))
        out.outgoing.append(_outgoing(Outgoing, (routing.audit_topic, _audit_partition(
            item[HIT_PARTITION], routing.audit_partitions), key, data, ())))
        out.audited.append(item[HIT_LABELS])
        out.occurred_at.append(item[HIT_WHEN])
        if id(item) in self._sampled:
            out.decision_seconds.append(self._hit_seconds)
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
        audit_budget = self.budget.audit
        if len(data) + len(key) > audit_budget:
            raise DecodeError(f"the audit record would be {len(data)} bytes, over the audit topic's "
                              f"budget of {audit_budget} bytes", reason="record_too_large")

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
        pack = it[_EVALUATOR].compiled
        rtype, purpose = t[facts.rtype_at], t[facts.purpose_at]
        labels = decided.labels.get((rtype, purpose))
        if labels is None:
            r = "none" if rtype is None else rtype if rtype in pack.pack.recipients else UNDECLARED
            p = purpose if purpose in pack.pack.purposes else UNDECLARED
            labels = decided.labels[(rtype, purpose)] = [
                (pack.id, v.rule_id, v.rule.severity, r, p) for v in decided.template.violations]
        parts = decided.parts or self._message_parts(decided)
        topic, partition, offset, eid = it[ITEM_TOPIC], it[ITEM_PARTITION], it[ITEM_OFFSET], t[facts.id_at]
        occurred = (_EPOCH + timedelta(microseconds=t[facts.time_at])).isoformat()
        slots = {"event_id": eid, "source": f"{topic}/{partition}@{offset}", "chain_id": it[ITEM_CHAIN],
                 "seq": seq, "record_hash": record_hash.hex(), "kind": t[facts.kind_at], "purpose": purpose,
                 "recipient_type": rtype, "subject_pseudonym": it[ITEM_SUBJECT],
                 "pseudonym_key_id": self.pseudonymizer.key_id, "occurred_at": occurred}
        text = [parts[0]]
        for k in range(1, len(parts), 2):
            v = slots[parts[k]]
            text.append(_json_str(v) if type(v) is str else "null" if v is None else str(v))
            text.append(parts[k + 1])
        key = (eid or "").encode()
        value = "".join(text).encode()
        if message_size(value, key) > self.budget.violations:
            value = self._truncated(json.loads(value), decided.template)
        return Outgoing(self.routing.violations_topic, None, key, value), labels

    @staticmethod
    def _message_parts(decided: _Template) -> list[str]:
        """The violation message of a template as JSON text cut at each per-event value:
        ``[text, slot name, text, slot name, ..., text]``."""
        doc: dict[str, Any] = decision_to_dict(decided.template)
        doc.update({name: f"\0{name}\0" for name in _MESSAGE_SLOTS})
        decided.parts = _SLOT.split(json.dumps(doc, separators=(",", ":")))
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

    __slots__ = ("template", "facts", "raw", "parts", "labels", "verdict", "violation", "pack_id", "audited")

    def __init__(self, template: Decision, facts: DecisionFacts, raw: bytes) -> None:
        self.template = template
        #: what routing reads of every event (an Enum's .value costs a descriptor call)
        self.verdict, self.violation, self.pack_id = (
            template.verdict.value, template.verdict is Verdict.VIOLATION, template.pack_id)
        #: the record form, and that form encoded as the record's decision field (compiled path)
        self.facts, self.raw = facts, raw
        #: the violation message cut at its per-event values (made on the first violation)
        self.parts: list[str] | None = None
        #: violation metric labels per (recipient type, purpose)
        self.labels: dict[tuple[str | None, str], list[tuple[str, str, str, str, str]]] = {}
        #: audited metric labels (pack, kind, verdict) per event kind
        self.audited: dict[str, tuple[str, str, str]] = {}


#: One event audited from its facts tuple: the item the compiled sealer builds its record from
#: (``ITEM_*`` of :mod:`auditor.stream.factpath`, positions 0-8), then what routing needs (``_MSG`` ...).
#: A plain tuple: the sealer reads it as it is, and no object per event is made besides it.
_Fact = tuple[Any, ...]
_MSG, _RAW, _DECIDED, _EVALUATOR, _SECONDS = range(ITEM_DECISION + 1, ITEM_DECISION + 6)
#: One event the shadow of the memo decided (:meth:`auditor.native.FactMemo.decide`): its record's
#: body, chain id, partition, occurred_at in seconds, audited labels (the learnt handle), message, value.
_Hit = tuple[Any, ...]
HIT_BODY, HIT_CHAIN, HIT_PARTITION, HIT_WHEN, HIT_LABELS, HIT_MSG, HIT_RAW = range(7)
#: what the batch's audit holds per message, in order
_Item = _Audit | _Reject | _Fact | _Hit
#: the lists of a BatchResult (a batch sealed again takes back what its earlier round put in them)
_RESULT_LISTS = ("outgoing", "sealed", "audited", "violations", "dead_letters", "decision_seconds", "occurred_at",
                 "ledger_reads")
_outgoing = tuple.__new__  # Outgoing(...) without the NamedTuple's Python-level __new__


class LazyRecord:
    """The unsealed :class:`AuditRecord` of a record the compiled sealer built from a facts tuple:
    built from the record's bytes on first use (few callers ever look at it; the chain id is at hand)."""

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
        return self.record() == (other.record() if isinstance(other, LazyRecord) else other)

    def __hash__(self) -> int:
        return hash(self.record())

    def __repr__(self) -> str:
        return f"LazyRecord({self.record()!r})"


#: the per-event values of a violation message (:meth:`BatchProcessor._violation_message`)
_MESSAGE_SLOTS = ("event_id", "source", "chain_id", "seq", "record_hash", "kind", "purpose", "recipient_type",
                  "subject_pseudonym", "pseudonym_key_id", "occurred_at")
_SLOT = re.compile(r'"\\u0000(\w+)\\u0000"')
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str


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
