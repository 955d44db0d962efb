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
from typing import Any, Protocol

from auditor.errors import DecodeError
from auditor.events.wire import EventDecoder
from auditor.policy import CompiledPack, Decision, Verdict, evaluate
from auditor.policy.decision import decision_to_dict
from auditor.trail.chain import ChainHead, seal_encoded
from auditor.trail.record import AuditRecord, SourceRef, build_record, build_rejection

UNDECLARED = "undeclared"


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the processor reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class BatchResult:
    outgoing: list[Outgoing] = field(default_factory=list)
    records: list[AuditRecord] = field(default_factory=list)
    #: (pack, kind, verdict) counts; violation label tuples; dead letter reasons; decision seconds
    audited: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    decision_seconds: list[float] = field(default_factory=list)
    occurred_at: list[float] = field(default_factory=list)


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
        return (source.partition or 0) % self.routing.audit_partitions

    # ------------------------------------------------------------------ batch
    def process(self, messages: Iterable[MessageLike]) -> BatchResult:
        out = BatchResult()
        now = self.clock()
        for msg in messages:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            source = SourceRef.kafka(topic, partition, offset)
            raw = msg.value()
            try:
                decoded = self.decoder.decode(raw)
                event = decoded.event
                pack = self.packs.get(event.policy_id)
                if pack is None:
                    raise DecodeError(f"event names policy '{event.policy_id[:64]}', which this auditor "
                                      f"does not load ({', '.join(sorted(self.packs))})",
                                      reason="unknown_policy")
            except DecodeError as exc:
                self._reject(out, source, raw or b"", exc, now)
                continue
            t0 = time.perf_counter()
            decision = evaluate(event, pack)
            out.decision_seconds.append(time.perf_counter() - t0)
            record = build_record(event, decision, source, self.pseudonymizer, self.instance_id, now,
                                  digest=hashlib.sha256(decoded.canonical).digest())
            sealed, encoded = self._seal(record)
            out.records.append(sealed)
            out.outgoing.append(self._audit_message(sealed, encoded, source))
            kind = event.kind.value
            out.audited.append((pack.id, kind, decision.verdict.value))
            out.occurred_at.append(event.occurred_at.timestamp())
            if decision.verdict is Verdict.VIOLATION:
                rtype = event.recipient.type if event.recipient is not None else "none"
                if rtype != "none" and rtype not in pack.pack.recipients:
                    rtype = UNDECLARED
                purpose = event.purpose if event.purpose in pack.pack.purposes else UNDECLARED
                for v in decision.violations:
                    out.violations.append((pack.id, v.rule_id, v.rule.severity, rtype, purpose))
                out.outgoing.append(self._violation_message(decision, sealed, source))
        return out

    def _seal(self, record: AuditRecord) -> tuple[AuditRecord, bytes]:
        chain = record.chain_id
        head = self._working.get(chain) or self.heads.get(chain) or ChainHead.genesis(chain)
        sealed, encoded, new_head = seal_encoded(head, record)
        self._working[chain] = new_head
        return sealed, encoded

    def _audit_message(self, record: AuditRecord, encoded: bytes, source: SourceRef) -> Outgoing:
        return Outgoing(self.routing.audit_topic, self.audit_partition(source),
                        record.chain_id.encode(), encoded)

    def _violation_message(self, d: Decision, record: AuditRecord, source: SourceRef) -> Outgoing:
        doc: dict[str, Any] = decision_to_dict(d)
        facts = record.facts
        doc.update({
            "source": str(source), "chain_id": record.chain_id, "seq": record.seq,
            "record_hash": record.record_hash.hex(),
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
        sealed, encoded = self._seal(record)
        out.records.append(sealed)
        out.outgoing.append(self._audit_message(sealed, encoded, source))
        out.dead_letters.append(exc.reason)
        headers = (
            ("auditor.source.topic", (source.topic or "").encode()),
            ("auditor.source.partition", str(source.partition).encode()),
            ("auditor.source.offset", str(source.offset).encode()),
            ("auditor.error.class", type(exc).__name__.encode()),
            ("auditor.error.reason", exc.reason.encode()),
            ("auditor.error.message", message.encode()),
            ("auditor.trail.chain", sealed.chain_id.encode()),
            ("auditor.trail.seq", str(sealed.seq).encode()),
        )
        out.outgoing.append(Outgoing(self.routing.dead_letter_topic, None, None, raw, headers))
