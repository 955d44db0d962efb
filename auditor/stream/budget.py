"""What each output topic accepts, and dead letters that always fit it.

A message the broker refuses aborts its whole transaction, and the retried batch is refused
again: one oversized output would stop a partition for good. So at start the daemon reads, with
:func:`read_budget`, the ``max.message.bytes`` of the audit, violations and dead-letter topics (the
topic's own value or the broker default it inherits) and its producer's ``message.max.bytes``; a
message's budget on a topic is the smaller of the two less a margin for the record-batch framing
and for compression (lz4 may grow incompressible bytes by about 0.4%). The processor keeps every
output within it:

- an audit record is built within its size budget (:mod:`auditor.trail.record`), and one that is
  still over is replaced by a rejection record (reason ``record_too_large``);
- a violation message that does not fit keeps the rule ids and the record's place in the trail;
- a dead letter keeps the original key, value and headers when they fit, and carries a reference
  (SHA-256, size, source topic, partition and offset) instead of the bytes when they do not
  (:func:`dead_letter`).

Dead letters carry Kafka Connect's ``__connect.errors.*`` headers (the names of Connect's
``DeadLetterQueueReporter``) next to the project's own ``auditor.*`` ones. Header values never
quote the payload: the message says which field was wrong, not what it held.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.errors import BrokerError, ConfigError
from auditor.logging import get_logger

if TYPE_CHECKING:
    from auditor.config import Config
    from auditor.trail.record import SourceRef

log = get_logger("auditor.stream")

#: Kafka's default ``max.message.bytes`` (a topic without its own value inherits the broker's)
STOCK_TOPIC_MAX = 1_048_588
#: librdkafka's default ``message.max.bytes`` and ``batch.size``
PRODUCER_DEFAULT_MAX = 1_000_000
PRODUCER_DEFAULT_BATCH = 1_000_000
#: an output topic that cannot take this much per message is a configuration error
MIN_BUDGET = 16 * 1024

CONNECT = "__connect.errors."
#: the class Connect's ``__connect.errors.class.name`` names: the one that was executing
EXECUTING_CLASS = b"auditor.stream.processor.BatchProcessor"
Header = tuple[str, bytes | None]
#: a consumed message's headers as confluent-kafka gives them
HeadersLike = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]


def budget_of(limit: int) -> int:
    """The bytes of key, value and headers a message may have under a ``limit`` of the broker or
    the producer: less 0.5% for compression growth and 1 KiB for the record and batch framing."""
    return limit - limit // 200 - 1024


def message_size(value: bytes, key: bytes | None = None, headers: Iterable[Header] = ()) -> int:
    """What a message weighs against a limit: value, key, header names and values."""
    return len(value) + len(key or b"") + sum(len(k.encode()) + len(v or b"") + 8 for k, v in headers)


@dataclass(frozen=True)
class OutputBudget:
    """The largest message (key + value + headers) each output topic takes, in bytes."""

    audit: int
    violations: int
    dead_letter: int

    @classmethod
    def stock(cls) -> OutputBudget:
        """Kafka's and librdkafka's defaults: what holds before :func:`read_budget` has run."""
        b = budget_of(min(STOCK_TOPIC_MAX, PRODUCER_DEFAULT_MAX))
        return cls(b, b, b)

    @classmethod
    def from_limits(cls, audit: int, violations: int, dead_letter: int, producer_max: int) -> OutputBudget:
        return cls(budget_of(min(audit, producer_max)), budget_of(min(violations, producer_max)),
                   budget_of(min(dead_letter, producer_max)))


def read_budget(cfg: Config, timeout: float = 15.0) -> OutputBudget:
    """Read the output topics' ``max.message.bytes`` and the producer's limits (the daemon calls
    this at start). Raises :class:`ConfigError` when a topic takes less than :data:`MIN_BUDGET`
    or the producer's ``batch.size`` is over a topic's limit (the broker would refuse whole
    batches), :class:`BrokerError` when the topics' configuration cannot be read."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource

    t = cfg.topics
    names = {"audit": t.audit, "violations": t.violations, "dead_letter": t.dead_letter}
    admin = AdminClient(cfg.admin_conf())
    limits: dict[str, int] = {}
    try:
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in set(names.values())],
                                         request_timeout=timeout)
        by_topic = {res.name: fut.result(timeout) for res, fut in futures.items()}
    except KafkaException as exc:
        raise BrokerError(f"cannot read the output topics' max.message.bytes: {exc.args[0]}") from exc
    for role, name in names.items():
        entry = by_topic[name].get("max.message.bytes")
        limits[role] = int(entry.value) if entry is not None and entry.value else STOCK_TOPIC_MAX
    conf = cfg.producer_conf("auditor-budget")
    producer_max = int(conf.get("message.max.bytes", PRODUCER_DEFAULT_MAX))
    batch_size = int(conf.get("batch.size", PRODUCER_DEFAULT_BATCH))
    budget = OutputBudget.from_limits(limits["audit"], limits["violations"], limits["dead_letter"], producer_max)
    for role, name in names.items():
        if getattr(budget, role) < MIN_BUDGET:
            raise ConfigError(f"topic {name} takes messages of at most {limits[role]} bytes (max.message.bytes); "
                              f"the auditor needs at least {MIN_BUDGET + 1024 + MIN_BUDGET // 200} there. Raise the "
                              f"topic's max.message.bytes (kafka-configs --alter --add-config).")
        if batch_size > budget_of(limits[role]):
            raise ConfigError(f"the producer's batch.size ({batch_size}) is over what topic {name} takes "
                              f"({limits[role]} bytes, max.message.bytes): the broker would refuse whole "
                              f"batches. Set kafka.properties.batch.size to at most {budget_of(limits[role])} "
                              "or raise the topic's max.message.bytes.")
    log.info("output budgets read", audit_bytes=budget.audit, violations_bytes=budget.violations,
             dead_letter_bytes=budget.dead_letter, producer_max_bytes=producer_max)
    return budget


def dead_letter(budget: int, source: SourceRef, value: bytes, key: bytes | None,
                headers: HeadersLike | None, *, error_class: type[BaseException], reason: str, message: str,
                stage: str, chain: str, seq: int, task: str,
                reference_only: bool = False) -> tuple[bytes | None, bytes, tuple[Header, ...]]:
    """(key, value, headers) of the dead letter of one input, within ``budget`` bytes.

    The original key, value and headers are kept (less any ``__connect.errors.*`` or ``auditor.*``
    header of the input, which would read as ours) when they fit; otherwise the value is a JSON
    reference to the original (its SHA-256, size, topic, partition and offset) and, if still too
    large, the original key and headers are left out too. ``auditor.original.omitted`` names what
    was left out. ``message`` must already be redacted (it never quotes the payload).
    ``reference_only`` leaves out the original value, key and headers whatever their size (an
    input whose outputs the broker refused: what it refused is not known).
    """
    topic = (source.topic or "").encode()
    partition, offset = str(source.partition).encode(), str(source.offset).encode()
    qualified = f"{error_class.__module__}.{error_class.__qualname__}".encode()
    ours: list[Header] = [
        (CONNECT + "topic", topic),
        (CONNECT + "partition", partition),
        (CONNECT + "offset", offset),
        (CONNECT + "connector.name", b"auditor"),
        (CONNECT + "task.id", task.encode()),
        (CONNECT + "stage", stage.upper().encode()),
        (CONNECT + "class.name", EXECUTING_CLASS),
        (CONNECT + "exception.class.name", qualified),
        (CONNECT + "exception.message", message.encode()),
        ("auditor.source.topic", topic),
        ("auditor.source.partition", partition),
        ("auditor.source.offset", offset),
        ("auditor.error.class", error_class.__name__.encode()),
        ("auditor.error.reason", reason.encode()),
        ("auditor.error.message", message.encode()),
        ("auditor.trail.chain", chain.encode()),
        ("auditor.trail.seq", str(seq).encode()),
    ]
    originals = _original_headers(headers)
    whole = (*originals, *ours)
    if not reference_only and message_size(value, key, whole) <= budget:
        return key, value, whole
    digest = hashlib.sha256(value).hexdigest()
    reference = json.dumps({
        "omitted": "the original message did not fit the dead-letter topic; read it at its source",
        "sha256": digest, "bytes": len(value), "topic": source.topic, "partition": source.partition,
        "offset": source.offset,
    }, separators=(",", ":")).encode()
    marks: list[Header] = [("auditor.original.omitted", b"value"), ("auditor.original.sha256", digest.encode()),
                           ("auditor.original.bytes", str(len(value)).encode())]
    kept = (*originals, *ours, *marks)
    if not reference_only and message_size(reference, key, kept) <= budget:
        return key, reference, kept
    marks[0] = ("auditor.original.omitted", b"value,key,headers")
    return None, reference, (*ours, *marks)


def _original_headers(headers: HeadersLike | None) -> list[Header]:
    """The input's headers that can be passed on: names that are text and not ours (an input's
    ``auditor.*`` or ``__connect.errors.*`` header would read as the auditor's), values bytes."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    out: list[Header] = []
    for pair in pairs:
        try:
            k, v = pair
            if not isinstance(k, str) or k.startswith(CONNECT) or k.startswith("auditor."):
                continue
            k.encode("utf-8")
            v = v.encode("utf-8") if isinstance(v, str) else v
        except (ValueError, TypeError, UnicodeError):
            continue
        if v is None or isinstance(v, bytes):
            out.append((k, v))
    return out
