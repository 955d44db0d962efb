"""The ledger feed's pure parts: the co-partitioning check and the store's place per instance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auditor.config import load_config
from auditor.errors import ConfigError
from auditor.exitcodes import exit_code
from auditor.stream.ledgerfeed import check_copartitioned, store_path
from auditor.trail import chainid
from tests.unit.stream.streamkit import ledger_feed


def metadata(**topics: int) -> SimpleNamespace:
    return SimpleNamespace(topics={name.replace("_", "-"): SimpleNamespace(partitions=dict.fromkeys(range(n)))
                                   for name, n in topics.items()})


def test_equal_partition_counts_pass_and_give_the_count():
    assert check_copartitioned(metadata(events=6, facts=6), ["events"], "facts", "b:9092") == 6


def test_a_facts_topic_with_other_counts_is_a_config_error_naming_both_and_the_fix():
    with pytest.raises(ConfigError) as info:
        check_copartitioned(metadata(events=3, more_events=4, facts=4), ["events", "more-events"], "facts", "b:9092")
    text = str(info.value)
    assert "facts has 4 partition(s) but events has 3" in text
    assert "more-events" not in text.split("but", 1)[1].split(":")[0]  # 4 = 4: not listed
    assert "Fix: recreate facts with 3 partition(s)" in text and "unset ledger.dir" in text
    assert exit_code(info.value) == 2


def test_a_missing_facts_topic_is_a_config_error():
    with pytest.raises(ConfigError, match="facts topic facts does not exist on b:9092"):
        check_copartitioned(metadata(events=3), ["events"], "facts", "b:9092")


def test_each_instance_has_a_store_of_its_own(tmp_path):
    cfg = load_config(None, env={}, overrides={"instance_id": "pod-7", "ledger.dir": str(tmp_path)})
    assert store_path(cfg) == tmp_path / "pod-7"


def test_chain_ids_name_their_source_partition():
    assert chainid.source_of("a/b-topic/12") == ("a/b-topic", 12)  # what ledgerfeed reads them with


# ---------------------------------------------------------------- corrections, without a broker

def test_a_late_withdrawal_yields_a_correction_record_and_a_broken_payload_is_skipped(tmp_path):
    import json
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from auditor.events.codec import event_from_mapping
    from auditor.ledger.late import Correction
    from auditor.ledger.model import FactType, Scope, SubjectFact
    from auditor.stream.produce import encode
    from auditor.trail.canonical import record_from_bytes
    from auditor.trail.record import RecordType

    feed = ledger_feed(tmp_path)
    try:
        data = Path(__file__).resolve().parents[2] / "data" / "events" / "ipasar.jsonl"
        line = next(raw for raw in data.read_text().splitlines() if '"event_id":"ipasar-mkt-consent"' in
                    raw.replace(" ", ""))
        t0 = datetime(2026, 2, 24, tzinfo=UTC)
        event = replace(event_from_mapping(json.loads(line)), occurred_at=t0 + timedelta(hours=2))

        class Msg:
            def topic(self): return "events"
            def partition(self): return 1
            def offset(self): return 7
            def value(self): return encode(event)
            def key(self): return None
            def headers(self): return None

        first = feed.processor.process([Msg()])
        feed.processor.commit_heads()
        feed.after_commit(first)
        (reads,) = first.ledger_reads
        assert first.sealed[0][0].decision.verdict.value == "ALLOW"
        withdrawn = SubjectFact("w", event.subject.id, FactType.CONSENT_WITHDRAWN, t0, t0, "cmp", Scope("marketing"))
        applied = feed.store.apply(1, [(0, withdrawn)], feed.pseudonymize)
        report = feed.index.affected(applied.applied)
        (found,) = report.corrections
        broken = Correction(*found[:-1], payload=b"not a record")
        out, labels = feed.corrections([broken, found])
        assert labels == [("ipasar", "true")]
        audit = [o for o in out.outgoing if o.topic == "audit"]
        (fix,) = [record_from_bytes(o.value) for o in audit]
        assert fix.record_type is RecordType.CORRECTION and fix.decision.verdict.value == "VIOLATION"
        assert fix.ledger.corrects == (reads.chain_id, reads.seq, (0,))
        assert fix.seq == reads.seq + 1 and fix.source == first.sealed[0][0].source
        assert any(o.topic == "violations" for o in out.outgoing)
    finally:
        feed.close()
