"""Apache Kafka jars from Maven, and the Java command lines that run them.

The JVM options.  Every JVM (the broker, StorageTool, ConsoleConsumer) gets :data:`_COMMON_JVM_FLAGS`:
the serial collector and the C1 JIT only (``-XX:TieredStopAtLevel=1``), for a quick start and little
CPU; with the full JIT, C2 was still compiling 700,000 events into a daemon run and the broker used more
CPU over the run, not less (README, "The bundled broker").  The broker adds :data:`_BROKER_JVM_FLAGS`,
then the caller's ``jvm_options``, then ``$AUDITOR_KAFKA_JVM_OPTS`` (:data:`BROKER_JVM_OPTS_ENV`), later
ones winning; a collector named later replaces the default one.

The broker's collector is the parallel one (``-XX:+UseParallelGC``; 2 GC threads on 2 cores).  Its
young collections stop the broker every 1.5-2.5 s at 20,000 events/s (bench/tail.py's paced phase on
bench/stream.py's setup, the GC logged with ``AUDITOR_KAFKA_JVM_OPTS=-Xlog:gc*``).  With the serial
collector a pause runs on one thread, which on a loaded 2-core machine waits for a core.  Five pairs
alternated (2026-12-05 12:32-12:54, 20,000 events/s for 25 s, load 3-12): pauses in all per 25 s
387-568 ms serial against 154-220 ms parallel, median pause 24-53 against 10-18 ms, GC CPU 180-280
against 110-170 ms; the event -> audit record p99 lower with the parallel collector in 4 of the 5
pairs (100-244 against 255-482 ms; at load 11-12, 708 against 575 ms); the broker's CPU per event
the same within the noise (17.0-25.0 against 18.3-26.4 us, the whole paced phase); its resident
memory ~40 MB more (322-341 against 285-304 MB: its adaptive sizing grows the young generation).
Tried in the same rounds (two runs each, load 3-8) and not kept: G1 with Kafka's own
``MaxGCPauseMillis=20 InitiatingHeapOccupancyPercent=35`` (41-55 pauses per 25 s, 330-460 ms of GC
CPU, p99 676-1,179 ms: its concurrent threads compete for the 2 cores); the serial collector with
``-Xmn48m`` (35 pauses, 568-661 ms in all) or ``-Xmn256m`` (7-8 pauses, 264-430 ms in all, median
30-60 ms, a larger resident heap); the parallel collector on one thread (344 and 167 ms in all) or with
``-Xmn128m`` (19-20 pauses, 219-338 ms).  Not tried: ``-XX:+AlwaysPreTouch`` (it makes the whole initial
heap resident from the start, memory the tests and the memory bench would pay, for page faults that
only the first pass over the heap takes).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

KAFKA_VERSION = "4.3.1"

#: The Maven pom naming the broker's runtime classpath.
POM_PATH = Path(__file__).resolve().with_name("pom.xml")

_MARKER = ".complete"
_MVN_TIMEOUT_S = 900.0
_DEFAULT_HEAP = "512m"

# JVM flags for a small, quick-starting JVM on a 2-core machine (see the module docstring).
_COMMON_JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)

# The broker's own flags, after the common ones: its young pauses on 2 threads (module docstring).
_BROKER_JVM_FLAGS: tuple[str, ...] = ("-XX:+UseParallelGC",)

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


#: Environment variable holding JVM options for the bundled broker (whitespace-separated), put after
#: the defaults and ``jvm_options`` so they win (``-Xmx1g``, ``-XX:MaxGCPauseMillis=50``); one naming a
#: collector (``-XX:+UseG1GC``) replaces the default collector (the JVM refuses two).
BROKER_JVM_OPTS_ENV = "AUDITOR_KAFKA_JVM_OPTS"

_GC_SELECT = re.compile(r"^-XX:\+Use\w*GC$")


def broker_jvm_options(jvm_options: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[str]:
    """The broker JVM's own options, later ones winning: its defaults, ``jvm_options``, then those of
    :data:`BROKER_JVM_OPTS_ENV`."""
    env = os.environ if environ is None else environ
    return [*_BROKER_JVM_FLAGS, *jvm_options, *env.get(BROKER_JVM_OPTS_ENV, "").split()]


def _java_cmd(lib: Path, main_class: str, *, heap: str, extra: Sequence[str] = ()) -> list[str]:
    opts = [*_COMMON_JVM_FLAGS, *extra]
    collectors = [i for i, opt in enumerate(opts) if _GC_SELECT.match(opt)]
    drop = set(collectors[:-1])  # the last collector named wins: the JVM refuses two
    return [
        find_java(),
        f"-Xmx{heap}",
        *(opt for i, opt in enumerate(opts) if i not in drop),
        "-cp",
        str(lib / "*"),
        main_class,
    ]


# --------------------------------------------------------------------------- helpers


