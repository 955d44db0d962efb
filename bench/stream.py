"""Benchmark the daemon end to end on a real Kafka broker, against the raw ceiling and a peer.

    python bench/stream.py                      # 1,000,000 events, 3 rounds (about 4 minutes)
    python bench/stream.py --quick              # 100,000 events, 2 rounds
    python bench/stream.py --rounds 5           # more rounds: a steadier median
    python bench/stream.py --rerun-flagged      # then each round with a flagged phase once more
    python bench/stream.py --events 300000 --bootstrap localhost:9092
    python bench/stream.py --quick --processes 1 --no-peer --profile   # also cProfile the daemon
    python bench/stream.py --quick --processes 1 --no-peer --native on,off   # compiled vs Python path

One run, on a local broker started from the Apache Kafka jars unless --bootstrap is given. It
prints first issue 14's "Must show" lines this bench measures, each met / not met / reported with
its figures, then a table of the rounds, then the details.

Why rounds: the host can run this virtual machine slower for tens of seconds without any steal
showing (a fixed reference loop went 52 -> 95 ns/iteration mid-run; a neighbour on the same
physical core does not count as steal), so a ratio of two phases run once each depends on which
phase the slowdown lands in. Steps 2-4 are therefore run as --rounds rounds on the same backlog,
the daemon in the middle of each round (next to both phases it is compared with) and the other two
swapped every round: (peer, daemon, ceiling), (ceiling, daemon, peer), ... Each round gives its
own ratios daemon/ceiling and daemon/peer, of phases run back to back; the verdict is the median
of those pairs, printed with every pair's value, the min and how many pairs met the target alone.
Each phase gets the reference loop before and after it (the bench, between phases) and every
0.5 s during it (a sampler process). A phase whose mean reading during it is more than 10% above
the lowest such mean of the run's phases (or, for a phase too short for 3 readings, whose before
or after reading is more than 10% above the run's fastest one) is marked (!) and its pair named in
the verdict, with the median of the unflagged pairs beside it: flagged, not dropped. With
--rerun-flagged each such round is run once more at the end and shown as "k (re-run of j)"; the
verdict stays on the first rounds, the re-runs join only the unflagged median.

1. pre-produce M events to a 3-partition topic: the synthetic mixed stream (mostly compliant,
   ~8% violations, ~1% malformed), a pool of 50,000 distinct encoded messages cycled to M;
2. (a) raw ceiling: one consumer with the daemon's own client settings (Config.consumer_conf()),
   consume() batches of 1000, plain fastavro decoding of each body, no checks of ours; events/s;
3. (p) the peer: Quix Streams (bench/quix_peer.py, in its own virtualenv under
   ~/.cache/auditor, made on first use) on the same topic, doing a simpler job exactly-once:
   fastavro decode, one lookup, a small JSON verdict to an output topic; events/s;
4. (b) the daemon (``python -m auditor run --processes N`` subprocess; in the rounds the first N of
   --processes and the first --native value, each other combination once after the latency phase,
   shipped defaults: batches of up to 5000 events/100 ms, exactly-once transactions, no file copy unless
   --trail, each run with its own group and output topics) from start until its
   auditor_events_consumed_total (summed over the processes) reaches M (incremented only after a
   batch's transaction committed, so the audit topic then holds M records); events/s, and the
   ratios daemon/ceiling and daemon/peer. Rates are given from the first message/batch
   ("steady") and from process start ("wall", including group join and init_transactions);
   RSS of the daemon processes right after the M events (VmRSS and peak VmHWM from /proc); how the
   daemon's main thread spent the steady phase (/proc/PID/schedstat): running, runnable but waiting for
   a core (the machine's load), asleep (waiting in consume() or for a commit);
5. latency at 50% of the daemon's max (the median of the rounds' daemon rates), on the last round's
   daemon (kept running, idle, through the rest of its round): fresh events produced at that rate
   for --latency-seconds. The load generator is kept cheap, since it shares the cores with what it
   measures: 20,000 events of the synthetic stream are encoded once before the phase, and each
   is sent with occurred_at = the time it is handed to the producer, patched into its bytes
   (a few microseconds per event; building and encoding each in Python took ~50 us, most of a
   core at 15,000/s). The report gives the CPU the bench's producer, the daemon and the whole
   machine used during the phase. End-to-end latency is measured two ways:
   * observed: a read_committed consumer in a separate process receives each audit record
     (every 10th is decoded) and takes receive time - facts.occurred_at: the time until the
     record is *visible* to readers, the definition that matters downstream; split at the
     record's Kafka timestamp (set when the daemon produced it, before its transaction commits)
     into occurred_at -> produced (waiting for the daemon, processing) and produced -> visible
     (send_offsets_to_transaction, commit_transaction, the transaction markers, the reader's fetch);
   * metric: the daemon's auditor_end_to_end_latency_seconds histogram (occurred_at -> right
     after the commit), the delta over this phase, percentiles interpolated in its buckets
     (coarse: 50/100/250/500 ms bounds).

6. where the CPU went in each of (a), (p) and (b): CPU microseconds per event of the measured
   process(es), of the broker JVM (the local broker only) and of the rest of the machine
   (/proc/PID/stat, /proc/stat), the machine's busy, iowait and steal shares over the phase, and
   a reference loop's CPU nanoseconds per iteration taken just before and just after the phase
   (the same fixed pure-Python work: slower when the host runs the machine slower, say a
   neighbour on the other hyperthread, which no counter of ours shows). A slow run and a fast one
   are told apart by which of these moved: the measured process's own cost per event, the
   broker's, other work on the machine, steal, or the reference loop.

Everything shares the machine's cores with the broker: on a 2-core machine --processes 2 competes
with the broker and the producer. Prints a markdown table and writes bench/results/stream.json
(and stream.prof with --profile).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import multiprocessing as mp
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import yaml

POOL = 50_000
PARTITIONS = 3
PACKS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def make_workdir(bootstrap: str, work: Path, tag: str, trail: bool, batch: int | None) -> dict[str, Any]:
    from auditor.trail.keys import KeyRing

    KeyRing.generate(work / "keys")
    names = {"events": f"bench-events-{tag}", "audit": f"bench-audit-{tag}",
             "violations": f"bench-violations-{tag}", "dead_letter": f"bench-dead-letter-{tag}"}
    create_output_topics(bootstrap, names)
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-auditor-{tag}"},
        "topics": {"events": [names["events"]], "audit": names["audit"], "violations": names["violations"],
                   "dead_letter": names["dead_letter"]},
        "keys_dir": str(work / "keys"),
    }
    if trail:
        doc["trail_dir"] = str(work / "trail")
    if batch:
        doc["batch"] = {"max_events": batch}
    (work / "auditor.yaml").write_text(yaml.safe_dump(doc))
    return names


def create_output_topics(bootstrap: str, names: dict[str, str]) -> None:
    """The topics of ``names``; the audit topic and its checkpoint topic as `auditor topics create`
    makes them (infinite retention: the daemon refuses to run on anything else)."""
    from auditor.localkafka.broker import create_topics
    from auditor.stream.topics import TRAIL_TOPIC_CONFIG, checkpoint_topic_of

    create_topics(bootstrap, [v for k, v in names.items() if k != "audit"], PARTITIONS)
    if "audit" in names:
        create_topics(bootstrap, [names["audit"], checkpoint_topic_of(names["audit"])], PARTITIONS,
                      config=TRAIL_TOPIC_CONFIG)


def packs() -> list[Any]:
    from auditor.policy import load_pack

    return [load_pack(p) for p in PACKS]


def pool_messages(n: int) -> list[tuple[bytes | None, bytes]]:
    from auditor.events.model import Event
    from auditor.stream.generate import stream
    from auditor.stream.produce import encode

    out = []
    for item in islice(stream(packs(), seed=1), n):
        if isinstance(item, Event):
            out.append((item.subject.id.encode(), encode(item)))
        else:
            out.append((None, item))
    return out


def produce_backlog(bootstrap: str, topic: str, m: int) -> float:
    from confluent_kafka import Producer

    pool = pool_messages(POOL)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000,
                         "enable.idempotence": True})
    start = time.perf_counter()
    for i, (key, value) in enumerate(islice(cycle(pool), m)):
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} messages not delivered")
    return m / (time.perf_counter() - start)


# ---------------------------------------------------------------- where the CPU went

#: /proc/stat's cpu line, in order (guest and guest_nice are already counted in user and nice)
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_stat(text: str) -> dict[str, int]:
    """The machine's CPU ticks since boot by kind, from /proc/stat's first (all CPUs) line."""
    first = text.split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        raise ValueError("not /proc/stat: its first line is not the all-CPUs line")
    values = [int(v) for v in first[1:1 + len(STAT_FIELDS)]]
    return dict(zip(STAT_FIELDS, values + [0] * (len(STAT_FIELDS) - len(values)), strict=True))


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, every thread) of these processes; a process gone counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class CpuMark:
    """What the machine, the broker JVM and the measured processes had used at one moment."""

    stat: dict[str, int]
    broker: float | None
    measured: float

    @classmethod
    def now(cls, broker_pid: int | None, measured: list[int] | None = None, *, measured_cpu: float | None = None
            ) -> CpuMark:
        """``measured``: pids to read; or ``measured_cpu``, seconds the measured process reported itself."""
        stat = parse_stat(Path("/proc/stat").read_text())
        broker = process_cpu([broker_pid]) if broker_pid else None
        own = measured_cpu if measured_cpu is not None else process_cpu(measured or [])
        return cls(stat, broker, own)


def cpu_per_event(a: CpuMark, b: CpuMark, events: float, hz: int | None = None) -> dict[str, float]:
    """From mark ``a`` to ``b`` over ``events`` events: CPU microseconds per event of the measured
    process(es), of the broker JVM and of the rest of the machine (everything else that ran: other
    users, the bench itself; the broker too when its pid is not known), and the machine's shares
    of all its CPU time: busy, iowait (idle with I/O outstanding) and steal (the hypervisor ran
    something else on our virtual CPUs)."""
    hz = hz or os.sysconf("SC_CLK_TCK")
    ticks = {k: b.stat[k] - a.stat[k] for k in STAT_FIELDS}
    total = sum(ticks.values()) or 1
    busy = (ticks["user"] + ticks["nice"] + ticks["system"] + ticks["irq"] + ticks["softirq"]) / hz
    measured = b.measured - a.measured
    broker = (b.broker - a.broker) if a.broker is not None and b.broker is not None else None
    per = 1e6 / events if events > 0 else float("nan")
    out = {"measured_us": measured * per, "rest_us": (busy - measured - (broker or 0.0)) * per,
           "busy_share": busy * hz / total, "iowait_share": ticks["iowait"] / total,
           "steal_share": ticks["steal"] / total, "seconds_of_cpu": total / hz}
    if broker is not None:
        out["broker_us"] = broker * per
    return out


def speed_probe(rounds: int = 7, n: int = 40_000) -> float:
    """CPU nanoseconds (this thread's, so not the time spent waiting for a core) per iteration of a
    fixed pure-Python loop, median of ``rounds``: how fast the machine runs interpreter-bound code
    right now. On a virtual machine a neighbour on the host's other hyperthread, or a lower clock,
    slows every process alike without showing as steal; this shows it."""
    times = []
    for _ in range(rounds):
        d: dict[int, int] = {}
        t0 = time.thread_time_ns()
        for i in range(n):
            d[i & 255] = (i * 7) ^ (i >> 3)
        times.append((time.thread_time_ns() - t0) / n)
    return sorted(times)[len(times) // 2]


def probed(phase: dict[str, Any], before: float, during: list[float] | None = None) -> dict[str, Any]:
    """``phase`` with the speed probe taken before it, the sampler's readings during it and one taken
    now: in its cpu dict if it has one, else in the phase."""
    where = phase.get("cpu", phase)
    where["probe_ns"] = [before, speed_probe()]
    if during is not None:
        where["probe_during_ns"] = list(during)
    return phase


def loop_text(probe: list[float], during: list[float]) -> str:
    """Reference-loop readings as shown: before -> after, and the mean and range of those taken during."""
    shown = " -> ".join(f"{v:.0f}" for v in probe)
    if during:
        shown += f" (during: mean {statistics.fmean(during):.0f}, {min(during):.0f}-{max(during):.0f})"
    return shown


def loop_cell(probe: list[float], during: list[float]) -> str:
    """The same, short, for the rounds table: before -> after, and the mean during."""
    shown = " -> ".join(f"{v:.0f}" for v in probe) or "-"
    return shown + (f" ({statistics.fmean(during):.0f})" if during else "")


def probe_sampler(conn: Any, interval: float) -> None:
    """Child process: a short speed probe every ``interval`` seconds, sent as (monotonic time, ns)
    until the parent says stop or is gone (its cost: ~3 ms of CPU per reading)."""
    while True:
        ns = speed_probe(rounds=3, n=20_000)
        try:
            conn.send((time.monotonic(), ns))
            if conn.poll(interval):
                return
        except (BrokenPipeError, EOFError, OSError):
            return


class ProbeSampler:
    """The reference loop read in a separate process every ``interval`` seconds while the phases
    run, so a slowdown that comes and goes inside a phase shows (the before/after probes miss it)."""

    def __init__(self, interval: float = 1.0) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=probe_sampler, args=(child, interval), daemon=True)
        self._proc.start()
        child.close()
        self._samples: list[tuple[float, float]] = []

    def between(self, t0: float, t1: float) -> list[float]:
        """Readings taken between these time.monotonic() times."""
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll():
                self._samples.append(self._conn.recv())
        return [ns for t, ns in self._samples if t0 <= t <= t1]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


def cpu_line(c: dict[str, Any], what: str) -> str:
    """One report cell: where the CPU of a phase went, per event."""
    broker = f"broker JVM {c['broker_us']:.1f} us, " if "broker_us" in c else ""
    loop = loop_text(c.get("probe_ns", []), c.get("probe_during_ns", []))
    probe = f"; reference loop {loop} ns/iteration" if loop else ""
    return (f"{what} {c['measured_us']:.1f} us, {broker}rest of the machine {c['rest_us']:.1f} us "
            f"(machine {c['busy_share']:.0%} busy, iowait {c['iowait_share']:.1%}, steal {c['steal_share']:.1%}"
            f"{probe})")


# ---------------------------------------------------------------- (a) the ceiling

def ceiling(cfg: Any, topic: str, m: int, broker_pid: int | None = None) -> dict[str, Any]:
    """The raw ceiling: the daemon's own consumer settings, consume() batches of 1000, and plain
    fastavro decoding of each body (no checks of ours: the bound any Python consumer starts from)."""
    import fastavro
    import fastavro.schema
    from confluent_kafka import Consumer

    schema = fastavro.parse_schema(fastavro.schema.load_schema(str(ROOT / "schemas" / "privacy_event.avsc")))
    consumer = Consumer({**cfg.consumer_conf(), "group.id": f"bench-ceiling-{uuid.uuid4().hex[:6]}"})
    consumer.subscribe([topic])
    start = time.perf_counter()
    first = None
    n = bad = 0
    me = [os.getpid()]
    try:
        while n < m:
            msgs = consumer.consume(1000, 1.0)
            if msgs and first is None:
                first = time.perf_counter()
                mark0 = CpuMark.now(broker_pid, me)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                n += 1
                try:
                    fastavro.schemaless_reader(io.BytesIO(msg.value()[10:]), schema, None)
                except Exception:  # noqa: BLE001 - malformed input is counted, as the daemon would
                    bad += 1
            if time.perf_counter() - start > 1800:
                raise RuntimeError(f"ceiling: only {n} of {m} messages after 30 min")
        mark1 = CpuMark.now(broker_pid, me)
    finally:
        consumer.close()
    end = time.perf_counter()
    assert first is not None
    return {"steady_eps": m / (end - first), "wall_eps": m / (end - start), "seconds": end - first,
            "malformed": bad, "cpu": cpu_per_event(mark0, mark1, m)}


# ---------------------------------------------------------------- (p) the peer: Quix Streams

QUIX_VERSION = "3.28.1"


def quix_python() -> Path:
    """The python of a virtual environment with Quix Streams (made on first use; Quix pins its own
    confluent-kafka, so it cannot share the project's environment)."""
    venv = Path.home() / ".cache" / "auditor" / f"quix-{QUIX_VERSION}"
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"making {venv} with quixstreams=={QUIX_VERSION} (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}", "fastavro"],
                       check=True)
    return py


def peer(bootstrap: str, topic: str, m: int, broker_pid: int | None = None) -> dict[str, Any]:
    """Quix Streams on the same topic, doing the simpler job of bench/quix_peer.py, exactly-once,
    with its own group and output topic (so it can run more than once on the same backlog).
    The machine's and the broker's CPU are read when the peer says it has its first message and
    when it has printed its result; its own CPU over that span is what it reports."""
    from auditor.localkafka.broker import create_topics

    out = f"{topic}-quix-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [out], PARTITIONS)
    cmd = [str(quix_python()), str(Path(__file__).resolve().parent / "quix_peer.py"), "--bootstrap", bootstrap,
           "--topic", topic, "--out", out, "--events", str(m),
           "--schema", str(ROOT / "schemas" / "privacy_event.avsc")]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(3600, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            lines, mark0, mark1 = [], None, None
            for line in proc.stdout:
                if line.strip() == "first" and mark0 is None:
                    mark0 = CpuMark.now(broker_pid)
                    continue
                if line.startswith("{"):  # the result line: read before the peer's shutdown
                    mark1 = CpuMark.now(broker_pid)
                lines.append(line)
            mark1 = mark1 or CpuMark.now(broker_pid)
            rc = proc.wait()
        finally:
            timer.cancel()
        if rc != 0 or not lines:
            err.seek(0)
            raise RuntimeError(f"the Quix peer failed ({rc}):\n{err.read().decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if mark0 is not None and "cpu_s" in result:
        mark1 = dataclasses.replace(mark1, measured=result["cpu_s"])
        result["cpu"] = cpu_per_event(mark0, mark1, m)
    return result


# ---------------------------------------------------------------- (b) the daemon

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class DaemonProc:
    def __init__(self, work: Path, instance: str, processes: int = 1, config: str = "auditor.yaml") -> None:
        self.processes = processes
        self.port = free_port()
        while processes > 1 and not all(_port_free(self.port + i) for i in range(processes)):
            self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
        self.log = (work / f"{instance}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditor", "--log-level", "warning", "run", "--config", str(work / config),
             "--instance-id", instance, "--http-port", str(self.port), "--processes", str(processes)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def metrics(self) -> dict[str, float]:
        """Every sample on /metrics of every process, keyed by name{labels} and summed; {} while a
        server is not up."""
        out: dict[str, float] = {}
        for i in range(self.processes):
            one = self._metrics(self.port + i)
            if not one:
                return {}
            for k, v in one.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def pids(self) -> list[int]:
        if self.processes == 1:
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def _metrics(self, port: int) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
        return out

    def total(self, name: str, metrics: dict[str, float] | None = None) -> float:
        metrics = self.metrics() if metrics is None else metrics
        return sum(v for k, v in metrics.items() if k.split("{", 1)[0] == name)

    def rss(self) -> dict[str, int]:
        """VmRSS and VmHWM summed over the daemon processes (the supervisor itself not counted)."""
        out = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in out:
                    out[key] += int(value.split()[0]) * 1024
        return out

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc, time.perf_counter() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main_threads(pids: list[int]) -> tuple[float, float]:
    """Seconds the main threads of these processes ran, and were runnable but not running
    (/proc/PID/schedstat), summed."""
    ran = waited = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/schedstat").read_text().split()
            ran, waited = ran + int(fields[0]) / 1e9, waited + int(fields[1]) / 1e9
    return ran, waited


def daemon_run(d: DaemonProc, m: int, started: float, broker_pid: int | None = None) -> dict[str, Any]:
    """Rates, and what the daemon's main threads did from the first batch to the last: running,
    runnable but not running (the machine's load took the core), or asleep (waiting in consume or for
    a commit): the split tells a run slowed by the machine from one slowed by the daemon's waits."""
    first = first_count = None
    count = 0.0
    pids: list[int] = []
    threads0 = (0.0, 0.0)
    while count < m:
        if d.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {d.proc.returncode}; see its log")
        count = d.total("auditor_events_consumed_total")
        now = time.perf_counter()
        if count > 0 and first is None:
            first, first_count = now, count
            pids = d.pids()
            threads0 = main_threads(pids)
            mark0 = CpuMark.now(broker_pid, pids)
        if now - started > 3600:
            raise RuntimeError(f"daemon: only {count:.0f} of {m} after 60 min")
        time.sleep(0.1 if m <= 200_000 else 0.25)
    end, mark1 = time.perf_counter(), CpuMark.now(broker_pid, pids)
    assert first is not None and first_count is not None
    steady = (m - first_count) / (end - first) if end > first else float("nan")
    ran, waited = main_threads(pids)
    span = (end - first) * max(1, len(pids))
    running, runnable = (ran - threads0[0]) / span, (waited - threads0[1]) / span
    return {"steady_eps": steady, "wall_eps": m / (end - started), "seconds": end - started,
            "startup_s": first - started, "main_running": running, "main_runnable": runnable,
            "main_asleep": max(0.0, 1.0 - running - runnable),
            "cpu": cpu_per_event(mark0, mark1, count - first_count)}


# ---------------------------------------------------------------- (c) latency at half the max

#: the single-object header: the marker C3 01 and the schema's 8-byte fingerprint
HEADER = 10


def avro_long(n: int) -> bytes:
    """An Avro long: zigzag, then little-endian groups of 7 bits."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long_at(buf: bytes, pos: int) -> tuple[int, int]:
    """The Avro long at ``pos`` and the position after it."""
    acc = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7


def occurred_at_slot(value: bytes) -> tuple[int, int]:
    """Where occurred_at's bytes are in a single-object encoded event: the schema's first field
    is event_id (a string: its length, then its bytes), the second occurred_at (a long)."""
    if value[:2] != b"\xc3\x01":
        raise ValueError("not a single-object encoded event")
    n, pos = _long_at(value, HEADER)
    _, end = _long_at(value, pos + n)
    return pos + n, end


def stamped(value: bytes, slot: tuple[int, int], micros: int) -> bytes:
    """``value`` with occurred_at = ``micros``: the bytes encoding the event with that time would
    give. Refused if the new time does not take as many bytes as the old (the pool is encoded
    with times of today, 8 bytes each from 1978 to 3111)."""
    start, end = slot
    enc = avro_long(micros)
    if len(enc) != end - start:
        raise ValueError(f"occurred_at {micros} takes {len(enc)} bytes, the slot {end - start}")
    return value[:start] + enc + value[end:]


def paced_pool(n: int, seed: int = 99) -> list[tuple[bytes | None, bytes, tuple[int, int] | None]]:
    """n messages of the synthetic stream encoded once: (key, value, occurred_at's slot); the
    slot is None for the malformed ones, which are sent as they are."""
    from auditor.events.model import Event
    from auditor.stream.generate import stream
    from auditor.stream.produce import encode

    out: list[tuple[bytes | None, bytes, tuple[int, int] | None]] = []
    for item in islice(stream(packs(), seed=seed, clock=lambda: datetime.now(UTC)), n):
        if isinstance(item, Event):
            value = encode(item)
            out.append((item.subject.id.encode(), value, occurred_at_slot(value)))
        else:
            out.append((None, item, None))
    return out


def latency_reader(bootstrap: str, topic: str, starts: dict[int, int], stop: Any, out: Any) -> None:
    """Child process: receive audit records read_committed; every 10th: (receive time - occurred_at,
    the record's Kafka timestamp - occurred_at). The daemon's producer stamps each record when it
    produces it (after the batch is processed, before its transaction commits), so the second is
    the time to produce the record and the rest is the time for the commit to make it visible.

    consume() waits up to 5 ms: it returns at 1000 messages or its timeout, and every message of
    the call is stamped when it returns, so a longer wait is added to the records it holds (50 ms
    measured 66 vs 26 ms p50 at 15k/s in bench/tail.py, glue2's runs: the reader's, not the daemon's)."""
    from confluent_kafka import Consumer, TopicPartition

    from auditor.trail.canonical import record_from_bytes

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-latency-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    lat: list[tuple[float, float]] = []
    n = 0
    while not stop.is_set():
        for msg in c.consume(1000, 0.005):
            if msg.error() is not None:
                continue
            n += 1
            if n % 10:
                continue
            now = time.time()
            r = record_from_bytes(msg.value())
            if r.facts is not None:
                at = r.facts.occurred_at.timestamp()
                lat.append((now - at, msg.timestamp()[1] / 1000 - at))
    c.close()
    out.put((n, lat))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def histogram(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    buckets = []
    for k, v in metrics.items():
        if k.startswith(name + "_bucket{"):
            le = k.split("le=", 1)[1].split(",", 1)[0].rstrip("}")
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(buckets)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus histogram_quantile: linear interpolation inside the bucket holding rank q."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


#: distinct events the paced producer cycles through (encoded once, before the phase)
PACED_POOL = 20_000


def paced_latency(bootstrap: str, names: dict[str, str], d: DaemonProc, rate: float, seconds: float,
                  already: int) -> dict[str, Any]:
    """The load generator is not the system under test: events are encoded once (paced_pool) and
    each is sent with occurred_at = the time it is handed to the producer, patched into its bytes
    (stamped), so the bench spends a few microseconds per event instead of building and encoding
    each in Python (~50 us, most of a core at 15,000/s on a 2-core machine)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    starts = {p: probe.get_watermark_offsets(TopicPartition(names["audit"], p), timeout=10)[1]
              for p in range(PARTITIONS)}
    probe.close()
    pool = cycle(paced_pool(PACED_POOL))
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=latency_reader, args=(bootstrap, names["audit"], starts, stop, out), daemon=True)
    reader.start()
    time.sleep(3.0)  # the reader imports and gets its assignment before the first event
    name = "auditor_end_to_end_latency_seconds"
    before = histogram(d.metrics(), name)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "compression.type": "lz4",
                         "enable.idempotence": True})
    produce, topic, clock = producer.produce, names["events"], time.time_ns
    daemon_cpu0 = sum(cpu_seconds(p) for p in d.pids())
    bench_cpu0, (busy0, total0) = time.process_time(), machine_busy()
    start = time.perf_counter()
    sent = 0
    tick = 0.01
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) - sent
        for _ in range(due):
            key, value, slot = next(pool)
            if slot is not None:
                value = stamped(value, slot, clock() // 1000)
            produce(topic, value=value, key=key)
        sent += max(0, due)
        producer.poll(0)
        time.sleep(tick)
    producer.flush(30)
    produce_seconds = time.perf_counter() - start
    bench_cpu, (busy1, total1) = time.process_time() - bench_cpu0, machine_busy()
    daemon_cpu = sum(cpu_seconds(p) for p in d.pids()) - daemon_cpu0
    deadline = time.perf_counter() + 60  # the daemon drains this phase; the reader catches up
    while d.total("auditor_events_consumed_total") < already + sent and time.perf_counter() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    after = histogram(d.metrics(), name)
    stop.set()
    received, samples = out.get(timeout=60)
    reader.join(10)
    observed = [v for v, _ in samples]
    produced = [p for _, p in samples]
    visible = [v - p for v, p in samples]
    delta = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    return {
        "rate_target_eps": rate, "rate_sent_eps": sent / produce_seconds, "seconds": produce_seconds,
        "sent": sent, "received_by_reader": received, "sampled": len(observed),
        "observed_p50_s": percentile(observed, 0.50), "observed_p99_s": percentile(observed, 0.99),
        "observed_max_s": max(observed) if observed else float("nan"),
        "to_produced_p50_s": percentile(produced, 0.50), "to_produced_p99_s": percentile(produced, 0.99),
        "produced_to_visible_p50_s": percentile(visible, 0.50),
        "produced_to_visible_p99_s": percentile(visible, 0.99),
        "metric_p50_s": bucket_quantile(delta, 0.50), "metric_p99_s": bucket_quantile(delta, 0.99),
        "metric_count": delta[-1][1] if delta else 0,
        "bench_cpu_share": bench_cpu / produce_seconds, "daemon_cpu_share": daemon_cpu / produce_seconds,
        "machine_busy_share": (busy1 - busy0) / max(total1 - total0, 1e-9),
    }


# ---------------------------------------------------------------- profile

def profile_in_process(bootstrap: str, work: Path, names: dict[str, str], n: int) -> str:
    """Run the daemon in-process under cProfile over n events of the backlog; return the top lines."""
    from auditor.config import load_config
    from auditor.stream.app import build_daemon

    tag = uuid.uuid4().hex[:6]
    out_topics = {k: f"{v}-prof-{tag}" for k, v in names.items() if k != "events"}
    create_output_topics(bootstrap, out_topics)
    cfg = load_config(work / "auditor.yaml", env={}, overrides={
        "kafka.group_id": f"bench-profile-{tag}", "topics.audit": out_topics["audit"],
        "topics.violations": out_topics["violations"], "topics.dead_letter": out_topics["dead_letter"],
        "trail_dir": None, "http.port": 0, "instance_id": f"profile-{tag}"})
    cfg = dataclasses.replace(cfg, trail_dir=None)
    done = [0]
    daemon = build_daemon(cfg, on_batch=lambda r: done.__setitem__(0, done[0] + len(r.records)))
    prof = cProfile.Profile()

    def run() -> None:
        prof.enable()
        try:
            daemon.run()
        finally:
            prof.disable()

    t = threading.Thread(target=run)
    start = time.perf_counter()
    t.start()
    while done[0] < n and t.is_alive():
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    daemon.request_stop()
    t.join(60)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(RESULTS / "stream.prof")
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    buf.write(f"in-process daemon under cProfile: {done[0]} records in {seconds:.1f}s "
              f"({done[0] / seconds:,.0f}/s with profiling overhead)\n")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


# ---------------------------------------------------------------- main

def daemon_workdir(bootstrap: str, work: Path, names: dict[str, str], processes: int,
                   native: bool = True) -> tuple[str, dict[str, str]]:
    """A config for one daemon run: the same event topic, its own group and output topics (a
    second run on the first run's audit topic would find chain heads ahead of its new group)."""

    tag = uuid.uuid4().hex[:6]
    run_names = {k: (v if k == "events" else f"{v}-p{processes}-{tag}") for k, v in names.items()}
    create_output_topics(bootstrap, {k: v for k, v in run_names.items() if k != "events"})
    doc = yaml.safe_load((work / "auditor.yaml").read_text())
    doc["kafka"]["group_id"] = f"{doc['kafka']['group_id']}-p{processes}-{tag}"
    doc["topics"].update({k: v for k, v in run_names.items() if k != "events"})
    if "trail_dir" in doc:
        doc["trail_dir"] = str(work / f"trail-p{processes}-{tag}")
    doc["native"] = native
    name = f"auditor-p{processes}-{tag}.yaml"
    (work / name).write_text(yaml.safe_dump(doc))
    return name, run_names


def daemon_phase(bootstrap: str, work: Path, names: dict[str, str], m: int, processes: int,
                 stack: ExitStack, native: bool = True, broker_pid: int | None = None
                 ) -> tuple[dict[str, Any], DaemonProc, dict[str, str]]:
    config, run_names = daemon_workdir(bootstrap, work, names, processes, native)
    started = time.perf_counter()
    d = DaemonProc(work, f"bench-p{processes}", processes=processes, config=config)
    stack.callback(d.kill)
    out: dict[str, Any] = daemon_run(d, m, started, broker_pid)
    rss = d.rss()
    out["rss_after_bytes"], out["rss_peak_bytes"] = rss["VmRSS"], rss["VmHWM"]
    metrics = d.metrics()
    out["transactions"] = {o: metrics.get(f"auditor_transactions_total{{outcome={o}}}", 0.0)
                           for o in ("commit", "abort")}
    out["processes"] = processes
    out["native"] = native
    out["load_after"] = os.getloadavg()[0]
    return out, d, run_names


# ---------------------------------------------------------------- rounds: a fair comparison in one run

#: a phase whose slowest reference-loop reading is this much above the run's fastest is flagged
PROBE_TOLERANCE = 0.10
#: the phases of a round, by key: what they are called in the report
PHASES = {"ceiling": "(a) ceiling", "peer": "(p) Quix", "daemon": "(b) daemon"}
#: each ratio of a round, and the phases it is of (a flag on either puts the pair aside)
RATIOS = {"ratio_ceiling": ("daemon", "ceiling"), "ratio_peer": ("daemon", "peer")}
#: seconds between the sampler's reference-loop readings during the phases
SAMPLE_INTERVAL = 0.5
#: a phase with at least this many readings during it is judged by them, not by the probes around it
MIN_DURING = 3


def round_orders(rounds: int, with_peer: bool) -> list[tuple[str, ...]]:
    """The phases of each round, in order. The daemon runs in the middle, next to both phases it
    is compared with; the other two swap places every round (peer, daemon, ceiling), (ceiling,
    daemon, peer), ..., so that a machine getting slower (or faster) over the run favours neither
    side of a ratio. Without the peer: (ceiling, daemon), (daemon, ceiling), ..."""
    if rounds < 1:
        raise ValueError("at least one round")
    first: tuple[str, ...] = ("peer", "daemon", "ceiling") if with_peer else ("ceiling", "daemon")
    return [first if i % 2 == 0 else first[::-1] for i in range(rounds)]


def readings(phase: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The reference loop's readings (ns/iteration) for a phase: [before, after] (each the median of
    7 probes by the bench between phases), and those the sampler took during it."""
    where = phase.get("cpu", phase)
    return [float(v) for v in where.get("probe_ns", [])], [float(v) for v in where.get("probe_during_ns", [])]


def slow_flag(probe: list[float], during: list[float], fastest: float, fastest_during: float | None = None,
              tolerance: float = PROBE_TOLERANCE) -> str | None:
    """Why a phase's figures are suspect, or None: the machine ran it slower, as a host slowdown does
    without any steal. A phase with at least MIN_DURING readings from the sampler is judged by their
    mean against the lowest such mean of the run's phases (the mean, not the max: it is what weighs on
    the phase's rate, and one reading is noisy; readings taken during a phase run a few % slower than
    between phases from the machine's own load, so they are compared with their own kind). A phase
    with fewer is judged by the bench's probes just before and after it against the run's fastest
    such reading (a probe at the boundary only tells about that moment, so it does not overrule the
    readings during the phase). Flagged when more than ``tolerance`` over."""
    if len(during) >= MIN_DURING and fastest_during:
        mean = statistics.fmean(during)
        levels = [(f"mean during {mean:.0f}", mean, fastest_during, "lowest mean during a phase")]
    else:
        levels = [(f"{which} {v:.0f}", v, fastest, "fastest reading between phases")
                  for which, v in zip(("before", "after"), probe, strict=False)]
    over = [(which, v / base - 1, base, what) for which, v, base, what in levels
            if base > 0 and v > base * (1 + tolerance)]
    if not over:
        return None
    which, excess, base, what = max(over, key=lambda o: o[1])
    return (f"reference loop {loop_text(probe, during)} ns/iteration: {which} is {excess:+.0%} over the run's "
            f"{what}, {base:.0f}")


def flag_phases(phases: list[dict[str, Any]], tolerance: float = PROBE_TOLERANCE) -> None:
    """Set each phase's ``flag``: ``slow_flag`` against the fastest before/after reading of all these
    phases and the lowest mean of the readings during one."""
    every = [v for ph in phases for v in readings(ph)[0]]
    means = [statistics.fmean(d) for ph in phases if len(d := readings(ph)[1]) >= MIN_DURING]
    fastest, fastest_during = (min(every) if every else 0.0), (min(means) if means else None)
    for ph in phases:
        ph["flag"] = slow_flag(*readings(ph), fastest, fastest_during, tolerance)


def spread(values: list[float]) -> dict[str, Any]:
    """n, median, min and max of a figure over the rounds (each value kept)."""
    if not values:
        return {"n": 0, "values": []}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


def round_ratios(rnd: dict[str, Any]) -> dict[str, Any]:
    """A round with its ratios daemon/ceiling and daemon/peer (steady rates of back-to-back phases)."""
    d = rnd["daemon"]["steady_eps"]
    rnd["ratio_ceiling"] = d / rnd["ceiling"]["steady_eps"]
    if "peer" in rnd:
        rnd["ratio_peer"] = d / rnd["peer"]["steady_eps"]
    return rnd


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rate and ratio over the rounds (re-runs of flagged rounds left out): median, min, max,
    and every value; and each ratio over the unflagged rounds, re-runs included."""
    first = [r for r in rounds if "rerun_of" not in r]
    out = {f"{k}_eps": spread([r[k]["steady_eps"] for r in first if k in r]) for k in PHASES}
    for k, of in RATIOS.items():
        out[k] = spread([r[k] for r in first if k in r])
        clean = [r for r in rounds if k in r and not any(r[ph].get("flag") for ph in of)]
        out[k]["unflagged"] = {**spread([r[k] for r in clean]), "reruns": sum("rerun_of" in r for r in clean)}
    return out


def ratio_verdict(what: str, target: float, s: dict[str, Any], flagged: list[int]) -> str:
    """One "Must show" line for a ratio over the rounds: met or not by the median of the pairs, with
    every pair's value, how many pairs met it alone, and which pairs had a flagged phase."""
    if not s.get("n"):
        return f"{what}: NOT MEASURED"
    met = "MET" if s["median"] >= target else "NOT MET"
    each = ", ".join(f"{v:.2f}" for v in s["values"])
    alone = sum(v >= target for v in s["values"])
    line = (f"{what}: {met}, median {s['median']:.2f} of {s['n']} back-to-back pairs ({each}; min {s['min']:.2f}); "
            f"{alone} of {s['n']} pairs >= {target:g} alone")
    if flagged:
        u = s.get("unflagged", {})
        clean = "no pair unflagged: the verdict rests on phases the machine ran slower"
        if u.get("n"):
            reruns = f", {u['reruns']} of them re-run" if u.get("reruns") else ""
            met_u = "met" if u["median"] >= target else "not met"
            clean = f"median of the {u['n']} unflagged {u['median']:.2f} ({met_u}{reruns})"
        line += f"; pair(s) {', '.join(map(str, flagged))} flagged (a phase ran on a slower machine): {clean}"
    return line


def verdicts(r: dict[str, Any]) -> list[str]:
    """Issue 14's "Must show" lines this bench measures, each met / not met / reported, with the figures."""
    rounds, s = r["rounds"], r["summary"]

    def flagged(keys: tuple[str, ...]) -> list[int]:
        return [x["round"] for x in rounds if "rerun_of" not in x and any(x.get(k, {}).get("flag") for k in keys)]

    lines = [ratio_verdict("daemon >= 2x Quix Streams", 2.0, s["ratio_peer"], flagged(RATIOS["ratio_peer"]))
             if s["ratio_peer"]["n"] else "daemon >= 2x Quix Streams: NOT MEASURED (--no-peer)",
             ratio_verdict("daemon >= 0.8x the raw ceiling", 0.8, s["ratio_ceiling"], flagged(RATIOS["ratio_ceiling"]))]
    lat = r.get("latency")
    if lat:
        p99 = lat["observed_p99_s"] * 1000
        met = "MET" if p99 < 250 else "NOT MET"
        line = (f"p99 event -> visible audit record < 250 ms at half rate: {met}, p99 {p99:,.0f} ms (p50 "
                f"{lat['observed_p50_s'] * 1000:,.0f}) at {lat['rate_sent_eps']:,.0f} events/s = 0.5 x the median "
                f"daemon rate {s['daemon_eps']['median']:,.0f}/s; one paced phase of {lat['seconds']:.0f} s")
        if lat.get("flag"):
            line += f"; flagged: {lat['flag']}"
        lines.append(line)
    p1 = s["daemon_eps"].get("median")
    for d in r.get("daemons", []):
        what = f"--processes {d['processes']}, native {'on' if d.get('native', True) else 'off'}"
        line = (f"{what} vs the rounds' daemon ({r['rounds_daemon']}): reported, {d['steady_eps']:,.0f} events/s "
                f"in one run = {d['steady_eps'] / p1:.2f}x their median {p1:,.0f}")
        if s["peer_eps"].get("n"):
            line += f", {d['steady_eps'] / s['peer_eps']['median']:.2f}x the median Quix"
        if d.get("flag"):
            line += f"; flagged: {d['flag']}"
        lines.append(line)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 events, 15 s latency phase")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of (ceiling, Quix, daemon) on the same backlog (default 3, quick 2)")
    ap.add_argument("--bootstrap", help="use this broker instead of starting a local one")
    ap.add_argument("--latency-seconds", type=float, default=None, help="paced phase length (default 25, quick 15)")
    ap.add_argument("--trail", action="store_true", help="the daemon also keeps the file copy of the trail")
    ap.add_argument("--batch", type=int, help="batch.max_events for the daemon (default: shipped 5000)")
    ap.add_argument("--processes", default="1,2", metavar="N[,N...]",
                    help="the rounds' daemon runs with the first of these --processes values, each other value "
                         "once after the rounds (default 1,2); the latency phase uses the first")
    ap.add_argument("--native", default="on", metavar="on|off|on,off",
                    help="the daemon's hot path: compiled (on, the default), the Python reference (off), or "
                         "both (the rounds use the first; the other runs once after them)")
    ap.add_argument("--rerun-flagged", action="store_true",
                    help="at the end, run each round with a flagged phase once more (same order); both are "
                         "reported, the verdict stays on the first rounds, the re-runs join the unflagged median")
    ap.add_argument("--no-peer", action="store_true", help="skip Quix Streams (it needs its own virtualenv)")
    ap.add_argument("--profile", action="store_true", help="also cProfile the daemon in-process")
    ap.add_argument("--profile-events", type=int, default=200_000)
    args = ap.parse_args()
    m = 100_000 if args.quick else args.events
    latency_s = args.latency_seconds or (15.0 if args.quick else 25.0)
    counts = [int(n) for n in args.processes.split(",")]
    natives = [{"on": True, "off": False}[v.strip()] for v in args.native.split(",")]
    combos = [(native, n) for native in natives for n in counts]
    orders = round_orders(args.rounds or (2 if args.quick else 3), not args.no_peer)

    from auditor.config import load_config

    results: dict[str, Any] = {"events": m, "partitions": PARTITIONS, "cpus": os.cpu_count(),
                               "python": sys.version.split()[0], "trail_file_copy": args.trail,
                               "when": datetime.now(UTC).isoformat(timespec="seconds"),
                               "load_before": os.getloadavg()[0],
                               "rounds_daemon": f"--processes {combos[0][1]}, native "
                                                f"{'on' if combos[0][0] else 'off'}"}
    with ExitStack() as stack:
        broker_pid: int | None = None
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            from auditor.localkafka.broker import LocalKafka

            kafka = stack.enter_context(LocalKafka(progress=log))
            bootstrap, broker_pid = kafka.bootstrap_servers, kafka.pid
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stream-")))
        tag = uuid.uuid4().hex[:6]
        names = make_workdir(bootstrap, work, tag, args.trail, args.batch)
        cfg = load_config(work / "auditor.yaml", env={})

        log(f"producing {m:,} events to {names['events']} ({PARTITIONS} partitions)")
        results["produce_eps"] = produce_backlog(bootstrap, names["events"], m)

        sampler = ProbeSampler(SAMPLE_INTERVAL)
        stack.callback(sampler.close)
        kept: dict[str, Any] = {}

        def measured(run_it: Any) -> dict[str, Any]:
            """run_it(), with the reference loop before it, sampled during it and after it."""
            t0, before = time.monotonic(), speed_probe()
            out: dict[str, Any] = run_it()
            return probed(out, before, sampler.between(t0, time.monotonic()))

        def stop(d: DaemonProc, out: dict[str, Any]) -> None:
            out["sigterm_exit"], out["sigterm_seconds"] = d.stop()

        def run(phase: str, last_round: bool) -> dict[str, Any]:
            if phase == "ceiling":
                return ceiling(cfg, names["events"], m, broker_pid)
            if phase == "peer":
                return peer(bootstrap, names["events"], m, broker_pid)
            native, n = combos[0]
            out, d, run_names = daemon_phase(bootstrap, work, names, m, n, stack, native, broker_pid)
            if last_round:  # kept (idle: its backlog is done) for the latency phase after the round
                kept.update(d=d, out=out, names=run_names, cpu0=process_cpu(d.pids()), t0=time.perf_counter())
            else:
                stop(d, out)
            return out

        results["rounds"] = []
        for i, order in enumerate(orders):
            rnd: dict[str, Any] = {"round": i + 1, "order": list(order)}
            for phase in order:
                log(f"round {i + 1}/{len(orders)}: {PHASES[phase]}")
                rnd[phase] = measured(lambda: run(phase, i == len(orders) - 1))  # noqa: B023 - called at once
                log(f"    {rnd[phase]['steady_eps']:,.0f} events/s")
            results["rounds"].append(round_ratios(rnd))
        results["summary"] = summarize(results["rounds"])

        d, out = kept["d"], kept["out"]
        out["idle_cpu_s"] = process_cpu(d.pids()) - kept["cpu0"]
        out["idle_seconds"] = time.perf_counter() - kept["t0"]
        rate = 0.5 * results["summary"]["daemon_eps"]["median"]
        log(f"(c) latency at {rate:,.0f} events/s (half the rounds' median daemon rate) for {latency_s:.0f}s")
        results["latency"] = measured(lambda: paced_latency(bootstrap, kept["names"], d, rate, latency_s, already=m))
        stop(d, out)

        results["daemons"] = []
        for native, n in combos[1:]:
            log(f"(b) daemon end to end, exactly-once, --processes {n}, native {'on' if native else 'off'}")
            t0, before = time.monotonic(), speed_probe()
            out, d, _ = daemon_phase(bootstrap, work, names, m, n, stack, native, broker_pid)
            probed(out, before, sampler.between(t0, time.monotonic()))
            stop(d, out)
            log(f"    {out['steady_eps']:,.0f} events/s")
            results["daemons"].append(out)

        def flag_all() -> None:
            phases = [x[k] for x in results["rounds"] for k in PHASES if k in x]
            flag_phases([*phases, results["latency"], *results["daemons"]])

        flag_all()
        if args.rerun_flagged:
            for x in [x for x in results["rounds"] if any(x[k].get("flag") for k in PHASES if k in x)]:
                rerun: dict[str, Any] = {"round": len(results["rounds"]) + 1, "order": x["order"],
                                         "rerun_of": x["round"]}
                for phase in x["order"]:
                    log(f"re-run of round {x['round']}: {PHASES[phase]}")
                    rerun[phase] = measured(lambda: run(phase, False))  # noqa: B023 - called at once
                    log(f"    {rerun[phase]['steady_eps']:,.0f} events/s")
                results["rounds"].append(round_ratios(rerun))
            flag_all()  # again: the re-runs' readings may change the run's fastest
        results["summary"] = summarize(results["rounds"])  # again: the unflagged medians need the flags
        results["verdicts"] = verdicts(results)

        if args.profile:
            log("profiling the daemon in-process (cProfile)")
            results["profile_top"] = profile_in_process(bootstrap, work, names, min(m, args.profile_events))

    results["load_after"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    if "profile_top" in results:
        print("\n```\n" + results["profile_top"] + "```")
    return 0


def fmt_eps(phase: dict[str, Any] | None) -> str:
    if phase is None:
        return "-"
    return f"{phase['steady_eps']:,.0f}" + (" (!)" if phase.get("flag") else "")


def rounds_table(r: dict[str, Any]) -> list[str]:
    """One line per round (its phases in the order they ran, back to back on the same backlog), then
    the median and the min of each column; a phase marked (!) ran on a slower machine (see below)."""
    with_peer = any("peer" in x for x in r["rounds"])
    head = "| round | order | (a) ceiling | " + ("(p) Quix | " if with_peer else "") + \
        "(b) daemon | daemon / ceiling | " + ("daemon / Quix | " if with_peer else "") + \
        "reference loop ns: before -> after (mean during), a" + (" / p" if with_peer else "") + " / b |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    keys = ("ceiling", "peer", "daemon") if with_peer else ("ceiling", "daemon")
    for x in r["rounds"]:
        loops = " / ".join(loop_cell(*readings(x[k])) for k in keys)
        name = f"{x['round']} (re-run of {x['rerun_of']})" if "rerun_of" in x else str(x["round"])
        cells = [name, " ".join(k[0] for k in x["order"]).replace("c", "a").replace("d", "b")]
        cells += [fmt_eps(x.get(k)) for k in keys]
        cells += [f"{x['ratio_ceiling']:.2f}"] + ([f"{x['ratio_peer']:.2f}"] if with_peer else []) + [loops]
        lines.append("| " + " | ".join(cells) + " |")
    s = r["summary"]
    first = sum("rerun_of" not in x for x in r["rounds"])
    for stat in ("median", "min"):
        cells = [f"{stat} of {first}" + (" (re-runs left out)" if first < len(r["rounds"]) else ""), ""]
        cells += [f"{s[k + '_eps'][stat]:,.0f}" for k in keys]
        cells += [f"{s['ratio_ceiling'][stat]:.2f}"] + ([f"{s['ratio_peer'][stat]:.2f}"] if with_peer else []) + [""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_summary(rounds: list[dict[str, Any]]) -> str | None:
    """One line: each phase's CPU per event over the rounds (median; re-runs left out), of its own
    process(es) and of the broker JVM. A slower daemon shows as its own us/event rising; a slower
    machine as every phase's rising together, with the reference loop."""
    rounds = [x for x in rounds if "rerun_of" not in x]
    parts = []
    for k in ("ceiling", "peer", "daemon"):
        cpus = [x[k]["cpu"] for x in rounds if k in x and "cpu" in x[k]]
        if not cpus:
            continue
        own = statistics.median(c["measured_us"] for c in cpus)
        brokers = [c["broker_us"] for c in cpus if "broker_us" in c]
        broker = f" + broker JVM {statistics.median(brokers):.1f}" if brokers else ""
        parts.append(f"{PHASES[k]} {own:.1f}{broker} us")
    if not parts:
        return None
    return f"CPU per event, median of {len(rounds)} rounds (the phase's own process): " + ", ".join(parts)


def report(r: dict[str, Any]) -> str:
    lat = r["latency"]
    mib = 1024 * 1024
    out = ["Must show (issue 14), this run:"] + [f"- {v}" for v in r["verdicts"]] + [""]
    out += [f"Rounds on the same backlog ({r['events']:,} events; daemon {r['rounds_daemon']}); each ratio is "
            "of phases run back to back; (!) = a phase the machine ran slower (its reference loop more than "
            f"{PROBE_TOLERANCE:.0%} over the run's best, see below):", ""]
    out += rounds_table(r)
    cpu = cpu_summary(r["rounds"])
    out += ["", cpu] if cpu else []
    flags = [(f"round {x['round']} {PHASES[k]}", x[k]["flag"]) for x in r["rounds"] for k in PHASES
             if k in x and x[k].get("flag")]
    flags += [("latency phase", lat["flag"])] if lat.get("flag") else []
    flags += [(f"daemon --processes {d['processes']}", d["flag"]) for d in r["daemons"] if d.get("flag")]
    out += [""] + [f"(!) {what}: {why}" for what, why in flags] + ([""] if flags else [])
    rows = [
        ("events", f"{r['events']:,} ({r['partitions']} partitions, {r['cpus']} CPUs, load {r['load_before']:.1f} "
                   f"before, {r.get('load_after', float('nan')):.1f} after)"),
        ("pre-produce", f"{r['produce_eps']:,.0f} events/s"),
    ]
    for x in r["rounds"]:
        if "peer" in x:
            rows.append((f"round {x['round']} (p) Quix Streams {QUIX_VERSION}, simpler job, exactly-once",
                         f"{x['peer']['steady_eps']:,.0f} events/s (wall {x['peer']['wall_eps']:,.0f})"))
        rows.append((f"round {x['round']} (a) raw ceiling: consume + plain fastavro",
                     f"{x['ceiling']['steady_eps']:,.0f} events/s (wall {x['ceiling']['wall_eps']:,.0f})"))
        rows.append((f"round {x['round']} (b) daemon {r['rounds_daemon']}", daemon_cell(x["daemon"], mib)))
    for d in r["daemons"]:
        rows.append((f"(b) daemon --processes {d['processes']}, native {'on' if d.get('native', True) else 'off'}",
                     daemon_cell(d, mib)))
    rows += [
        (f"paced rate (0.5 x the rounds' median daemon rate, {r['rounds_daemon']})",
         f"{lat['rate_sent_eps']:,.0f} events/s for {lat['seconds']:.0f} s on round {len(r['rounds'])}'s daemon"),
        ("latency p50 / p99, observed", f"{lat['observed_p50_s'] * 1000:,.0f} / {lat['observed_p99_s'] * 1000:,.0f} ms"
                                        f" ({lat['sampled']:,} samples)"),
        ("  occurred_at -> record produced by the daemon (p50 / p99)",
         f"{lat['to_produced_p50_s'] * 1000:,.0f} / {lat['to_produced_p99_s'] * 1000:,.0f} ms"),
        ("  record produced -> visible to the reader (p50 / p99)",
         f"{lat['produced_to_visible_p50_s'] * 1000:,.0f} / {lat['produced_to_visible_p99_s'] * 1000:,.0f} ms"),
        ("CPU during the paced phase (of one core; machine: of all)",
         f"bench producer {lat['bench_cpu_share']:.0%}, daemon {lat['daemon_cpu_share']:.0%}, "
         f"machine busy {lat['machine_busy_share']:.0%}"),
        ("latency p50 / p99, metric", f"{lat['metric_p50_s'] * 1000:,.0f} / {lat['metric_p99_s'] * 1000:,.0f} ms"
                                      " (histogram buckets)"),
    ]
    rows += cpu_rows(r)
    out += ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


def daemon_cell(d: dict[str, Any], mib: int) -> str:
    idle = (f"; then idle {d['idle_seconds']:.0f} s until the paced phase, {d['idle_cpu_s']:.1f} s CPU"
            if "idle_cpu_s" in d else "")
    return (f"{d['steady_eps']:,.0f} events/s (wall {d['wall_eps']:,.0f}, startup {d['startup_s']:.1f} s; "
            f"RSS {d['rss_after_bytes'] / mib:,.0f} MiB, peak {d['rss_peak_bytes'] / mib:,.0f}; "
            f"{d['transactions']['commit']:.0f} commits, {d['transactions']['abort']:.0f} aborts; "
            f"main thread {d.get('main_running', 0.0):.0%} running, {d.get('main_runnable', 0.0):.0%} "
            f"runnable-waiting, {d.get('main_asleep', 0.0):.0%} asleep; "
            f"SIGTERM exit {d['sigterm_exit']} in {d['sigterm_seconds']:.1f} s; load {d.get('load_after', 0.0):.1f} "
            f"after{idle})")


def cpu_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Where each phase's CPU went, per event (the phases that measured it): a slow run and a fast
    one are told apart by which of these grew."""
    what = {"ceiling": "consumer (bench process)", "peer": "Quix process", "daemon": "daemon"}
    rows = []
    for x in r["rounds"]:
        for k in x["order"]:
            if "cpu" in x[k]:
                rows.append((f"CPU per event, round {x['round']} {PHASES[k]}", cpu_line(x[k]["cpu"], what[k])))
    for d in r["daemons"]:
        if "cpu" in d:
            rows.append((f"CPU per event, (b) daemon --processes {d['processes']}, native "
                         f"{'on' if d.get('native', True) else 'off'}", cpu_line(d["cpu"], "daemon")))
    return rows


if __name__ == "__main__":
    sys.exit(main())
