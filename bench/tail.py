"""What the latency of each event at a paced rate is made of: issue 14's p99 tail, traced.

    python bench/tail.py --rate 45000                 # paced at 45,000 events/s for 25 s
    python bench/tail.py --half --events 300000       # at half the rate the daemon drains a backlog at

bench/stream.py gives the p50/p99 of event -> visible audit record; this bench says where the time of
each event went, so that a slow tail can be told from a slow median. One broker (bench/stream.py's
setup), one daemon (``--processes 1``, started from the current directory: run it from the tree to
measure), a backlog of ``--events`` first (with ``--half``, its steady rate sets the paced rate), then
events produced at ``--rate`` for ``--seconds``, stamped with occurred_at as bench/stream.py does, and a
read_committed reader in its own process keeping (receive time, occurred_at, Kafka timestamp) of every
10th audit record.

Three traces are taken over the paced phase:

* the daemon's batches: a ``sitecustomize`` module written to a temporary directory and put on the
  daemon's PYTHONPATH (nothing of the daemon's code is changed) wraps, in the daemon only, the
  intake's take, ``BatchProcessor.process``, ``BatchCommit._open`` and each broker round trip of the
  commit, and records the garbage collections of the daemon (``gc.callbacks``) and its main thread's
  running and runnable-waiting time (``/proc/.../schedstat``) at each take;
* the broker JVM's stop-the-world pauses: ``-Xlog:gc,gc+cpu,safepoint`` through JAVA_TOOL_OPTIONS;
* the reader's samples.

Each sample is matched to its batch (the one whose ``_open`` produced the record, from its Kafka
timestamp) and its end-to-end time split into:

* ``to_batch``: occurred_at -> the end of the take that put it in a batch (the bench's producer,
  the broker, the daemon's fetch, and waiting for the previous transaction: the take gathers while one
  is in flight);
* ``settle``: the end of that take -> processing begins (the previous transaction settled first when it
  has committed meanwhile: chain heads, metrics);
* ``process``: BatchProcessor.process of its batch;
* ``wait_prev``: from the end of processing to the start of the batch's own transaction (the previous
  transaction still committing);
* ``open``: begin_transaction, sealing the checkpoints, produce();
* ``commit``: the end of ``_open`` -> commit_transaction returned on the commit worker
  (send_offsets_to_transaction, commit_transaction);
* ``visible``: commit_transaction returned -> received by the reader (transaction markers, the
  reader's fetch and its consume()).

The report gives each part's mean over all samples and over the slowest 1% (the p99 tail), and for
the tail how many samples had, while they were in flight, a collection in the daemon, a broker pause
over 5 ms, or the daemon's main thread waiting for a core for more than 5 ms during their batch.
On a loaded machine the last dominates; the broker's pauses and the daemon's collections are what a
quiet machine still has. Writes bench/results/tail.json (with every sample and the traces).
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from itertools import cycle
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stream as bs  # noqa: E402  (bench/stream.py: broker, backlog, daemon and paced-producer helpers)

RESULTS = Path(__file__).resolve().parent / "results"
#: the environment variable naming the daemon's trace file (not AUDITOR_*: DaemonProc drops those)
TRACE_ENV = "BENCH_TAIL_TRACE"
PARTS = ("to_batch", "settle", "process", "wait_prev", "open", "commit", "visible")

#: written as sitecustomize.py to a temporary directory on the daemon's PYTHONPATH; active only in a
#: process started with ``python -m`` (the daemon) and with TRACE_ENV set
HOOK = r'''
import os, sys
path = os.environ.get("BENCH_TAIL_TRACE")
if path and sys.argv[:1] == ["-m"]:
    import atexit, gc, json, threading, time
    recs, wall, started = [], time.time, {}

    def on_gc(phase, info):
        main = threading.get_ident() == threading.main_thread().ident
        if phase == "start":
            started[main] = wall()
        else:
            recs.append(["gc", started.pop(main, wall()), wall(), info["generation"], int(main)])
    gc.callbacks.append(on_gc)

    def dump():
        out, recs[:] = list(recs), []
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in out)

    def every_second():
        while True:
            time.sleep(1.0)
            dump()
    threading.Thread(target=every_second, daemon=True, name="bench-tail-trace").start()
    atexit.register(dump)

    from auditor.stream import commit as _c, processor as _p, runner as _r
    schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"

    def wrap(cls, name, record):
        orig = getattr(cls, name)
        def wrapped(self, *a, **k):
            t0 = wall()
            out = orig(self, *a, **k)
            recs.append(record(t0, wall(), self, a, out))
            return out
        setattr(cls, name, wrapped)

    def take(t0, t1, self, a, out):
        with open(schedstat) as f:
            ran, waited = f.read().split()[:2]
        return ["take", t0, t1, len(out[0]), int(ran), int(waited)]
    wrap(_r.Daemon, "_take", take)
    wrap(_p.BatchProcessor, "process", lambda t0, t1, s, a, out: ["process", t0, t1, len(a[0])])
    wrap(_c.BatchCommit, "_open", lambda t0, t1, s, a, out: ["open", t0, t1, len(a[1].outgoing)])
    orig_retry = _c.BatchCommit._retry
    def _retry(self, op, what, *a, **k):
        t0 = wall()
        try:
            return orig_retry(self, op, what, *a, **k)
        finally:
            recs.append(["rpc", t0, wall(), what])
    _c.BatchCommit._retry = _retry
'''


# ---------------------------------------------------------------- analysis (pure)

def broker_pauses(log: str, at_least_s: float = 0.005) -> list[tuple[float, float]]:
    """(start, end) wall times of the broker JVM's safepoints of at least ``at_least_s``, from a log
    written with ``-Xlog:safepoint:...:timemillis`` (the end's time in ms, the pause's Total in ns)."""
    out = []
    for m in re.finditer(r"\[(\d+)ms\] Safepoint .*?Total: (\d+) ns", log):
        end, total = int(m.group(1)) / 1e3, int(m.group(2)) / 1e9
        if total >= at_least_s:
            out.append((end - total, end))
    return out


def batches(recs: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The daemon's batches from its trace, in order: each ``open`` with the ``process`` and the
    ``take`` (of events) before it, the commit_transaction after it, and the main thread's time
    runnable but not running between its take and the next."""
    recs = sorted(recs, key=lambda r: r[1])
    out: list[dict[str, Any]] = []
    take = process = None
    takes = [r for r in recs if r[0] == "take" and r[3]]
    nth = {id(r): k for k, r in enumerate(takes)}
    commits = [r for r in recs if r[0] == "rpc" and r[3] == "commit_transaction"]
    starts = [r[1] for r in commits]
    for r in recs:
        if r[0] == "take" and r[3]:
            take = r
        elif r[0] == "process":
            process = r
        elif r[0] == "open" and take is not None and process is not None and take[1] <= process[1] <= r[1]:
            i = bisect.bisect_left(starts, r[2])
            if i == len(commits):
                continue
            k = nth[id(take)]
            after = takes[k + 1] if k + 1 < len(takes) else None
            waited = (after[5] - take[5]) / 1e9 if after is not None else 0.0
            out.append({"take_end": take[2], "process": (process[1], process[2]), "open": (r[1], r[2]),
                        "committed": commits[i][2], "events": take[3], "main_waited_s": waited})
    return out


def split(samples: Sequence[Sequence[float]], bs_: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Each (received, occurred_at, Kafka timestamp) sample's end-to-end time in PARTS, from the batch
    whose ``_open`` produced it (its Kafka timestamp, in ms, within that call); samples with no such
    batch are left out."""
    opens = [b["open"][0] for b in bs_]
    out = []
    for recv, occurred, produced in samples:
        i = bisect.bisect_right(opens, produced + 0.001) - 1
        if i < 0:
            continue
        b = bs_[i]
        if not b["open"][0] - 0.001 <= produced <= b["open"][1] + 0.001:
            continue
        (p0, p1), (o0, o1) = b["process"], b["open"]
        out.append({"total": recv - occurred, "occurred": occurred, "received": recv,
                    "to_batch": b["take_end"] - occurred, "process": p1 - p0, "wait_prev": o0 - p1,
                    "open": o1 - o0, "commit": b["committed"] - o1, "visible": recv - b["committed"],
                    "settle": p0 - b["take_end"], "main_waited_s": b["main_waited_s"]})
    return out


def tail_report(parts: Sequence[dict[str, float]], gcs: Sequence[tuple[float, float]],
                pauses: Sequence[tuple[float, float]], q: float = 0.99) -> dict[str, Any]:
    """Mean of each part over all samples and over the slowest ``1 - q``; for those, how many had a
    daemon collection or a broker pause while in flight, or a main thread kept off a core > 5 ms."""
    if not parts:
        return {"samples": 0}
    ranked = sorted(parts, key=lambda p: p["total"])
    tail = ranked[min(len(ranked) - 1, int(q * len(ranked))):]

    def during(p: dict[str, float], spans: Sequence[tuple[float, float]]) -> bool:
        return any(a < p["received"] and b > p["occurred"] for a, b in spans)

    mean = {k: statistics.fmean(p[k] for p in parts) for k in (*PARTS, "total")}
    tail_mean = {k: statistics.fmean(p[k] for p in tail) for k in (*PARTS, "total")}
    return {"samples": len(parts), "tail_samples": len(tail),
            "p50_s": ranked[len(ranked) // 2]["total"], "p99_s": tail[0]["total"],
            "mean": mean, "tail_mean": tail_mean,
            "tail_with_daemon_gc": sum(during(p, gcs) for p in tail),
            "tail_with_broker_pause": sum(during(p, pauses) for p in tail),
            "tail_with_main_waiting_5ms": sum(p["main_waited_s"] > 0.005 for p in tail),
            "all_with_broker_pause": sum(during(p, pauses) for p in parts)}


# ---------------------------------------------------------------- the run

def reader(bootstrap: str, topic: str, starts: dict[int, int], stop: Any, out: Any, batch: int = 1000,
           timeout: float = 0.005) -> None:
    """Child process: bench/stream.py's latency reader (``consume(1000, 0.005)``), keeping the receive
    time of each sample. consume() returns once ``batch`` messages are queued or after ``timeout``: at
    15,000 records/s a 50 ms timeout is taken in full, and every record of the call waits for it."""
    from confluent_kafka import Consumer, TopicPartition

    from auditor.trail.canonical import record_from_bytes

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-tail-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    got: list[tuple[float, float, float]] = []
    n = 0
    while not stop.is_set():
        for msg in c.consume(batch, timeout):
            if msg.error() is not None:
                continue
            n += 1
            if n % 10:
                continue
            now = time.time()
            r = record_from_bytes(msg.value())
            if r.facts is not None:
                got.append((now, r.facts.occurred_at.timestamp(), msg.timestamp()[1] / 1000))
    c.close()
    out.put(got)


def paced(bootstrap: str, names: dict[str, str], d: bs.DaemonProc, rate: float, seconds: float,
          already: int, consume: tuple[int, float] = (1000, 0.05)
          ) -> tuple[float, float, list[tuple[float, float, float]]]:
    """Events at ``rate`` for ``seconds`` (bench/stream.py's paced producer); (start, rate sent, samples)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-tail-probe"})
    starts = {p: probe.get_watermark_offsets(TopicPartition(names["audit"], p), timeout=10)[1]
              for p in range(bs.PARTITIONS)}  # (the reader of a later phase does not read the earlier ones)
    probe.close()
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    rd = ctx.Process(target=reader, args=(bootstrap, names["audit"], starts, stop, out, *consume), daemon=True)
    rd.start()
    time.sleep(3.0)
    pool = cycle(bs.paced_pool(bs.PACED_POOL))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "compression.type": "lz4",
                         "enable.idempotence": True})
    produce, topic, clock = producer.produce, names["events"], time.time_ns
    wall0, start, sent = time.time(), time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) - sent
        for _ in range(due):
            key, value, slot = next(pool)
            if slot is not None:
                value = bs.stamped(value, slot, clock() // 1000)
            produce(topic, value=value, key=key)
        sent += max(0, due)
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(30)
    sent_rate = sent / (time.perf_counter() - start)
    deadline = time.perf_counter() + 60
    while d.total("auditor_events_consumed_total") < already + sent and time.perf_counter() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    stop.set()
    samples = [s for s in out.get(timeout=60) if s[1] >= wall0]
    rd.join(10)
    return wall0, sent_rate, samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=45_000.0, help="events/s of the paced phase")
    ap.add_argument("--half", action="store_true", help="pace at half the daemon's steady rate on the backlog")
    ap.add_argument("--events", type=int, default=100_000, help="the backlog drained before the paced phase")
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--reader", default="1000,0.005", metavar="N,TIMEOUT",
                    help="the reader's consume(N, TIMEOUT) (default bench/stream.py's); several, separated by "
                         "'/', alternate paced phases on the same daemon (e.g. 1000,0.05/1000,0.005/1000,0.05)")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    result: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "load_before": os.getloadavg()}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tail-")))
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(HOOK)
        gclog, trace = work / "broker-gc.log", work / "daemon.trace"
        env0 = dict(os.environ)
        os.environ["JAVA_TOOL_OPTIONS"] = (env0.get("JAVA_TOOL_OPTIONS", "")
                                           + f" -Xlog:gc,gc+cpu,safepoint:file={gclog}:timemillis,uptime").strip()
        from auditor.localkafka.broker import LocalKafka

        kafka = stack.enter_context(LocalKafka(progress=bs.log))
        os.environ.clear()
        os.environ.update(env0)
        bootstrap = kafka.bootstrap_servers
        tag = uuid.uuid4().hex[:6]
        names = bs.make_workdir(bootstrap, work, tag, False, None)
        bs.log(f"producing {args.events:,} events")
        bs.produce_backlog(bootstrap, names["events"], args.events)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), str(work / "hook")])
        os.environ[TRACE_ENV] = str(trace)
        try:
            run, d, run_names = bs.daemon_phase(bootstrap, work, names, args.events, 1, stack, True, kafka.pid)
        finally:
            os.environ.clear()
            os.environ.update(env0)
        rate = 0.5 * run["steady_eps"] if args.half else args.rate
        bs.log(f"backlog at {run['steady_eps']:,.0f} events/s; paced at {rate:,.0f} events/s for {args.seconds:.0f} s")
        phases = []
        already = args.events
        for spec in args.reader.split("/"):
            n, timeout = spec.split(",")
            load0 = os.getloadavg()
            wall0, sent_rate, samples = paced(bootstrap, run_names, d, rate, args.seconds, already,
                                              (int(n), float(timeout)))
            already += round(sent_rate * args.seconds)
            phases.append({"reader": spec, "wall0": wall0, "wall1": time.time(), "rate": sent_rate,
                           "samples": samples, "load_before": load0, "load_after": os.getloadavg()})
        d.stop()
        time.sleep(1.0)
        recs = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
        pauses = broker_pauses(gclog.read_text() if gclog.exists() else "")
    bs_ = batches(recs)
    result.update({"backlog_eps": run["steady_eps"], "phases": []})
    for ph in phases:
        w0, w1 = ph["wall0"], ph["wall1"]
        gcs = [(r[1], r[2]) for r in recs if r[0] == "gc" and w0 <= r[1] <= w1]
        mine = [p for p in pauses if w0 <= p[0] <= w1]
        parts = split(ph.pop("samples"), bs_)
        ph.update({"daemon_collections": len(gcs), "broker_pauses": mine,
                   "report": tail_report(parts, gcs, mine), "parts": parts})
        result["phases"].append(ph)
        print(render(result["backlog_eps"], ph) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tail.json").write_text(json.dumps(result) + "\n")
    return 0


def render(backlog_eps: float, r: dict[str, Any]) -> str:
    rep = r["report"]
    if not rep["samples"]:
        return "no samples matched to a batch"
    ms = lambda s: f"{s * 1000:,.1f}"  # noqa: E731
    bp = r["broker_pauses"]
    lines = [f"reader consume({r['reader']}): paced {r['rate']:,.0f} events/s (backlog {backlog_eps:,.0f}/s); load "
             f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}; {rep['samples']:,} samples matched, "
             f"p50 {ms(rep['p50_s'])} ms, p99 {ms(rep['p99_s'])} ms",
             f"daemon collections in the phase: {r['daemon_collections']}; broker pauses > 5 ms: {len(bp)}, "
             f"{sum(b - a for a, b in bp) * 1000:,.0f} ms in all",
             "", "| part | mean, all (ms) | mean, slowest 1% (ms) |", "|---|---:|---:|"]
    lines += [f"| {k} | {ms(rep['mean'][k])} | {ms(rep['tail_mean'][k])} |" for k in (*PARTS, "total")]
    lines += ["", f"slowest 1% ({rep['tail_samples']}): with a daemon collection in flight "
              f"{rep['tail_with_daemon_gc']}, "
              f"with a broker pause {rep['tail_with_broker_pause']} (all samples: {rep['all_with_broker_pause']}), "
              f"main thread kept off a core > 5 ms in their batch {rep['tail_with_main_waiting_5ms']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
