"""Factories for trail tests: deterministic events, decisions, records and trails."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auditor.events.model import (
    Actor,
    ActorType,
    ConsentState,
    Event,
    EventKind,
    Recipient,
    Subject,
    Transfer,
)
from auditor.policy.decision import Decision, RuleRef, Verdict, Violation, ViolationKind
from auditor.trail import KeyRing, SourceRef, TrailWriter, build_record, build_rejection, raw_digest
from auditor.trail.record import AuditRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PURPOSES = ("marketing", "billing", "creditworthiness", "fraud_prevention")
RECIPIENTS = ("bank", "credit_agency", "service_provider", "law_enforcement")
CATEGORIES = ("account_information", "contact_information", "location", "biometrics")


def make_event(i: int, rng: random.Random, subject: str | None = None) -> Event:
    kind = rng.choice(list(EventKind))
    return Event(
        event_id=f"evt-{i:08d}",
        occurred_at=T0 + timedelta(seconds=i),
        kind=kind,
        policy_id="ipasar",
        source_system="crm",
        actor=Actor(type=rng.choice(list(ActorType)), id=f"emp-{rng.randrange(50)}",
                    role=rng.choice(["billing", "customer_service", None])),
        subject=Subject(id=subject or f"user-{rng.randrange(1000)}", age=rng.choice([None, 15, 34]),
                        region="MY"),
        data_categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 2))),
        purpose=rng.choice(PURPOSES),
        recipient=Recipient(rng.choice(RECIPIENTS), "acme-bank", "SG", rng.choice([True, None]))
        if kind is EventKind.DISCLOSURE else None,
        consent=ConsentState(marketing=rng.random() < 0.5),
        transfer=Transfer(cross_border=kind is EventKind.DISCLOSURE),
        attributes={"channel": "web"} if rng.random() < 0.3 else {},
    )


def make_decision(event: Event) -> Decision:
    if event.purpose == "marketing" and not event.consent.marketing:
        rule = RuleRef("ipasar.marketing.consent", "4.1", "we will ask your consent", "high")
        return Decision(event.event_id, Verdict.VIOLATION,
                        (Violation(rule, ViolationKind.CONDITION_FAILED, "consent marketing is false"),),
                        None, "ipasar", "ab" * 32)
    return Decision(event.event_id, Verdict.ALLOW, (), RuleRef("ipasar.use.service", "3.1", "q"),
                    "ipasar", "ab" * 32)


def make_records(keys: KeyRing, n: int, *, seed: int = 7, partitions: int = 1, topic: str = "events",
                 subjects: dict[int, str] | None = None, reject_every: int = 0) -> list[AuditRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        source = SourceRef.kafka(topic, i % partitions, i // partitions)
        now = T0 + timedelta(seconds=i, milliseconds=5)
        if reject_every and i % reject_every == reject_every - 1:
            out.append(build_rejection(raw_digest(b"garbage %d" % i), "undecodable", "not valid JSON",
                                       source, pseudonym_key_id=keys.pseudonymizer.key_id,
                                       instance_id="test-1", now=now))
            continue
        event = make_event(i, rng, (subjects or {}).get(i))
        out.append(build_record(event, make_decision(event), source, keys.pseudonymizer, "test-1", now))
    return out


def write_trail(trail: Path, keys: KeyRing, n: int, *, batch: int = 25, checkpoint_every: int = 50,
                **kw: object) -> list[AuditRecord]:
    """Write a trail; return the records as sealed (decoded back from the files)."""
    from auditor.trail import ReplayFilter, iter_records

    records = make_records(keys, n, **kw)  # type: ignore[arg-type]
    with TrailWriter.open(trail, keys, checkpoint_every=checkpoint_every, checkpoint_seconds=3600,
                          clock=lambda: T0) as w:
        for start in range(0, n, batch):
            w.append(records[start:start + batch])
            w.commit()
    return list(iter_records(trail, ReplayFilter()))


def segmented_trail(trail: Path, keys: KeyRing) -> list[Path]:
    """120 records in batches of 10, checkpoints every 40, in segments of 15,000 bytes (at least
    three); returns the segment files in order."""
    from auditor.trail.segment import list_segments

    records = make_records(keys, 120)
    with TrailWriter.open(trail, keys, segment_bytes=15_000, checkpoint_every=40) as w:
        for i in range(0, 120, 10):
            w.append(records[i:i + 10])
            w.commit()
    return [p for _, p in list_segments(trail)]


# ---------------------------------------------------------------- tampering helpers

def only_segment(trail: Path) -> Path:
    """The trail's one segment file (fails when there are more)."""
    from auditor.trail.segment import list_segments

    (_, seg), = list_segments(trail)
    return seg


def segment_records(path: Path) -> list[bytes]:
    """Every record's bytes in a segment (all blocks)."""
    from auditor.trail.segment import scan_segment

    scan = scan_segment(path, 0)
    return [scan.buf[f.start:f.end] for _, f in scan.frames()]


def rewrite_segment(path: Path, records: list[bytes]) -> None:
    """Rewrite a segment with the same header, the given records in one block."""
    from auditor.trail.segment import block_bytes, scan_segment

    scan = scan_segment(path, 0)
    header = path.read_bytes()[:scan.header_end]
    path.write_bytes(header + (block_bytes(records, scan.sync) if records else b""))


def frame_of(data: bytes):
    from auditor.trail.canonical import iter_frames

    return next(iter_frames(data, 1))


def reseal(data: bytes, *, seq: int | None = None, prev: bytes | None = None) -> bytes:
    """Re-hash a tampered record the way a forger would (hashes need no key)."""
    from auditor.trail.canonical import encode_head
    from auditor.trail.chain import hash_record_bytes

    f = frame_of(data)
    body = data[f.body_start:f.end - 32]
    head = encode_head(f.chain_id, f.seq if seq is None else seq, f.prev_hash if prev is None else prev,
                       len(body))
    unhashed = head + body
    return unhashed + hash_record_bytes(unhashed)


def flip_body_byte(data: bytes, offset: int = 3) -> bytes:
    f = frame_of(data)
    i = f.body_start + offset
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


# ---------------------------------------------------------------- checkpoints

def stored_checkpoints(trail: Path):
    from auditor.trail import StoredCheckpoint

    return [StoredCheckpoint.from_json(line) for line in (trail / "checkpoints.jsonl").read_text().splitlines()]


def write_stored(trail: Path, entries) -> None:
    (trail / "checkpoints.jsonl").write_text("".join(e.to_json() + "\n" for e in entries))


def signed_checkpoints(trail: Path, keys: KeyRing):
    return [e.open(keys.verifier) for e in stored_checkpoints(trail)]


def checkpoint_sizes(trail: Path, keys: KeyRing) -> list[int]:
    return [s.size for s in signed_checkpoints(trail, keys)]
