"""On a real broker, what the commit relies on since it passes no delivery callback per output
(auditor/stream/commit.py): an output the broker refuses fails the transaction with the broker's
code for it, which makes the abort a content error (the batch is then split), with nothing of the
transaction visible, and the producer goes on."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from auditor.config import load_config
from auditor.localkafka.broker import create_topics
from auditor.stream.commit import BatchCommit
from auditor.stream.processor import BatchResult, Outgoing

pytestmark = pytest.mark.kafka

LIMIT = 700


class _Processor:
    def discard_heads(self) -> None: ...
    def commit_heads(self, heads: Any = None) -> None: ...


class _Dog:
    def call(self, *args: Any) -> Any:
        return contextlib.nullcontext()


def _visible(bootstrap: str, topic: str, partitions: int = 3) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.partition.eof": True})
    c.subscribe([topic])
    n, eof, deadline = 0, set(), time.monotonic() + 20
    while len(eof) < partitions and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error() is None:
            n += 1
        else:
            eof.add(m.partition())
    c.close()
    return n


def _setup(bootstrap: str) -> tuple[Any, dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {"in": f"in-{tag}", "ok": f"ok-{tag}", "small": f"small-{tag}"}
    create_topics(bootstrap, [names["in"], names["ok"]], 3)
    create_topics(bootstrap, [names["small"]], 3, config={"max.message.bytes": str(LIMIT)})
    cfg = load_config(env={"AUDITOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AUDITOR_KAFKA_GROUP_ID": f"g-{tag}"})
    return cfg, names


def test_a_refused_output_aborts_as_a_content_error_with_nothing_visible(kafka_bootstrap):
    cfg, names = _setup(kafka_bootstrap)
    producer = Producer(cfg.producer_conf(f"t-{uuid.uuid4().hex[:6]}"))
    producer.init_transactions(30)
    consumer = Consumer(cfg.consumer_conf())
    commit = BatchCommit(producer, consumer, _Processor(), _Dog())  # type: ignore[arg-type]
    fine = [Outgoing(names["ok"], i % 3, b"k", b"v" * 100) for i in range(300)]
    refused = Outgoing(names["small"], 1, b"k", random.Random(1).randbytes(2048))  # over 700, compressed too
    outcome = commit.commit([], BatchResult(outgoing=[*fine[:150], refused, *fine[150:]]))
    assert not outcome.committed and outcome.content_error, outcome
    assert "too large" in outcome.error.lower()
    assert commit.commit([], BatchResult(outgoing=fine)).committed  # the producer goes on
    assert _visible(kafka_bootstrap, names["ok"]) == len(fine)
    consumer.close()
