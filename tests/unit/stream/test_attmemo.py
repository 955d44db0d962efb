"""attmemo: the shadow of the decision memo (auditor.native.FactMemo) attacked as a hostile producer.

An event of a key the shadow knows but leaves to Python (a time past 2**53 us, a message whose
partition is an int of another type) is taught to it again at every Python hit; each teaching
kept one more entry (a decision's bytes and a labels tuple) until its cap of 2**20."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from streamkit import PACK_IDS, TOPIC, StubMessage, compliant, wire
from test_factmemo import reference, same, shadowed

from auditor.native import FACT_MEMO_BUILT

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT, reason="auditor._native was built before FactMemo: rebuild it")

#: 2300-01-01: within the schema's times, past 2**53 microseconds (the shadow leaves it to Python)
FAR = datetime(2300, 1, 1, tzinfo=UTC)


class _Partition(int):
    """An int of another type (as a client library might return): the shadow leaves it to Python."""


class OddPartition(StubMessage):
    def partition(self) -> int | None:
        return _Partition(self._partition)


@pytest.mark.parametrize("left", ["far-time", "odd-partition"])
def test_an_event_the_shadow_leaves_to_python_is_kept_once_per_key(left):
    """The shadow knows the key (learnt from ordinary events) but leaves these events to Python,
    whose fact path hits and teaches the shadow again at each one: the shadow must keep one entry
    per key, not one per event (before the fix: one entry per such event, up to its cap of 2**20
    entries, +221 MiB RSS measured by teaching FactMemo.learn one key 10**6 times)."""
    base = [replace(compliant(p, 0), event_id=f"k-{p}") for p in PACK_IDS]
    ref, (p, decided) = reference(), shadowed()
    for k in range(3):  # learnt: the shadow decides the ordinary ones from the third round
        same(ref, p, [StubMessage(TOPIC, 0, 10 * k + i, wire(e)) for i, e in enumerate(base)])
    assert decided[0] > 0
    known = len(p._shadow or ())
    assert 0 < known <= len(base)
    before = decided[0]
    for k in range(20):
        events = [replace(e, event_id=f"k{k}-{j}-{e.policy_id}") for j in range(10) for e in base]
        if left == "far-time":
            batch = [StubMessage(TOPIC, 0, 100 + 50 * k + i, wire(replace(e, occurred_at=FAR)))
                     for i, e in enumerate(events)]
        else:
            batch = [OddPartition(TOPIC, 0, 100 + 50 * k + i, wire(e)) for i, e in enumerate(events)]
        same(ref, p, batch)
    assert decided[0] == before  # all left to Python
    assert p.facts is not None and p.facts.hits >= 20 * known  # and decided there, from the memo
    assert len(p._shadow or ()) <= len(base)
