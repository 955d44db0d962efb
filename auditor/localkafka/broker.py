"""Run a real single-node Apache Kafka (KRaft) broker from jars fetched by Maven.

The broker is the genuine ``kafka.Kafka`` server from Maven Central, started as
a child JVM in combined ``broker,controller`` mode on free localhost ports, with
its data and logs in a temporary directory that :meth:`LocalKafka.stop` removes.

Typical use::

    from auditor.localkafka.broker import LocalKafka

    with LocalKafka() as kafka:
        kafka.create_topics(["events"], partitions=3)
        ...  # produce / consume against kafka.bootstrap_servers
        lines = kafka.console_consume("events", max_messages=10)

Only the standard library is required.  ``confluent_kafka`` is used when it is
importable: for the readiness check (a real metadata request) and by
:func:`create_topics`, which needs it.

Requirements on the machine: Java 17+ (``$JAVA_HOME/bin/java`` or ``java`` on
``PATH``) and, the first time only, Maven (``mvn``) with access to Maven Central.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from auditor.localkafka.jvm import (
    _BROKER_LOG4J2,
    _DEFAULT_HEAP,
    KAFKA_VERSION,
    POM_PATH,
    LocalKafkaError,
    _error_lines,
    _file_tail,
    _java_cmd,
    _tail,
    _tools_log4j,
    broker_jvm_options,
    default_cache_dir,
    ensure_jars,
    find_java,
)
from auditor.localkafka.net import (
    _free_port,
    _pdeathsig_prefix,
    _properties_text,
    _random_cluster_id,
    _tcp_open,
)
from auditor.localkafka.tools import (
    console_consume,
    create_topics,
)

__all__ = [
    "KAFKA_VERSION",
    "POM_PATH",
    "LocalKafka",
    "LocalKafkaError",
    "console_consume",
    "create_topics",
    "default_cache_dir",
    "ensure_jars",
    "find_java",
]


_LIVE: weakref.WeakSet[LocalKafka] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for kafka in list(_LIVE):
        with contextlib.suppress(Exception):
            kafka.stop()


class LocalKafka:
    """A single-node KRaft Kafka broker (``process.roles=broker,controller``) in a child JVM.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  Each start
    gets fresh free ports on ``host``, a fresh random cluster id and a fresh
    temporary directory (``server.properties``, ``broker.log``, ``data/``).

    :param cache_dir: jar cache, see :func:`ensure_jars`.
    :param host: interface to listen on and advertise.
    :param broker_port: fixed PLAINTEXT port, or ``None`` for a free one.
    :param heap: JVM ``-Xmx`` value.
    :param start_timeout: seconds to wait for the broker to serve metadata.
    :param stop_timeout: seconds to wait after SIGTERM before SIGKILL.
    :param properties: extra/overriding ``server.properties`` entries.
    :param jvm_options: extra JVM options appended to the defaults.
    :param keep_work_dir: keep the temporary directory after :meth:`stop` (debugging).
    :param progress: optional callback receiving human-readable status lines.
    :param node_id, controller_port, cluster_id, quorum_voters: for one node of a multi-node
        cluster (static ``controller.quorum.voters``); see :class:`~auditor.localkafka.cluster.LocalKafkaCluster`.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        host: str = "127.0.0.1",
        broker_port: int | None = None,
        heap: str = _DEFAULT_HEAP,
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        keep_work_dir: bool = False,
        progress: Callable[[str], None] | None = None,
        node_id: int = 1,
        controller_port: int | None = None,
        cluster_id: str | None = None,
        quorum_voters: str | None = None,
    ) -> None:
        self._cache_dir = cache_dir
        # Cluster membership (see auditor.localkafka.cluster); the defaults are one standalone node.
        self.node_id = node_id
        self._fixed_controller_port = controller_port
        self._fixed_cluster_id = cluster_id
        self.quorum_voters = quorum_voters
        self.host = host
        self._fixed_port = broker_port
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._overrides = dict(properties or {})
        self._jvm_options = list(jvm_options)
        self.keep_work_dir = keep_work_dir
        self._progress = progress
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self.work_dir: Path | None = None
        self.broker_port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.startup_seconds: float | None = None

    # ----------------------------------------------------------------- properties

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the PLAINTEXT listener (only while started)."""
        if self.broker_port is None or not self.is_running():
            raise LocalKafkaError("LocalKafka is not running")
        return f"{self.host}:{self.broker_port}"

    @property
    def log_path(self) -> Path | None:
        """The broker's combined stdout/stderr log file, while the work dir exists."""
        return self.work_dir / "broker.log" if self.work_dir else None

    @property
    def pid(self) -> int | None:
        """Process id of the broker JVM (its process group id too), if started."""
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        """True while the broker JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the broker log (empty if there is none)."""
        path = self.log_path
        return _file_tail(path, lines) if path and path.exists() else ""

    def error_report(self, tail_lines: int = 25) -> str:
        """The broker log's ERROR/FATAL records (with causes) followed by its last lines."""
        path = self.log_path
        if not path or not path.exists():
            return "(no broker log)"
        errors = _error_lines(path)
        parts = []
        if errors:
            parts += ["--- errors in broker log ---", *errors]
        parts += [f"--- {path} (last {tail_lines} lines) ---", self.log_tail(tail_lines)]
        return "\n".join(parts)

    def server_properties(self) -> dict[str, str]:
        """The ``server.properties`` for the current ports and work dir."""
        assert self.work_dir is not None and self.broker_port and self.controller_port
        h, bp, cp = self.host, self.broker_port, self.controller_port
        data = str(self.work_dir / "data")
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # Dynamic single-voter quorum, formatted with `StorageTool format --standalone`.
            "controller.quorum.bootstrap.servers": f"{h}:{cp}",
            "listeners": f"PLAINTEXT://{h}:{bp},CONTROLLER://{h}:{cp}",
            "advertised.listeners": f"PLAINTEXT://{h}:{bp},CONTROLLER://{h}:{cp}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": data,
            "metadata.log.dir": data,
            # Single node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            # Keep a small footprint on a 2-core machine: one network thread and two request handlers
            # (Kafka's defaults 3 and 8; we had 2 and 4). With the daemon on a backlog beside it, the
            # broker's CPU per event was 3.55-4.68 us against 4.87-5.55 us with 2 and 4 (three pairs,
            # bench/threads.py --broker-per-tree, load 4-12), librdkafka's broker thread's 1.62-2.18
            # against 2.17-2.47: fewer threads to hand each request between on two cores.
            "num.network.threads": "1",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        if self.quorum_voters:  # one node of a static multi-voter quorum
            del props["controller.quorum.bootstrap.servers"]
            props["controller.quorum.voters"] = self.quorum_voters
        props.update(self._overrides)
        return props

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, wait: bool = True) -> LocalKafka:
        """Fetch jars if needed, format storage, start the JVM and wait until it serves.

        Retries with new ports (up to 3 attempts) if a picked port was taken meanwhile.
        ``wait=False`` returns once the JVM is launched (a cluster node cannot serve before a
        quorum of its peers is up); call :meth:`wait_ready` then.

        :raises LocalKafkaError: with the broker log tail if it dies or is not ready
            within ``start_timeout``.
        """
        with self._lock:
            if self.is_running():
                return self
            lib = ensure_jars(self._cache_dir, self._progress)
            attempts = 1 if self._fixed_port else 3
            for attempt in range(1, attempts + 1):
                _LIVE.add(self)  # so that interpreter exit stops a half-started broker too
                try:
                    self._start_once(lib, wait=wait)
                    return self
                except LocalKafkaError as exc:
                    self._stop_locked()
                    port_clash = "Address already in use" in str(exc)
                    if not port_clash or attempt == attempts:
                        raise
                except BaseException:  # e.g. KeyboardInterrupt while waiting: leave nothing behind
                    self._stop_locked()
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, lib: Path, *, wait: bool = True) -> None:
        started = time.monotonic()
        self.work_dir = Path(tempfile.mkdtemp(prefix="auditor-kafka-"))
        self.broker_port = self._fixed_port or _free_port(self.host)
        self.controller_port = self._fixed_controller_port or _free_port(self.host)
        while self.controller_port == self.broker_port:
            self.controller_port = _free_port(self.host)
        self.cluster_id = self._fixed_cluster_id or _random_cluster_id()

        props_path = self.work_dir / "server.properties"
        props_path.write_text(_properties_text(self.server_properties()))
        log4j = self.work_dir / "log4j2.properties"
        log4j.write_text(_BROKER_LOG4J2)
        (self.work_dir / "logs").mkdir()
        log_props = [
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
        ]

        # Format the metadata log dir like `kafka-storage.sh format --standalone`.
        fmt_cmd = _java_cmd(
            lib,
            "kafka.tools.StorageTool",
            heap="256m",
            extra=[f"-Dlog4j2.configurationFile={_tools_log4j(lib)}"],
        )
        fmt_cmd += ["format", "--config", str(props_path), "--cluster-id", self.cluster_id]
        if not self.quorum_voters:
            fmt_cmd.append("--standalone")
        fmt = subprocess.run(
            fmt_cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(
                f"kafka StorageTool format failed (exit {fmt.returncode})\n{_tail(fmt.stdout + fmt.stderr)}"
            )

        self._launch(lib, log_props, props_path, "wb")
        if wait:
            self._wait_ready(started)
            self.startup_seconds = time.monotonic() - started
            if self._progress:
                self._progress(f"Kafka ready at {self.host}:{self.broker_port} after {self.startup_seconds:.1f}s")

    def _launch(self, lib: Path, log_props: list[str], props_path: Path, log_mode: str) -> None:
        cmd = (
            _pdeathsig_prefix()
            + _java_cmd(
                lib,
                "kafka.Kafka",
                heap=self.heap,
                extra=[*log_props, *broker_jvm_options(self._jvm_options)],
            )
            + [str(props_path)]
        )
        assert self.log_path is not None
        log_fh = self.log_path.open(log_mode)
        self._log_fh = log_fh
        if self._progress:
            self._progress(
                f"starting Kafka {KAFKA_VERSION} on {self.host}:{self.broker_port} (log: {self.log_path})"
            )
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the running broker serves metadata (after ``start(wait=False)`` or :meth:`restart`)."""
        self._wait_ready(time.monotonic(), timeout)

    # ----------------------------------------------------------------- faults (for fault tests)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the broker JVM (SIGSTOP/SIGCONT to stall it, SIGKILL to crash it)."""
        if self._proc is None:
            raise LocalKafkaError("LocalKafka was not started")
        os.killpg(self._proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the broker and wait until it is gone; its work dir, ports and data stay for :meth:`restart`."""
        if self._proc is None:
            raise LocalKafkaError("LocalKafka was not started")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=30)
        if self._log_fh is not None:
            with contextlib.suppress(Exception):
                self._log_fh.close()
            self._log_fh = None

    def restart(self, *, wait: bool = True) -> LocalKafka:
        """Start the broker again after :meth:`kill` on the same ports, data and cluster id (no format)."""
        with self._lock:
            if self.is_running():
                raise LocalKafkaError("restart() needs a stopped broker; kill() it first")
            if self.work_dir is None or self.broker_port is None:
                raise LocalKafkaError("restart() needs a broker that was started and not stop()ped")
            lib = ensure_jars(self._cache_dir, self._progress)
            log_props = [
                f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
            ]
            self._launch(lib, log_props, self.work_dir / "server.properties", "ab")
            _LIVE.add(self)
        if wait:
            self.wait_ready()
        return self

    def _wait_ready(self, started: float, timeout: float | None = None) -> None:
        assert self._proc is not None and self.broker_port is not None
        try:
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
        except ImportError:
            AdminClient = None  # type: ignore[assignment,misc]  # noqa: N806
            KafkaException = Exception  # type: ignore[assignment,misc]  # noqa: N806
        limit = self.start_timeout if timeout is None else timeout
        deadline = started + limit
        admin = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise LocalKafkaError(
                    f"Kafka broker exited with code {code} during startup\n{self.error_report()}"
                )
            if _tcp_open(self.host, self.broker_port):
                if AdminClient is None:
                    if "Kafka Server started" in self.log_tail(400):
                        return
                else:
                    if admin is None:
                        admin = AdminClient({"bootstrap.servers": f"{self.host}:{self.broker_port}"})
                    try:
                        if admin.list_topics(timeout=2.0).brokers:
                            return
                    except KafkaException:
                        pass
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"Kafka broker not ready after {limit:.0f}s\n{self.error_report()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the broker's process group, SIGKILL it after ``stop_timeout``, remove the work dir.

        Idempotent; safe to call after a failed :meth:`start`.
        """
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            # Anything else left in the group (there should be nothing).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_fh is not None:
            with contextlib.suppress(Exception):
                self._log_fh.close()
            self._log_fh = None
        _LIVE.discard(self)
        if self.work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    # ----------------------------------------------------------------- clients

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Create topics on this broker; see the module-level :func:`create_topics`."""
        create_topics(
            self.bootstrap_servers, names, partitions, config=config, exist_ok=exist_ok, timeout=timeout
        )

    def console_consume(
        self,
        topic: str,
        max_messages: int | None = None,
        timeout_ms: int = 10_000,
        isolation_level: str = "read_committed",
        *,
        print_key: bool = False,
        print_partition: bool = False,
        group: str | None = None,
    ) -> list[str]:
        """Read ``topic`` with Kafka's ConsoleConsumer; see the module-level :func:`console_consume`."""
        return console_consume(
            self.bootstrap_servers,
            topic,
            max_messages,
            timeout_ms,
            isolation_level,
            print_key=print_key,
            print_partition=print_partition,
            group=group,
            cache_dir=self._cache_dir,
        )

    # ----------------------------------------------------------------- context manager

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"{self.host}:{self.broker_port}" if self.is_running() else "stopped"
        return f"<LocalKafka {KAFKA_VERSION} {state}>"

