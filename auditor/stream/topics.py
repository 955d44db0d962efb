"""The auditor's topics: create them, and refuse to audit into a trail Kafka would delete.

The audit topic is the authoritative trail and the checkpoint topic (``<audit>.checkpoints``)
holds its signatures, so both are created with ``retention.ms=-1`` and ``retention.bytes=-1``
(and ``min.insync.replicas=2`` when the cluster has three or more brokers). At start the daemon
reads both topics' configuration (:func:`retention_findings`) and refuses finite retention with
the exact command that fixes it, unless ``trail.accept_finite_retention`` is set (then the
``auditor_trail_retention_finite`` metric is 1 and an alert fires).

The facts topic (``topics.facts``, with ``ledger.dir``) is the subject ledger's source of truth: it is
created with ``message.timestamp.type=LogAppendTime`` (the broker stamps each fact's log time; a grant is
in force no earlier than it, less 5 minutes: :func:`auditor.ledger.asof.known_us`) and infinite retention
(a store rebuilt from the topic, or an instance that takes a partition over, reads every withdrawal
again; what Kafka deleted it never sees). An existing facts topic is left as it is: ``auditor topics
create`` and the daemon at start say what it lacks, with the command that sets it (:func:`facts_findings`).

The pure part (what is wrong and how to fix it) is separate from the admin calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from auditor.config import Config
from auditor.errors import BrokerError, ConfigError
from auditor.logging import get_logger
from auditor.metrics import Metrics

log = get_logger("auditor.topics")

#: configuration of the trail topics (audit and checkpoints)
TRAIL_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
RETENTION_KEYS = ("retention.ms", "retention.bytes")
#: configuration of the facts topic (atl): the broker's log time, kept forever
FACTS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1", "retention.bytes": "-1"}
FACTS_SHOWN_KEYS = ("message.timestamp.type", "retention.ms", "retention.bytes", "cleanup.policy")


def checkpoint_topic_of(audit_topic: str) -> str:
    """The checkpoint topic that goes with an audit topic (what ``verify kafka://`` reads)."""
    return f"{audit_topic}.checkpoints"


def trail_topic_config(brokers: int) -> dict[str, str]:
    conf = dict(TRAIL_TOPIC_CONFIG)
    if brokers >= 3:
        conf["min.insync.replicas"] = "2"
    return conf


@dataclass(frozen=True)
class RetentionFinding:
    """A trail topic whose retention would delete records, and the command that fixes it."""

    topic: str
    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.topic} has {self.key}={self.value}"


def findings_of(configs: Mapping[str, Mapping[str, str]]) -> list[RetentionFinding]:
    """Pure: the finite retention settings among ``topic -> {config key: value}``."""
    out = []
    for topic, conf in configs.items():
        for key in RETENTION_KEYS:
            value = conf.get(key)
            if value is not None and value.strip() != "-1":
                out.append(RetentionFinding(topic, key, value))
        if conf.get("cleanup.policy", "delete").strip() not in ("delete", ""):
            out.append(RetentionFinding(topic, "cleanup.policy", conf["cleanup.policy"]))
    return out


def fix_command(topic: str, bootstrap: str, compacted: bool = False) -> str:
    """The kafka-configs command that makes ``topic`` keep its records forever."""
    conf = "retention.ms=-1,retention.bytes=-1" + (",cleanup.policy=delete" if compacted else "")
    return (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} --add-config {conf}")


def refusal_message(findings: list[RetentionFinding], bootstrap: str) -> str:
    topics = sorted({f.topic for f in findings})
    lines = [f"the trail topics would be deleted by Kafka: {'; '.join(str(f) for f in findings)}. "
             "The audit topic is the authoritative trail, so the auditor does not run on finite retention. "
             "Fix it with:"]
    lines += [f"  {fix_command(t, bootstrap, any(f.key == 'cleanup.policy' for f in findings if f.topic == t))}"
              for t in topics]
    lines.append("(auditor topics create --config ... creates missing trail topics with infinite retention), "
                 "or accept the risk explicitly with trail.accept_finite_retention: true "
                 "(AUDITOR_TRAIL_ACCEPT_FINITE_RETENTION=true), which raises an alert.")
    return "\n".join(lines)


def facts_findings(topic: str, conf: Mapping[str, str]) -> list[str]:
    """Pure: what the facts topic ``topic`` with configuration ``conf`` lacks, each with why it matters."""
    out = []
    if conf.get("message.timestamp.type", "CreateTime").strip() != "LogAppendTime":
        out.append(f"{topic} has message.timestamp.type={conf.get('message.timestamp.type', 'CreateTime')}: "
                   "facts carry their producer's clock, so a grant dated back in both its times is taken on its "
                   "recorded_at (with LogAppendTime it is in force no earlier than 5 minutes before it was logged)")
    finite = [f"{k}={conf[k]}" for k in RETENTION_KEYS if conf.get(k) is not None and conf[k].strip() != "-1"]
    if "compact" in conf.get("cleanup.policy", "delete"):
        finite.append(f"cleanup.policy={conf['cleanup.policy']}")
    if finite:
        out.append(f"{topic} has {', '.join(finite)}: Kafka deletes facts, and a ledger store rebuilt from the topic "
                   "(a new instance, a partition taken over, a changed pseudonym key) never sees them: a deleted "
                   "withdrawal, opt-out or birth date is silently gone")
    return out


def facts_fix_command(topic: str, bootstrap: str) -> str:
    """The kafka-configs command that gives an existing facts topic :data:`FACTS_TOPIC_CONFIG`. Facts logged
    before keep the timestamp type they were logged with (history: taken on their recorded_at)."""
    conf = ",".join(f"{k}={v}" for k, v in FACTS_TOPIC_CONFIG.items()) + ",cleanup.policy=delete"
    return (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} --add-config {conf}")


# ---------------------------------------------------------------- admin calls

def describe(admin: AdminClient, topics: Iterable[str], timeout: float = 30.0) -> dict[str, dict[str, str]]:
    """``topic -> {key: value}`` of the topics' effective configuration (describe_configs)."""
    resources = [ConfigResource("topic", t) for t in topics]
    out: dict[str, dict[str, str]] = {}
    try:
        for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = fut.result(timeout)
            out[res.name] = {k: (e.value if e.value is not None else "") for k, e in entries.items()}
    except KafkaException as exc:
        raise BrokerError(f"cannot read the configuration of {', '.join(topics)}: {exc}") from exc
    return out


def retention_findings(admin: AdminClient, topics: Iterable[str], timeout: float = 30.0) -> list[RetentionFinding]:
    return findings_of(describe(admin, list(topics), timeout))


def broker_count(admin: AdminClient, timeout: float = 30.0) -> int:
    return len(admin.list_topics(timeout=timeout).brokers)


def create_topics(conf: dict[str, Any], events: Iterable[str], audit: str, others: Iterable[str],
                  partitions: int = 3, *, facts: str | None = None, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet: events and ``others`` with the broker's defaults, the
    audit and checkpoint topics with infinite retention, the ``facts`` topic (if given) with
    :data:`FACTS_TOPIC_CONFIG`. Returns the names created."""
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=timeout)
    existing, brokers = md.topics, len(md.brokers)
    replication = min(3, brokers) if brokers else -1
    trail_conf = trail_topic_config(brokers)
    new = [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in [*events, *others]
           if t not in existing]
    new += [NewTopic(t, num_partitions=partitions, replication_factor=replication, config=trail_conf)
            for t in (audit, checkpoint_topic_of(audit)) if t not in existing]
    if facts is not None and facts not in existing:
        new.append(NewTopic(facts, num_partitions=partitions, replication_factor=replication,
                            config=dict(FACTS_TOPIC_CONFIG)))
    if new:
        for topic, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {topic}: {exc}") from exc
    return [n.topic for n in new]


def check_trail_topics(admin: AdminClient, md: Any, cfg: Config, metrics: Metrics, *,
                       timeout: float = 30.0) -> int:
    """At start: the checkpoint topic exists and both trail topics keep their records forever (or the
    config accepts that they do not: then the metric says so). Returns the checkpoint topic's partitions."""
    audit, cp = cfg.topics.audit, cfg.checkpoint_topic
    if cp not in md.topics:
        raise ConfigError(f"the checkpoint topic {cp} is missing on {cfg.kafka.bootstrap_servers}: the daemon writes "
                          f"the signed checkpoints of {audit} there. Create it with auditor topics create --config "
                          "... (infinite retention), or with kafka-topics.sh --create --topic "
                          f"{cp} --config retention.ms=-1 --config retention.bytes=-1")
    findings = retention_findings(admin, [audit, cp], timeout)
    for topic in (audit, cp):
        metrics.retention_finite.labels(topic).set(1 if any(f.topic == topic for f in findings) else 0)
    if findings:
        if not cfg.trail.accept_finite_retention:
            raise ConfigError(refusal_message(findings, cfg.kafka.bootstrap_servers))
        log.warning("trail topics have finite retention; running because trail.accept_finite_retention is set",
                    findings=[str(f) for f in findings])
    return len(md.topics[cp].partitions)


SHOWN_KEYS = ("retention.ms", "retention.bytes", "cleanup.policy", "min.insync.replicas")


def check_created(cfg: Config, timeout: float = 30.0) -> list[str]:
    """After ``auditor topics create``: the trail topics' effective configuration, one line each.
    Raises ConfigError with the fix commands when Kafka would delete either (as the daemon does at
    start), unless ``trail.accept_finite_retention`` accepts it (then a warning line says so). With
    ``ledger.dir``, the facts topic's line too, and a warning line with the command that sets what an
    existing facts topic lacks (:func:`facts_findings`)."""
    topics = [cfg.topics.audit, cfg.checkpoint_topic]
    facts = cfg.topics.facts if cfg.ledger.dir is not None else None
    configs = describe(AdminClient(cfg.admin_conf()), [*topics, *([facts] if facts else [])], timeout)
    lines = [f"{t}: " + " ".join(f"{k}={configs.get(t, {}).get(k, '?')}" for k in SHOWN_KEYS) for t in topics]
    if facts is not None:
        lines.append(f"{facts}: " + " ".join(f"{k}={configs.get(facts, {}).get(k, '?')}" for k in FACTS_SHOWN_KEYS))
        lacks = facts_findings(facts, configs.get(facts, {}))
        if lacks:
            lines += [f"warning: {line}" for line in lacks]
            lines.append(f"  fix: {facts_fix_command(facts, cfg.kafka.bootstrap_servers)}")
    configs = {t: configs[t] for t in topics if t in configs}
    findings = findings_of(configs)
    if findings and not cfg.trail.accept_finite_retention:
        raise ConfigError("\n".join(lines) + "\n" + refusal_message(findings, cfg.kafka.bootstrap_servers))
    if findings:
        lines.append("warning: " + "; ".join(map(str, findings)) + " (accepted by trail.accept_finite_retention: "
                     "the daemon runs, auditor_trail_retention_finite is 1 and an alert fires)")
    return lines


def set_config(conf: dict[str, Any], topic: str, values: Mapping[str, str], timeout: float = 30.0) -> None:
    """Set configuration keys of an existing topic (incremental: the other keys stay)."""
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in values.items()]
    admin = AdminClient(conf)
    try:
        for fut in admin.incremental_alter_configs(
                [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)]).values():
            fut.result(timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot set {', '.join(values)} of {topic}: {exc}") from exc
