"""Fixtures for integration tests that need a real Kafka broker.

``kafka_bootstrap`` uses ``$KAFKA_BOOTSTRAP_SERVERS`` when it is set (an external
broker); otherwise it starts one local single-node KRaft broker for the whole
test session (see ``auditor.localkafka``) and stops it at the end.  Starting
needs Java 17+ and, the first time, Maven to fetch the jars.
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
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    with LocalKafka(progress=_progress) as kafka:
        yield kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka | None) -> str:
    """``host:port[,...]`` of a running Kafka broker for this test session."""
    if local_kafka is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    return local_kafka.bootstrap_servers
