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
        broker = [broker_pid, *children(broker_pid)]
        m0, t0 = d.metrics(), time.monotonic()
        a, j0, w0 = thread_cpu(d.proc.pid), process_cpu(broker), waited(d.proc.pid)
        time.sleep(window)
        m1, t1 = d.metrics(), time.monotonic()
        b, j1, w1 = thread_cpu(d.proc.pid), process_cpu(broker), waited(d.proc.pid)
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
            "broker_cpu": j1 - j0}


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
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=400_000, help="backlog size (default 400,000)")
    ap.add_argument("--trees", default=str(bs.ROOT), help="comma-separated source trees to run the daemon from "
                    "(default: this one)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the sequence of trees this many times")
    ap.add_argument("--warmup", type=int, default=20_000, help="events audited before the window opens")
    ap.add_argument("--window", type=float, default=6.0, help="seconds measured")
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]

    from auditor.localkafka.broker import LocalKafka

    runs = []
    with ExitStack() as stack:
        kafka = stack.enter_context(LocalKafka(progress=bs.log))
        bootstrap = kafka.bootstrap_servers
        broker_pid = kafka.pid
        assert broker_pid is not None
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-threads-")))
        names = bs.make_workdir(bootstrap, work, uuid.uuid4().hex[:6], False, None)
        bs.log(f"producing {args.events:,} events")
        bs.produce_backlog(bootstrap, names["events"], args.events)
        for _ in range(args.rounds):
            for tree in trees:
                bs.log(f"daemon from {tree}")
                r = one_run(bootstrap, work, names, tree, broker_pid, args.warmup, args.window)
                print(report(r), flush=True)
                runs.append(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
