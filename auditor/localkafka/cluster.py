"""Several local KRaft nodes as one cluster: each a combined ``broker,controller`` node of a
static quorum (``controller.quorum.voters``), all from the same Apache Kafka jars as
:class:`~auditor.localkafka.broker.LocalKafka`.

Typical use (fault tests: kill the leader of a partition, restart it)::

    with LocalKafkaCluster(3) as cluster:
        cluster.create_topics(["events"], partitions=3)
        node = cluster.node(cluster.leader_of("events", 0))
        node.kill()
        ...
        node.restart()

Internal topics are replicated on every node with ``min.insync.replicas`` of a majority, so
the cluster keeps accepting ``acks=all`` writes and transactions with one node down.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from auditor.localkafka.broker import LocalKafka
from auditor.localkafka.jvm import LocalKafkaError
from auditor.localkafka.net import _free_port, _random_cluster_id
from auditor.localkafka.tools import create_topics


class LocalKafkaCluster:
    """``size`` combined KRaft nodes (ids 1..size) on free localhost ports."""

    def __init__(self, size: int = 3, *, cache_dir: Path | None = None, host: str = "127.0.0.1",
                 heap: str = "384m", start_timeout: float = 180.0,
                 properties: Mapping[str, str] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.size = size
        self.host = host
        ports: set[int] = set()
        while len(ports) < 2 * size:
            ports.add(_free_port(host))
        pairs = sorted(ports)
        broker_ports, controller_ports = pairs[:size], pairs[size:]
        self.cluster_id = _random_cluster_id()
        voters = ",".join(f"{i + 1}@{host}:{controller_ports[i]}" for i in range(size))
        majority = size // 2 + 1
        replicated = {
            "offsets.topic.replication.factor": str(size),
            "transaction.state.log.replication.factor": str(size),
            "transaction.state.log.min.isr": str(majority),
            "share.coordinator.state.topic.replication.factor": str(size),
            "share.coordinator.state.topic.min.isr": str(majority),
            "default.replication.factor": str(size),
            "min.insync.replicas": str(majority),
            # a killed leader's partitions move quickly to another node
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            **dict(properties or {}),
        }
        self.nodes = [
            LocalKafka(cache_dir=cache_dir, host=host, broker_port=broker_ports[i], heap=heap,
                       start_timeout=start_timeout, properties=replicated, progress=progress,
                       node_id=i + 1, controller_port=controller_ports[i], cluster_id=self.cluster_id,
                       quorum_voters=voters)
            for i in range(size)
        ]

    @property
    def bootstrap_servers(self) -> str:
        """Every node's PLAINTEXT ``host:port``, running or not (clients skip the dead ones)."""
        return ",".join(f"{self.host}:{n.broker_port}" for n in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self) -> LocalKafkaCluster:
        """Launch every node, then wait until each serves metadata (a quorum must be up first)."""
        try:
            for n in self.nodes:
                n.start(wait=False)
            for n in self.nodes:
                n.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                if n.is_running():
                    n.send_signal(signal.SIGCONT)  # a stopped JVM cannot handle SIGTERM
            n.stop()

    def create_topics(self, names: Iterable[str], partitions: int = 1, *,
                      config: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
        create_topics(self.bootstrap_servers, names, partitions, replication_factor=self.size,
                      config=config, timeout=timeout)

    def leader_of(self, topic: str, partition: int, timeout: float = 15.0) -> int:
        """Node id leading ``topic``/``partition`` now (``__transaction_state`` and
        ``__consumer_offsets`` partition 0 lead the transaction and group coordinators when
        those topics have one partition)."""
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(topic, timeout=timeout)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or partition not in meta.partitions:
            raise LocalKafkaError(f"no metadata for {topic}/{partition}")
        return int(meta.partitions[partition].leader)

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
