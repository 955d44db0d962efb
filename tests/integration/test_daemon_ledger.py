"""The subject ledger in the daemon, on a real broker: facts from their own topic, judged as of
event time, corrections for late facts, history kept across restarts and rebalances, and the
same verdicts as ``auditor check --ledger``."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemonkit import (
    Fleet,
    InProcessDaemon,
    Setup,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.cli import main as auditor_main
from auditor.events.codec import event_to_json
from auditor.events.model import Event
from auditor.ledger.codec import fact_to_json
from auditor.ledger.model import FactType, SubjectFact
from auditor.policy.decision import ViolationKind
from auditor.stream.generate import ledger_stream
from auditor.stream.produce import produce
from auditor.trail.record import AuditRecord, RecordType

pytestmark = pytest.mark.kafka


def decisions(records: list[AuditRecord]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """event id -> (verdict, violated rules), a CORRECTION overriding the record it corrects."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for r in sorted(records, key=lambda r: (r.chain_id, r.seq)):
        if r.decision is not None and r.event_id is not None:
            out[r.event_id] = (r.decision.verdict.value, tuple(sorted(v.rule_id for v in r.decision.violations)))
    return out


def test_a_daemon_with_a_facts_topic_of_other_partition_count_exits_2_and_says_why(tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=3, facts_partitions=2)
    d = InProcessDaemon(setup.config(instance_id="mismatch"))
    with pytest.raises(Exception) as info:
        d.daemon.run()
    from auditor.exitcodes import exit_code

    assert exit_code(info.value) == 2
    text = str(info.value)
    assert f"{facts} has 2 partition(s)" in text and f"{setup.events} has 3" in text
    assert "co-partitioned" in text and "Fix:" in text


def test_consent_withdrawn_before_the_event_is_a_violation_after_it_is_not_and_late_is_corrected(
        tmp_path, kafka_bootstrap):
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap)
    produce(kafka_bootstrap, facts, [withdrawal("w-1", "u-withdrew", T0)])
    after = marketing_event("after-withdrawal", "u-withdrew", T0 + timedelta(days=1))
    before = marketing_event("before-withdrawal", "u-withdrew", T0 - timedelta(days=1))
    late = marketing_event("withdrawn-later", "u-late", T0 + timedelta(hours=2))
    # the next event of the same subject (so of the same partition), before the withdrawal's time
    earlier = marketing_event("next-in-partition", "u-late", T0)
    produce(kafka_bootstrap, setup.events, [after, before, late, earlier])
    with InProcessDaemon(setup.config(instance_id="one")) as d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 4, 90, "four audit records")
        # the withdrawal for u-late arrives after its event was audited, effective before it
        produce(kafka_bootstrap, facts, [withdrawal("w-2", "u-late", T0 + timedelta(hours=1))])
        wait_until(lambda: any(e.record.record_type is RecordType.CORRECTION
                               for e in read_audit(kafka_bootstrap, setup.audit)), 90, "a correction record")
        assert d.sample("auditor_ledger_corrections_total", {"pack": "ipasar", "verdict_changed": "true"}) == 1
        assert d.sample("auditor_ledger_late_facts_total") >= 1
    # a restart whose chain ends with the correction: the chain's position is the event before it
    produce(kafka_bootstrap, setup.events, [marketing_event("after-restart", "u-late", T0 + timedelta(hours=3))])
    with InProcessDaemon(setup.config(instance_id="one")):
        wait_until(lambda: any(e.record.event_id == "after-restart" for e in read_audit(kafka_bootstrap, setup.audit)),
                   90, "the event after the restart")
    entries = read_audit(kafka_bootstrap, setup.audit)
    by_id = {e.record.event_id: e.record for e in entries if e.record.record_type is RecordType.DECISION}
    again = by_id["after-restart"]
    assert again.decision is not None and again.decision.verdict.value == "VIOLATION"  # the store kept the fact
    a, b, lt = by_id["after-withdrawal"], by_id["before-withdrawal"], by_id["withdrawn-later"]
    assert a.decision is not None and a.decision.verdict.value == "VIOLATION"
    assert ViolationKind.CLAIM_CONTRADICTED.value in {v.kind for v in a.decision.violations}
    assert a.ledger is not None and a.ledger.reads and a.ledger.reads[0].fact_offsets == (0,)
    assert a.ledger.partition == a.source.partition and a.ledger.through_offset >= 0
    assert b.decision is not None and b.decision.verdict.value == "ALLOW"
    assert lt.decision is not None and lt.decision.verdict.value == "ALLOW"
    (fix,) = [e.record for e in entries if e.record.record_type is RecordType.CORRECTION]
    assert fix.ledger is not None and fix.ledger.corrects is not None
    assert (fix.ledger.corrects.chain_id, fix.ledger.corrects.seq) == (lt.chain_id, lt.seq)
    assert fix.event_id == "withdrawn-later" and fix.source == lt.source and fix.chain_id == lt.chain_id
    assert fix.decision is not None and fix.decision.verdict.value == "VIOLATION"
    assert fix.facts is not None and lt.facts is not None
    assert fix.facts.subject_pseudonym == lt.facts.subject_pseudonym  # pseudonyms are not pseudonymised again
    assert fix.seq > lt.seq
    assert by_id["next-in-partition"].decision.verdict.value == "ALLOW"  # type: ignore[union-attr]
    assert len([e for e in entries if e.record.record_type is RecordType.CORRECTION]) == 1


def test_a_restore_longer_than_the_catch_up_timeout_goes_in_rounds_and_finishes(tmp_path, kafka_bootstrap,
                                                                              monkeypatch):
    from auditor.stream import ledgerfeed

    monkeypatch.setattr(ledgerfeed, "ROUND", 4000)
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, catch_up_timeout_s=1)
    many = [withdrawal(f"bulk-{i}", f"u-bulk-{i}", T0) for i in range(30_000)]
    produce(kafka_bootstrap, facts, [*many, withdrawal("w-last", "u-last", T0)])
    produce(kafka_bootstrap, setup.events, [marketing_event("needs-the-last-fact", "u-last", T0 + timedelta(days=1))])
    with InProcessDaemon(setup.config(instance_id="bulk")) as d:
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) >= 1, 120, "the event's record")
        # The event's partition is read to its end before its batch; another partition restored a step
        # later (its chain head not ready yet: load) may still be in its rounds when the record shows.
        assert d.daemon.ledger is not None
        store = d.daemon.ledger.store

        def confirmed() -> int:
            positions = store.positions()
            return sum(positions.values()) + len(positions)

        wait_until(lambda: confirmed() >= len(many) + 1, 120,
                   lambda: f"every fact confirmed in the store (have {confirmed()})")
        assert d.sample("auditor_ledger_facts_total") == len(many) + 1  # each applied once
    (entry,) = read_audit(kafka_bootstrap, setup.audit)
    assert entry.record.decision is not None and entry.record.decision.verdict.value == "VIOLATION"


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _check_verdicts(tmp_path: Path, events: list[Event], facts: list[SubjectFact], capsys) -> dict[str, Any]:
    ev = _write_jsonl(tmp_path / "events.jsonl", [event_to_json(e) for e in events])
    fa = _write_jsonl(tmp_path / "facts.jsonl", [fact_to_json(f) for f in facts])
    capsys.readouterr()
    assert auditor_main(["check", str(ev), "--ledger", str(fa), "--format", "jsonl"]) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        doc = json.loads(line)
        out[doc["event_id"]] = (doc["verdict"], tuple(sorted(v["rule"] for v in doc["violations"])))
    return out


def corrections(records: list[AuditRecord]) -> list[tuple[str, str, tuple[str, ...], tuple[int, ...]]]:
    """Each CORRECTION record: (event id, verdict, violated rules, the late facts' offsets), sorted."""
    out = []
    for r in records:
        if r.record_type is RecordType.CORRECTION and r.decision is not None and r.event_id is not None:
            assert r.ledger is not None and r.ledger.corrects is not None
            out.append((r.event_id, r.decision.verdict.value, tuple(sorted(v.rule_id for v in r.decision.violations)),
                        r.ledger.corrects.cause_offsets))
    return sorted(out)


def late_withdrawals(events: list[Event], facts: list[SubjectFact], phase: list[Event], at: datetime, n: int,
                     taken: set[str], tag: str) -> list[SubjectFact]:
    """Marketing-consent withdrawals, effective at ``at`` (before some of ``phase``'s events), for
    ``n`` subjects that have only a grant so far and events in ``phase`` after ``at``: produced
    after those events were audited, each changes what they read (one late fact per subject)."""
    plain = {f.subject_id for f in facts} - {f.subject_id for f in facts if f.type is not FactType.CONSENT_GRANTED}
    chosen: list[str] = []
    for e in phase:
        s = e.subject.id
        if e.occurred_at >= at and s in plain and s not in taken and s not in chosen:
            chosen.append(s)
    taken.update(chosen[:n])
    return [withdrawal(f"late-{tag}-{s}", s, at) for s in chosen[:n]]


def restored_partitions(*daemons: InProcessDaemon) -> list[int]:
    return [len(d.daemon.ownership.restored()) for d in daemons]


def confirmed(*daemons: InProcessDaemon) -> int:
    """Facts confirmed in the stores, each partition counted once, as far as its furthest store (an
    instance that held a partition before a rebalance keeps the position it had reached then)."""
    high: dict[int, int] = {}
    for d in daemons:
        assert d.daemon.ledger is not None
        for p, h in d.daemon.ledger.store.positions().items():
            high[p] = max(high.get(p, -1), h)
    return sum(h + 1 for h in high.values())


def test_restart_and_rebalance_keep_history_and_corrections_match_one_run_and_check_ledger(
        tmp_path, kafka_bootstrap, capsys):
    """Two instances with partitions moving (a second instance joins, the first restarts) give the
    same decisions and the same CORRECTION records as one uninterrupted run, for late facts that
    arrive after another instance audited the decisions they change (l12b: the decision index is
    rebuilt from the audit topic when a partition is assigned)."""
    events, facts = ledger_stream(seed=5, events=1200, subjects=150)
    assert any(f.type is FactType.CONSENT_WITHDRAWN for f in facts)
    third = len(events) // 3
    phases = [events[:third], events[third:2 * third], events[2 * third:]]
    taken: set[str] = set()
    late1 = late_withdrawals(events, facts, phases[0], phases[0][third // 4].occurred_at, 12, taken, "1")
    late2 = late_withdrawals(events, facts, phases[1], phases[1][third // 4].occurred_at, 12, taken, "2")
    assert len(late1) == len(late2) == 12
    everything = [*facts, *late1, *late2]

    def audited(setup: Setup) -> list[AuditRecord]:
        return [e.record for e in read_audit(kafka_bootstrap, setup.audit)]

    def decided(setup: Setup, n: int) -> Any:
        return lambda: sum(1 for r in audited(setup) if r.record_type is RecordType.DECISION) >= n

    # one uninterrupted run
    ref, ref_facts = ledger_setup(tmp_path / "ref", kafka_bootstrap)
    produce(kafka_bootstrap, ref_facts, facts)
    with InProcessDaemon(ref.config(instance_id="solo")) as solo:
        produce(kafka_bootstrap, ref.events, phases[0])
        wait_until(decided(ref, third), 180, "the first third (reference)")
        produce(kafka_bootstrap, ref_facts, late1)
        produce(kafka_bootstrap, ref.events, phases[1])
        wait_until(decided(ref, 2 * third), 180, "the second third (reference)")
        produce(kafka_bootstrap, ref.events, phases[2])
        wait_until(decided(ref, len(events)), 180, "every event (reference)")
        produce(kafka_bootstrap, ref_facts, late2)
        assert solo.daemon.ledger is not None
        store = solo.daemon.ledger.store
        wait_until(lambda: sum(h + 1 for h in store.positions().values()) >= len(everything), 120,
                   "every fact confirmed (reference)")
    one_run, one_run_fixes = decisions(audited(ref)), corrections(audited(ref))
    assert len(one_run) == len(events)
    assert len(one_run_fixes) >= 24 and {f[0] for f in one_run_fixes} <= {e.event_id for e in events}
    # two instances, partitions moving: a second instance joins, then the first restarts
    setup, facts_topic = ledger_setup(tmp_path / "moving", kafka_bootstrap)
    produce(kafka_bootstrap, facts_topic, facts)
    first = InProcessDaemon(setup.config(instance_id="first")).__enter__()
    try:
        produce(kafka_bootstrap, setup.events, phases[0])
        wait_until(decided(setup, third), 180, "the first third, audited by the first instance alone")
        with InProcessDaemon(setup.config(instance_id="second")) as second:
            wait_until(lambda: min(restored_partitions(first, second)) >= 1
                       and sum(restored_partitions(first, second)) == 3, 120,
                       lambda: f"both instances holding partitions ({restored_partitions(first, second)})")
            # late for decisions the first instance made, some in partitions now the second's
            produce(kafka_bootstrap, facts_topic, late1)
            produce(kafka_bootstrap, setup.events, phases[1])
            wait_until(decided(setup, 2 * third), 180, "the second third with two instances")
            first.stop()
            first = InProcessDaemon(setup.config(instance_id="first")).__enter__()  # restart: resumes its store
            wait_until(lambda: min(restored_partitions(first, second)) >= 1
                       and sum(restored_partitions(first, second)) == 3, 120,
                       lambda: f"both instances holding partitions again ({restored_partitions(first, second)})")
            produce(kafka_bootstrap, setup.events, phases[2])
            wait_until(decided(setup, len(events)), 180, "every event")
            produce(kafka_bootstrap, facts_topic, late2)  # late for decisions made before partitions moved
            wait_until(lambda: len(corrections(audited(setup))) >= len(one_run_fixes), 120,
                       lambda: f"{len(one_run_fixes)} corrections as in one run (have "
                               f"{len(corrections(audited(setup)))})")
            # none beyond them: a fact's corrections commit before it is confirmed in the store, so
            # once every fact is confirmed by the instance holding its partition, none can follow
            wait_until(lambda: confirmed(first, second) >= len(everything), 120,
                       lambda: f"every fact confirmed ({confirmed(first, second)} of {len(everything)})")
    finally:
        first.stop()
    records = audited(setup)
    moving = decisions(records)
    assert len(one_run) == len(events) and moving == one_run
    assert corrections(records) == one_run_fixes
    assert sum(1 for v, _ in one_run.values() if v == "VIOLATION") > 10
    # the same events and every fact offline: the corrected decisions
    assert _check_verdicts(tmp_path, events, everything, capsys) == one_run


@pytest.mark.parametrize("nth", [1, 2])
def test_a_decision_committed_just_before_a_crash_is_corrected_after_the_restart(tmp_path, kafka_bootstrap, nth):
    """SIGKILL right after the batch's transaction commits (before the instance could index the
    decision locally): a late fact after the restart still corrects it (l12b). At the first commit
    the restarted instance has no index of the chain (indexed from the trail in full); at the
    second it resumes its own index from the first decision on."""
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    hook_dir = tmp_path / "hook"
    with Fleet(setup) as fleet:
        crashing = fleet.start("crash", env={"AUDITOR_TEST_HOOK": f"after_commit:kill:{nth}",
                                             "AUDITOR_TEST_HOOK_DIR": str(hook_dir)})
        if nth == 2:  # a first batch, committed and indexed
            produce(kafka_bootstrap, setup.events, [marketing_event("indexed-before", "u-early", T0)])
            wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) == 1, 120,
                       lambda: f"the first batch: {crashing.describe()}")
        crash = marketing_event("audited-then-crash", "u-crash", T0 + timedelta(hours=2))
        produce(kafka_bootstrap, setup.events, [crash])
        wait_until(lambda: crashing.proc.poll() is not None, 120, lambda: f"the SIGKILL after commit: "
                                                                         f"{crashing.describe()}")
        assert crashing.proc.returncode == -signal.SIGKILL and (hook_dir / "after_commit.reached").exists()
        resumed = nth == 2
    (first,) = [e for e in read_audit(kafka_bootstrap, setup.audit) if e.record.event_id == "audited-then-crash"]
    assert first.record.decision is not None and first.record.decision.verdict.value == "ALLOW"
    d = InProcessDaemon(setup.config(instance_id="crash"))  # the same store (ledger.dir/crash)
    assert d.daemon.ledger is not None
    marker = d.daemon.ledger.index.marker(0, first.record.chain_id)  # before it runs
    assert (marker is not None) is resumed and (marker is None or marker.seq < first.record.seq)
    with d:
        produce(kafka_bootstrap, facts, [withdrawal("w-crash", "u-crash", T0 + timedelta(hours=1))])
        # the next event of the partition: its batch comes after the facts were read and corrected
        produce(kafka_bootstrap, setup.events, [marketing_event("after-restart", "u-other", T0)])
        wait_until(lambda: any(e.record.event_id == "after-restart" for e in read_audit(kafka_bootstrap, setup.audit)),
                   120, "the event after the restart")
        assert d.sample("auditor_ledger_corrections_total", {"pack": "ipasar", "verdict_changed": "true"}) == 1
    entries = read_audit(kafka_bootstrap, setup.audit)
    (fix,) = [e.record for e in entries if e.record.record_type is RecordType.CORRECTION]
    assert fix.event_id == "audited-then-crash" and fix.ledger is not None and fix.ledger.corrects is not None
    assert (fix.ledger.corrects.chain_id, fix.ledger.corrects.seq) == (first.record.chain_id, first.record.seq)
    assert fix.decision is not None and fix.decision.verdict.value == "VIOLATION"
