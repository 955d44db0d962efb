"""End-to-end check of the local Kafka broker: transactions and read_committed reads.

The same topic is read by two independent clients, librdkafka (confluent_kafka)
and Kafka's own Java ConsoleConsumer, and both must see exactly the committed
records.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from auditor.localkafka.broker import LocalKafka, console_consume, create_topics
from auditor.localkafka.jvm import BROKER_JVM_OPTS_ENV

pytestmark = pytest.mark.kafka

PARTITIONS = 3


def _read_all(bootstrap: str, topic: str, isolation_level: str, timeout: float = 30.0) -> list[str]:
    """Read ``topic`` from the beginning until every partition reports end-of-partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation_level,
            "enable.partition.eof": True,
        }
    )
    values: list[str] = []
    at_eof: set[int] = set()
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(at_eof) < PARTITIONS:
            assert time.monotonic() < deadline, f"timed out; got {len(values)} records, eof {at_eof}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            partition, value = msg.partition(), msg.value()
            assert partition is not None
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                at_eof.add(partition)
                continue
            at_eof.discard(partition)
            assert value is not None
            values.append(value.decode())
    finally:
        consumer.close()
    return values


def test_transactions_read_committed(kafka_bootstrap: str) -> None:
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"txn-test-{uuid.uuid4().hex}",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)

    def send(prefix: str, count: int) -> None:
        for i in range(count):
            producer.produce(topic, key=f"{prefix}-{i}", value=f"{prefix}-{i}", partition=i % PARTITIONS)

    producer.begin_transaction()
    send("committed-a", 30)
    producer.commit_transaction(30)

    producer.begin_transaction()
    send("aborted", 12)
    producer.flush(30)  # make sure the aborted records really reach the log
    producer.abort_transaction(30)

    producer.begin_transaction()
    send("committed-b", 6)
    producer.commit_transaction(30)

    expected = sorted([f"committed-a-{i}" for i in range(30)] + [f"committed-b-{i}" for i in range(6)])

    committed = _read_all(kafka_bootstrap, topic, "read_committed")
    assert sorted(committed) == expected

    uncommitted = _read_all(kafka_bootstrap, topic, "read_uncommitted")
    assert len(uncommitted) == len(expected) + 12
    assert sum(v.startswith("aborted-") for v in uncommitted) == 12

    # Kafka's own Java client, from the broker's jars, must agree. It stops at the expected count
    # (an aborted record would be among them: each partition's aborted batch lies between its
    # committed ones); the idle timeout only ends a run that is missing records, and is generous
    # because a loaded machine can take seconds to start the JVM and join the group.
    lines = console_consume(
        kafka_bootstrap, topic, max_messages=len(expected), timeout_ms=30_000, isolation_level="read_committed",
        print_partition=True,
    )
    assert len(lines) == len(expected)
    assert sorted(line.split("\t", 1)[1] for line in lines) == expected
    partitions = {line.split("\t", 1)[0] for line in lines}
    assert partitions == {f"Partition:{p}" for p in range(PARTITIONS)}


def test_the_session_broker_runs_with_the_default_jvm_options(local_kafka: LocalKafka | None) -> None:
    if local_kafka is None or local_kafka.pid is None:
        pytest.skip("the session's broker is not a LocalKafka")
    cmdline = Path(f"/proc/{local_kafka.pid}/cmdline").read_bytes().decode().split("\0")
    if os.environ.get(BROKER_JVM_OPTS_ENV):
        pytest.skip(f"{BROKER_JVM_OPTS_ENV} is set")
    assert [opt for opt in cmdline if opt.startswith("-XX:+Use") and opt.endswith("GC")] == ["-XX:+UseParallelGC"]
