"""Microbenchmark: the Python reference vs the compiled hot path (auditor.native), per event.

    python bench/native.py              # 200,000 events/records per measurement
    python bench/native.py --quick      # 20,000
    python bench/native.py --events 50000 --batch 500 --repeat 5

Measured in this process, best of --repeat runs, on the example events (tests/data/events) and
trail records (tests/unit/trail/trailkit.py), in batches of --batch as the daemon consumes them:

* decode + digest, Python: ``EventDecoder.decode`` (fastavro read, re-encode and compare, Event)
  then SHA-256 of the canonical bytes, one message at a time;
* decode + digest, native: ``NativeEventDecoder.decode_facts`` (facts tuple, no Event) and
  ``decode_events`` (the same plus the Event, for a drop-in replacement), one call per batch;
* record encode + hash, Python: ``chain.seal_bytes`` per record;
* record encode + hash, native: ``NativeSealer.seal_batch``, one call per batch.

Prints a markdown table and writes bench/results/native.json. Numbers are only meaningful on a
quiet machine; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


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

    rows = []
    for name, fn in (("decode + digest, Python reference", py_decode),
                     ("decode + digest, native (facts tuple)", native_facts),
                     ("decode + digest, native (+ Event)", native_events),
                     ("record encode + hash, Python reference", py_seal),
                     ("record encode + hash, native", native_seal)):
        seconds = best(fn, args.repeat)
        rows.append({"what": name, "us_per_item": seconds / n * 1e6, "items_per_s": n / seconds})
        print(f"  {name}: {seconds / n * 1e6:.2f} µs", file=sys.stderr, flush=True)

    print(f"\n{n:,} items, batches of {args.batch}, best of {args.repeat}, {platform.python_implementation()} "
          f"{platform.python_version()}\n")
    print("| measurement | µs per item | items/s | speed-up |")
    print("|---|---:|---:|---:|")
    base = {"decode": rows[0]["us_per_item"], "record": rows[3]["us_per_item"]}
    for r in rows:
        ref = base["decode" if r["what"].startswith("decode") else "record"]
        print(f"| {r['what']} | {r['us_per_item']:.2f} | {r['items_per_s']:,.0f} | {ref / r['us_per_item']:.1f}x |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "native.json").write_text(json.dumps({"items": n, "batch": args.batch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
