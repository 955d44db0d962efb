"""One bad message in the middle of good ones (issue 9 item 3) and hostile producers: each must
become a dead letter (or, for a valid event whose record is too large, an audit record cut to
fit) within a bounded time, with the valid events around it audited, and the daemon healthy
throughout (or restarted by its own documented exit code).
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import string
import time

import fastavro
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from daemonkit import Setup, make_setup, mixed_events, wait_until
from faultkit import (
    BEFORE_YEAR_1_MICROS,
    YEAR_10000_MICROS,
    Expect,
    Supervisor,
    _strip_logical,
    assert_trail_intact,
    big_producer,
    configure,
    count_audit,
    healthy_through,
    mid_stream,
    send_raw,
    stable_committed,
    valid_events,
    wait_audited,
    with_occurred_at,
)

from auditor.events.model import Event
from auditor.stream.produce import encode

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


def _set_topic_config(setup: Setup, topic: str, **config: str) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    admin = AdminClient({"bootstrap.servers": setup.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)


def _role_violation(role_len: int) -> Event:
    """An inper event whose violation reason quotes the actor's role (the role is not among the rule's);
    the role is random lower-case text, which lz4 cannot shrink under the topic's limit."""
    rng = random.Random(60)
    role = "".join(rng.choice(string.ascii_lowercase) for _ in range(role_len))
    for e in mixed_events(3000, seed=61):
        if isinstance(e, Event) and e.policy_id == "inper" and e.kind.value == "ACCESS" and e.actor.role:
            return dataclasses.replace(e, actor=dataclasses.replace(e.actor, role=role))
    raise AssertionError("no inper ACCESS event with a role in the synthetic stream")


def _rev1(event: Event, occurred_at_micros: int) -> bytes:
    """The event framed with the earlier writer schema (privacy_event.1.avsc), occurred_at replaced."""
    from auditor.events.codec import event_to_mapping, schema_path
    from auditor.events.wire import SINGLE_OBJECT_MAGIC, schema_fingerprint

    raw = json.loads(schema_path("privacy_event.1.avsc").read_text())
    plain = fastavro.parse_schema(_strip_logical(raw), named_schemas={})
    mapping = event_to_mapping(event)
    datum = {f["name"]: mapping[f["name"]] for f in raw["fields"]}
    datum["occurred_at"] = occurred_at_micros
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, plain, datum)
    return SINGLE_OBJECT_MAGIC + schema_fingerprint(fastavro.parse_schema(raw, named_schemas={})) + buf.getvalue()


def _poison(kind: str) -> list[tuple[bytes, str | None]]:
    """(message value, the rejection reason's family, or None when a cut-down DECISION record is right).
    Large inputs are random bytes: lz4 must not shrink them under a limit."""
    event = valid_events(1, 62)[0]
    good = encode(event)
    rng = random.Random(kind)
    if kind == "occurred_at_year_10000":
        return [(with_occurred_at(good, YEAR_10000_MICROS), ""), (_rev1(event, YEAR_10000_MICROS), ""),
                (with_occurred_at(good, BEFORE_YEAR_1_MICROS), "")]
    if kind == "input_20MB":
        return [(good[:10] + rng.randbytes(20 * 1024 * 1024), "oversize")]
    if kind == "input_1048400_bytes":
        return [(good[:10] + rng.randbytes(1_048_400 - 10), "oversize")]
    if kind == "actor_role_262KB":
        return [(encode(_role_violation(261_000)), None)]
    if kind == "input_900KB_with_148KB_headers":  # the dead letter's headers count too
        return [(good[:10] + rng.randbytes(900_000), "oversize")]
    raise AssertionError(kind)


def _headers(kind: str) -> list[tuple[str, bytes | None]] | None:
    if kind == "input_900KB_with_148KB_headers":
        rng = random.Random(kind)
        return [(f"x-trace-{i}", rng.randbytes(37_000)) for i in range(4)]
    return None


POISON = ["occurred_at_year_10000", "input_20MB", "input_1048400_bytes", "actor_role_262KB",
          "input_900KB_with_148KB_headers"]


@pytest.mark.parametrize("kind", POISON)
def test_poison_message_mid_stream_is_isolated(kafka_bootstrap, tmp_path, kind):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=True, batch_max_events=500)
    _set_topic_config(setup, setup.events, max_message_bytes=str(32 * 1024 * 1024))
    if kind == "actor_role_262KB":
        # an operator's tighter audit topic: the daemon reads its limit (issue 9 item 4) and cuts to fit
        _set_topic_config(setup, setup.audit, max_message_bytes="400000")
        configure(setup, {"kafka": {"properties": {"batch.size": "390000"}}})  # as the daemon asks at start
    poison = _poison(kind)
    sup = Supervisor(setup, f"poison-{kind[:12]}")
    try:
        sup.current.wait_ready(90)
        sent, bad = mid_stream(setup, [(value, _headers(kind)) for value, _ in poison], seed=63)
        healthy_through(sup, setup, len(sent), f"past the {kind} poison")
        assert sup.stop(within=40) == 0, sup.describe()
    finally:
        sup.kill_all()
    rejected = {(b.partition, b.offset): family for b, (_, family) in zip(bad, poison, strict=True)
                if family is not None}
    assert sup.trail_dir is not None
    got = assert_trail_intact(setup, Expect(sent, setup.events, rejected), file_copies=[sup.trail_dir])
    if poison[0][1] is None:  # the role: audited, the record within the topic's limit, the role cut with a marker
        rec = got.by_source()[(setup.events, bad[0].partition, bad[0].offset)][0]
        assert len(rec.value) <= 400_000
        assert rec.record["record_type"] == "DECISION", rec.record["rejection"]


def test_audit_topic_deleted_while_running(kafka_bootstrap, tmp_path):
    """No offset may advance without its audit record, even when the audit topic is deleted under
    the daemon; the daemon must say so (readiness fails, or it exits with its documented code)."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=False)
    configure(setup, {"watchdog": {"progress_timeout_s": 30}})  # issue 9 item 4: readiness fails after this
    sup = Supervisor(setup, "deleted")
    producer = big_producer(kafka_bootstrap)
    try:
        sup.current.wait_ready(90)
        first = [send_raw(producer, setup.events, encode(e), i % 3) for i, e in enumerate(valid_events(300, 68))]
        wait_audited(setup, len(first), 90, "before the deletion", describe=sup.describe)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for fut in admin.delete_topics([setup.audit], operation_timeout=30).values():
            fut.result(60)
        deleted_at = time.monotonic()
        later = [send_raw(producer, setup.events, encode(e), i % 3) for i, e in enumerate(valid_events(300, 69))]

        def said_so() -> bool:
            d = sup.current
            return bool(sup.exits) or d.get("/readyz")[0] != 200

        wait_until(said_so, 120, lambda: f"readiness to fail or an exit after the audit topic was deleted: "
                                         f"{sup.describe()}")
        sup.release()
        sup.kill_all()
        sup.assert_exits_documented()
        assert time.monotonic() - deleted_at < 130
    finally:
        sup.kill_all()
    # what the group committed after the deletion must be in the audit topic as it is now
    committed = stable_committed(kafka_bootstrap, setup.group, setup.events, 3)
    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30)
    audited: set[tuple[int, int]] = set()
    if setup.audit in md.topics and not md.topics[setup.audit].error:
        audited = {(r.source[1], r.source[2]) for r in count_audit(kafka_bootstrap, setup.audit).rows}
    unaudited = sorted((s.partition, s.offset) for s in later
                       if s.offset < committed.get(s.partition, -1) and (s.partition, s.offset) not in audited)
    assert not unaudited, (f"{len(unaudited)} inputs sent after the deletion have a committed offset and no audit "
                           f"record, e.g. {unaudited[:5]}")
