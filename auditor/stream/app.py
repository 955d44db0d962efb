"""Assemble a daemon from the configuration: packs, keys, decoder, processor, metrics, file copy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry, disable_created_metrics

from auditor.config import Config
from auditor.errors import ConfigError, PolicyError
from auditor.events.wire import EventDecoder, SchemaAllowList
from auditor.metrics import Metrics, build_metrics
from auditor.native import NativeEventDecoder
from auditor.policy import CompiledPack, load_pack
from auditor.stream import topics
from auditor.stream.checkpointing import build_checkpointer
from auditor.stream.filecopy import FileCopy
from auditor.stream.ledgerfeed import LedgerFeed, LedgerMetrics
from auditor.stream.processor import BatchProcessor, BatchResult, Routing
from auditor.stream.registry import REASONS as REGISTRY_ERRORS
from auditor.stream.registry import ConfluentRegistry
from auditor.stream.restore import read_forward
from auditor.stream.runner import Daemon
from auditor.trail import chainid
from auditor.trail.canonical import iter_frames
from auditor.trail.keys import KeyRing
from auditor.trail.store import TrailWriter


def load_packs(names: tuple[str, ...]) -> dict[str, CompiledPack]:
    packs: dict[str, CompiledPack] = {}
    for name in names:
        try:
            pack = load_pack(name)
        except PolicyError as exc:
            raise ConfigError(f"policy pack '{name}' does not load:\n{exc}") from exc
        if pack.id in packs:
            raise ConfigError(f"two packs have the id '{pack.id}'")
        packs[pack.id] = pack
    return packs


def build_daemon(cfg: Config, *, registry: CollectorRegistry | None = None,
                 on_batch: Callable[[BatchResult], None] | None = None) -> Daemon:
    disable_created_metrics()
    packs = load_packs(cfg.packs)
    keys = KeyRing.resolve(cfg.keys_dir)
    pseudonymizer = keys.pseudonymizer
    basic_auth = cfg.schemas.registry_basic_auth
    allow = SchemaAllowList(list(cfg.schemas.extra_files), dict(cfg.schemas.confluent_ids), cfg.schemas.registry_url,
                            registry_basic_auth=basic_auth.get_secret_value() if basic_auth else None)
    decoder = (NativeEventDecoder(allow, cfg.schemas.max_message_bytes) if cfg.native
               else EventDecoder(allow, cfg.schemas.max_message_bytes))
    # audit_partitions is read from the broker when the daemon starts (Daemon._check_topics)
    routing = Routing(cfg.topics.audit, cfg.topics.violations, cfg.topics.dead_letter, audit_partitions=1)
    processor = BatchProcessor(decoder, packs, pseudonymizer, routing, cfg.instance_id)
    metrics: Metrics = build_metrics(registry)
    for pack in packs.values():
        metrics.pack_info.labels(pack.id, pack.content_hash).set(1)
    file_copy = None
    if cfg.trail_dir is not None:
        writer = TrailWriter.open(cfg.trail_dir, keys, checkpoint_every=cfg.checkpoint_every,
                                  checkpoint_seconds=cfg.checkpoint_seconds)
        file_copy = FileCopy(writer, lambda chain, first, stop: read_chain(cfg, chain, first, stop))
    checkpoints = build_checkpointer(cfg, keys, metrics)  # t11
    daemon = Daemon(cfg, processor, metrics, file_copy=file_copy, on_batch=on_batch, checkpoints=checkpoints)
    if cfg.ledger.dir is not None:  # l12: the subject ledger (auditor.stream.ledgerfeed)
        daemon.ledger = LedgerFeed(cfg, processor, metrics.registry)
    else:  # the ledger metrics still exist, at 0, so the dashboard's ledger row says "none" rather than "no data"
        LedgerMetrics.build(metrics.registry, processor.packs)
    watch_registry(allow, metrics, daemon)
    return daemon


def watch_registry(allow: SchemaAllowList, metrics: Metrics, daemon: Daemon) -> None:
    """A configured schema registry's outage shows in /readyz, auditor_schema_registry_up and
    auditor_schema_registry_errors_total (and so in the AuditorSchemaRegistryDown alert)."""
    source = allow.registry
    if not isinstance(source, ConfluentRegistry):
        return
    up = metrics.schema_registry_up.labels(source.url)  # the URL without any credentials
    source.on_state = lambda ok: up.set(1 if ok else 0)
    source.on_error = lambda reason: metrics.schema_registry_errors.labels(reason).inc()
    up.set(1 if source.available else 0)
    for reason in REGISTRY_ERRORS:
        metrics.schema_registry_errors.labels(reason)
    daemon.ready_checks.append(lambda: source.available)


def read_chain(cfg: Config, chain_id: str, first: int, stop: int, timeout: float = 30.0) -> list[bytes]:
    """The bytes of the committed records of one chain with seq in [first, stop), from the audit topic."""
    md = AdminClient(cfg.admin_conf()).list_topics(cfg.topics.audit, timeout=timeout)
    audit_partition = chainid.audit_partition(chainid.source_partition(chain_id),
                                             len(md.topics[cfg.topics.audit].partitions))
    consumer = Consumer({**cfg.admin_conf(), "group.id": "auditor-backfill", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    out: list[bytes] = []
    try:
        with contextlib.closing(read_forward(consumer, cfg.topics.audit, audit_partition, 0, None, timeout)) as msgs:
            for msg in msgs:  # the callers ask for stop > first
                data = msg.value() or b""
                (frame,) = iter_frames(data, 1)
                if frame.chain_id == chain_id and first <= frame.seq < stop:
                    out.append(data)
                    if len(out) == stop - first:
                        break
    finally:
        consumer.close()
    return out


def create_topics(cfg: Config, partitions: int = 3, *, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet (audit partitioned like the input; the audit and
    checkpoint topics with infinite retention: :mod:`auditor.stream.topics`)."""
    facts = cfg.topics.facts if cfg.ledger.dir is not None else None  # co-partitioned with the events
    return topics.create_topics(cfg.admin_conf(), cfg.topics.events, cfg.topics.audit,
                                [cfg.topics.violations, cfg.topics.dead_letter], partitions, facts=facts,
                                timeout=timeout)
