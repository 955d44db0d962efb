"""Fixtures shared by the integration and e2e tests that need a real Kafka broker.

``kafka_bootstrap`` picks its broker, in this order:

1. ``$KAFKA_BOOTSTRAP_SERVERS``: an existing cluster;
2. ``AUDITOR_TEST_KAFKA=testcontainers``: testcontainers' Kafka module (needs a Docker engine);
3. otherwise one local single-node KRaft broker from Apache Kafka jars for the whole session
   (see ``auditor.localkafka``; needs Java 17+ and, the first time, Maven to fetch the jars).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from auditor.localkafka.broker import LocalKafka


def _progress(message: str) -> None:
    print(f"[localkafka] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def local_kafka() -> Iterator[LocalKafka | None]:
    """The session's LocalKafka, or ``None`` when ``$KAFKA_BOOTSTRAP_SERVERS`` names a broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("AUDITOR_TEST_KAFKA") == "testcontainers":
        yield None
        return
    with LocalKafka(progress=_progress) as kafka:
        yield kafka
        if kafka.is_running():  # its data goes with the session: no graceful shutdown (up to 11 s under load)
            kafka.kill()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka | None) -> Iterator[str]:
    """``host:port[,...]`` of a running Kafka broker for this test session."""
    if local_kafka is not None:
        yield local_kafka.bootstrap_servers
    elif os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    else:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
