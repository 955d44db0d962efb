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
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from auditor.errors import BrokerError, DecodeError, TransientError
from auditor.events.model import Event
from auditor.events.wire import EventDecoder
from auditor.ledger.join import Judged
from auditor.ledger.late import DecisionReads
from auditor.ledger.model import to_us
from auditor.logging import get_logger
from auditor.memo import BytesMemo
from auditor.policy import CompiledPack, Decision, Verdict
from auditor.policy.decision import decision_to_dict
from auditor.policy.engine import MemoEvaluator
from auditor.stream.budget import HeadersLike, OutputBudget, dead_letter, message_size
from auditor.trail import chainid
from auditor.trail.chain import ChainHead, SealedBatch, seal_bytes
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
    #: (unsealed record, seq, prev_hash, record_hash); ``records`` builds the sealed records on demand
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
    def __init__(self, decoder: EventDecoder, packs: Mapping[str, CompiledPack], pseudonymizer: Any,
                 routing: Routing, instance_id: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 budget: OutputBudget | None = None) -> None:
        self.decoder = decoder
        self.packs = dict(packs)
        self.evaluators = {pid: MemoEvaluator(p) for pid, p in self.packs.items()}
        #: the record form of each memoised decision template, by the template's id (bounded by bytes)
        self._decided: BytesMemo[int, tuple[Decision, DecisionFacts]] = BytesMemo(DECIDED_MAX_BYTES, 64 * 1024)
        self._timed = 0
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

    def commit_heads(self) -> None:
        self.heads.update(self._working)
        self._working.clear()

    def discard_heads(self) -> None:
        self._working.clear()

    def audit_partition(self, source: SourceRef) -> int:
        return chainid.audit_partition(source.partition, self.routing.audit_partitions)

    # ------------------------------------------------------------------ batch
    def process(self, messages: Iterable[MessageLike]) -> BatchResult:
        out = BatchResult()
        now = self.clock()
        decode, evaluators, sha256 = self.decoder.decode, self.evaluators, hashlib.sha256
        pseudonymizer, instance_id, audit_budget = self.pseudonymizer, self.instance_id, self.budget.audit
        audit_topic, audit_partitions = self.routing.audit_topic, self.routing.audit_partitions
        outgoing, sealed, audited, occurred = out.outgoing, out.sealed, out.audited, out.occurred_at
        ledger = self.ledger
        for msg in messages:
            partition = msg.partition() or 0
            source = SourceRef(msg.topic() or "", partition, msg.offset() or 0)
            raw = msg.value()
            stage = "decode"
            # Nothing in this block changes any state, so a failure anywhere leaves no half record.
            try:
                decoded = decode(raw)
                event = decoded.event
                evaluator = evaluators.get(event.policy_id)
                if evaluator is None:
                    # the policy_id is payload: name the packs loaded, never the value received
                    raise DecodeError(f"the event names a policy this auditor does not load (loaded: "
                                      f"{', '.join(sorted(self.packs))})", reason="unknown_policy")
                stage = "evaluate"
                self._timed += 1
                seconds = -1.0
                t0 = time.perf_counter() if self._timed % DECISION_TIMING_SAMPLE == 1 else -1.0
                judged = None
                if ledger is not None:
                    judged = ledger.judge(event, evaluator, partition)
                    decision = template = judged.decision
                else:
                    decision, template = evaluator(event)
                if t0 >= 0:
                    seconds = time.perf_counter() - t0
                stage = "build"
                short = raw is not None and len(raw) <= MAX_TEXT
                record = build_record(event, decision, source, pseudonymizer, instance_id, now,
                                      digest=sha256(decoded.canonical).digest(),
                                      decided=self._facts_of(decision, template), short=short,
                                      ledger=judged.ledger if judged is not None else None)
                stage = "seal"
                chain = record.chain_id
                data, prev_hash, head = self._seal_after(record)
                key = chain.encode()
                if len(data) + len(key) > audit_budget:
                    raise DecodeError(f"the audit record would be {len(data)} bytes, over the audit topic's "
                                      f"budget of {audit_budget} bytes", reason="record_too_large")
                stage = "route"
                violation = None
                if decision.verdict is Verdict.VIOLATION:
                    violation = self._violations(event, decision, evaluator, record, head, source, short)
                labels = (evaluator.compiled.id, event.kind.value, decision.verdict.value)
                when = event.occurred_at.timestamp()
            except TransientError:
                raise
            except DecodeError as exc:
                self._reject(out, msg, source, raw, exc.reason, str(exc), exc, stage, now)
                continue
            except Exception as exc:  # noqa: BLE001 - one message never stops the batch
                self._fault(out, msg, source, raw, exc, stage, now)
                continue
            self._working[chain] = head
            sealed.append((record, head.size - 1, prev_hash, head.head_hash))
            outgoing.append(Outgoing(audit_topic, chainid.audit_partition(partition, audit_partitions), key, data))
            audited.append(labels)
            occurred.append(when)
            if violation is not None:
                outgoing.append(violation[0])
                out.violations.extend(violation[1])
            if seconds >= 0:
                out.decision_seconds.append(seconds)
            if judged is not None and judged.reads and record.facts is not None:
                out.ledger_reads.append(DecisionReads(
                    partition, record.facts.subject_pseudonym, to_us(event.occurred_at), chain, head.size - 1,
                    event.event_id, judged.reads, data))
        return out

    def append_record(self, out: BatchResult, record: AuditRecord) -> tuple[int, bytes]:
        """Seal ``record`` after its chain's working head and route it to the audit topic (a
        CORRECTION record, :mod:`auditor.stream.ledgerfeed`); returns its seq and hash."""
        data, seq, record_hash = self._seal(out, record)
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(record.source),
                                     record.chain_id.encode(), data))
        return seq, record_hash

    def _violations(self, event: Any, decision: Decision, evaluator: MemoEvaluator,
                    record: AuditRecord, head: ChainHead, source: SourceRef,
                    short: bool) -> tuple[Outgoing, list[tuple[str, str, str, str, str]]]:
        """The violation message of one event and its metric labels (nothing is stored here)."""
        pack = evaluator.compiled
        rtype = event.recipient.type if event.recipient is not None else "none"
        if rtype != "none" and rtype not in pack.pack.recipients:
            rtype = UNDECLARED
        purpose = event.purpose if event.purpose in pack.pack.purposes else UNDECLARED
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
        hit = self._decided.data.get(id(template))
        if hit is None or hit[0] is not template:
            facts = decision_facts(template)
            size = sum(len(v.reason) + len(v.rule_id) + len(v.clause) + 300 for v in facts.violations)
            size += sum(len(v.reason) + 300 for v in template.considered)
            hit = self._decided.put(id(template), (template, facts), 1024 + 2 * size)  # the template's too
        return hit[1]

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
            # the rule ids and the record's place in the trail still fit; the reasons are in the record
            doc = {k: doc[k] for k in ("event_id", "verdict", "pack", "pack_hash", "source", "chain_id", "seq",
                                       "record_hash", "subject_pseudonym", "pseudonym_key_id")}
            doc["violations"] = [{"rule": v.rule_id} for v in d.violations]
            doc["truncated"] = True
            value = json.dumps(doc, separators=(",", ":")).encode()
        return Outgoing(self.routing.violations_topic, None, key, value)

    # ------------------------------------------------------------------ rejects
    def reject_unwritable(self, msg: MessageLike, error: str) -> BatchResult:
        """One message whose outputs the broker refuses however its batch is split (the runner's
        batch split calls this, see stream/split.py): a REJECTION record and a dead letter that
        carries only a reference to the original (its SHA-256, size, topic, partition, offset).
        The broker's error text is logged by the caller, not kept (a bounded label is)."""
        out = BatchResult()
        source = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        message = "the broker refused this input's outputs (too large or against a topic policy)"
        self._reject(out, msg, source, msg.value(), UNWRITABLE, message, BrokerError(message), "produce",
                     self.clock(), reference_only=True)
        return out

    def _fault(self, out: BatchResult, msg: MessageLike, source: SourceRef, raw: bytes | None,
               exc: Exception, stage: str, now: datetime) -> None:
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
        self._reject(out, msg, source, raw, f"{stage}_failed", message, exc, stage, now)

    def _reject(self, out: BatchResult, msg: MessageLike, source: SourceRef, raw: bytes | None, reason: str,
                message: str, exc: Exception, stage: str, now: datetime, reference_only: bool = False) -> None:
        message = message[:500]
        value = raw or b""
        record = build_rejection(hashlib.sha256(value).digest(), reason, message, source,
                                 pseudonym_key_id=self.pseudonymizer.key_id,
                                 instance_id=self.instance_id, now=now)
        data, seq, _ = self._seal(out, record)
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(source),
                                     record.chain_id.encode(), data))
        out.dead_letters.append(reason)
        try:
            original_key, original_headers = msg.key(), msg.headers()
        except (ValueError, TypeError, UnicodeError):  # a client that cannot decode them: the bytes still go
            original_key, original_headers = None, None
        key, value, headers = dead_letter(
            self.budget.dead_letter, source, value, original_key, original_headers, error_class=type(exc),
            reason=reason, message=message, stage=stage, chain=record.chain_id, seq=seq, task=self.instance_id,
            reference_only=reference_only)
        out.outgoing.append(Outgoing(self.routing.dead_letter_topic, None, key, value, headers))


def _bounded_doc(node: Any, long_values: tuple[str, ...]) -> Any:
    """A JSON document with every string bounded (a violation message of an event with long values)."""
    if isinstance(node, str):
        return bound_text(node, long_values)
    if isinstance(node, dict):
        return {k: _bounded_doc(v, long_values) for k, v in node.items()}
    if isinstance(node, list):
        return [_bounded_doc(v, long_values) for v in node]
    return node
