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
import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

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

#: Kafka release whose jars are fetched; keep in sync with ``kafka.version`` in pom.xml.
KAFKA_VERSION = "4.3.1"

#: The Maven pom naming the broker's runtime classpath.
POM_PATH = Path(__file__).resolve().with_name("pom.xml")

_MARKER = ".complete"
_MVN_TIMEOUT_S = 900.0
_DEFAULT_HEAP = "512m"

# JVM flags for a small, quick-starting JVM on a 2-core machine.  C1-only JIT and
# the serial collector cut startup time and CPU use; throughput is ample for tests.
_COMMON_JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)

_BROKER_LOG4J2 = """\
# Written by auditor.localkafka: broker logging to stdout (redirected to broker.log).
status = warn
name = localkafka-broker
# Kafka logs from its own shutdown hook; keep Log4j alive until the JVM is gone.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""

_TOOLS_LOG4J2 = """\
# Written by auditor.localkafka: command-line tools log warnings to stderr.
status = warn
name = localkafka-tools
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
"""


class LocalKafkaError(RuntimeError):
    """Fetching the jars, or starting, stopping or using the local broker failed."""


# --------------------------------------------------------------------------- jars


def default_cache_dir() -> Path:
    """Return the jar cache directory for :data:`KAFKA_VERSION`.

    ``$AUDITOR_CACHE/kafka-<version>`` when ``AUDITOR_CACHE`` is set, otherwise
    ``~/.cache/auditor/kafka-<version>``.
    """
    root = os.environ.get("AUDITOR_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "auditor"
    return base / f"kafka-{KAFKA_VERSION}"


def find_java() -> str:
    """Return the ``java`` executable: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError(
            "java not found (set JAVA_HOME or put java on PATH); Kafka 4 needs Java 17+ "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    return found


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(_ANSI.sub("", text).rstrip().splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return _tail(data, lines)


_LOG_RECORD = re.compile(r"^\[[^\]]+\] (?:TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ")
_LOG_ERROR = re.compile(r"^\[[^\]]+\] (?:ERROR|FATAL) ")


def _error_lines(path: Path, limit: int = 30) -> list[str]:
    """ERROR/FATAL records of a Kafka log with their exception and ``Caused by`` lines."""
    found: list[str] = []
    in_error = False
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                line = raw.rstrip()
                if _LOG_RECORD.match(line):
                    in_error = bool(_LOG_ERROR.match(line))
                    if in_error:
                        found.append(line)
                elif in_error and line and not line.lstrip().startswith(("at ", "...")):
                    found.append("    " + line.strip())
                if len(found) >= limit:
                    break
    except OSError:
        pass
    return found


def _pom_digest() -> str:
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()


def ensure_jars(
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Make sure Kafka's jars are in ``<cache_dir>/lib`` and return that directory.

    Runs ``mvn dependency:copy-dependencies`` on :data:`POM_PATH` the first time
    (about 44 MB from Maven Central).  A marker file holding the pom's SHA-256
    makes later calls free; editing the pom triggers a fresh fetch.  Concurrent
    callers (e.g. pytest-xdist workers) are serialised with a file lock, and the
    jars are copied to a scratch directory that is renamed into place only when
    Maven succeeded.

    :param cache_dir: where to keep the jars; default :func:`default_cache_dir`.
    :param progress: optional callback receiving human-readable status lines.
    :raises LocalKafkaError: if ``mvn`` is missing or fails (with its output tail).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    lib = cache / "lib"
    marker = lib / _MARKER
    digest = _pom_digest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return lib

    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest:
            return lib  # another process fetched them while we waited
        mvn = shutil.which("mvn")
        if not mvn:
            raise LocalKafkaError(
                "mvn (Apache Maven) not found on PATH; it is needed once to fetch the "
                f"Kafka {KAFKA_VERSION} jars into {lib} (Debian: apt-get install maven)"
            )
        find_java()  # Maven needs it too; fail with the clearer message
        scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=cache))
        try:
            # Run Maven on a copy so nothing is written next to the installed package.
            pom = scratch / "pom.xml"
            shutil.copyfile(POM_PATH, pom)
            out = scratch / "lib"
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={out}",
                "-DincludeScope=runtime",
                "-Dstyle.color=never",
            ]
            if progress:
                progress(f"fetching Kafka {KAFKA_VERSION} jars with Maven into {lib} ...")
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=scratch,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=_MVN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalKafkaError(
                    f"mvn timed out after {_MVN_TIMEOUT_S:.0f}s fetching Kafka jars: {' '.join(cmd)}"
                ) from exc
            if proc.returncode != 0:
                raise LocalKafkaError(
                    f"mvn failed (exit {proc.returncode}) fetching Kafka {KAFKA_VERSION} jars: "
                    f"{' '.join(cmd)}\n--- mvn output (tail) ---\n"
                    f"{_tail(proc.stdout + proc.stderr)}"
                )
            jars = sorted(out.glob("*.jar"))
            if not any(j.name.startswith("kafka_2.13-") for j in jars):
                raise LocalKafkaError(f"mvn succeeded but {out} holds no kafka_2.13 jar")
            size_mb = sum(j.stat().st_size for j in jars) / 1e6
            (out / _MARKER).write_text(digest + "\n")
            if lib.exists():
                shutil.rmtree(lib)
            out.rename(lib)
            if progress:
                progress(f"fetched {len(jars)} jars ({size_mb:.0f} MB) in {time.monotonic() - started:.1f}s")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return lib


def _tools_log4j(lib: Path) -> Path:
    path = lib.parent / "tools-log4j2.properties"
    if not path.is_file() or path.read_text() != _TOOLS_LOG4J2:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_TOOLS_LOG4J2)
        tmp.replace(path)
    return path


def _java_cmd(lib: Path, main_class: str, *, heap: str, extra: Sequence[str] = ()) -> list[str]:
    return [
        find_java(),
        f"-Xmx{heap}",
        *_COMMON_JVM_FLAGS,
        *extra,
        "-cp",
        str(lib / "*"),
        main_class,
    ]


# --------------------------------------------------------------------------- helpers


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _random_cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid().toString()`` makes it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like CLI options
            return text


def _properties_text(props: Mapping[str, str]) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n")

    return "".join(f"{key}={esc(str(value))}\n" for key, value in props.items())


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pdeathsig_prefix() -> list[str]:
    """Have the JVM get SIGTERM if the Python process dies without stopping it."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


# --------------------------------------------------------------------------- admin / tools


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


# --------------------------------------------------------------------------- broker

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
    ) -> None:
        self._cache_dir = cache_dir
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
            "node.id": "1",
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
            # Keep a small footprint on a 2-core machine.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        props.update(self._overrides)
        return props

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LocalKafka:
        """Fetch jars if needed, format storage, start the JVM and wait until it serves.

        Retries with new ports (up to 3 attempts) if a picked port was taken meanwhile.

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
                    self._start_once(lib)
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

    def _start_once(self, lib: Path) -> None:
        started = time.monotonic()
        self.work_dir = Path(tempfile.mkdtemp(prefix="auditor-kafka-"))
        self.broker_port = self._fixed_port or _free_port(self.host)
        self.controller_port = _free_port(self.host)
        while self.controller_port == self.broker_port:
            self.controller_port = _free_port(self.host)
        self.cluster_id = _random_cluster_id()

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
        fmt_cmd += ["format", "--config", str(props_path), "--cluster-id", self.cluster_id, "--standalone"]
        fmt = subprocess.run(
            fmt_cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(
                f"kafka StorageTool format failed (exit {fmt.returncode})\n{_tail(fmt.stdout + fmt.stderr)}"
            )

        cmd = (
            _pdeathsig_prefix()
            + _java_cmd(
                lib,
                "kafka.Kafka",
                heap=self.heap,
                extra=[*log_props, *self._jvm_options],
            )
            + [str(props_path)]
        )
        assert self.log_path is not None
        log_fh = self.log_path.open("wb")
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
        self._wait_ready(started)
        self.startup_seconds = time.monotonic() - started
        if self._progress:
            self._progress(f"Kafka ready at {self.host}:{self.broker_port} after {self.startup_seconds:.1f}s")

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None and self.broker_port is not None
        try:
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
        except ImportError:
            AdminClient = None  # type: ignore[assignment,misc]  # noqa: N806
            KafkaException = Exception  # type: ignore[assignment,misc]  # noqa: N806
        deadline = started + self.start_timeout
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
                    f"Kafka broker not ready after {self.start_timeout:.0f}s\n{self.error_report()}"
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
