"""Poison messages on a real broker: each is dead-lettered or audited within its batch, the valid
events around it are audited, and no transaction is aborted (no abort loop).

The inputs are issue 9's: a 20 MB message (over the producer's and the topics' stock limits), a
1,048,400-byte message on stock topic settings (its dead-letter copy plus headers would not fit),
an event with a ~260 KB ``actor.role`` that the reasons quote (once a 1 MB audit record), an
``occurred_at`` in the year 10000, and a message whose evaluation fails inside the auditor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import uuid
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from daemonkit import (
    InProcessDaemon,
    Sent,
    assert_exactly_once,
    make_setup,
    read_audit,
    read_topic,
    wait_until,
)

from auditor.events.codec import event_to_mapping, raw_event_schema
from auditor.events.model import Event
from auditor.policy import load_pack
from auditor.stream.generate import templates
from auditor.stream.produce import encode
from auditor.stream.topictrail import verify_topic
from auditor.trail.record import RecordType

pytestmark = pytest.mark.kafka

BIG_INPUT = 20 * 1024 * 1024
STOCK_EDGE = 1_048_400
ROLE = 260_000


def compliant(pack: str, i: int, event_id: str) -> Event:
    t = templates(load_pack(pack))
    return dataclasses.replace(t.compliant[i % len(t.compliant)], event_id=event_id)


def violating(pack: str, i: int, event_id: str) -> Event:
    t = templates(load_pack(pack))
    return dataclasses.replace(t.violating[i % len(t.violating)][1], event_id=event_id)


def _year_10000(event: Event) -> bytes:
    d = event_to_mapping(event)
    d["occurred_at"] = 253402300800 * 10**6 + 5
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, raw_event_schema(), d)
    return encode(event)[:10] + buf.getvalue()


def _raise_topic_limit(bootstrap: str, topic: str, limit: int) -> None:
    entry = ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    futures = admin.incremental_alter_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])])
    for fut in futures.values():
        fut.result(30)


def test_poison_inputs_are_isolated_within_their_batch_with_no_abort(kafka_bootstrap: str, tmp_path: Path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    # the input topic takes the 20 MB message; the output topics keep Kafka's stock limits
    _raise_topic_limit(kafka_bootstrap, setup.events, BIG_INPUT + 1024 * 1024)
    long_role = dataclasses.replace(violating("inper", 1, event_id="long-role"))
    long_role = dataclasses.replace(long_role, actor=dataclasses.replace(long_role.actor, role="R" * ROLE))
    tag = uuid.uuid4().hex[:6]

    def valid(i: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        return None, encode(compliant("ipasar", i, event_id=f"ok-{tag}-{i}")), []

    items = [valid(i) for i in range(5)]
    items.append((b"poison-key", _year_10000(compliant("ipasar", 0, event_id="y10k")), [("trace-id", b"t-1")]))
    items += [valid(i) for i in range(5, 8)]
    items.append((None, b"\xc3\x01" + b"\x07" * (BIG_INPUT - 2), []))
    items += [valid(i) for i in range(8, 11)]
    items.append((b"edge", b"\xc3\x01" + b"\x09" * (STOCK_EDGE - 2), [("trace-id", b"t-2")]))
    items += [valid(i) for i in range(11, 14)]
    items.append((None, encode(long_role), []))
    items += [valid(i) for i in range(14, 17)]
    items.append((None, encode(compliant("ipasar", 17, event_id=f"boom-{tag}")), []))
    items += [valid(i) for i in range(18, 21)]
    assert len(encode(long_role)) < 256 * 1024  # under the default size gate: audited, not rejected

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": BIG_INPUT + 1024 * 1024,
                         "linger.ms": 5})
    delivered: list[tuple[int, int]] = []
    errors: list[str] = []
    for key, value, headers in items:
        producer.produce(setup.events, value, key, partition=0, headers=headers,
                         on_delivery=lambda err, msg: errors.append(str(err)) if err else delivered.append(
                             (msg.partition(), msg.offset())))
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors
    assert len(delivered) == len(items)

    daemon = InProcessDaemon(setup.config())
    evaluator = daemon.daemon.processor.evaluators["ipasar"]

    class MemoBlind:  # the fact path reads the memo through compiled._plans: no plan, so no memo hit
        _plans: dict[object, object] = {}

        def __getattr__(self, name: str) -> object:
            return getattr(evaluator.compiled, name)

    class FailsOnBoom:  # our own seam: the processor's evaluator for one pack
        compiled = MemoBlind()

        def __call__(self, event: Event):  # type: ignore[no-untyped-def]
            if event.event_id.startswith("boom-"):
                raise ZeroDivisionError("an engine bug")
            return evaluator(event)

    daemon.daemon.processor.evaluators["ipasar"] = FailsOnBoom()  # type: ignore[assignment]
    with daemon as d:
        wait_until(lambda: d.sample("auditor_transactions_total", {"outcome": "commit"}) >= 1
                   and len(read_audit(kafka_bootstrap, setup.audit)) >= len(items), 180,
                   lambda: f"{len(read_audit(kafka_bootstrap, setup.audit))} of {len(items)} audited; "
                           f"aborts {d.sample('auditor_transactions_total', {'outcome': 'abort'})}",
                   interval=2.0)
        aborts = d.sample("auditor_transactions_total", {"outcome": "abort"})
        reasons = {r: d.sample("auditor_dead_letters_total", {"reason": r})
                   for r in ("bad_field", "oversize", "evaluate_failed")}
    assert aborts == 0
    assert reasons == {"bad_field": 1, "oversize": 2, "evaluate_failed": 1}

    audit = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(audit, [Sent(p, o, None) for p, o in delivered], setup.events)
    by_offset = {e.record.source.offset: e.record for e in audit}
    kinds = [by_offset[o].record_type for _, o in sorted(delivered)]
    rejected = [i for i, k in enumerate(kinds) if k is RecordType.REJECTION]
    boom = len(items) - 4
    assert rejected == [5, 9, 13, boom]
    role_record = by_offset[17]
    assert role_record.record_type is RecordType.DECISION and role_record.facts is not None
    assert role_record.facts.actor_role is not None and len(role_record.facts.actor_role) < 400
    assert hashlib.sha256(b"R" * ROLE).hexdigest() in role_record.facts.actor_role
    assert max(len(m.value or b"") for m in read_topic(kafka_bootstrap, setup.audit)) < 64 * 1024

    dead = {int(m.headers["__connect.errors.offset"]): m for m in read_topic(kafka_bootstrap, setup.dead_letter)}
    assert sorted(dead) == [5, 9, 13, boom]
    assert dead[boom].headers["auditor.error.reason"] == b"evaluate_failed"
    assert dead[boom].headers["__connect.errors.stage"] == b"EVALUATE"
    assert b"an engine bug" not in dead[boom].headers["auditor.error.message"]
    y10k = dead[5]
    assert y10k.key == b"poison-key" and y10k.value == items[5][1]
    assert y10k.headers["trace-id"] == b"t-1"
    assert y10k.headers["__connect.errors.topic"] == setup.events.encode()
    assert y10k.headers["__connect.errors.exception.class.name"] == b"auditor.errors.DecodeError"
    assert b"occurred_at" in y10k.headers["__connect.errors.exception.message"]
    for offset, size in ((9, BIG_INPUT), (13, STOCK_EDGE)):
        ref = json.loads(dead[offset].value or b"")
        assert (ref["topic"], ref["partition"], ref["offset"], ref["bytes"]) == (setup.events, 0, offset, size)
        assert ref["sha256"] == hashlib.sha256(items[offset][1]).hexdigest()
        assert dead[offset].headers["auditor.original.omitted"].startswith(b"value")
    assert dead[13].key == b"edge" and dead[13].headers["trace-id"] == b"t-2"

    violations = read_topic(kafka_bootstrap, setup.violations)
    assert any(json.loads(v.value or b"{}").get("event_id") == "long-role" for v in violations)
    report = verify_topic({"bootstrap.servers": kafka_bootstrap}, setup.audit)
    assert report.ok, [str(i) for i in report.issues[:5]]


def test_budgets_are_read_from_the_output_topics_and_a_batch_size_over_one_is_refused(kafka_bootstrap: str,
                                                                                       tmp_path: Path):
    from auditor.config import load_config
    from auditor.errors import ConfigError
    from auditor.stream.budget import OutputBudget, budget_of, read_budget

    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=False)
    _raise_topic_limit(kafka_bootstrap, setup.dead_letter, 64_000)
    with pytest.raises(ConfigError, match="batch.size"):
        read_budget(setup.config())
    cfg = load_config(setup.config_path, env={"AUDITOR_KAFKA_PROPERTIES__BATCH_SIZE": "50000"})
    stock = budget_of(1_048_588)
    assert read_budget(cfg) == OutputBudget(stock, stock, budget_of(64_000))
