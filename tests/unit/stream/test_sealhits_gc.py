"""rust (session 9): what the memo's shadow makes per sealed record is invisible to the garbage
collector, and its compiled LazyRecord is the Python one's equal.

A 5,000-event batch made ~15,000 tracked objects in HitBatch.seal (per hit an Outgoing, a
(LazyRecord, seq, prev, hash) tuple and a Python LazyRecord); every collection while the batch
lived traversed them (bench/batchcpu.py --gc: 1.1-1.3 us/event). They hold only str, bytes and
ints, so they cannot be part of a reference cycle: they are now made untracked, as CPython
untracks such exact tuples itself."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from streamkit import NOW, PACK_IDS, TOPIC, StubMessage, compliant, packs, processor, violating, wire

from auditor import _native
from auditor.native import FACT_MEMO_BUILT, SHADOW_VIOLATIONS, NativeEventDecoder, NativeSealer
from auditor.stream.processor import BatchProcessor, LazyRecord, PyLazyRecord
from auditor.trail.canonical import record_from_bytes
from auditor.trail.keys import Pseudonymizer

pytestmark = pytest.mark.skipif(not FACT_MEMO_BUILT or not hasattr(_native, "LazyRecord"),
                                reason="auditor._native was built before LazyRecord: rebuild it")


def shadowed() -> BatchProcessor:
    return BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), processor().routing, "unit-1",
                          clock=lambda: NOW, sealer=NativeSealer())


def hits_batch() -> tuple[BatchProcessor, Any]:
    """A processor whose second batch the shadow decides whole; that batch's result."""
    p = shadowed()
    for e in p.evaluators.values():
        e.compiled.clear_memo()
    values = [wire(compliant(pk, i)) for pk in PACK_IDS for i in range(4)]
    offsets = [0, 0]
    for _ in range(2):
        batch = []
        for i, v in enumerate(values):
            batch.append(StubMessage(TOPIC, i % 2, offsets[i % 2], v))
            offsets[i % 2] += 1
        result = p.process(batch)
        p.commit_heads()
    assert result.sealed and all(type(r) is _native.LazyRecord for r, *_ in result.sealed)
    return p, result


def test_the_shadows_outputs_and_sealed_records_are_not_tracked_by_the_collector():
    """Each hit's Outgoing, its sealed tuple and its LazyRecord: untracked (before: all three
    tracked; checked failing with the untracking taken out of lazy.rs and shadow.rs)."""
    _, result = hits_batch()
    assert not any(gc.is_tracked(o) for o in result.outgoing)
    assert not any(gc.is_tracked(s) for s in result.sealed)
    assert not any(gc.is_tracked(s[0]) for s in result.sealed)


@pytest.mark.skipif(not SHADOW_VIOLATIONS, reason="auditor._native was built before the shadow decided violations")
def test_the_violation_messages_of_the_shadows_hits_are_not_tracked_by_the_collector():
    """rust2: a violation the shadow decides has its message built in HitBatch.seal: that Outgoing
    is untracked too (checked failing without the untracking in shadow.rs)."""
    p = shadowed()
    values = [wire(violating(pk, i)) for pk in PACK_IDS for i in range(3)]
    for k in range(2):
        result = p.process([StubMessage(TOPIC, 0, k * len(values) + i, v) for i, v in enumerate(values)])
        p.commit_heads()
    messages = [o for o in result.outgoing if o.topic == p.routing.violations_topic]
    assert len(messages) == len(values) and p.python_violations == len(values)  # all the second time by the shadow
    assert not any(gc.is_tracked(o) for o in messages)


def test_an_untracked_lazy_record_read_later_holds_its_record():
    """Reading a record made untracked (it then holds the decoded AuditRecord) keeps it alive
    through collections: the same record, read again."""
    _, result = hits_batch()
    lazy = result.sealed[0][0]
    first = lazy.record()
    gc.collect()
    assert lazy.record() is first
    assert lazy.event_id == first.event_id


def test_the_compiled_lazy_record_is_the_python_one():
    """Equality, hash, attributes, repr and record() of the compiled LazyRecord are those of the
    Python reference (PyLazyRecord) for the same bytes, and each equals the decoded record."""
    _, result = hits_batch()
    assert LazyRecord is _native.LazyRecord
    assert len(result.outgoing) == len(result.sealed)  # compliant events: one audit message each, in order
    for (native, _seq, _prev, _hash), out in list(zip(result.sealed, result.outgoing, strict=True))[:6]:
        data = out.value
        ref = PyLazyRecord(native.chain_id, data)
        expected = record_from_bytes(data)._replace(seq=-1, prev_hash=b"", record_hash=b"")
        made = LazyRecord(native.chain_id, data)
        for lazy in (native, made):
            assert lazy == ref and ref == lazy and lazy == expected and expected == lazy
            assert (lazy != expected) is False
            assert hash(lazy) == hash(ref) == hash(expected)
            assert repr(lazy) == repr(ref)
            assert lazy.record() == ref.record() == expected
            assert (lazy.chain_id, lazy.event_id, lazy.facts, lazy.source) == (
                ref.chain_id, ref.event_id, ref.facts, ref.source)
        with pytest.raises(AttributeError):
            native.no_such_field  # noqa: B018 - the record's AttributeError, as the reference's
    other = result.sealed[1][0]
    assert result.sealed[0][0] != other


def test_a_lazy_record_of_bytes_that_are_not_a_record_fails_when_read():
    bad = LazyRecord("t/0", b"\x00not a record")
    assert bad.chain_id == "t/0"
    with pytest.raises(Exception):  # noqa: B017 - record_from_bytes's own error, as the reference's
        bad.record()
    with pytest.raises(TypeError):
        LazyRecord(b"t/0", b"")  # type: ignore[arg-type]

