"""Memory stays bounded by bytes: unique large events leave nothing large behind in any memo."""

from __future__ import annotations

import dataclasses
import gc
import random
import tracemalloc

from streamkit import compliant, messages, processor, violating, wire

from auditor.memo import ENTRY_OVERHEAD, BytesMemo
from auditor.trail.keys import Pseudonymizer

MB = 1024 * 1024


def _retained(run) -> int:  # type: ignore[no-untyped-def]
    """Bytes still allocated after ``run()`` returns, counted by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_memo_drops_itself_before_passing_its_byte_bound_and_never_keeps_a_large_entry():
    memo: BytesMemo[int, str] = BytesMemo(max_bytes=10_000, max_entry=2_000)
    memo.put(0, "x" * 5_000, 5_000)
    assert len(memo) == 0
    for i in range(100):
        memo.put(i, "y", 500)
        assert memo.nbytes <= 10_000
    assert 0 < len(memo) <= 10_000 // (500 + ENTRY_OVERHEAD)


def test_pseudonymizing_many_long_unique_ids_keeps_no_memory():
    p = Pseudonymizer(b"k" * 32)
    rng = random.Random(1)
    first = []

    def run() -> None:
        for _ in range(200):  # 100 KB each, 20 MB in all, each garbage once pseudonymised
            first.append(p(rng.randbytes(50_000).hex()))
        del first[1:]

    assert _retained(run) < 2 * MB
    again = random.Random(1).randbytes(50_000).hex()
    assert p(again) == first[0]  # the same pseudonym when not memoised


def test_auditing_unique_large_events_leaves_no_growing_memo_behind():
    proc = processor()
    rng = random.Random(2)

    def event(i: int):  # type: ignore[no-untyped-def]
        base = violating("inper", 1) if i % 2 else compliant("ipasar", i)
        return dataclasses.replace(base, event_id=f"big-{i}",
                                   actor=dataclasses.replace(base.actor, role=rng.randbytes(60_000).hex()),
                                   subject=dataclasses.replace(base.subject, id=rng.randbytes(512).hex()))

    # subject ids at the 1,024-character limit: a longer one is refused at decoding (bf22796)
    values = [wire(event(i)) for i in range(120)]  # ~120 KB each, 14 MB in all

    def run() -> None:
        for start in range(0, len(values), 10):
            result = proc.process(messages(values[start:start + 10], first_offset=start))
            assert not result.dead_letters
            proc.commit_heads()
            del result

    assert _retained(run) < 4 * MB
