"""Attacks on the decision index rebuilt from the audit topic when a chain is assigned (att12).

A producer with write access to the audit topic appends records the read-back used to trust
(a forged CORRECTION that hides a real late fact, a forged decision the auditor then "corrects"
and signs, a record whose pseudonym the index cannot key), and the daemon is killed between
assignment and its first commit. One partition, a few events per test; the broker is the
session's (tests/conftest.py)."""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from daemonkit import (
    Fleet,
    InProcessDaemon,
    Setup,
    logs_to_the_live_stdout,  # noqa: F401  (autouse fixture)
    read_audit,
    read_topic,
    wait_until,
)
from ledgerkit import T0, ledger_setup, marketing_event, withdrawal

from auditor.cli import main as auditor_main
from auditor.ledger.codec import encode_fact_single_object
from auditor.ledger.model import FactType
from auditor.stream.produce import produce
from auditor.trail.canonical import record_from_bytes as read_audit_record
from auditor.trail.chain import ChainHead, seal_bytes
from auditor.trail.record import AuditRecord, CorrectedRecord, LedgerFacts, LedgerRead, RecordType

pytestmark = pytest.mark.kafka
FORGER = "forger"


def consent_read(value: bool) -> LedgerRead:
    """The answer to the marketing-consent question of ``marketing_event`` (no recipient)."""
    return LedgerRead("consent", "marketing", None, None, value, (0,))


def forged_after(last: AuditRecord, **changes: object) -> bytes:
    """A record built from ``last`` (public: anyone who reads the audit topic has it), correctly
    sealed after it: the next seq, ``prev_hash`` its hash, a record hash that matches the bytes."""
    record = last._replace(instance_id=FORGER, **changes)  # type: ignore[arg-type]
    data, _ = seal_bytes(ChainHead(last.chain_id, last.seq + 1, last.record_hash), record)
    return data


def append(bootstrap: str, topic: str, partition: int, value: bytes, *, aborted: bool = False) -> None:
    """Append to a topic as a hostile producer: plainly, or in a transaction of its own it aborts."""
    if aborted:
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{FORGER}-{topic}"})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, value, partition=partition)
        p.flush(30)
        p.abort_transaction(30)
        return
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value, partition=partition)
    assert p.flush(30) == 0


def audited_once(tmp_path: Path, kafka_bootstrap: str, instance: str = "a") -> tuple[Setup, str, Any]:
    """One partition, the victim's marketing send audited (ALLOW: no fact yet) by ``instance``, which stops."""
    setup, facts = ledger_setup(tmp_path, kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, setup.events, [marketing_event("victim", "u-victim", T0 + timedelta(hours=2))])
    with InProcessDaemon(setup.config(instance_id=instance)):
        wait_until(lambda: len(read_audit(kafka_bootstrap, setup.audit)) == 1, 90, "the victim's record")
    (entry,) = read_audit(kafka_bootstrap, setup.audit)
    assert entry.record.decision is not None and entry.record.decision.verdict.value == "ALLOW"
    return setup, facts, entry


def run_until_next_is_audited(setup: Setup, kafka_bootstrap: str, instance: str) -> InProcessDaemon:
    """Start ``instance`` (a takeover: its chain is read back), with one more event of the
    partition: its batch comes after the read-back and the facts. Returns the stopped daemon."""
    produce(kafka_bootstrap, setup.events, [marketing_event("next", "u-other", T0)])
    d = InProcessDaemon(setup.config(instance_id=instance)).__enter__()
    try:
        wait_until(lambda: not d.thread.is_alive()
                   or any(e.record.event_id == "next" for e in read_audit(kafka_bootstrap, setup.audit)),
                   90, "the event after the takeover")
        assert d.thread.is_alive(), f"the daemon stopped during the read-back (exit code {d.exit_code})"
    finally:
        d.stop()
    return d


def corrections_by_the_auditor(setup: Setup, kafka_bootstrap: str) -> list[AuditRecord]:
    return [e.record for e in read_audit(kafka_bootstrap, setup.audit)
            if e.record.record_type is RecordType.CORRECTION and e.record.instance_id != FORGER]


def test_a_forged_correction_in_the_audit_topic_does_not_hide_a_late_withdrawal(tmp_path, kafka_bootstrap):
    """A CORRECTION forged for the victim's decision, claiming it already read 'consent withdrawn':
    once the real late withdrawal arrives, the decision must still be corrected (before the fix the
    read-back indexed the forged answers under the decision's seq, so the withdrawal changed
    nothing and no correction was written)."""
    setup, facts, victim = audited_once(tmp_path, kafka_bootstrap)
    r = victim.record
    assert r.facts is not None
    append(kafka_bootstrap, setup.audit, victim.partition, forged_after(
        r, record_type=RecordType.CORRECTION,
        ledger=LedgerFacts(r.source.partition or 0, 0, (consent_read(False),),
                           CorrectedRecord(r.chain_id, r.seq, (0,)))))
    produce(kafka_bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
    run_until_next_is_audited(setup, kafka_bootstrap, "a")  # a restart: the chain resumes from its marker
    (fix,) = corrections_by_the_auditor(setup, kafka_bootstrap)
    assert fix.event_id == "victim" and fix.ledger is not None and fix.ledger.corrects is not None
    assert fix.ledger.corrects.seq == r.seq and fix.decision is not None and fix.decision.verdict.value == "VIOLATION"


def test_a_forged_decision_in_the_audit_topic_is_never_corrected_into_the_signed_chain(tmp_path, kafka_bootstrap):
    """A decision record forged after the chain's head (and one in a transaction its producer
    aborted), for an event never sent, claiming a consent no fact gives: an instance that takes the
    chain over must not judge it again and append a signed CORRECTION for it (before the fix the
    recheck found 'consent: true' unanswered now and corrected the forged event)."""
    setup, facts, victim = audited_once(tmp_path, kafka_bootstrap)
    r = victim.record
    assert r.facts is not None
    # and a withdrawal for the next event's subject, in a transaction its producer aborted: never applied
    append(kafka_bootstrap, facts, 0, encode_fact_single_object(withdrawal("w-aborted", "u-other", T0)), aborted=True)
    for event_id, aborted in (("never-sent", False), ("never-committed", True)):
        append(kafka_bootstrap, setup.audit, victim.partition, forged_after(
            r, event_id=event_id, facts=r.facts._replace(subject_pseudonym=("ab" if aborted else "cd") * 16),
            ledger=LedgerFacts(r.source.partition or 0, -1, (consent_read(True),))), aborted=aborted)
    d = run_until_next_is_audited(setup, kafka_bootstrap, "b")  # another instance: indexed in full
    assert [(x.event_id, x.instance_id) for x in corrections_by_the_auditor(setup, kafka_bootstrap)] == []
    assert d.sample("auditor_ledger_corrections_total", {"pack": "ipasar", "verdict_changed": "true"}) == 0
    (after,) = [e.record for e in read_audit(kafka_bootstrap, setup.audit) if e.record.event_id == "next"]
    assert after.decision is not None and after.decision.verdict.value == "ALLOW"  # read_committed facts


def test_an_old_correction_appended_again_does_not_stand_for_the_later_one(tmp_path, kafka_bootstrap):
    """The victim is corrected twice (a late withdrawal, then a grant effective before the event);
    the first correction's exact bytes are appended again (a replay: a link and hash the chain
    really has). An instance that takes the chain over must index the decision with the last
    correction's answers: before the fix the copy, later in the topic, overwrote them, so the
    takeover 'corrected' the victim a third time (and a later withdrawal would have been missed)."""
    setup, facts, _ = audited_once(tmp_path, kafka_bootstrap)

    def fixes() -> int:
        return len(corrections_by_the_auditor(setup, kafka_bootstrap))

    with InProcessDaemon(setup.config(instance_id="a")):
        produce(kafka_bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
        wait_until(lambda: fixes() == 1, 90, "the first correction")
        regrant = replace(withdrawal("g-later", "u-victim", T0 + timedelta(minutes=90)), type=FactType.CONSENT_GRANTED)
        produce(kafka_bootstrap, facts, [regrant])
        wait_until(lambda: fixes() == 2, 90, "the second correction")
    first = next(m for m in read_topic(kafka_bootstrap, setup.audit)
                 if m.value and read_audit_record(m.value).record_type is RecordType.CORRECTION)
    append(kafka_bootstrap, setup.audit, first.partition, first.value or b"")
    replayed = max(e.offset for e in read_audit(kafka_bootstrap, setup.audit))
    run_until_next_is_audited(setup, kafka_bootstrap, "b")  # another instance: indexed in full
    after = [(e.record.event_id, e.record.record_type.value) for e in read_audit(kafka_bootstrap, setup.audit)
             if e.offset > replayed]
    assert after == [("next", "DECISION")]


def test_a_forged_record_the_index_cannot_key_does_not_stop_the_partition(tmp_path, kafka_bootstrap):
    """A record after the head whose subject pseudonym is not 32 hex digits: before the fix the
    read-back's index write raised LedgerError out of the run loop, so every instance the
    partition went to stopped (exit 2) before auditing anything: a partition stopped for good."""
    setup, _, victim = audited_once(tmp_path, kafka_bootstrap)
    r = victim.record
    assert r.facts is not None
    append(kafka_bootstrap, setup.audit, victim.partition, forged_after(
        r, event_id="unkeyable", facts=r.facts._replace(subject_pseudonym="not-a-pseudonym"),
        ledger=LedgerFacts(r.source.partition or 0, -1, (consent_read(True),))))
    d = run_until_next_is_audited(setup, kafka_bootstrap, "a")
    assert d.exit_code == 0


def test_killed_after_the_read_back_corrected_before_its_marker_the_correction_is_not_repeated(
        tmp_path, kafka_bootstrap, capsys):
    """The withdrawal arrives while no instance runs; a new instance takes the chain over, indexes it
    from the trail, corrects the victim, and is SIGKILLed right after that correction's commit (its
    first), before it marks the chain. Restarted, it indexes the chain in full again: the
    correction is read back and supersedes, so it is not written twice; every input has one
    decision record and the trail verifies."""
    setup, facts, victim = audited_once(tmp_path, kafka_bootstrap)
    produce(kafka_bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
    hook_dir = tmp_path / "hook"
    with Fleet(setup) as fleet:
        k = fleet.start("k", env={"AUDITOR_TEST_HOOK": "after_commit:kill:1", "AUDITOR_TEST_HOOK_DIR": str(hook_dir)})
        wait_until(lambda: k.proc.poll() is not None, 120, lambda: f"the SIGKILL after the correction: {k.describe()}")
        assert k.proc.returncode == -signal.SIGKILL and (hook_dir / "after_commit.reached").exists()
    assert len(corrections_by_the_auditor(setup, kafka_bootstrap)) == 1
    run_until_next_is_audited(setup, kafka_bootstrap, "k")
    entries = read_audit(kafka_bootstrap, setup.audit)
    (fix,) = corrections_by_the_auditor(setup, kafka_bootstrap)
    assert fix.event_id == "victim" and fix.ledger is not None and fix.ledger.corrects is not None
    decided = sorted((e.record.source.offset, e.record.event_id) for e in entries
                     if e.record.record_type is RecordType.DECISION)
    assert decided == [(0, "victim"), (1, "next")]
    assert [e.record.seq for e in entries] == list(range(len(entries)))
    capsys.readouterr()
    code = auditor_main(["verify", f"kafka://{kafka_bootstrap}/{setup.audit}", "--keys", str(setup.keys_dir)])
    assert code == 0, capsys.readouterr().out


def test_an_instance_frozen_before_its_read_back_correction_commits_cannot_commit_it_once_the_chain_moved(
        tmp_path, kafka_bootstrap, capsys):
    """A new instance indexes the chain from the trail and is frozen (SIGSTOP) right after it began
    the correction's transaction (its first), until its session expired and another instance took
    the chain over and corrected the victim itself. Woken, the zombie must not commit its
    correction: a corrections-only transaction sends no offsets, so before the fix nothing fenced
    it (librdkafka's send_offsets_to_transaction with no offset does nothing) and the chain forked
    (two records of seq 1, two signed heads)."""
    setup, facts, _ = audited_once(tmp_path, kafka_bootstrap)
    produce(kafka_bootstrap, facts, [withdrawal("w-late", "u-victim", T0 + timedelta(hours=1))])
    hook_dir = tmp_path / "hook"
    with Fleet(setup) as fleet:
        z = fleet.start("z", env={"AUDITOR_TEST_HOOK": "after_begin:stop:1", "AUDITOR_TEST_HOOK_DIR": str(hook_dir)})
        wait_until(lambda: (hook_dir / "after_begin.reached").exists(), 120, lambda: f"z frozen: {z.describe()}")
        run_until_next_is_audited(setup, kafka_bootstrap, "b")  # after z's session (10 s) expired
        assert [x.instance_id for x in corrections_by_the_auditor(setup, kafka_bootstrap)] == ["b"]
        z.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: len(z.events("chain restored")) >= 2, 90,
                   lambda: f"z woken, back in the group with the chain: {z.describe()}")
        assert z.terminate() == 0
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert [(e.record.seq, e.record.record_type.value, e.record.instance_id) for e in entries] == [
        (0, "DECISION", "a"), (1, "CORRECTION", "b"), (2, "DECISION", "b")]
    capsys.readouterr()
    code = auditor_main(["verify", f"kafka://{kafka_bootstrap}/{setup.audit}", "--keys", str(setup.keys_dir)])
    assert code == 0, capsys.readouterr().out
