"""Per-thread CPU of the daemon per event, over a window in the middle of a backlog.

    python bench/threads.py                                  # this tree, 400,000 events, one run
    python bench/threads.py --trees /work/main,/work/x --rounds 2   # A/B pairs: main, x, main, x

On a shared machine events/s measures the load as much as the daemon. CPU seconds per event of
each thread do not (much): they count only what the thread itself ran. So this bench reports, for
a window of ``--window`` seconds once ``--warmup`` events were audited, per thread of the daemon
(``python -m auditor run --processes 1``): CPU microseconds per event and share of a core; the
broker JVM's the same way; and the main thread's time runnable but not running (``/proc/*/schedstat``:
the load it met, so that a rate can be read against it).

The Python main thread is told apart from the other Python threads (the commit worker, the HTTP
server, the watchdog, ...) by its thread id (the process id). librdkafka's threads carry their
own names (``rdk:broker1``, ``rdk:main``).

Load-independent counters of the window come from the daemon's metrics: transactions committed and
events per transaction (the batch size the intake formed).

The broker JVM's CPU is split the same way, by thread name with its numbers dropped
(``data-plane-kafka-request-handler-0`` and ``-1`` are one line), so that the broker's own cost per
event can be told from its JIT compiler's and its garbage collector's.

``--broker-per-tree`` starts a broker from each tree too (``python -m auditor.localkafka run`` with
that tree's code, so its JVM flags and server.properties) and produces the backlog to it, so that
two trees differing in the bundled broker's settings are compared in pairs; the broker's CPU over
the whole run (start, backlog, daemon) is reported as well as over the window.

``--trees`` runs the daemon from each of these source trees in turn (cwd and PYTHONPATH set to the
tree, ``python -m`` puts the cwd first on sys.path), each with its own group and output topics on
the same broker and backlog; ``--rounds`` repeats the sequence, so before/after are pairs run back
to back. Each run reads the whole backlog from the start: ``--events`` must exceed the warmup plus
what the daemon audits in the window (at 60,000 events/s, 6 s: 360,000).

Setup (broker, topics, backlog, daemon config) is bench/stream.py's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stream as bs  # noqa: E402  (bench/stream.py: broker, backlog and daemon helpers)

TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def jvm_threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread kind of a JVM: its threads' names without their numbers."""
    out: dict[str, float] = {}
    for (_, _, name), cpu in thread_cpu(pid).items():
        kind = re.sub(r"[-#]?\d+", "", name).strip("-# ") or name
        out[kind] = out.get(kind, 0.0) + cpu
    return out


def thread_cpu(pid: int) -> dict[tuple[int, int, str], float]:
    """(process, thread, name) -> CPU seconds (user + system), for the process and its children."""
    out: dict[tuple[int, int, str], float] = {}
    for p in [pid, *children(pid)]:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                comm = Path(f"/proc/{p}/task/{t}/comm").read_text().strip()
                fields = Path(f"/proc/{p}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = f"{comm} main" if comm.startswith("python") and int(t) == p else comm
            out[(p, int(t), name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def process_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes (all their threads)."""
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def waited(pid: int) -> float:
    """Seconds this thread was runnable but not running (schedstat's second field, ns)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError):
        return 0.0


@contextmanager
def in_tree(tree: Path) -> Any:
    """cwd and PYTHONPATH set to ``tree`` while a daemon is started from it."""
    cwd, path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(tree)
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path


def one_run(bootstrap: str, work: Path, names: dict[str, str], tree: Path, broker_pid: int, warmup: int,
            window: float) -> dict[str, Any]:
    config, _ = bs.daemon_workdir(bootstrap, work, names, 1, True)
    with in_tree(tree):
        d = bs.DaemonProc(work, f"threads-{tree.name}", processes=1, config=config)
    try:
        started = time.monotonic()
        while d.total("auditor_events_consumed_total") < warmup:
            if d.proc.poll() is not None:
                raise RuntimeError(f"the daemon from {tree} exited with {d.proc.returncode}; see {d.log.name}")
            if time.monotonic() - started > 300:
                raise RuntimeError(f"the daemon from {tree} audited under {warmup} events in 300 s")
            time.sleep(0.05)
        broker = [broker_pid, *descendants(broker_pid)]
        m0, t0 = d.metrics(), time.monotonic()
        a, j0, w0, k0 = thread_cpu(d.proc.pid), process_cpu(broker), waited(d.proc.pid), jvm_threads(broker_pid)
        time.sleep(window)
        m1, t1 = d.metrics(), time.monotonic()
        b, j1, w1, k1 = thread_cpu(d.proc.pid), process_cpu(broker), waited(d.proc.pid), jvm_threads(broker_pid)
        load = os.getloadavg()[0]
    finally:
        d.stop()
    n = d.total("auditor_events_consumed_total", m1) - d.total("auditor_events_consumed_total", m0)
    commits = (m1.get("auditor_transactions_total{outcome=commit}", 0.0)
               - m0.get("auditor_transactions_total{outcome=commit}", 0.0))
    if n <= 0:
        raise RuntimeError(f"the daemon from {tree} audited nothing in the window: a larger --events?")
    by_name: dict[str, float] = {}
    for key, cpu in b.items():
        by_name[key[2]] = by_name.get(key[2], 0.0) + cpu - a.get(key, 0.0)
    seconds = t1 - t0
    return {"tree": str(tree), "events": n, "eps": n / seconds, "load": load, "seconds": seconds,
            "commits": commits, "events_per_commit": n / commits if commits else float("nan"),
            "main_waiting": (w1 - w0) / seconds,
            "threads": {k: v for k, v in by_name.items() if v > 0},
            "broker_cpu": j1 - j0,
            "broker_threads": {k: v - k0.get(k, 0.0) for k, v in k1.items() if v - k0.get(k, 0.0) > 0}}


def report(r: dict[str, Any]) -> str:
    n, s = r["events"], r["seconds"]
    lines = [f"{r['tree']}: {n:,.0f} events in {s:.1f} s = {r['eps']:,.0f}/s, load {r['load']:.2f}; "
             f"{r['commits']:.0f} commits ({r['events_per_commit']:,.0f} events each); main thread runnable "
             f"but waiting {r['main_waiting'] * 100:.1f}% of the window"]
    total = 0.0
    for name, cpu in sorted(r["threads"].items(), key=lambda kv: -kv[1]):
        total += cpu
        lines.append(f"  {name:20s} {cpu * 1e6 / n:6.2f} us/event  {cpu / s * 100:5.1f}% core")
    lines.append(f"  {'daemon total':20s} {total * 1e6 / n:6.2f} us/event")
    lines.append(f"  {'broker (JVM)':20s} {r['broker_cpu'] * 1e6 / n:6.2f} us/event  "
                 f"{r['broker_cpu'] / s * 100:5.1f}% core")
    for name, cpu in sorted(r.get("broker_threads", {}).items(), key=lambda kv: -kv[1]):
        if cpu * 1e6 / n >= 0.05:
            lines.append(f"    {name:34s} {cpu * 1e6 / n:6.2f} us/event")
    lines.append(f"  {'daemon + broker':20s} {(total + r['broker_cpu']) * 1e6 / n:6.2f} us/event")
    if "broker_run_cpu" in r:
        lines.append(f"  broker (JVM) over the whole run (start, backlog, daemon): {r['broker_run_cpu']:.1f} s CPU")
    return "\n".join(lines)


@contextmanager
def tree_broker(tree: Path) -> Any:
    """A broker started from ``tree``'s auditor.localkafka (its JVM flags and server.properties):
    yields (bootstrap, the JVM's pid)."""
    with in_tree(tree):
        proc = subprocess.Popen([sys.executable, "-m", "auditor.localkafka", "run"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().strip()
        jvm = children(proc.pid)
        if not bootstrap or not jvm:
            raise RuntimeError(f"no broker from {tree} (exit {proc.poll()})")
        yield bootstrap, jvm[0]
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=400_000, help="backlog size (default 400,000)")
    ap.add_argument("--trees", default=str(bs.ROOT), help="comma-separated source trees to run the daemon from "
                    "(default: this one)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the sequence of trees this many times")
    ap.add_argument("--warmup", type=int, default=20_000, help="events audited before the window opens")
    ap.add_argument("--window", type=float, default=6.0, help="seconds measured")
    ap.add_argument("--broker-per-tree", action="store_true", help="each run starts its own broker from its tree "
                    "(and produces its own backlog) instead of sharing one broker started from this tree")
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]

    from auditor.localkafka.broker import LocalKafka

    def backlog(bootstrap: str, work: Path) -> dict[str, str]:
        names = bs.make_workdir(bootstrap, work, uuid.uuid4().hex[:6], False, None)
        bs.log(f"producing {args.events:,} events")
        bs.produce_backlog(bootstrap, names["events"], args.events)
        return names

    with ExitStack() as stack:
        if not args.broker_per_tree:
            kafka = stack.enter_context(LocalKafka(progress=bs.log))
            assert kafka.pid is not None
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-threads-")))
            shared = (kafka.bootstrap_servers, kafka.pid, work, backlog(kafka.bootstrap_servers, work))
        for _ in range(args.rounds):
            for tree in trees:
                with ExitStack() as run:
                    if args.broker_per_tree:
                        bs.log(f"broker from {tree}")
                        bootstrap, pid = run.enter_context(tree_broker(tree))
                        work = Path(run.enter_context(tempfile.TemporaryDirectory(prefix="bench-threads-")))
                        bootstrap, pid, work, names = bootstrap, pid, work, backlog(bootstrap, work)
                    else:
                        bootstrap, pid, work, names = shared
                    bs.log(f"daemon from {tree}")
                    r = one_run(bootstrap, work, names, tree, pid, args.warmup, args.window)
                    if args.broker_per_tree:
                        r["broker_run_cpu"] = process_cpu([pid])
                print(report(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
