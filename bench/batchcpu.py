"""Main-thread CPU per event of the daemon's batch work, without a broker.

    python bench/batchcpu.py                      # 60,000 events, best of 3
    python bench/batchcpu.py --native off         # the Python reference path
    python bench/batchcpu.py --gc                 # also what the garbage collector took
    python bench/batchcpu.py --only-process       # BatchProcessor.process alone
    python bench/batchcpu.py --profile            # cProfile one run

What the daemon's main thread does with a batch once it is consumed: ``BatchProcessor.process``
(decode, decide, seal, route) and ``BatchCommit.commit`` with the ``Checkpointer`` (signed
checkpoints), then the chain heads committed. The produce() calls go to a real librdkafka
producer whose broker never answers (messages only queue; purged after each run); the
transaction calls are no-ops. The events are the bench's synthetic stream (about 8% violations,
1% malformed), a pool of --pool messages cycled to --events over 3 partitions in batches of
--batch, under the daemon's heap settings (``intake.settle_heap``).

Times are this thread's CPU time (``time.thread_time``): other processes cost less here than in
wall time, but a loaded machine still inflates them; compare runs back to back. On a noisy
machine instruction counts are steadier: run under ``valgrind --tool=cachegrind --cache-sim=no``
with ``--repeat 1 --pool 5000 --events 15000`` and ``--events 27000`` and divide the difference of
the two ``I refs`` by 12,000 (valgrind has no SHA extensions: hashing counts more than it costs).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import pstats
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from auditor.events.model import Event
from auditor.events.wire import EventDecoder
from auditor.native import NativeEventDecoder
from auditor.stream.app import load_packs
from auditor.stream.checkpointing import Checkpointer
from auditor.stream.commit import BatchCommit
from auditor.stream.generate import stream
from auditor.stream.intake import settle_heap
from auditor.stream.processor import BatchProcessor, Routing
from auditor.stream.produce import encode
from auditor.trail.keys import KeyRing
from native import _Message  # bench/native.py: what the processor reads of a Kafka message

PACKS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")


class _Producer:
    """A transactional producer's calls as no-ops; produce() queues in a real librdkafka client."""

    def __init__(self) -> None:
        self.client = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 2_000_000,
                                "queue.buffering.max.kbytes": 2_000_000, "log_level": 0})
        self.produce = self.client.produce

    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, *args: Any) -> None: ...
    def commit_transaction(self, *args: Any) -> None: ...

    def poll(self, timeout: float) -> int:
        return 0


class _Consumer:
    def consumer_group_metadata(self) -> None:
        return None


class _Watchdog:
    def call(self, *args: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def batches(values: list[bytes], size: int) -> list[list[_Message]]:
    offsets = [0, 0, 0]
    out: list[list[_Message]] = []
    for start in range(0, len(values), size):
        batch = []
        for i, value in enumerate(values[start:start + size], start):
            p = i % 3
            batch.append(_Message("events", p, offsets[p], value))
            offsets[p] += 1
        out.append(batch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--pool", type=int, default=50_000, help="distinct messages, cycled to --events")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--native", choices=("on", "off"), default="on")
    ap.add_argument("--only-process", action="store_true", help="BatchProcessor.process and commit_heads only")
    ap.add_argument("--gc", action="store_true", help="also the garbage collector's CPU time per event")
    ap.add_argument("--profile", action="store_true", help="cProfile one run")
    a = ap.parse_args()

    packs = load_packs(PACKS)
    pool = [encode(e) if isinstance(e, Event) else e for e in islice(stream(list(packs.values()), seed=1), a.pool)]
    values = list(islice(cycle(pool), a.events))
    keys = KeyRing.generate(Path(tempfile.mkdtemp(prefix="batchcpu-")) / "keys")
    settle_heap()
    collected: dict[str, float] = {"seconds": 0.0, "collections": 0}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collected["seconds"] += time.thread_time() - started[0]
            collected["collections"] += 1

    if a.gc:
        gc.callbacks.append(on_gc)
    best: tuple[float, float, float] | None = None
    for rep in range(1 if a.profile else a.repeat):
        decoder = NativeEventDecoder() if a.native == "on" else EventDecoder()
        processor = BatchProcessor(decoder, packs, keys.pseudonymizer, Routing("audit", "violations", "dead", 3),
                                   "bench-1")
        producer = _Producer()
        commit = BatchCommit(producer, _Consumer(), processor, _Watchdog())  # type: ignore[arg-type]
        commit.checkpoints = Checkpointer(keys.signer, keys.verifier, "audit.checkpoints", audit_partitions=3,
                                          partitions=3)
        work = batches(values, a.batch)
        collected.update(seconds=0.0, collections=0)
        profile = cProfile.Profile() if a.profile else None
        processing = committing = 0.0
        if profile is not None:
            profile.enable()
        for batch in work:
            t0 = time.thread_time()
            result = processor.process(batch)
            t1 = time.thread_time()
            if a.only_process:
                processor.commit_heads()
            elif not commit.commit(batch, result).committed:
                raise RuntimeError("a batch did not commit")
            processing, committing = processing + t1 - t0, committing + time.thread_time() - t1
        if profile is not None:
            profile.disable()
        producer.client.purge()
        n = len(values)
        run = (1e6 * (processing + committing) / n, 1e6 * processing / n, 1e6 * committing / n)
        line = f"run {rep}: {run[0]:.1f} µs/event (process {run[1]:.1f}, commit {run[2]:.1f})"
        if a.gc:
            line += f"; gc {1e6 * collected['seconds'] / n:.2f} µs/event in {collected['collections']:.0f} collections"
        print(line, flush=True)
        best = run if best is None or run[0] < best[0] else best
        if profile is not None:
            pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(30)
    assert best is not None
    print(f"best: {best[0]:.1f} µs/event (process {best[1]:.1f}, commit {best[2]:.1f}), native {a.native}, "
          f"{a.events:,} events in batches of {a.batch}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
