"""Microbenchmark: the Python reference vs the compiled hot path (auditor.native), per event.

    python bench/native.py              # 200,000 events/records per measurement
    python bench/native.py --quick      # 20,000
    python bench/native.py --events 50000 --batch 500 --repeat 5
    python bench/native.py --mode processor   # only the daemon's BatchProcessor, native on vs off

Measured in this process, best of --repeat runs, on the example events (tests/data/events) and
trail records (tests/unit/trail/trailkit.py), in batches of --batch as the daemon consumes them:

* decode + digest, Python: ``EventDecoder.decode`` (fastavro read, re-encode and compare, Event)
  then SHA-256 of the canonical bytes, one message at a time;
* decode + digest, native: ``NativeEventDecoder.decode_facts`` (facts tuple, no Event) and
  ``decode_events`` (the same plus the Event, for a drop-in replacement), one call per batch;
* record encode + hash, Python: ``chain.seal_bytes`` per record;
* record encode + hash, native: ``NativeSealer.seal_batch``, one call per batch;
* processor batch, Python reference / native: the daemon's whole per-batch work
  (``BatchProcessor.process``: decode, evaluate, build, seal, route; no Kafka) with
  ``native: false`` and ``native: true``, on the same messages (3 partitions, heads committed
  after each batch as the runner does); "without the fact path" builds an Event for every event
  (auditor/stream/factpath.py off).

Prints a markdown table and writes bench/results/native.json. Numbers are only meaningful on a
quiet machine; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")


class _Message:
    """What the processor reads of a Kafka message."""

    __slots__ = ("_t", "_p", "_o", "_v")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None


def make_processor(native: bool) -> Any:
    """The daemon's BatchProcessor over the bundled packs, as build_daemon makes it."""
    from auditor.events.wire import EventDecoder
    from auditor.native import NativeEventDecoder
    from auditor.stream.app import load_packs
    from auditor.stream.processor import BatchProcessor, Routing
    from auditor.trail.keys import Pseudonymizer

    decoder = NativeEventDecoder() if native else EventDecoder()
    packs = load_packs(PACKS)
    return BatchProcessor(decoder, packs, Pseudonymizer(b"k" * 32), Routing("audit", "violations", "dlq", 3),
                          "bench-1")


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="20,000 events")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", choices=("all", "codec", "processor"), default="all",
                    help="codec: decode and seal only; processor: BatchProcessor only")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.events

    sys.path.insert(0, str(ROOT / "tests" / "unit" / "trail"))
    from trailkit import make_records

    from auditor.events.codec import event_to_mapping, iter_json_lines
    from auditor.events.wire import EventDecoder, encode_single_object
    from auditor.native import NativeEventDecoder, NativeSealer
    from auditor.trail import ChainHead, KeyRing
    from auditor.trail.chain import seal_bytes

    files = sorted(p for p in (ROOT / "tests/data/events").glob("*.jsonl") if p.name != "malformed.jsonl")
    pool = [encode_single_object(event_to_mapping(d.event)) for f in files for d in iter_json_lines(f) if d.event]
    values = list(islice(cycle(pool), n))
    batches = [values[i:i + args.batch] for i in range(0, n, args.batch)]
    py_decoder, native = EventDecoder(), NativeEventDecoder()
    sha256 = hashlib.sha256

    def py_decode() -> None:
        decode = py_decoder.decode
        for v in values:
            sha256(decode(v).canonical).digest()

    def native_facts() -> None:
        for b in batches:
            native.decode_facts(b)

    def native_events() -> None:
        for b in batches:
            native.decode_events(b)

    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyRing.generate(Path(tmp) / "keys")
        record_pool = make_records(keys, 10_000, partitions=3, reject_every=100)
    records = list(islice(cycle(record_pool), n))
    record_batches = [records[i:i + args.batch] for i in range(0, n, args.batch)]
    sealer = NativeSealer()

    def py_seal() -> None:
        heads: dict[str, ChainHead] = {}
        for r in records:
            head = heads.get(r.chain_id) or ChainHead.genesis(r.chain_id)
            _, heads[r.chain_id] = seal_bytes(head, r)

    def native_seal() -> None:
        heads: dict[str, ChainHead] = {}
        for b in record_batches:
            _, new = sealer.seal_batch(b, heads)
            heads.update(new)

    def processor_run(native_on: bool, fact_path: bool = True) -> Callable[[], None]:
        proc = make_processor(native_on)
        if not fact_path:
            proc.facts = None

        def run() -> None:
            proc.forget(list(proc.heads))
            for i, b in enumerate(stream_batches):
                proc.process([_Message("events", i % 3, i * len(b) + j, v) for j, v in enumerate(b)])
                proc.commit_heads()
        return run

    stream_batches: list[list[bytes]] = []
    if args.mode != "codec":
        # the bench's stream (bench/stream.py produces the same): mostly compliant, violations, 1% malformed
        from auditor.stream.app import load_packs
        from auditor.stream.generate import stream

        generated = [e if isinstance(e, bytes) else encode_single_object(event_to_mapping(e))
                     for e in islice(stream(list(load_packs(PACKS).values()), seed=7), n)]
        stream_batches = [generated[i:i + args.batch] for i in range(0, n, args.batch)]

    measurements: list[tuple[str, Callable[[], None]]] = []
    if args.mode != "processor":
        measurements += [("decode + digest, Python reference", py_decode),
                         ("decode + digest, native (facts tuple)", native_facts),
                         ("decode + digest, native (+ Event)", native_events),
                         ("record encode + hash, Python reference", py_seal),
                         ("record encode + hash, native", native_seal)]
    if args.mode != "codec":
        measurements += [("processor batch, Python reference", processor_run(False)),
                         ("processor batch, native without the fact path", processor_run(True, False)),
                         ("processor batch, native", processor_run(True))]
    rows = []
    for name, fn in measurements:
        seconds = best(fn, args.repeat)
        rows.append({"what": name, "us_per_item": seconds / n * 1e6, "items_per_s": n / seconds})
        print(f"  {name}: {seconds / n * 1e6:.2f} µs", file=sys.stderr, flush=True)

    print(f"\n{n:,} items, batches of {args.batch}, best of {args.repeat}, load average {os.getloadavg()[0]:.2f}, "
          f"{platform.python_implementation()} {platform.python_version()}\n")
    print("| measurement | µs per item | items/s | speed-up |")
    print("|---|---:|---:|---:|")
    base = {r["what"].split(",")[0]: r["us_per_item"] for r in rows if r["what"].endswith("Python reference")}
    for r in rows:
        ref = base[r["what"].split(",")[0]]
        print(f"| {r['what']} | {r['us_per_item']:.2f} | {r['items_per_s']:,.0f} | {ref / r['us_per_item']:.1f}x |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "native.json").write_text(json.dumps({"items": n, "batch": args.batch, "rows": rows,
                                                    "load_average": os.getloadavg()[0]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
