"""Run the compiled module's attack surface once under a memory checker (attn, session 9).

    cd <worktree> && PYTHONPATH=. PYTHONMALLOC=malloc valgrind --error-exitcode=99 --leak-check=no \
        --suppressions=bench/memcheck.supp python bench/memcheck.py
    # or with the extension built with AddressSanitizer (nightly):
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc \
        python bench/memcheck.py

It calls, in one process: the record encoder on records of every shape the attack tests use
(tests/unit/native/test_attn_encoder.py), RecordSealer.seal_batch, chain_encoded on empty, large
and cut batches, FactMemo.decide and HitBatch.seal on batches the shadow decides (and with
arguments it refuses), and the compiled decoder on generated and cut messages. Each step prints a
line; a memory error is the checker's report (and exit code), not this script's. Python code the
encoder runs mid-record (properties that change what is being encoded) is part of it.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/unit/trail"), str(ROOT / "tests/unit/stream"), str(ROOT / "tests/unit/native")]


def step(name: str, fn: Any) -> None:
    try:
        got = fn()
        print(f"{name}: {len(got) if isinstance(got, bytes) else got}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a clean exception is a result here
        print(f"{name}: {type(exc).__name__}", flush=True)


def main() -> None:
    import test_attn_encoder as enc
    from trailkit import make_records

    from auditor import _native
    from auditor.native import NativeSealer
    from auditor.trail import KeyRing

    keys = KeyRing.generate(Path(tempfile.mkdtemp()) / "keys")
    rs = make_records(keys, 40)
    r = rs[0]
    sealer = NativeSealer()
    step("plain", lambda: len(sealer.encode_body(r)))
    step("subclass", lambda: len(sealer.encode_body(enc.RenamedRecord(*r))))
    step("lying fields", lambda: len(sealer.encode_body(r._replace(source=enc.LyingFields((5, 7, "t", None, None))))))
    for n in (0, 1, 4, len(r) - 1):
        step(f"short record {n}", lambda n=n: sealer.encode_body(tuple.__new__(type(r), tuple(r)[:n])))
    facts = r.facts
    for says in (0, 1, 5, 100):
        step(f"lying length {says}", lambda says=says: sealer.encode_body(
            r._replace(facts=facts._replace(data_categories=enc.LyingLength(("a", "b"), says)))))
    v = next(x for x in rs if x.decision is not None and x.decision.violations)
    shrinking = [enc.Shrinking(x) for x in v.decision.violations] * 3
    enc.Shrinking.holder = shrinking
    step("shrinking list", lambda: sealer.encode_body(v._replace(decision=v.decision._replace(violations=shrinking))))
    grows: dict[str, Any] = {}
    grows["a"] = enc.Grows(grows)
    step("growing dict", lambda: NativeSealer(enc._MAP_SCHEMA).encode_body({"things": grows}))
    sealed, _ = sealer.seal_batch(rs * 50, {})
    datas = [s.data for s in sealed]
    step("seal_batch", lambda: len(sealed))
    step("chain_encoded empty", lambda: _native.chain_encoded([], {}, {})[1])
    step("chain_encoded large", lambda: _native.chain_encoded(datas, {}, {})[1])
    d = datas[0]
    step("chain_encoded cuts", lambda: sum(_native.chain_encoded([d[:i]], {}, {})[3] == 0 for i in range(len(d))))
    step("chain_encoded flips", lambda: sum(_native.chain_encoded([d[:i] + bytes([d[i] ^ 0xFF]) + d[i + 1:]], {}, {})[3]
                                            == 0 for i in range(0, len(d), 3)))
    hits_steps()
    violations_steps()
    decoder_steps()


def hits_steps() -> None:
    import test_attn_hitbatch as hb

    from auditor.stream.processor import LazyRecord, Outgoing
    from auditor.trail.chain import ChainHead
    from auditor.trail.chainid import audit_partition

    hits = hb.Hits()
    step("hits seal", lambda: len(hits.seal()[2]))
    step("hits seal struct_time", lambda: hits.seal(outgoing=__import__("time").struct_time))
    step("hits seal bad head", lambda: hits.seal(working=dict.fromkeys(
        {c for c in hits.p.heads}, ChainHead("c", 1, b"short"))))
    records: list[Any] = [None, None]

    def lazy(chain: str, data: bytes) -> Any:
        records.clear()
        return LazyRecord(chain, data)

    n = len(hb.VALUES)
    step("hits seal vanishing records", lambda: hits.seal(misses=[n - 2, n - 1], records=records, lazy=lazy))
    part = functools.partial(audit_partition, audit_partitions=3)
    step("hits seal partition", lambda: hits.seal(audit_partition=part, outgoing=Outgoing)[6])
    # whole batches through the shadowed processor and the attn property's pool
    from test_attn_seal import ATTN_POOL, make_batch
    p = hb.native(True)
    offsets: dict[tuple[str, int], int] = {}
    for k in range(3):
        picks = [(i, "events" if i % 3 else "events-b", i % 4, (i + k) % 16) for i in range(len(ATTN_POOL))]
        step(f"processor round {k}", lambda picks=picks: len(p.process(make_batch(picks, offsets)).sealed))
        p.commit_heads()


def violations_steps() -> None:
    """Violations the shadow decides (HitBatch.seal builds their messages; atv, session 10): hostile
    values, a budget that truncates, many source partitions, the collector run inside seal."""
    import gc
    from dataclasses import replace
    from datetime import timedelta

    from streamkit import PACK_IDS, StubMessage, violating, wire
    from test_atv_violations import EDGE_TIMES, TOPICS, events, trio

    from auditor.events.codec import _EPOCH
    from auditor.stream import processor as pm

    hostile = ["", "\x00\x1f\x7f\u2028\U0001f600\\\"", "x" * 5000]
    for budget in (None, 300, 1):
        procs = trio(budget)
        for k in range(3):
            vals = events(k) + [wire(replace(violating(p, 1, event_id=f"{h}{k}"), purpose=h or "p",
                                             occurred_at=_EPOCH + timedelta(microseconds=us)))
                                for p in PACK_IDS for h in hostile for us in EDGE_TIMES[:10]]
            batch = [StubMessage(TOPICS[j % len(TOPICS)], j % 5, 1000 * k + j, v) for j, v in enumerate(vals)]
            step(f"violations budget {budget} round {k}", lambda batch=batch, procs=procs: sum(
                o.topic == "violations" for p in procs for o in p.process(batch).outgoing))
            for p in procs:
                p.commit_heads()
    real = pm._audit_partition

    def collecting(*args: Any, **kw: Any) -> Any:
        gc.collect()
        return real(*args, **kw)

    pm._audit_partition = collecting  # type: ignore[assignment]
    try:
        procs = trio()
        for k in range(3):
            batch = [StubMessage(TOPICS[j % 3], j % 4, 100 * k + j, v) for j, v in enumerate(events(k))]
            step(f"violations gc round {k}", lambda batch=batch, procs=procs: len(procs[2].process(batch).outgoing))
            procs[2].commit_heads()
    finally:
        pm._audit_partition = real  # type: ignore[assignment]


def decoder_steps() -> None:
    from streamkit import PACK_IDS, compliant, wire

    from auditor.native import NativeEventDecoder

    dec = NativeEventDecoder()
    vals = [wire(compliant(p, i)) for p in PACK_IDS for i in range(3)]
    cut = [v[:i] for v in vals[:3] for i in range(len(v))]
    step("decode", lambda: len(dec.decode_facts(vals)))
    step("decode cuts", lambda: len(dec.decode_facts(cut)))
    flips = [v[:i] + bytes([v[i] ^ 0x80]) + v[i + 1:] for v in vals[:2] for i in range(len(v))]
    step("decode flips", lambda: len(dec.decode_facts(flips)))


if __name__ == "__main__":
    main()
    print("memcheck: done", flush=True)
