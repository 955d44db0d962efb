"""The daemon on a real broker with the compiled hot path (``native: true``) and with the Python
reference (``native: false``), one after the other on the same event topic (each with its own
group and output topics): the same audit records, violations and dead letters, and both trails
verify. Only the processing time (and so the hashes that cover it) may differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from daemonkit import (
    Feeder,
    InProcessDaemon,
    Setup,
    TopicTail,
    assert_exactly_once,
    chains_of,
    hostile_inputs,
    hostile_template,
    make_setup,
    mixed_events,
    read_audit,
    read_topic,
)

from auditor.events.model import Event
from auditor.localkafka.broker import create_topics
from auditor.stream.hotpath import NativePath, PythonPath
from auditor.stream.topics import TRAIL_TOPIC_CONFIG, checkpoint_topic_of
from auditor.trail.record import AuditRecord

pytestmark = pytest.mark.kafka

N = 600


def _run(setup: Setup, tag: str, native: bool, n: int) -> dict[str, Any]:
    """One daemon over the whole event topic, with its own group and output topics."""
    topics = {"audit": f"{setup.audit}-{tag}", "violations": f"{setup.violations}-{tag}",
              "dead_letter": f"{setup.dead_letter}-{tag}"}
    create_topics(setup.bootstrap, [topics["violations"], topics["dead_letter"]], 3)
    create_topics(setup.bootstrap, [topics["audit"], checkpoint_topic_of(topics["audit"])], 3,
                  config=TRAIL_TOPIC_CONFIG)
    cfg = setup.config(**{"native": native, "kafka.group_id": f"{setup.group}-{tag}", "instance_id": "same",
                          **{f"topics.{k}": v for k, v in topics.items()}})
    daemon = InProcessDaemon(cfg)
    assert isinstance(daemon.daemon.processor.hot, NativePath if native else PythonPath)
    with daemon, TopicTail(setup.bootstrap, topics["audit"]) as tail:
        tail.wait_for(n, 90, f"(native {native})")
    assert daemon.exit_code == 0
    return {"audit": read_audit(setup.bootstrap, topics["audit"]),
            "violations": read_topic(setup.bootstrap, topics["violations"]),
            "dead_letters": read_topic(setup.bootstrap, topics["dead_letter"]),
            "topic": topics["audit"]}


def _timeless(r: AuditRecord) -> AuditRecord:
    """The record without its processing time and the hashes that cover it (and without a
    rejection's message: the compiled decoder names the field it refused; the reason is kept)."""
    rejection = r.rejection._replace(message="") if r.rejection is not None else None
    return r._replace(processed_at=None, prev_hash=b"", record_hash=b"", rejection=rejection)


def test_native_and_python_daemons_write_the_same_records(kafka_bootstrap: str, tmp_path: Path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=False)
    items: list[Event | bytes | None] = list(mixed_events(N))
    template = hostile_template(items)
    # the hand-made hostile inputs but the negative union index (its reason may differ, see hotpath.py)
    items += [v for name, (v, _) in hostile_inputs(template).items() if name != "negative_union_index"]
    feeder = Feeder(kafka_bootstrap, setup.events)
    feeder.send_all(items)
    feeder.flush()
    sent = list(feeder.sent)
    native, python = _run(setup, "native", True, len(sent)), _run(setup, "python", False, len(sent))
    for run in (native, python):
        assert_exactly_once(run["audit"], sent, setup.events)
        for records in chains_of(run["audit"]).values():
            assert [r.prev_hash for r in records[1:]] == [r.record_hash for r in records[:-1]]
    a, b = chains_of(native["audit"]), chains_of(python["audit"])
    assert a.keys() == b.keys()
    for chain in a:
        assert [_timeless(r) for r in a[chain]] == [_timeless(r) for r in b[chain]], chain
    rejected = [r for rs in a.values() for r in rs if r.rejection is not None]
    assert len(rejected) >= 6  # the generator's malformed messages and the hostile inputs
    assert _values(native["dead_letters"]) == _values(python["dead_letters"])
    assert len(native["violations"]) == len(python["violations"]) > 20
    assert _violations(native) == _violations(python)


def _values(messages: list[Any]) -> list[bytes]:
    return sorted(m.value or b"" for m in messages)


def _violations(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The violation messages without the record hash they name (it covers the processing time)."""
    docs = [json.loads(m.value or b"") for m in run["violations"]]
    return sorted(({k: v for k, v in d.items() if k != "record_hash"} for d in docs), key=lambda d: d["event_id"])
