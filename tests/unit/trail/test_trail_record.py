"""Records, canonical bytes and the pure chain."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random

import fastavro
import pytest
from trailkit import T0, make_decision, make_event, make_records

from auditor.trail import (
    ChainHead,
    SourceRef,
    build_record,
    record_from_bytes,
    record_to_bytes,
    record_to_event,
    seal,
)
from auditor.trail.canonical import record_schema
from auditor.trail.chain import genesis_hash, recompute_hash


def sealed_chain(keys, n=40, **kw):
    head = ChainHead.genesis("events/0")
    out = []
    for r in make_records(keys, n, **kw):
        s, head = seal(head, r)
        out.append(s)
    return out, head


def test_hand_encoder_produces_exactly_fastavro_bytes(keys):
    records, _ = sealed_chain(keys, 60, reject_every=7)
    for r in records:
        data = record_to_bytes(r)
        m = fastavro.schemaless_reader(io.BytesIO(data), record_schema(), None)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, record_schema(), m)
        assert buf.getvalue() == data


def test_record_round_trips_through_bytes(keys):
    records, _ = sealed_chain(keys, 30, reject_every=5)
    for r in records:
        assert record_from_bytes(record_to_bytes(r)) == r


def test_record_hash_is_leaf_hash_of_bytes_minus_hash(keys):
    (r, *_), _ = sealed_chain(keys, 1)
    data = record_to_bytes(r)
    assert data[-32:] == r.record_hash
    assert r.record_hash == hashlib.sha256(b"\x00" + data[:-32]).digest() == recompute_hash(data)


def test_seal_links_records_and_is_deterministic(keys):
    a, head_a = sealed_chain(keys, 20)
    b, head_b = sealed_chain(keys, 20)
    assert a == b and head_a == head_b
    assert a[0].prev_hash == genesis_hash("events/0") and a[0].seq == 0
    for prev, cur in zip(a, a[1:], strict=False):
        assert cur.prev_hash == prev.record_hash and cur.seq == prev.seq + 1
    assert head_a == ChainHead("events/0", 20, a[-1].record_hash) == ChainHead.after(a[-1])


def test_head_restored_from_last_record_continues_the_same_chain(keys):
    records = make_records(keys, 10)
    full, _ = sealed_chain(keys, 10)
    head = ChainHead.genesis("events/0")
    for r in records[:6]:
        _, head = seal(head, r)
    restored = ChainHead.after(record_from_bytes(record_to_bytes(full[5])))
    for r, expected in zip(records[6:], full[6:], strict=True):
        s, restored = seal(restored, r)
        assert s == expected


def test_genesis_differs_per_chain_and_seal_refuses_other_chain(keys):
    assert genesis_hash("events/0") != genesis_hash("events/1")
    (r,) = make_records(keys, 1, partitions=1)
    with pytest.raises(ValueError):
        seal(ChainHead.genesis("events/9"), r)


def test_any_changed_fact_changes_the_hash(keys):
    (r,) = make_records(keys, 1)
    base, _ = seal(ChainHead.genesis(r.chain_id), r)
    assert r.facts is not None
    changed = r._replace(facts=r.facts._replace(purpose="other"))
    other, _ = seal(ChainHead.genesis(r.chain_id), changed)
    assert other.record_hash != base.record_hash


def test_record_keeps_pseudonyms_not_raw_ids_and_rebuilds_the_event(keys):
    event = make_event(1, random.Random(1), subject="alice@example.com")
    r = build_record(event, make_decision(event), SourceRef.from_file("in.jsonl", 3), keys.pseudonymizer,
                     "i-1", T0)
    assert r.chain_id == "file:in.jsonl"
    assert r.facts is not None and r.facts.subject_pseudonym == keys.pseudonymizer("alice@example.com")
    assert b"alice" not in record_to_bytes(seal(ChainHead.genesis(r.chain_id), r)[0])
    rebuilt = record_to_event(r)
    assert rebuilt.subject.id == keys.pseudonymizer("alice@example.com")
    assert rebuilt.actor.id == keys.pseudonymizer(event.actor.id)
    assert dataclasses.replace(rebuilt, subject=event.subject, actor=event.actor) == event
