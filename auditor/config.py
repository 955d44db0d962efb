"""The one configuration object, read from a YAML file and ``AUDITOR_*`` environment variables.

This is the only module where librdkafka's dotted keys appear. Secrets (SASL passwords, any
client property whose name mentions a password, secret or key) are masked in ``repr``.

Environment overrides (they win over the file):

=================================  ====================================
AUDITOR_KAFKA_BOOTSTRAP_SERVERS    kafka.bootstrap_servers
AUDITOR_KAFKA_GROUP_ID             kafka.group_id
AUDITOR_TOPICS_EVENTS              topics.events (comma-separated)
AUDITOR_POLICY_PACKS               policy.packs (comma-separated)
AUDITOR_KEYS                       keys_dir
AUDITOR_TRAIL_DIR                  trail_dir
AUDITOR_HTTP_PORT                  http.port
AUDITOR_INSTANCE_ID                instance_id
=================================  ====================================
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from auditor.errors import ConfigError

_SECRET_WORDS = ("password", "secret", "key", "token")

#: librdkafka's log lines go to this stdlib logger, rendered as structured logs by auditor.logging.
KAFKA_LOGGER = logging.getLogger("librdkafka")


def _mask(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("****" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in props.items()}


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "auditor"
    #: extra librdkafka properties (security.protocol, sasl.*, ssl.*, ...), applied to every client
    properties: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, group_id={self.group_id!r}, "
                f"properties={_mask(self.properties)!r})")


@dataclass(frozen=True)
class TopicsConfig:
    events: tuple[str, ...] = ("privacy-events",)
    audit: str = "auditor.audit"
    violations: str = "auditor.violations"
    dead_letter: str = "auditor.dead-letter"


@dataclass(frozen=True)
class SchemasConfig:
    extra_files: tuple[Path, ...] = ()
    confluent_ids: Mapping[int, str] = field(default_factory=dict)
    registry_url: str | None = None
    max_message_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    schemas: SchemasConfig = field(default_factory=SchemasConfig)
    packs: tuple[str, ...] = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")
    keys_dir: Path | None = None
    trail_dir: Path | None = None
    http_host: str = "0.0.0.0"
    http_port: int = 9400
    instance_id: str = ""
    batch_max_events: int = 1000
    batch_max_ms: int = 100
    checkpoint_every: int = 10_000
    checkpoint_seconds: float = 60.0
    shutdown_timeout_s: float = 30.0
    transaction_timeout_ms: int = 60_000

    # ------------------------------------------------------------------ librdkafka
    def consumer_conf(self) -> dict[str, Any]:
        return {
            **self.kafka.properties,
            "bootstrap.servers": self.kafka.bootstrap_servers,
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
            "queued.max.messages.kbytes": 65536,
            "logger": KAFKA_LOGGER,
        }

    def producer_conf(self, transactional_id: str) -> dict[str, Any]:
        return {
            **self.kafka.properties,
            "bootstrap.servers": self.kafka.bootstrap_servers,
            "client.id": f"auditor-{self.instance_id}",
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "transaction.timeout.ms": self.transaction_timeout_ms,
            "message.max.bytes": 4 * 1024 * 1024,
            "logger": KAFKA_LOGGER,
        }

    def admin_conf(self) -> dict[str, Any]:
        # log_level 4: librdkafka's warnings and errors only (its info lines are noise for tools)
        return {"log_level": 4, "logger": KAFKA_LOGGER, **self.kafka.properties,
                "bootstrap.servers": self.kafka.bootstrap_servers}


def _get(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _tuple(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a non-empty list of names")
    return tuple(value)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{what} must be between {lo} and {hi}, got {n}")
    return n


KNOWN_KEYS = {"kafka", "topics", "schemas", "policy", "keys_dir", "trail_dir", "http", "instance_id",
              "batch", "checkpoint", "shutdown_timeout_s", "transaction_timeout_ms"}
SECTION_KEYS = {
    "kafka": {"bootstrap_servers", "group_id", "properties"},
    "topics": {"events", "audit", "violations", "dead_letter"},
    "schemas": {"extra_files", "confluent_ids", "registry_url", "max_message_bytes"},
    "policy": {"packs"},
    "http": {"host", "port"},
    "batch": {"max_events", "max_ms"},
    "checkpoint": {"every", "seconds"},
}


def _check_keys(doc: Mapping[str, Any], where: str) -> None:
    unknown = set(doc) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    for section, allowed in SECTION_KEYS.items():
        node = doc.get(section)
        if node is None:
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(f"{where}: '{section}' must be a mapping of {sorted(allowed)}")
        bad = set(node) - allowed
        if bad:
            raise ConfigError(f"{where}: unknown keys {sorted(f'{section}.{k}' for k in bad)}; "
                              f"'{section}' takes {sorted(allowed)}")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the config file (optional), apply the environment, validate, and freeze."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a YAML mapping")
        _check_keys(loaded, f"config file {path}")
        doc = loaded
    for var, dotted in (("AUDITOR_KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
                        ("AUDITOR_KAFKA_GROUP_ID", "kafka.group_id"),
                        ("AUDITOR_TOPICS_EVENTS", "topics.events"),
                        ("AUDITOR_POLICY_PACKS", "policy.packs"),
                        ("AUDITOR_KEYS", "keys_dir"), ("AUDITOR_TRAIL_DIR", "trail_dir"),
                        ("AUDITOR_HTTP_PORT", "http.port"), ("AUDITOR_INSTANCE_ID", "instance_id")):
        if env.get(var):
            _set(doc, dotted, env[var])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(doc, dotted, value)
    d = Config()
    kafka = KafkaConfig(
        bootstrap_servers=str(_get(doc, "kafka.bootstrap_servers") or d.kafka.bootstrap_servers),
        group_id=str(_get(doc, "kafka.group_id") or d.kafka.group_id),
        properties={str(k): str(v) for k, v in (_get(doc, "kafka.properties") or {}).items()},
    )
    topics = TopicsConfig(
        events=_tuple(_get(doc, "topics.events") or list(d.topics.events), "topics.events"),
        audit=str(_get(doc, "topics.audit") or d.topics.audit),
        violations=str(_get(doc, "topics.violations") or d.topics.violations),
        dead_letter=str(_get(doc, "topics.dead_letter") or d.topics.dead_letter),
    )
    outputs = {topics.audit, topics.violations, topics.dead_letter}
    if outputs & set(topics.events) or len(outputs) != 3:
        raise ConfigError("topics.audit, topics.violations and topics.dead_letter must be three distinct "
                          "topics, none of them an event topic")
    schemas = SchemasConfig(
        extra_files=tuple(Path(p) for p in (_get(doc, "schemas.extra_files") or [])),
        confluent_ids={int(k): str(v) for k, v in (_get(doc, "schemas.confluent_ids") or {}).items()},
        registry_url=_get(doc, "schemas.registry_url"),
        max_message_bytes=_int(_get(doc, "schemas.max_message_bytes") or d.schemas.max_message_bytes,
                               "schemas.max_message_bytes", 1024, 64 * 1024 * 1024),
    )
    keys = _get(doc, "keys_dir")
    trail = _get(doc, "trail_dir")
    cfg = Config(
        kafka=kafka, topics=topics, schemas=schemas,
        packs=_tuple(_get(doc, "policy.packs") or list(d.packs), "policy.packs"),
        keys_dir=Path(keys).expanduser() if keys else None,
        trail_dir=Path(trail).expanduser() if trail else None,
        http_host=str(_get(doc, "http.host") or d.http_host),
        http_port=_int(_get(doc, "http.port") if _get(doc, "http.port") is not None else d.http_port,
                       "http.port", 0, 65535),
        instance_id=str(_get(doc, "instance_id") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"),
        batch_max_events=_int(_get(doc, "batch.max_events") or d.batch_max_events, "batch.max_events", 1, 100_000),
        batch_max_ms=_int(_get(doc, "batch.max_ms") or d.batch_max_ms, "batch.max_ms", 1, 60_000),
        checkpoint_every=_int(_get(doc, "checkpoint.every") or d.checkpoint_every, "checkpoint.every", 1, 10**9),
        checkpoint_seconds=float(_get(doc, "checkpoint.seconds") or d.checkpoint_seconds),
        shutdown_timeout_s=float(_get(doc, "shutdown_timeout_s") or d.shutdown_timeout_s),
        transaction_timeout_ms=_int(_get(doc, "transaction_timeout_ms") or d.transaction_timeout_ms,
                                    "transaction_timeout_ms", 1000, 900_000),
    )
    return cfg


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value

