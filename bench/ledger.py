"""Benchmark the subject ledger: restore rate, lookups during auditing, memory with many subjects.

Each step runs in its own subprocess, so its memory is its own::

    python bench/ledger.py              # 1,000,000 and 10,000,000 subjects
    python bench/ledger.py --quick      # 100,000 and 1,000,000 subjects
    python bench/ledger.py --sizes 20000 --dir /tmp/ledger-bench

Facts are generated on the fly (never held in memory): every subject has a consent grant; one
in three later withdraws it, one in five has a birth date, one in twenty opts out of marketing,
one in fifty has an account closure, so there are about 1.6 facts per subject, spread over 16
partitions in the order a topic would deliver them (subjects interleaved).

Steps:

* ``restore``: apply every fact with :meth:`LedgerStore.restore` (pseudonymise, encode, write,
  20,000 facts per transaction), as on partition assignment. ``decode`` times the strict Avro
  decoding of the same facts (:class:`FactDecoder`) on a sample, since a restore from Kafka
  pays both.
* ``lookup``: what auditing one event costs: open the subject's view as of a time and ask the
  questions a marketing decision asks (consent, opt-out, age), for random subjects (the
  pseudonym is given: the daemon has it already for the audit record). Then index 100,000
  decisions in the late-fact index, 1,000 per transaction, as the daemon would after each batch.

* ``daemon`` (``--daemon-events M``, on a local broker started from the Apache Kafka jars unless
  ``--bootstrap`` is given): the daemon end to end, in-process, on the same M events (the
  ledger stream of :func:`auditor.stream.generate.ledger_stream`: compliant events, many of
  them marketing that claims consent, over ``--daemon-subjects`` subjects with their facts)
  twice in one run: without a ledger, then with one (facts on their co-partitioned topic,
  restored on assignment, every decision judged as of its time and indexed for late facts).
  events/s from start until every event is committed (auditor_events_consumed_total), and the
  share of time to the first committed batch (group join, restoring the facts). Then the ledger
  daemon is started twice more on the same topics and group, once as itself (``restart``, its
  own store) and once as a new instance with an empty store (``takeover``, as when a rebalance
  moves partitions to another instance): the time from start until every chain's decisions are
  indexed, and how many were read back from the trail (``restart`` resumes from its markers and
  reads back only what it had not indexed; ``takeover`` restores every fact, then reads back every
  record within the correction window and judges each again from its stored answers).

Memory is reported as peak RSS and, at the end of the step, as anonymous memory (the process's
own) and file-backed memory (pages of the memory-mapped store, which the kernel reclaims):
anonymous memory must not grow with subjects.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

PARTITIONS = 16
T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEY = b"bench-ledger-pseudonym-key-0123456789"
STRIDE = 2_654_435_761  # spreads subjects over the log the way a busy topic interleaves them
LOOKUPS = 200_000
DECISIONS = 100_000


def _memory() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    got = dict(re.findall(r"^(RssAnon|RssFile):\s+(\d+) kB", status, re.M))
    return {"anon_mb": int(got.get("RssAnon", 0)) / 1024, "file_mb": int(got.get("RssFile", 0)) / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def facts_of(s: int) -> list[tuple[str, int]]:
    """(type, minutes after T0) of subject ``s``'s facts; deterministic."""
    out = [("CONSENT_GRANTED", s % 1000)]
    if s % 3 == 0:
        out.append(("CONSENT_WITHDRAWN", 2000 + s % 1000))
    if s % 5 == 0:
        out.append(("BIRTH_DATE", 0))
    if s % 20 == 0:
        out.append(("MARKETING_OPT_OUT", 1500))
    if s % 50 == 0:
        out.append(("ACCOUNT_CLOSED", 3000))
    return out


def partition_of(s: int) -> int:
    return s % PARTITIONS


def generate(subjects: int, partition: int) -> Iterator[tuple[int, object]]:
    """(offset, SubjectFact) of one partition, in log order, built on the fly: the partition's
    subjects (``s % PARTITIONS == partition``) in an interleaved order, each with its facts."""
    from auditor.ledger.model import FactType, Scope, SubjectFact

    m = len(range(partition, subjects, PARTITIONS))
    offset = 0
    for j in range(m):
        s = partition + PARTITIONS * ((j * STRIDE) % m)
        for k, (ftype, minutes) in enumerate(facts_of(s)):
            t = T0 + timedelta(minutes=minutes)
            yield offset, SubjectFact(
                f"f-{s}-{k}", f"subject-{s}", FactType(ftype), t, t, "consent-platform",
                Scope("marketing") if ftype.startswith("CONSENT") else None,
                date(1990 + s % 30, 1 + s % 12, 1 + s % 28) if ftype == "BIRTH_DATE" else None, None)
            offset += 1


def work_restore(store_dir: Path, subjects: int) -> dict:
    from auditor.ledger.store import LedgerStore
    from auditor.trail.keys import Pseudonymizer

    pseudonymize = Pseudonymizer(KEY)
    t0 = time.perf_counter()
    sample = sum(1 for _ in zip(range(100_000), generate(subjects, 0), strict=False))
    build_rate = sample / (time.perf_counter() - t0)
    written = 0
    start = time.perf_counter()
    with LedgerStore(store_dir, pseudonymize.key_id) as store:
        for p in range(PARTITIONS):
            written += store.restore(p, generate(subjects, p), pseudonymize)
        elapsed = time.perf_counter() - start
        stats = store.stats()
    size = sum(f.stat().st_size for f in store_dir.iterdir())
    assert stats["facts"] == written, stats
    return {"rate": written / elapsed, "seconds": elapsed, "facts": written, "build_rate": build_rate,
            "bytes_per_fact": size / max(1, written), "disk_mb": size / 2**20, **_memory()}


def work_decode(store_dir: Path, subjects: int) -> dict:
    from auditor.ledger.codec import FactDecoder, encode_fact_single_object

    sample = [encode_fact_single_object(f) for _, (_, f) in zip(range(100_000), generate(subjects, 0), strict=False)]
    decoder = FactDecoder()
    start = time.perf_counter()
    for value in sample:
        decoder.decode(value)
    elapsed = time.perf_counter() - start
    return {"rate": len(sample) / elapsed, "seconds": elapsed, "n": len(sample), **_memory()}


def work_lookup(store_dir: Path, subjects: int) -> dict:
    from auditor.ledger.late import DecisionIndex, DecisionReads
    from auditor.ledger.store import LedgerStore
    from auditor.trail.keys import Pseudonymizer

    pseudonymize = Pseudonymizer(KEY)
    rng = random.Random(7)
    picks = [rng.randrange(subjects) for _ in range(LOOKUPS)]
    asks = [(partition_of(s), pseudonymize(f"subject-{s}")) for s in picks]
    at = int((T0 + timedelta(minutes=2500) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    found = 0
    with LedgerStore(store_dir, pseudonymize.key_id) as store:
        start = time.perf_counter()
        for partition, pseudonym in asks:
            view = store.view(partition, pseudonym, at)
            found += view.consent("marketing").value is not None
            view.opted_out("marketing")
            view.minor(18)
        elapsed = time.perf_counter() - start
        memory = _memory()  # after the lookups: the late-fact index step below holds its own batches
        index = DecisionIndex(store)
        index_elapsed = 0.0
        for first in range(0, DECISIONS, 1000):
            reads = []
            for i in range(first, first + 1000):
                partition, pseudonym = asks[i]
                view = store.view(partition, pseudonym, at + i)
                view.consent("marketing")
                view.opted_out("marketing")
                reads.append(DecisionReads(partition, pseudonym, view.at_us, f"events/{partition}", i, f"ev-{i}",
                                           tuple(view.reads)))
            t1 = time.perf_counter()
            index.record(reads)
            index_elapsed += time.perf_counter() - t1
    assert found == LOOKUPS, found  # every subject has a consent fact
    return {"rate": LOOKUPS / elapsed, "seconds": elapsed, "index_rate": DECISIONS / index_elapsed, **memory}


WORK = {"restore": work_restore, "decode": work_decode, "lookup": work_lookup}


def daemon_runs(bootstrap: str, events: int, subjects: int, base: Path) -> list[dict]:
    """The daemon on the same events without, then with, a ledger (see the module docstring)."""
    import threading
    import uuid

    from prometheus_client import CollectorRegistry

    from auditor.config import load_config
    from auditor.localkafka.broker import create_topics
    from auditor.stream.app import build_daemon
    from auditor.stream.generate import ledger_stream
    from auditor.stream.produce import produce
    from auditor.stream.topics import TRAIL_TOPIC_CONFIG, checkpoint_topic_of
    from auditor.trail.keys import KeyRing

    tag = uuid.uuid4().hex[:6]
    evs, facts = ledger_stream(seed=11, events=events, subjects=subjects, step=timedelta(seconds=1))
    topic, facts_topic = f"bench-events-{tag}", f"bench-facts-{tag}"
    create_topics(bootstrap, [topic, facts_topic], 3)
    t0 = time.perf_counter()
    produce(bootstrap, facts_topic, facts)
    produce(bootstrap, topic, evs)
    produced = time.perf_counter() - t0
    keys = base / "keys"
    KeyRing.generate(keys)
    out = []
    for ledger in (False, True):
        run = f"{tag}-{'ledger' if ledger else 'plain'}"
        names = {"audit": f"audit-{run}", "violations": f"violations-{run}", "dead_letter": f"dead-{run}"}
        create_topics(bootstrap, [names["violations"], names["dead_letter"]], 3)
        create_topics(bootstrap, [names["audit"], checkpoint_topic_of(names["audit"])], 3, config=TRAIL_TOPIC_CONFIG)
        overrides = {"kafka.bootstrap_servers": bootstrap, "kafka.group_id": f"bench-{run}",
                     "topics.events": [topic], "topics.audit": names["audit"],
                     "topics.violations": names["violations"], "topics.dead_letter": names["dead_letter"],
                     "topics.facts": facts_topic, "keys_dir": str(keys), "http.port": 0, "instance_id": f"b-{run}"}
        if ledger:
            overrides["ledger.dir"] = str(base / f"daemon-ledger-{run}")
        registry = CollectorRegistry()
        first: list[float] = []

        def on_batch(_: object, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter())

        daemon = build_daemon(load_config(env={}, overrides=overrides), registry=registry, on_batch=on_batch)
        thread = threading.Thread(target=daemon.run, daemon=True)
        start = time.perf_counter()
        thread.start()
        deadline = start + 3600
        while (registry.get_sample_value("auditor_events_consumed_total", {"topic": topic}) or 0) < events:
            if time.perf_counter() > deadline or not thread.is_alive():
                raise SystemExit(f"daemon run {run} did not finish")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        violations = sum(s.value for m in registry.collect() if m.name == "auditor_events_audited"
                         for s in m.samples if s.name.endswith("_total") and s.labels.get("verdict") == "VIOLATION")
        daemon.request_stop()
        thread.join(60)
        out.append({"ledger": ledger, "events": events, "facts": len(facts) if ledger else 0, "seconds": elapsed,
                    "rate": events / elapsed, "to_first_batch": (first[0] - start) if first else None,
                    "steady_rate": (events / (start + elapsed - first[0])) if first else None,
                    "violations": int(violations), "produce_seconds": produced, **_memory()})
        if ledger:
            for again in ("restart", "takeover"):
                out.append(_index_again(overrides, base, run, again))
    return out


def _index_again(overrides: dict, base: Path, run: str, how: str) -> dict:
    """The ledger daemon started again on the same topics and group once every event is audited:
    ``restart`` with its own store, ``takeover`` as a new instance with an empty store (a partition
    moving to another instance). Time until every chain's decisions are indexed from the trail."""
    import threading

    from prometheus_client import CollectorRegistry

    from auditor.config import load_config
    from auditor.stream.app import build_daemon

    cfg = dict(overrides)
    if how == "takeover":
        cfg["instance_id"] = f"b-{run}-takeover"
        cfg["ledger.dir"] = str(base / f"daemon-ledger-{run}-takeover")
    daemon = build_daemon(load_config(env={}, overrides=cfg), registry=CollectorRegistry())
    feed = daemon.ledger
    assert feed is not None
    thread = threading.Thread(target=daemon.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    while len(feed.indexed) < 3:
        if time.perf_counter() > start + 3600 or not thread.is_alive():
            raise SystemExit(f"{how}: the decision index was not rebuilt")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    decisions = feed.index.count()
    daemon.request_stop()
    thread.join(60)
    return {"ledger": True, "again": how, "seconds": elapsed, "decisions": decisions, "read_back": feed.read_back,
            **_memory()}


def run_worker(kind: str, store_dir: Path, subjects: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--store", str(store_dir),
                           "--subjects", str(subjects)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k and 1M subjects instead of 1M and 10M")
    ap.add_argument("--sizes", type=int, nargs="+", help="numbers of subjects")
    ap.add_argument("--dir", type=Path, help="where to put the stores (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the stores after the run")
    ap.add_argument("--daemon-events", type=int, default=0,
                    help="also run the daemon end to end on this many events, without and with a ledger")
    ap.add_argument("--daemon-subjects", type=int, default=20_000, help="subjects of the daemon step's events")
    ap.add_argument("--daemon-only", action="store_true", help="only the daemon step")
    ap.add_argument("--bootstrap", help="an existing broker for the daemon step (default: start a local one)")
    ap.add_argument("--worker", choices=list(WORK), help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--subjects", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(json.dumps(WORK[args.worker](args.store, args.subjects)))
        return 0
    sizes = args.sizes or ([100_000, 1_000_000] if args.quick else [1_000_000, 10_000_000])
    base = args.dir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"{'subjects':>11} {'step':<8} {'rate/s':>10} {'seconds':>8} {'peak RSS':>9} {'anon':>6} {'file':>6}  notes")
    try:
        if args.daemon_events:
            _daemon_step(args, base)
        for n in ([] if args.daemon_only else sizes):
            store_dir = base / f"ledger-{n}"
            shutil.rmtree(store_dir, ignore_errors=True)
            for kind in ("restore", "decode", "lookup"):
                r = run_worker(kind, store_dir, n)
                notes = ""
                if kind == "restore":
                    notes = (f"{r['facts']:,} facts, {r['bytes_per_fact']:.0f} B/fact on disk "
                             f"({r['disk_mb']:,.0f} MB); includes building the facts ({r['build_rate']:,.0f}/s alone)")
                elif kind == "decode":
                    notes = f"strict Avro decode of {r['n']:,} facts (partition 0, at most 100,000)"
                elif kind == "lookup":
                    notes = f"view + consent, opt-out, age; late-fact index {r['index_rate']:,.0f} decisions/s"
                print(f"{n:>11,} {kind:<8} {r['rate']:>10,.0f} {r['seconds']:>8.1f} {r['peak_rss_mb']:>7.0f}MB "
                      f"{r['anon_mb']:>4.0f}MB {r['file_mb']:>4.0f}MB  {notes}", flush=True)
            if not args.keep:
                shutil.rmtree(store_dir, ignore_errors=True)
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _daemon_step(args: argparse.Namespace, base: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import logging

    from auditor.logging import configure_logging

    configure_logging("warning", kafka_level="error")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    if args.bootstrap:
        runs = daemon_runs(args.bootstrap, args.daemon_events, args.daemon_subjects, base)
    else:
        from auditor.localkafka.broker import LocalKafka

        with LocalKafka() as kafka:
            runs = daemon_runs(kafka.bootstrap_servers, args.daemon_events, args.daemon_subjects, base)
    for r in runs:
        if "again" in r:
            print(f"{args.daemon_subjects:>11,} {r['again']:<8} {r['read_back'] / r['seconds']:>10,.0f} "
                  f"{r['seconds']:>8.1f} {r['peak_rss_mb']:>7.0f}MB {r['anon_mb']:>4.0f}MB {r['file_mb']:>4.0f}MB  "
                  f"from start until every chain's decisions are indexed: {r['decisions']:,} in the index, "
                  f"{r['read_back']:,} read back from the trail"
                  + (" (and every fact restored)" if r["again"] == "takeover" else " (resumed from its markers)"),
                  flush=True)
            continue
        label = "daemon+L" if r["ledger"] else "daemon"
        steady = f"{r['steady_rate']:,.0f}/s after the first batch ({r['to_first_batch']:.1f}s to it)" \
            if r["steady_rate"] else ""
        print(f"{args.daemon_subjects:>11,} {label:<8} {r['rate']:>10,.0f} {r['seconds']:>8.1f} "
              f"{r['peak_rss_mb']:>7.0f}MB {r['anon_mb']:>4.0f}MB {r['file_mb']:>4.0f}MB  "
              f"{r['events']:,} events, {r['facts']:,} facts, {r['violations']:,} violations; {steady}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
