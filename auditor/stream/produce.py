"""Send events or subject facts to a topic as Avro (single-object encoding or Confluent wire format).

Both are keyed by subject id and partitioned with ``murmur2_random``, the partitioner of Java's
and most other Kafka clients (librdkafka's default, ``consistent_random``, hashes keys with CRC32
and would place one subject's facts and events in different partitions): the facts topic is
co-partitioned with the event topics, so each auditor instance holds the facts of the subjects
whose events it audits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import Producer

from auditor.config import CLIENT_ERRORS, KAFKA_LOGGER
from auditor.errors import BrokerError
from auditor.events.codec import event_to_mapping
from auditor.events.model import Event
from auditor.events.wire import encode_confluent, encode_single_object
from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.model import SubjectFact

#: the partitioner of Java clients (and Kafka Streams): murmur2 of the key, modulo the partitions
PARTITIONER = "murmur2_random"


def encode(event: Event, framing: str = "single-object", schema_id: int | None = None) -> bytes:
    datum = event_to_mapping(event)
    if framing == "confluent":
        if schema_id is None:
            raise ValueError("the Confluent wire format needs a schema id")
        return encode_confluent(datum, schema_id)
    return encode_single_object(datum)


def produce(bootstrap: str, topic: str, items: Iterable[Event | SubjectFact | bytes], *,
            framing: str = "single-object", schema_id: int | None = None,
            properties: Mapping[str, str] | None = None, partition_by_subject: bool = True,
            timeout: float = 60.0) -> int:
    """Produce events or subject facts (or raw bytes, for malformed test input); return how many
    were delivered. Facts are always keyed by subject id and single-object encoded.

    ``properties`` are the client properties of the config (TLS, SASL). The broker is asked for the
    topic's metadata first, so an unreachable broker or refused credentials fail within seconds
    (a ``KafkaException`` the CLI's error boundary explains) instead of after ``timeout``.
    """
    producer = Producer({"logger": KAFKA_LOGGER, "error_cb": CLIENT_ERRORS.record, **(properties or {}),
                         "bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "partitioner": PARTITIONER,
                         "compression.type": "lz4", "message.timeout.ms": int(timeout * 1000)})
    md = producer.list_topics(topic, timeout=min(timeout, 15.0))
    meta = md.topics.get(topic)
    if meta is not None and meta.error is not None and meta.error.name() != "LEADER_NOT_AVAILABLE":
        hint = " (create it: auditor topics create --config ...)" if "UNKNOWN_TOPIC" in meta.error.name() else ""
        raise BrokerError(f"cannot produce to topic {topic}: {meta.error.str()}{hint}")
    failures: list[str] = []
    delivered = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(str(err))
        else:
            delivered += 1

    for item in items:
        if isinstance(item, Event):
            key = item.subject.id.encode() if partition_by_subject else item.event_id.encode()
            value = encode(item, framing, schema_id)
        elif isinstance(item, SubjectFact):
            key, value = item.subject_id.encode(), encode_fact_single_object(item)
        else:
            key, value = None, item
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise BrokerError(f"{remaining} messages undelivered, {len(failures)} failed"
                          + (f": {failures[0]}" if failures else ""))
    return delivered
