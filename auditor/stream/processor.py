"""Turn a batch of consumed messages into the outputs of one transaction. No Kafka here.

For each message, in order: size gate and decode (or reject), pick the pack named by the
event, evaluate, build the audit record, seal it into its chain, and route it: the audit
topic always; the violations topic for violations; the dead-letter topic for rejects.
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

from auditor.errors import DecodeError
from auditor.events.wire import EventDecoder
from auditor.policy import CompiledPack, Decision, Verdict
from auditor.policy.decision import decision_to_dict
from auditor.policy.engine import MemoEvaluator
from auditor.trail import chainid
from auditor.trail.chain import ChainHead, SealedBatch, seal_bytes
from auditor.trail.record import AuditRecord, DecisionFacts, SourceRef, build_record, build_rejection, decision_facts

UNDECLARED = "undeclared"


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the processor reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...


class Outgoing(NamedTuple):
    """A message for the transaction: one per audit record, violation or dead letter."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


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
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.decoder = decoder
        self.packs = dict(packs)
        self.evaluators = {pid: MemoEvaluator(p) for pid, p in self.packs.items()}
        self._decided: dict[int, tuple[Decision, DecisionFacts]] = {}
        self._timed = 0
        self.pseudonymizer = pseudonymizer
        self.routing = routing
        self.instance_id = instance_id
        self.clock = clock
        self.heads: dict[str, ChainHead] = {}
        self._working: dict[str, ChainHead] = {}

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
        pseudonymizer, instance_id = self.pseudonymizer, self.instance_id
        for msg in messages:
            source = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            raw = msg.value()
            try:
                decoded = decode(raw)
                event = decoded.event
                evaluator = evaluators.get(event.policy_id)
                if evaluator is None:
                    raise DecodeError(f"event names policy '{event.policy_id[:64]}', which this auditor "
                                      f"does not load ({', '.join(sorted(self.packs))})",
                                      reason="unknown_policy")
            except DecodeError as exc:
                self._reject(out, source, raw or b"", exc, now)
                continue
            self._timed += 1
            if self._timed % DECISION_TIMING_SAMPLE == 1:
                t0 = time.perf_counter()
                decision, template = evaluator(event)
                out.decision_seconds.append(time.perf_counter() - t0)
            else:
                decision, template = evaluator(event)
            record = build_record(event, decision, source, pseudonymizer, instance_id, now,
                                  digest=sha256(decoded.canonical).digest(), decided=self._facts_of(template))
            data, seq, digest = self._seal(out, record)
            out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(source),
                                         record.chain_id.encode(), data))
            pack = evaluator.compiled
            out.audited.append((pack.id, event.kind.value, decision.verdict.value))
            out.occurred_at.append(event.occurred_at.timestamp())
            if decision.verdict is Verdict.VIOLATION:
                rtype = event.recipient.type if event.recipient is not None else "none"
                if rtype != "none" and rtype not in pack.pack.recipients:
                    rtype = UNDECLARED
                purpose = event.purpose if event.purpose in pack.pack.purposes else UNDECLARED
                for v in decision.violations:
                    out.violations.append((pack.id, v.rule_id, v.rule.severity, rtype, purpose))
                out.outgoing.append(self._violation_message(decision, record, seq, digest, source))
        return out

    def _facts_of(self, template: Decision) -> DecisionFacts:
        """The record form of a memoised decision, built once per template."""
        hit = self._decided.get(id(template))
        if hit is None or hit[0] is not template:
            if len(self._decided) >= 100_000:
                self._decided.clear()
            hit = self._decided[id(template)] = (template, decision_facts(template))
        return hit[1]

    def _seal(self, out: BatchResult, record: AuditRecord) -> tuple[bytes, int, bytes]:
        """Seal after the chain's working head: (the record's bytes, its seq, its hash)."""
        chain = record.chain_id
        head = self._working.get(chain) or self.heads.get(chain) or ChainHead.genesis(chain)
        data, new_head = seal_bytes(head, record)
        self._working[chain] = new_head
        out.sealed.append((record, head.size, head.head_hash, new_head.head_hash))
        return data, head.size, new_head.head_hash

    def _violation_message(self, d: Decision, record: AuditRecord, seq: int, record_hash: bytes,
                           source: SourceRef) -> Outgoing:
        doc: dict[str, Any] = decision_to_dict(d)
        facts = record.facts
        doc.update({
            "source": str(source), "chain_id": record.chain_id, "seq": seq,
            "record_hash": record_hash.hex(),
            "kind": facts.kind.value if facts else None,
            "purpose": facts.purpose if facts else None,
            "recipient_type": facts.recipient.type if facts and facts.recipient else None,
            "subject_pseudonym": facts.subject_pseudonym if facts else None,
            "pseudonym_key_id": record.pseudonym_key_id,
            "occurred_at": facts.occurred_at.isoformat() if facts else None,
        })
        return Outgoing(self.routing.violations_topic, None, d.event_id.encode(),
                        json.dumps(doc, separators=(",", ":")).encode())

    def _reject(self, out: BatchResult, source: SourceRef, raw: bytes, exc: DecodeError,
                now: datetime) -> None:
        message = str(exc)[:500]
        record = build_rejection(hashlib.sha256(raw).digest(), exc.reason, message, source,
                                 pseudonym_key_id=self.pseudonymizer.key_id,
                                 instance_id=self.instance_id, now=now)
        data, seq, _ = self._seal(out, record)
        out.outgoing.append(Outgoing(self.routing.audit_topic, self.audit_partition(source),
                                     record.chain_id.encode(), data))
        out.dead_letters.append(exc.reason)
        headers = (
            ("auditor.source.topic", (source.topic or "").encode()),
            ("auditor.source.partition", str(source.partition).encode()),
            ("auditor.source.offset", str(source.offset).encode()),
            ("auditor.error.class", type(exc).__name__.encode()),
            ("auditor.error.reason", exc.reason.encode()),
            ("auditor.error.message", message.encode()),
            ("auditor.trail.chain", record.chain_id.encode()),
            ("auditor.trail.seq", str(seq).encode()),
        )
        out.outgoing.append(Outgoing(self.routing.dead_letter_topic, None, None, raw, headers))
