"""attn: HitBatch.seal (native/src/shadow.rs) called with what it does not expect: an outgoing type
that is a tuple subclass of another layout (a struct sequence), heads that are not heads, callbacks
that raise or change the records list while the call runs, misses out of order. The answer is a
Python exception (the processor then seals the batch without the shadow), never a crash."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from streamkit import NOW, PACK_IDS, compliant, native, wire
from test_sealhits import batch_of

from auditor.native import FACT_MEMO_BUILT
from auditor.stream.processor import LazyRecord, Outgoing
from auditor.trail.chain import ChainHead
from auditor.trail.chainid import audit_partition

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

VALUES: list[bytes | None] = [wire(compliant(p, i, event_id=f"hb-{p}-{i}-{k}")) for p in PACK_IDS for i in range(3)
                              for k in range(2)]


class Hits:
    """A batch the shadow decides (every event a hit), and how to seal it."""

    def __init__(self) -> None:
        p = native(True)
        offsets: dict[int, int] = {}
        for _ in range(2):  # the first sighting teaches the shadow
            p.process(batch_of(VALUES, [0, 1], offsets))
            p.commit_heads()
        hot = p.hot
        self.p, self.sealer, self.layout = p, hot.sealer, p._fact_layout(hot)  # type: ignore[union-attr]
        shadow = p._shadow_ready(hot)  # type: ignore[arg-type]
        assert shadow is not None
        batch = batch_of(VALUES, [0, 1], offsets)
        self.misses, _, _, self.hits = shadow.decide(self.sealer, self.layout, [m.value() for m in batch], batch,
                                                     (NOW,))
        assert len(self.hits) == len(VALUES) and not self.misses

    def seal(self, **over: Any) -> tuple[Any, ...]:
        args: dict[str, Any] = {
            "misses": [], "records": [], "working": {}, "heads": self.p.heads, "audit_budget": 1 << 20,
            "audit_partition": functools.partial(audit_partition, audit_partitions=3), "outgoing": Outgoing,
            "lazy": LazyRecord}
        args.update(over)
        return tuple(self.hits.seal(self.sealer._sealer, self.layout, (NOW,), args["misses"], args["records"],
                                    args["working"], args["heads"], args["audit_budget"], "audit",
                                    args["audit_partition"], args["outgoing"], args["lazy"]))


@pytest.fixture(scope="module")
def hits() -> Hits:
    return Hits()


def test_the_batch_seals(hits):
    out = hits.seal()
    assert len(out[2]) == len(VALUES) and type(out[2][0]) is Outgoing


_STRUCTSEQ = r'''
import os, sys, time
sys.path[:0] = sys.argv[1:]
from test_attn_hitbatch import Hits
hits = Hits()
for t in (os.stat_result, time.struct_time):
    try:
        out = hits.seal(outgoing=t)
    except TypeError:
        continue
    print("sealed as", t.__name__, flush=True)
    del out  # a struct sequence frees the fields it has, more than the five written
print("refused")
'''


def test_an_outgoing_type_of_another_tuple_layout_is_refused_not_a_crash(tmp_path):
    """A struct sequence (os.stat_result, time.struct_time) has tuple's basic and item sizes, so it
    passed the layout check; it was then allocated with five items and freed as one with its own
    count of fields: a segmentation fault (rc -11). CPython refuses ``tuple.__new__`` of such a
    type; so must the compiled call. In a child process, so that a crash fails only this test."""
    script = tmp_path / "structseq.py"
    script.write_text(_STRUCTSEQ)
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, str(script), here], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONFAULTHANDLER": ""})
    assert done.returncode == 0, (done.returncode, done.stdout[-500:], done.stderr[-1500:])
    assert done.stdout.strip() == "refused"


class NotAHead:
    size = "3"
    head_hash = b"x" * 32


@pytest.mark.parametrize("head", [NotAHead(), ChainHead("c", -1, b"h" * 32), ChainHead("c", 1, b"short"),
                                  ChainHead("c", 1, "not bytes"), 42])
def test_heads_that_are_not_heads_are_refused(hits, head):
    chains = {c.chain_id for c in hits.p.heads.values()}
    with pytest.raises(Exception):  # noqa: B017, PT011 - any Exception (not a crash, not a BaseException)
        hits.seal(working=dict.fromkeys(chains, head))


def test_callbacks_that_raise_or_change_the_records_are_refused(hits):
    records: list[Any] = []

    def lazy(chain: str, data: bytes) -> Any:
        records.clear()
        return LazyRecord(chain, data)

    def partition(p: int) -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        hits.seal(audit_partition=partition)
    out = hits.seal(lazy=lazy, records=records)  # nothing to read from it: the misses are empty
    assert len(out[2]) == len(VALUES)
    with pytest.raises(ValueError, match="ascending"):
        hits.seal(misses=[3, 1], records=[None, None])
    with pytest.raises(ValueError, match="ascending"):
        hits.seal(misses=[len(VALUES)], records=[None])
    with pytest.raises(ValueError, match="one record per miss"):
        hits.seal(misses=[1], records=[])
    with pytest.raises(TypeError):
        hits.seal(outgoing=dict)


def test_misses_whose_records_vanish_while_sealing_are_refused(hits):
    """``lazy`` (called for each hit) empties the records list before the misses after the hits
    are read: an IndexError, or the records as they were when the call read them; not a read past
    the list."""
    records: list[Any] = [None, None]

    def lazy(chain: str, data: bytes) -> Any:
        records.clear()
        return LazyRecord(chain, data)

    try:
        out = hits.seal(misses=[len(VALUES) - 2, len(VALUES) - 1], records=records, lazy=lazy)
    except IndexError:
        return
    assert len(out[0]) == 2 and all(isinstance(s, Exception) for s in out[0])  # None is no record


def test_a_message_that_empties_the_batch_list_loses_no_event(hits):
    """FactMemo.decide calls each message's topic(), partition() and offset(): Python code that may
    change the list of messages. Every position must still come back as a miss or a hit. Before:
    the compiled loop read the list as it went, so a message that empties it made the rest of the
    batch vanish from both (29 of 30 events neither decided nor left to Python: no record)."""
    from streamkit import StubMessage

    p = hits.p
    shadow = p._shadow_ready(p.hot)
    assert shadow is not None
    batch = batch_of(VALUES, [0, 1], {0: 1000, 1: 1000})

    class Clearing(StubMessage):
        def topic(self) -> str | None:
            batch.clear()
            return super().topic()

    first = batch[0]
    batch[0] = Clearing(first._topic, first._partition, first._offset, first._value)
    values = [m.value() for m in batch]
    misses, _, _, got = shadow.decide(hits.sealer, hits.layout, values, batch, (NOW,))
    assert sorted([*misses, *got.positions()]) == list(range(len(values)))
