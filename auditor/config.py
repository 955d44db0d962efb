"""The one configuration object, read from a YAML file and ``AUDITOR_*`` environment variables.

Typed and validated by pydantic (v2): every key has a type and a range, unknown keys are errors
naming the key, and an error message names the key, where its value came from (the file, an
environment variable or a command-line option) and what is allowed. Nothing is silently replaced
by a default: ``batch.max_events: 0`` is an error, not 5000.

This is the only module where librdkafka's dotted keys appear. Secrets (``kafka.properties``
whose name mentions a password, secret, key or token; ``SecretStr`` fields; a password in a URL)
are masked in ``repr`` and never echoed in an error message.

Environment variables (they win over the file; command-line options win over both). Every key
has one, made from its path: ``AUDITOR_`` + the path in upper case with ``_`` for ``.``:

=========================================  ===========================================
AUDITOR_KAFKA_BOOTSTRAP_SERVERS            kafka.bootstrap_servers
AUDITOR_KAFKA_GROUP_ID                     kafka.group_id
AUDITOR_KAFKA_PROPERTIES                   kafka.properties (a JSON object)
AUDITOR_KAFKA_PROPERTIES__<NAME>           one librdkafka property, e.g.
                                           AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD
                                           (``_`` -> ``.``, ``__`` -> ``-``, ``___`` -> ``_``,
                                           Confluent's convention for its images)
AUDITOR_TOPICS_EVENTS                      topics.events (comma-separated)
AUDITOR_TOPICS_AUDIT / _VIOLATIONS / ...   topics.audit, topics.violations, topics.dead_letter, topics.facts
AUDITOR_SCHEMAS_EXTRA_FILES                schemas.extra_files (comma-separated)
AUDITOR_SCHEMAS_CONFLUENT_IDS              schemas.confluent_ids (JSON object or ``1=name,2=name``)
AUDITOR_SCHEMAS_REGISTRY_URL               schemas.registry_url
AUDITOR_SCHEMAS_REGISTRY_BASIC_AUTH        schemas.registry_basic_auth (user:password, secret)
AUDITOR_SCHEMAS_MAX_MESSAGE_BYTES          schemas.max_message_bytes
AUDITOR_POLICY_PACKS                       policy.packs (comma-separated)
AUDITOR_KEYS_DIR (or AUDITOR_KEYS)         keys_dir
AUDITOR_TRAIL_DIR                          trail_dir
AUDITOR_HTTP_HOST / AUDITOR_HTTP_PORT      http.host, http.port
AUDITOR_INSTANCE_ID                        instance_id
AUDITOR_BATCH_MAX_EVENTS / _MAX_MS         batch.max_events, batch.max_ms
AUDITOR_CHECKPOINT_EVERY / _SECONDS        checkpoint.every, checkpoint.seconds
AUDITOR_BATCH_SPLIT_AFTER_FAILURES         batch.split_after_failures
AUDITOR_BATCH_PIPELINE                     batch.pipeline (true/false: commit while the next batch is processed)
AUDITOR_SHUTDOWN_TIMEOUT_S                 shutdown_timeout_s
AUDITOR_WATCHDOG_STALL_TIMEOUT_S           watchdog.stall_timeout_s
AUDITOR_WATCHDOG_CALL_MARGIN_S             watchdog.call_margin_s
AUDITOR_WATCHDOG_PROGRESS_TIMEOUT_S        watchdog.progress_timeout_s
AUDITOR_RESTORE_SETTLE_TIMEOUT_S           restore.settle_timeout_s
AUDITOR_RESTORE_RETRY_S                    restore.retry_s
AUDITOR_LAG_INTERVAL_S                     lag.interval_s
AUDITOR_TRANSACTION_TIMEOUT_MS             transaction_timeout_ms
AUDITOR_TRAIL_ACCEPT_FINITE_RETENTION      trail.accept_finite_retention (true/false)
AUDITOR_TRAIL_ADOPT_UNSIGNED_CHAINS        trail.adopt_unsigned_chains (true/false)
AUDITOR_TRAIL_WITNESSES                    trail.witnesses (comma-separated URLs)
AUDITOR_TRAIL_WITNESS_KEYS                 trail.witness_keys (comma-separated vkey files)
AUDITOR_TRAIL_WITNESS_QUEUE                trail.witness_queue
AUDITOR_NATIVE                             native (true/false: the compiled hot path, or the Python reference)
AUDITOR_LEDGER_DIR                         ledger.dir (set: the daemon reads topics.facts)
AUDITOR_LEDGER_CORRECTION_WINDOW_S         ledger.correction_window_s
AUDITOR_LEDGER_INDEX_MAX_BYTES             ledger.index_max_bytes
AUDITOR_LEDGER_CATCH_UP_TIMEOUT_S          ledger.catch_up_timeout_s
=========================================  ===========================================

:func:`env_names` lists them all (a test checks that every key has one). A new key added to a
section below gets its variable, its validation and its error messages without further code.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import socket
import typing
import uuid
from collections import abc
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from auditor.errors import ConfigError

#: librdkafka's log lines go to this stdlib logger, rendered as structured logs by auditor.logging.
KAFKA_LOGGER = logging.getLogger("librdkafka")

ENV_PREFIX = "AUDITOR_"
PROPERTY_ENV_PREFIX = "AUDITOR_KAFKA_PROPERTIES__"

_SECRET_WORDS = ("password", "secret", "key", "token", "credentials")

#: Client properties the auditor sets itself because exactly-once and the audit depend on them.
RESERVED_PROPERTIES = {
    "bootstrap.servers": "set kafka.bootstrap_servers instead",
    "group.id": "set kafka.group_id instead",
    "transactional.id": "it derives from instance_id",
    "client.id": "it derives from instance_id",
    "enable.idempotence": "exactly-once needs it on",
    "enable.auto.commit": "offsets are committed in the audit transaction",
    "enable.auto.offset.store": "offsets are committed in the audit transaction",
    "isolation.level": "the auditor must read committed data only",
    "acks": "exactly-once needs acks=all",
    "transaction.timeout.ms": "set transaction_timeout_ms instead",
    "logger": "the auditor routes librdkafka's logs itself",
    "error_cb": "the auditor reports client errors itself",
}

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def is_secret_name(name: str) -> bool:
    return any(w in name.lower() for w in _SECRET_WORDS)


def _mask(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("****" if is_secret_name(k) else v) for k, v in props.items()}


def mask_url(url: str | None) -> str | None:
    """The URL with any password in it replaced by ``****``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------- field types

def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _names(value: Any) -> Any:
    """A list of names, from a YAML list or a comma-separated string."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of names, got {_kind(value)}")
    if not value:
        raise ValueError("must name at least one")
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"must be a list of non-empty names, got an item that is {_kind(v)}")
    return tuple(v.strip() for v in value)


def _paths(value: Any) -> Any:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of file paths, got {_kind(value)}")
    return tuple(Path(v).expanduser() for v in value)


def _property_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"property '{name}' must be a string, number or true/false, got {_kind(value)}")


def _properties(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of librdkafka property names to values "
                         f"(e.g. security.protocol: SASL_SSL), got {_kind(value)}")
    out: dict[str, str] = {}
    for name, v in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", name):
            raise ValueError(f"'{name}' is not a librdkafka property name (e.g. sasl.mechanism)")
        if name in RESERVED_PROPERTIES:
            raise ValueError(f"'{name}' cannot be set here: {RESERVED_PROPERTIES[name]}")
        out[name] = _property_value(name, v)
    return out


def _schema_ids(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        value = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    if not isinstance(value, Mapping):
        raise ValueError(f"must map schema ids to schema names, got {_kind(value)}")
    out: dict[int, str] = {}
    for k, v in value.items():
        try:
            sid = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"schema id '{k}' is not a whole number") from None
        if isinstance(k, bool) or sid < 0:
            raise ValueError(f"schema id '{k}' must be a whole number >= 0")
        out[sid] = _text(v)
    return out


def _url(value: Any) -> Any:
    if value is None:
        return None
    text = _text(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return text


def _opt_path(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str | Path):
        raise ValueError(f"must be a directory path, got {_kind(value)}")
    return Path(value).expanduser()


def _instance_id(value: Any) -> Any:
    if value is None:
        return None
    text = _text(str(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", text):
        raise ValueError("must be 1-200 letters, digits, '.', '_' or '-' (it becomes part of the "
                         "Kafka transactional id), starting with a letter or digit")
    return text


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"must be true or false, got {_kind(value)}")


def _urls(value: Any) -> Any:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of http:// or https:// URLs, got {_kind(value)}")
    return tuple(_url(v) for v in value)


def _opt_paths(value: Any) -> Any:
    if value is None or value == "":
        return ()
    return _paths(value)


def _kind(value: Any) -> str:
    return {list: "a list", tuple: "a list", dict: "a mapping", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "empty"}.get(type(value), type(value).__name__)


Text = Annotated[str, BeforeValidator(_text)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


def _int(lo: int, hi: int) -> Any:
    return Annotated[int, BeforeValidator(_no_bool), Field(ge=lo, le=hi)]


def _seconds(hi: float) -> Any:
    return Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=hi, allow_inf_nan=False)]


# ---------------------------------------------------------------- sections (the file's layout)

@dataclass(frozen=True, config=_STRICT)
class KafkaConfig:
    #: brokers, host:port, comma-separated
    bootstrap_servers: Text = "localhost:9092"
    #: the consumer group every instance of one deployment shares
    group_id: Text = "auditor"
    #: extra librdkafka properties (security.protocol, sasl.*, ssl.*, ...), applied to every client
    properties: Annotated[Mapping[str, str], BeforeValidator(_properties)] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, group_id={self.group_id!r}, "
                f"properties={_mask(self.properties)!r})")


@dataclass(frozen=True, config=_STRICT)
class TopicsConfig:
    events: Names = ("privacy-events",)
    audit: Text = "auditor.audit"
    violations: Text = "auditor.violations"
    dead_letter: Text = "auditor.dead-letter"
    #: subject facts (consent, opt-outs, birth dates, accounts, services), keyed by subject id and
    #: co-partitioned with the event topics; never compacted (each subject's history is needed)
    facts: Text = "subject-facts"


@dataclass(frozen=True, config=_STRICT)
class SchemasConfig:
    extra_files: Annotated[tuple[Path, ...], BeforeValidator(_paths)] = ()
    confluent_ids: Annotated[Mapping[int, str], BeforeValidator(_schema_ids)] = dataclasses.field(
        default_factory=dict)
    registry_url: Annotated[str | None, BeforeValidator(_url)] = None
    #: "user:password" for the registry's HTTP basic authentication (a secret: masked, env-settable)
    registry_basic_auth: SecretStr | None = None
    max_message_bytes: _int(1024, 64 * 1024 * 1024) = 256 * 1024  # type: ignore[valid-type]

    def __repr__(self) -> str:
        return (f"SchemasConfig(extra_files={self.extra_files!r}, confluent_ids={dict(self.confluent_ids)!r}, "
                f"registry_url={mask_url(self.registry_url)!r}, "
                f"registry_basic_auth={'****' if self.registry_basic_auth else None!r}, "
                f"max_message_bytes={self.max_message_bytes!r})")


@dataclass(frozen=True, config=_STRICT)
class PolicyConfig:
    #: bundled pack names or paths to pack files
    packs: Names = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")


@dataclass(frozen=True, config=_STRICT)
class HttpConfig:
    host: Text = "0.0.0.0"
    #: 0 picks any free port
    port: _int(0, 65535) = 9400  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class BatchConfig:
    #: events per batch (one Kafka transaction) at most: a batch is what has arrived, so only a backlog
    #: fills it. 5,000 rather than 1,000: a transaction costs the broker about a core-percent per
    #: transaction a second (markers on every output partition, the offsets, the transaction log) and
    #: the daemon a commit round trip it must wait for when processing a batch is shorter. On a
    #: 700,000-event backlog, alternated runs (02:54-02:56 UTC, load 7-8): broker CPU 23-29% of a core
    #: at 1,000, 12-15% at 2,500, 7-10% at 5,000; the main thread asleep (waiting for the commit) 8.5-9.6%,
    #: 0.8-2.8%, 0.9-2.0% of the wall time. The intake's buffers do not grow with it (intake.BOUND_BATCH).
    max_events: _int(1, 100_000) = 5000  # type: ignore[valid-type]
    max_ms: _int(1, 60_000) = 100  # type: ignore[valid-type]
    #: a batch whose outputs the broker refuses this many times is split in halves, down to the
    #: one message that fails, which is then dead-lettered
    split_after_failures: _int(1, 100) = 2  # type: ignore[valid-type]
    #: commit a batch's transaction on a worker thread while the next batch is consumed and
    #: processed (auditor.stream.runner); false: consume, process and commit strictly in turn
    pipeline: Annotated[bool, BeforeValidator(_flag)] = True


@dataclass(frozen=True, config=_STRICT)
class WatchdogConfig:
    #: no batch committed for this long while there was work (outside a client call): exit code 4
    stall_timeout_s: _seconds(86_400) = 300.0  # type: ignore[valid-type]
    #: a Kafka client call running this much longer than its own timeout exits with code 4
    call_margin_s: _seconds(3600) = 30.0  # type: ignore[valid-type]
    #: a partition that cannot make progress this long (paused or aborting) makes /readyz fail
    progress_timeout_s: _seconds(86_400) = 120.0  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class RestoreConfig:
    #: wait at most this long for open transactions on the audit partition before restoring
    settle_timeout_s: _seconds(3600) = 30.0  # type: ignore[valid-type]
    #: a partition whose chain head cannot be trusted yet is tried again after this long
    retry_s: _seconds(600) = 2.0  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class LagConfig:
    #: how often the side thread measures consumer lag
    interval_s: _seconds(3600) = 5.0  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class CheckpointConfig:
    every: _int(1, 10**9) = 10_000  # type: ignore[valid-type]
    seconds: _seconds(86_400) = 60.0  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class TrailConfig:
    #: run even though the audit or checkpoint topic has finite retention (metric + alert then)
    accept_finite_retention: Annotated[bool, BeforeValidator(_flag)] = False
    #: adopt a chain that has records but no signed checkpoint (a trail written before signed
    #: checkpoints): check its links from genesis and sign it (metric + alert). Off: refuse (exit 2)
    adopt_unsigned_chains: Annotated[bool, BeforeValidator(_flag)] = False
    #: witnesses (tlog-witness URLs) the daemon sends every checkpoint to, off the hot path
    witnesses: Annotated[tuple[str, ...], BeforeValidator(_urls)] = ()
    #: the witnesses' public keys (vkey files), one per witness, in the same order
    witness_keys: Annotated[tuple[Path, ...], BeforeValidator(_opt_paths)] = ()
    #: checkpoints waiting for the witness thread; beyond this the oldest are dropped (and counted)
    witness_queue: _int(1, 1_000_000) = 10_000  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class LedgerConfig:
    """The subject ledger (auditor/ledger, auditor/stream/ledgerfeed.py). Off unless ``dir`` is set;
    then the daemon reads ``topics.facts`` (co-partitioned with the event topics, checked at start)."""

    #: the instance's on-disk store (LMDB); a cache of the facts topic, rebuilt from it when lost
    dir: Annotated[Path | None, BeforeValidator(_opt_path)] = None
    #: a fact that arrives late corrects audited decisions of events at most this old (event time)
    correction_window_s: _seconds(366 * 86_400) = 7 * 86_400.0  # type: ignore[valid-type]
    #: bytes on disk the index of recent decisions may take (the oldest go first)
    index_max_bytes: _int(1 << 20, 1 << 40) = 512 * 1024 * 1024  # type: ignore[valid-type]
    #: before a batch the facts partitions are read to their end; longer than this and the batch is retried
    catch_up_timeout_s: _seconds(3600) = 30.0  # type: ignore[valid-type]


@dataclass(frozen=True, config=_STRICT)
class Config:
    kafka: KafkaConfig = dataclasses.field(default_factory=KafkaConfig)
    topics: TopicsConfig = dataclasses.field(default_factory=TopicsConfig)
    schemas: SchemasConfig = dataclasses.field(default_factory=SchemasConfig)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    keys_dir: Annotated[Path | None, BeforeValidator(_opt_path)] = None
    trail_dir: Annotated[Path | None, BeforeValidator(_opt_path)] = None
    http: HttpConfig = dataclasses.field(default_factory=HttpConfig)
    #: stable id of this instance; its Kafka transactional id derives from it (zombie fencing)
    instance_id: Annotated[str, BeforeValidator(_instance_id)] = ""
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    trail: TrailConfig = dataclasses.field(default_factory=TrailConfig)
    shutdown_timeout_s: _seconds(3600) = 30.0  # type: ignore[valid-type]
    watchdog: WatchdogConfig = dataclasses.field(default_factory=WatchdogConfig)
    restore: RestoreConfig = dataclasses.field(default_factory=RestoreConfig)
    lag: LagConfig = dataclasses.field(default_factory=LagConfig)
    ledger: LedgerConfig = dataclasses.field(default_factory=LedgerConfig)
    transaction_timeout_ms: _int(1000, 900_000) = 60_000  # type: ignore[valid-type]
    #: decode and seal each batch with the compiled hot path (auditor.native); false runs the Python
    #: reference, which writes the same records (auditor/stream/hotpath.py says where the two differ)
    native: Annotated[bool, BeforeValidator(_flag)] = True
    #: True when no instance_id was configured and a random one was made (see load_config)
    instance_id_generated: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.topics
        outputs = {t.audit, t.violations, t.dead_letter}
        if outputs & set(t.events) or len(outputs) != 3:
            raise ValueError("topics.audit, topics.violations and topics.dead_letter must be three distinct "
                             "topics, none of them an event topic")
        if t.facts in outputs or t.facts in t.events:
            raise ValueError("topics.facts must be a topic of its own, neither an event topic nor an output topic")
        if self.checkpoint_topic in outputs | set(t.events) | {t.facts}:
            raise ValueError(f"the checkpoint topic {self.checkpoint_topic} (topics.audit + '.checkpoints') must not "
                             "be one of the other topics")
        if len(self.trail.witness_keys) != len(self.trail.witnesses):
            raise ValueError(f"trail.witnesses names {len(self.trail.witnesses)} witness(es) and trail.witness_keys "
                             f"{len(self.trail.witness_keys)} key(s): give one public key (vkey file) per witness")

    @property
    def checkpoint_topic(self) -> str:
        """Where the daemon writes the signed checkpoints of the audit topic (``<audit>.checkpoints``)."""
        return f"{self.topics.audit}.checkpoints"

    # ------------------------------------------------------------------ flat names used across the code
    @property
    def packs(self) -> tuple[str, ...]:
        return self.policy.packs

    @property
    def http_host(self) -> str:
        return self.http.host

    @property
    def http_port(self) -> int:
        return self.http.port

    @property
    def batch_max_events(self) -> int:
        return self.batch.max_events

    @property
    def batch_max_ms(self) -> int:
        return self.batch.max_ms

    @property
    def checkpoint_every(self) -> int:
        return self.checkpoint.every

    @property
    def checkpoint_seconds(self) -> float:
        return self.checkpoint.seconds

    # ------------------------------------------------------------------ librdkafka
    def client_conf(self) -> dict[str, Any]:
        """What every client needs: the brokers, the security properties, and our log routing."""
        CLIENT_ERRORS.bootstrap = self.kafka.bootstrap_servers
        return {"logger": KAFKA_LOGGER, "error_cb": CLIENT_ERRORS.record, **self.kafka.properties,
                "bootstrap.servers": self.kafka.bootstrap_servers}

    def consumer_conf(self) -> dict[str, Any]:
        return {
            **self.client_conf(),
            "group.id": self.kafka.group_id,
            "client.id": f"auditor-{self.instance_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 50,
            # Prefetch: the daemon keeps its own queue per partition (stream/intake.py, up to 8
            # batches each) and drains librdkafka's queue into it at every batch, so librdkafka only
            # has to stay a step ahead. Small fetches interleave the partitions in its queue and keep
            # the fetch that a pause drops small; a short backoff once its queue is over
            # queued.min.messages (librdkafka's default is 1 s) keeps the small queue from stalling.
            "queued.min.messages": 5000,
            "queued.max.messages.kbytes": 65536,
            "fetch.queue.backoff.ms": 10,
            "max.partition.fetch.bytes": 256 * 1024,
        }

    def producer_conf(self, transactional_id: str) -> dict[str, Any]:
        return {
            **self.client_conf(),
            "client.id": f"auditor-{self.instance_id}",
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            # A transaction begun right after the last one committed finds the broker still
            # writing the last one's markers: AddOffsetsToTxn/AddPartitionsToTxn are refused with
            # CONCURRENT_TRANSACTIONS and retried after retry.backoff.ms. librdkafka's 100 ms made
            # 10-15% of transactions wait 100-120 ms (as the Java client does, retry these sooner;
            # real failures still back off exponentially up to retry.backoff.max.ms, 1 s).
            # A bare transactional loop, 10 s each, alternated: p90 cycle 117/116 ms -> 14/16 ms;
            # the daemon at 2,000 events/s: p50/p90 end-to-end 109/202 and 102/186 ms -> 60/101
            # and 59/111 ms (bench/latency.md, 2026-12-04).
            "retry.backoff.ms": 10,
            "transaction.timeout.ms": self.transaction_timeout_ms,
            "message.max.bytes": 4 * 1024 * 1024,
            # the commit reads delivery reports only for the outputs the broker refused (a
            # transaction that lost any output fails at commit anyway): no report per output
            "delivery.report.only.error": True,
            # No re-bootstrap (KIP-899, librdkafka's default since 2.10) when every known broker
            # is down: it decommissions the known brokers, but the group coordinator stays cached
            # as the dead handle, and send_offsets_to_transaction's TxnOffsetCommit then waits for
            # that handle to come up, which it never does, past its own timeout (librdkafka
            # #5511, #5456; 2.16.0 here). With the broker SIGKILLed 20 s and restarted, the daemon
            # stood still until the watchdog ended it (exit 4), ~60 s after the broker was back.
            # Without it the known broker reconnects by itself (tests/faults/test_faults_broker.py).
            "metadata.recovery.strategy": "none",
        }

    def admin_conf(self) -> dict[str, Any]:
        # log_level 4: librdkafka's warnings and errors only (its info lines are noise for tools)
        return {"log_level": 4, **self.client_conf()}


class ClientErrors(logging.Handler):
    """The last few errors librdkafka reported, through ``error_cb`` or its log (bounded).

    A blocking call that fails says only "transport failure" or "timed out"; the real cause (the
    broker refused the SASL password, the TLS handshake failed, the name does not resolve) arrives
    here, and the CLI's error boundary reads it to say what to fix. As a logging handler on
    :data:`KAFKA_LOGGER` it sees librdkafka's warnings whatever the log level shown to the user.
    """

    def __init__(self, size: int = 32) -> None:
        super().__init__(logging.WARNING)
        self.size = size
        self.errors: list[Any] = []
        #: the bootstrap servers of the last client configured (for messages)
        self.bootstrap: str | None = None

    def record(self, err: Any) -> None:
        self.errors.append(err)
        del self.errors[: -self.size]

    def emit(self, record: logging.LogRecord) -> None:
        self.record(record.getMessage())

    def clear(self) -> None:
        self.errors.clear()


#: Filled by every client built from :meth:`Config.client_conf`; read by ``auditor.cli.boundary``.
CLIENT_ERRORS = ClientErrors()


# ---------------------------------------------------------------- paths, env names

def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.init}


def _leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{f.name}", hint


def config_keys() -> list[str]:
    """Every key of the file, dotted (``kafka.bootstrap_servers``, ``batch.max_events``, ...)."""
    return [path for path, _ in _leaves(Config)]


def env_name(path: str) -> str:
    return ENV_PREFIX + path.replace(".", "_").upper()


def env_names() -> dict[str, str]:
    """Environment variable -> dotted key, for every key (plus the AUDITOR_KEYS alias)."""
    names = {env_name(p): p for p in config_keys()}
    names["AUDITOR_KEYS"] = "keys_dir"
    return names


def _is_mapping(hint: Any) -> bool:
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
    return typing.get_origin(base) in (abc.Mapping, dict) or base in (dict, abc.Mapping)


def property_from_env(var: str) -> str:
    """``AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD`` -> ``sasl.password`` (Confluent's convention)."""
    rest = var.removeprefix(PROPERTY_ENV_PREFIX).lower()
    return rest.replace("___", "\0").replace("__", "-").replace("_", ".").replace("\0", "_")


def property_env_name(prop: str) -> str:
    return PROPERTY_ENV_PREFIX + prop.replace("_", "___").replace("-", "__").replace(".", "_").upper()


# ---------------------------------------------------------------- loading

def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the config file (optional), apply the environment and then ``overrides`` (dotted keys,
    from command-line options; ``None`` values are ignored), validate, and freeze."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is not None:
        doc = _read_file(Path(path))
        for key in _flatten(doc):
            origin[key] = f"config file {path}"
    known = env_names()
    leaf_types = dict(_leaves(Config))
    for var, dotted in known.items():
        if env.get(var) and not (var == "AUDITOR_KEYS" and env.get("AUDITOR_KEYS_DIR")):
            _set(doc, dotted, _env_value(env[var], leaf_types[dotted]))
            origin[dotted] = var
    for var, value in env.items():
        if var.startswith(PROPERTY_ENV_PREFIX) and value:
            prop = property_from_env(var)
            props = doc.setdefault("kafka", {}).setdefault("properties", {}) if isinstance(
                doc.get("kafka", {}), dict) else {}
            if isinstance(props, dict):
                props[prop] = value
            origin[f"kafka.properties.{prop}"] = var
    _warn_unknown_env(env, known)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(doc, dotted, value)
            origin[dotted] = "the command line"
    generated = not doc.get("instance_id")
    if generated:
        doc["instance_id"] = f"{_host_part()}-{uuid.uuid4().hex[:6]}"
    try:
        cfg = _ADAPTER.validate_python(doc)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, origin)) from None
    if generated:
        object.__setattr__(cfg, "instance_id_generated", True)
    return cfg


def _host_part() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_") or "auditor"
    return host[:180]


_ADAPTER = TypeAdapter(Config)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a YAML mapping of keys "
                          f"({', '.join(_sections())}), got {_kind(loaded)}")
    return loaded


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in doc.items():
        yield f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{prefix}{k}.")


def _env_value(text: str, hint: Any) -> Any:
    """An environment string as the key's type expects: JSON for mappings, else the string
    (lists are comma-separated, numbers are parsed by the validation)."""
    if _is_mapping(hint) and text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _warn_unknown_env(env: Mapping[str, str], known: Mapping[str, str]) -> None:
    """A variable that looks like one of ours (AUDITOR_<SECTION>_...) but is not: likely a typo."""
    sections = tuple(f"{ENV_PREFIX}{s.upper()}_" for s, hint in _sections().items() if dataclasses.is_dataclass(hint))
    for var in env:
        if var.startswith(sections) and var not in known and not var.startswith(PROPERTY_ENV_PREFIX):
            close = difflib.get_close_matches(var, list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            logging.getLogger("auditor.config").warning(f"ignoring unknown environment variable {var}{hint}")


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {} if nxt is None else nxt
            if not isinstance(nxt, dict):
                return  # the file's value there is not a mapping; validation will report it
        node = nxt
    node[parts[-1]] = value


# ---------------------------------------------------------------- messages

def format_errors(exc: ValidationError, origin: Mapping[str, str]) -> str:
    """One line: each fault as '<key> (<where from>): <what is wrong>'."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        source = _origin_of(key, origin)
        msg = _message(err, loc)
        out.append(f"{key} ({source}): {msg}" if key else f"{msg}")
    return "invalid configuration: " + "; ".join(out)


def _origin_of(key: str, origin: Mapping[str, str]) -> str:
    while key:
        if key in origin:
            return origin[key]
        key = key.rpartition(".")[0]
    return "default"


def _message(err: Any, loc: list[str]) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    secret = any(is_secret_name(p) for p in loc)
    if kind == "unexpected_keyword_argument":
        parent = _section_at(loc[:-1])
        allowed = [f.name for f in dataclasses.fields(parent) if f.init] if parent else []
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        where = f"'{'.'.join(loc[:-1])}'" if len(loc) > 1 else "the top level"
        return (f"unknown key; {where} takes {', '.join(allowed)}"
                + (f" (did you mean '{close[0]}'?)" if close else ""))
    if kind == "dataclass_type":
        parent = _section_at(loc)
        allowed = [f.name for f in dataclasses.fields(parent) if f.init] if parent else []
        return f"must be a mapping of {', '.join(allowed)}, got {_kind(value)}"
    msg = msg.removeprefix("Value error, ")
    msg = re.sub(r"^Input should be", "must be", msg)
    msg = msg.replace("greater than or equal to", "at least").replace("less than or equal to", "at most")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing",
                "float_parsing", "int_from_float", "finite_number") and not secret:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        msg += f", got {shown}"
    return msg


def _section_at(loc: list[str]) -> type | None:
    cls: Any = Config
    for part in loc:
        hints = typing.get_type_hints(cls, include_extras=True)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return None
        cls = hints[part]
    return cls


# keep names some callers import
__all__ = ["Config", "KafkaConfig", "TopicsConfig", "SchemasConfig", "PolicyConfig", "HttpConfig", "BatchConfig",
           "CheckpointConfig", "ConfigError", "KAFKA_LOGGER", "CLIENT_ERRORS", "load_config", "env_names",
           "config_keys", "property_env_name", "property_from_env", "mask_url", "SecretStr"]

