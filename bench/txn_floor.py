"""The broker's floor under the daemon's latency: transactions with no processing at all.

    python bench/txn_floor.py                              # retry.backoff.ms 100 vs 10, two pairs
    python bench/txn_floor.py --backoff 100,10,1 --pairs 3 --records 50 --seconds 10

A transactional producer does what the daemon's commit does, back to back and nothing else:
begin_transaction, produce --records small records (each carrying its produce time) to a
3-partition topic, send_offsets_to_transaction for a consumer group, commit_transaction. A
read_committed consumer in a child process takes receive time - produce time of every record:
the time from produce() until the record is visible to readers. One run per value of --backoff
(the producer's retry.backoff.ms), alternated, each on its own topics, on a local broker started
from the Apache Kafka jars unless --bootstrap is given. Prints p50/p90/p99 of each step and of the
visibility, in ms, with the machine's load.

What it showed (2026-12-04, this 2-core machine, load 4-7): with librdkafka's default
retry.backoff.ms (100), 10-15% of transactions wait 100-120 ms in send_offsets_to_transaction (a
transaction begun right after a commit finds the broker still writing the last one's markers:
CONCURRENT_TRANSACTIONS, retried after the backoff); with 10 ms the p90 cycle is 11-16 ms. What
no client setting changes: ~30 ms p50 from produce() to visible even when a transaction takes
4 ms (the markers written after commit_transaction returns, the reader's fetch).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTITIONS = 3


def reader(bootstrap: str, topic: str, stop: Any, out: Any) -> None:
    """Child process: receive time - produce time of every record, read_committed."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-r-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    lat: list[float] = []
    while not stop.is_set():
        for m in c.consume(1000, 0.05):
            if m.error() is None:
                lat.append(time.time() - float(m.value() or b"nan"))
    c.close()
    out.put(lat)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


def one_run(bootstrap: str, backoff_ms: int, records: int, seconds: float) -> str:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from auditor.localkafka.broker import create_topics

    tag = uuid.uuid4().hex[:6]
    topic, src = f"floor-{tag}", f"floor-src-{tag}"
    create_topics(bootstrap, [topic, src], PARTITIONS)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"floor-{tag}", "enable.idempotence": True,
                  "acks": "all", "linger.ms": 5, "compression.type": "lz4", "retry.backoff.ms": backoff_ms})
    p.init_transactions(30)
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-g-{tag}",
                      "isolation.level": "read_committed"})
    group.subscribe([src])
    group.consume(1, 3.0)  # joins the group: its metadata is what the daemon sends with its offsets
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    r = ctx.Process(target=reader, args=(bootstrap, topic, stop, out))
    r.start()
    time.sleep(3.0)
    steps: dict[str, list[float]] = {"produce": [], "send_offsets": [], "commit": [], "cycle": []}
    load = os.getloadavg()[0]
    end, offset = time.time() + seconds, 0
    while time.time() < end:
        t0 = time.time()
        p.begin_transaction()
        for i in range(records):
            p.produce(topic, str(time.time()).encode(), partition=i % PARTITIONS)
        t1 = time.time()
        offset += records
        p.send_offsets_to_transaction([TopicPartition(src, i, offset) for i in range(PARTITIONS)],
                                      group.consumer_group_metadata(), 30)
        t2 = time.time()
        p.commit_transaction(30)
        t3 = time.time()
        for k, v in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            steps[k].append(v)
    time.sleep(1.5)
    stop.set()
    visible = out.get(timeout=30)
    r.join(10)
    group.close()
    cols = " ".join(f"{k} {pct(v, .5):.1f}/{pct(v, .9):.1f}/{pct(v, .99):.1f}" for k, v in steps.items())
    return (f"{time.strftime('%H:%M:%S')} retry.backoff.ms {backoff_ms:>3} load {load:.1f}: "
            f"{len(steps['cycle'])} transactions; {cols}; produce -> visible "
            f"{pct(visible, .5):.1f}/{pct(visible, .9):.1f}/{pct(visible, .99):.1f} ms (p50/p90/p99)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", help="use this broker instead of starting a local one")
    ap.add_argument("--backoff", default="100,10", help="retry.backoff.ms values, one run each, alternated")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--records", type=int, default=50, help="records per transaction")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with ExitStack() as stack:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            from auditor.localkafka.broker import LocalKafka

            bootstrap = stack.enter_context(LocalKafka()).bootstrap_servers
        for _ in range(args.pairs):
            for b in (int(v) for v in args.backoff.split(",")):
                print(one_run(bootstrap, b, args.records, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
