"""Per-event cost of the strict validation walk + SHA-256: Cython (hand-specialised) vs Rust
(schema-driven), on the example events. Build the Cython one first:
    pip install cython && (cd native/prototype && cythonize -i -3 walk_cy.pyx)
    python native/prototype/measure.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import walk_cy  # noqa: E402

from auditor import _native  # noqa: E402
from auditor.events.codec import event_to_mapping, iter_json_lines, schema_path  # noqa: E402
from auditor.events.wire import SchemaAllowList, encode_single_object  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
events = [d.event for f in sorted((ROOT / "tests/data/events").glob("*.jsonl")) if f.name != "malformed.jsonl"
          for d in iter_json_lines(f) if d.event]
values = [encode_single_object(event_to_mapping(e)) for e in events] * 40
bodies = [v[10:] for v in values]
text = schema_path("privacy_event.avsc").read_text()
fp = SchemaAllowList().reader_fp
bare = _native.EventCodec(text, [(fp, text)], facts=[])
full = _native.EventCodec(text, [(fp, text)])
assert walk_cy.walk_batch(bodies[:5]) == [r.digest for r in bare.decode_batch(values[:5])]


def best(fn, reps=7):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) / len(values) * 1e6


def batches(codec):
    return lambda: [codec.decode_batch(values[i:i + 1000]) for i in range(0, len(values), 1000)]


print(f"{len(values)} events, best of 7, µs/event")
print(f"cython, hand-specialised walk + hashlib.sha256:   {best(lambda: walk_cy.walk_batch(bodies)):.2f}")
print(f"rust, schema-driven canonicalise + sha256, no facts: {best(batches(bare)):.2f}")
print(f"rust, the same + 30 facts as a tuple:               {best(batches(full)):.2f}")
