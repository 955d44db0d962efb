"""A flood of forged records on the audit topic while a chain is read back for the subject ledger.

Anyone who may write to the audit topic can append records that name a chain, each with a
correct seq, link and hash of its own (att12). The read-back indexes only the records on the
chain's path of links back from its signed head; before, its first pass kept two hashes and an
offset for every well-formed record below the head while it read, forged or not, so its memory
grew with the flood (att12's notes: ~150 B a record). It now walks the path back from the head,
window by window, and keeps only the chain's own records' offsets.
One partition; the broker is the session's (tests/conftest.py).
"""

from __future__ import annotations

import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from daemonkit import (
    InProcessDaemon,
    Setup,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    read_topic,
    wait_progressing,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.stream import chainrestore
from auditor.stream.ledgerfeed import LedgerFeed
from auditor.stream.produce import produce
from auditor.trail.canonical import record_from_bytes
from auditor.trail.chain import ChainHead, genesis_hash, hash_record_bytes
from auditor.trail.record import AuditRecord

pytestmark = pytest.mark.kafka
FLOOD = 100_000


def flood(bootstrap: str, topic: str, victim: bytes, n: int) -> None:
    """``n`` records of the victim's chain at seq 0 (below its head), each another event id of the
    victim's length, resealed: a correct link to genesis and a hash of its own."""
    body = victim[:-32]
    assert body.count(b"victim") == 1
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                  "queue.buffering.max.messages": 200_000})
    for i in range(n):
        unhashed = body.replace(b"victim", b"f%05d" % i)
        p.produce(topic, unhashed + hash_record_bytes(unhashed), partition=0)
        if i % 50_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def audited_victim(tmp_path: Path, bootstrap: str) -> tuple[Setup, str]:
    """A one-partition ledger setup whose audit topic holds the victim's record (seq 0), written by
    instance a: (setup, facts topic)."""
    setup, facts = ledger_setup(tmp_path, bootstrap, partitions=1)
    produce(bootstrap, setup.events, [marketing_event("victim", "u-victim", T0 + timedelta(hours=2))])
    with InProcessDaemon(setup.config(instance_id="a")):
        wait_until(lambda: len(read_audit(bootstrap, setup.audit)) == 1, 90, "the victim's record")
    return setup, facts


def read_back_peaks(bootstrap: str, setup: Setup, facts: str) -> list[int]:
    """A late withdrawal of the victim's consent and one more event, audited by another instance (b:
    the takeover reads the chain back in full): the traced Python memory peak of each read-back."""
    produce(bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
    produce(bootstrap, setup.events, [marketing_event("next", "u-other", T0)])
    peaks: list[int] = []
    scanned = [0]  # audit messages the chain restore and the read-backs went through: their progress
    original, scan, window = LedgerFeed._read_back, LedgerFeed._scan, chainrestore._window

    def measured(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        tracemalloc.start()
        try:
            return original(self, *args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for m in scan(self, *args, **kwargs):
            scanned[0] += 1
            yield m

    def windowed(*args, **kwargs):  # type: ignore[no-untyped-def]
        got = window(*args, **kwargs)
        scanned[0] += len(got[0])
        return got

    LedgerFeed._read_back, LedgerFeed._scan = measured, counted  # type: ignore[method-assign]
    chainrestore._window = windowed
    try:
        with InProcessDaemon(setup.config(instance_id="b")) as b:
            # restoring the chain and reading it back go through the flood (the read-back under tracemalloc):
            # CPU work, 18-75 s on a shared machine, 219 s on 7% of a core; waited for while it moves on
            wait_progressing(lambda: b.daemon.batches >= 1 or not b.thread.is_alive(),
                             lambda: (scanned[0], len(peaks)), 120, "the event after the takeover")
    finally:
        LedgerFeed._read_back, LedgerFeed._scan = original, scan  # type: ignore[method-assign]
        chainrestore._window = window
    return peaks


def assert_b_corrected_the_victim(records: list[AuditRecord]) -> None:
    ours = [(x.event_id, x.record_type.value, x.instance_id) for x in records if x.instance_id == "b"]
    assert ours == [("victim", "CORRECTION", "b"), ("next", "DECISION", "b")]


def test_the_read_back_of_a_flooded_chain_keeps_only_its_own_records(tmp_path, kafka_bootstrap):
    setup, facts = audited_victim(tmp_path, kafka_bootstrap)
    (victim,) = read_topic(kafka_bootstrap, setup.audit)
    r = record_from_bytes(victim.value or b"")
    assert r.seq == 0 and r.prev_hash == genesis_hash(r.chain_id) and ChainHead.after(r).size == 1
    flood(kafka_bootstrap, setup.audit, victim.value or b"", FLOOD)
    peaks = read_back_peaks(kafka_bootstrap, setup, facts)
    assert_b_corrected_the_victim([record_from_bytes(m.value or b"") for m in read_topic(kafka_bootstrap, setup.audit)
                                   if m.offset > FLOOD])
    print(f"read-back peaks (traced Python memory): {[round(p / 2**20, 1) for p in peaks]} MiB for {FLOOD} forged")
    assert peaks and max(peaks) < 12 * 2**20, f"{max(peaks) / 2**20:.1f} MiB traced while reading back {FLOOD} forged"


def test_the_read_back_past_large_foreign_messages_keeps_no_window_of_them(tmp_path, kafka_bootstrap):
    """attops: the walk back kept every message of a window (up to 2,000), whatever it weighed;
    400 foreign messages of 256 KiB after the victim's record held 100 MiB."""
    setup, facts = audited_victim(tmp_path, kafka_bootstrap)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for i in range(400):
        p.produce(setup.audit, (b"%06d" % i) * (256 * 1024 // 6), partition=0)
        p.poll(0)
    assert p.flush(120) == 0
    peaks = read_back_peaks(kafka_bootstrap, setup, facts)
    assert_b_corrected_the_victim([record_from_bytes(m.value or b"") for m in read_topic(kafka_bootstrap, setup.audit)
                                   if len(m.value or b"") < 100_000])
    print(f"read-back peaks (traced Python memory): {[round(p / 2**20, 1) for p in peaks]} MiB past 400 x 256 KiB")
    assert peaks and max(peaks) < 40 * 2**20, f"{max(peaks) / 2**20:.1f} MiB traced while reading back"
