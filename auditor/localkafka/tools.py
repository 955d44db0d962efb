"""Kafka's own tools against any broker: create topics, and the console consumer as an independent reader."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from auditor.localkafka.jvm import (
    LocalKafkaError,
    _java_cmd,
    _tail,
    _tools_log4j,
    ensure_jars,
)


def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = False,
    timeout: float = 30.0,
) -> None:
    """Create topics with ``confluent_kafka``'s AdminClient and wait until they have leaders.

    :raises LocalKafkaError: if confluent_kafka is missing, creation fails, or the
        partitions get no leader within ``timeout`` seconds.
    """
    try:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalKafkaError("create_topics needs confluent-kafka (pip install confluent-kafka)") from exc

    wanted = list(names)
    if not wanted:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new = [
        NewTopic(
            name, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
        )
        for name in wanted
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if exist_ok and getattr(err, "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise LocalKafkaError(f"creating topic {name!r} failed: {exc}") from exc

    deadline = time.monotonic() + timeout
    while True:
        try:
            md = admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            ready = all(
                name in md.topics
                and md.topics[name].error is None
                and md.topics[name].partitions
                and all(p.leader >= 0 for p in md.topics[name].partitions.values())
                for name in wanted
            )
        except KafkaException:
            ready = False
        if ready:
            return
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"topics {wanted} created but partitions have no leader after {timeout}s")
        time.sleep(0.1)


def console_consume(
    bootstrap_servers: str,
    topic: str,
    max_messages: int | None = None,
    timeout_ms: int = 10_000,
    isolation_level: str = "read_committed",
    *,
    print_key: bool = False,
    print_partition: bool = False,
    group: str | None = None,
    from_beginning: bool = True,
    extra_args: Sequence[str] = (),
    cache_dir: Path | None = None,
) -> list[str]:
    """Read ``topic`` with Kafka's own ``org.apache.kafka.tools.consumer.ConsoleConsumer``.

    This is an independent Java client from the same jars as the broker, so it
    cross-checks what a librdkafka-based client sees.  It stops after
    ``max_messages`` messages or when no message arrives for ``timeout_ms``
    (a boundary check in ConsoleConsumer sometimes makes that 2 x ``timeout_ms``;
    the JVM itself adds about 0.7 s).

    Each returned string is one printed record: the value, preceded by
    ``Partition:<n>`` and/or the key, tab-separated, when ``print_partition`` /
    ``print_key`` are set.  Values containing newlines span several strings.

    :raises LocalKafkaError: if the tool exits non-zero or hangs.
    """
    if isolation_level not in ("read_committed", "read_uncommitted"):
        raise ValueError(f"isolation_level must be read_committed or read_uncommitted: {isolation_level!r}")
    lib = ensure_jars(cache_dir)
    cmd = _java_cmd(
        lib,
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        heap="256m",
        extra=[f"-Dlog4j2.configurationFile={_tools_log4j(lib)}"],
    )
    cmd += [
        "--bootstrap-server",
        bootstrap_servers,
        "--topic",
        topic,
        "--timeout-ms",
        str(int(timeout_ms)),
        "--isolation-level",
        isolation_level,
    ]
    if from_beginning:
        cmd.append("--from-beginning")
    if max_messages is not None:
        cmd += ["--max-messages", str(int(max_messages))]
    if group is not None:
        cmd += ["--group", group]
    if print_key:
        cmd += ["--formatter-property", "print.key=true"]
    if print_partition:
        cmd += ["--formatter-property", "print.partition=true"]
    cmd += list(extra_args)

    hard_limit = timeout_ms / 1000.0 + 60.0
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=hard_limit,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"ConsoleConsumer did not exit within {hard_limit:.0f}s") from exc
    if proc.returncode != 0:
        raise LocalKafkaError(
            f"ConsoleConsumer exited {proc.returncode}\n--- stderr (tail) ---\n{_tail(proc.stderr)}"
        )
    return proc.stdout.splitlines()
