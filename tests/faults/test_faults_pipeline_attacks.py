"""batch.pipeline attacked from outside its own fault tests (attpipe): the broker refusing the
in-flight batch's outputs while the next batch is already processed, SIGTERM with a commit in
flight, and members joining and leaving while commits are in flight.

Every scenario ends with faultkit's independent check (each input offset exactly once, hashes,
links and seqs recomputed, the file copies byte for byte, dead letters, `auditor verify`).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
from daemonkit import Feeder, InProcessDaemon, PacedFeeder, make_setup, mixed_events, set_topic_config, wait_until
from faultkit import (
    Daemon,
    Expect,
    Supervisor,
    assert_trail_intact,
    count_audit,
    drain_and_stop,
    endless,
    stable_committed,
    wait_audited,
)

from auditor.events.model import Event

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

LIMIT = 700  # the violations topic's max.message.bytes: below every violation message


def test_outputs_refused_while_the_next_batch_is_processed_lose_double_and_miscount_nothing(
        kafka_bootstrap, tmp_path):
    """The violations topic shrinks under a paced stream: nearly every in-flight batch carries a
    violation the broker refuses, while the next batch is processed after its working heads. Every
    input is audited once, each refused violation is dead-lettered as unwritable, the file copy holds
    no record of a dropped batch, and auditor_events_consumed_total counts exactly what was committed."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=1, trail=True, batch_max_events=200)
    events: list[Any] = [e for e in mixed_events(900, seed=7) if isinstance(e, Event)][:400]
    feeder = Feeder(kafka_bootstrap, setup.events)
    dropped: list[int] = []  # sizes of batches processed after an in-flight batch that aborted
    daemon = InProcessDaemon(setup.config())
    d = daemon.daemon
    reread = d._reread

    def spy(batch: Any) -> None:
        if batch:
            dropped.append(len(batch))
        reread(batch)

    d._reread = spy  # type: ignore[method-assign]
    with daemon:
        feeder.send_all(events[:30])
        wait_until(lambda: len(count_audit(kafka_bootstrap, setup.audit).rows) >= 30, 60,
                   "the first 30 events audited with the budgets the daemon read")
        set_topic_config(kafka_bootstrap, setup.violations, "max.message.bytes", str(LIMIT))
        feed = PacedFeeder(feeder, iter(events[30:]), rate=60)
        feed.start()
        feed.join(120)
        sent = feed.finish()
        wait_audited(setup, len(sent), 180, "after the violations topic shrank")
        assert daemon.stop() == 0
    consumed = daemon.sample("auditor_events_consumed_total", {"topic": setup.events})
    aborts = daemon.sample("auditor_transactions_total", {"outcome": "abort"})
    got = assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[setup.trail_dir])
    assert aborts > 0, "no transaction aborted: the broker's refusal was never met"
    assert dropped, "no batch was processed while a refused batch was in flight: the attack did not happen"
    assert consumed == len(got.rows) == len(sent), \
        f"auditor_events_consumed_total {consumed}, committed records {len(got.rows)}, inputs {len(sent)}"


def test_sigterm_with_a_commit_in_flight_exits_0_and_leaves_nothing_half_done(kafka_bootstrap, tmp_path):
    """A daemon under a steady stream (a transaction on the commit worker nearly all the time) is
    stopped with SIGTERM four times and started again: each stop exits 0 within the bound, with no
    in-flight transaction failing at close; nothing is lost or doubled."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=200)
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(43)), rate=1500)
    trail = setup.work / "trail-term"
    env = {"AUDITOR_TRAIL_DIR": str(trail)}
    rnd = random.Random(5)
    gens: list[Daemon] = []
    try:
        gens.append(Daemon(setup, "term", env))
        gens[-1].wait_ready(90)
        feed.start()
        for _ in range(4):
            time.sleep(2.0 + rnd.random() * 2.0)
            assert feed.flowing
            d = gens[-1]
            code = d.terminate(within=25)
            assert code == 0, f"SIGTERM with a commit in flight: exit {code}: {d.describe()}"
            assert not d.events("the in-flight transaction failed at close"), d.describe()
            assert_stopped_cleanly(setup, trail, partitions=3)
            gens.append(Daemon(setup, "term", env))
            gens[-1].wait_ready(90)
        sent = feed.finish()
        # what was sent while the daemon restarted four times: more, the slower the machine
        wait_audited(setup, len(sent), 120, "after the last restart", describe=gens[-1].describe, progressing=True)
        assert gens[-1].terminate(within=25) == 0, gens[-1].describe()
    finally:
        feed.halt.set()
        for g in gens:
            g.kill()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[trail])


def test_members_joining_and_leaving_while_commits_are_in_flight_fork_nothing(kafka_bootstrap, tmp_path):
    """A audits a steady stream; B joins (partitions move away from A while A's commit is on the
    worker), leaves with SIGTERM (they come back), joins again and is SIGKILLed (A takes them after
    B's session). No loss, no duplicate, one chain per partition, only documented exits."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=4, trail=True, batch_max_events=200)
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(44)), rate=1200)
    a = Supervisor(setup, "churn-a")
    bs: list[Supervisor] = []
    try:
        a.current.wait_ready(90)
        feed.start()
        for kill in (False, False, True):
            time.sleep(3)
            b = Supervisor(setup, f"churn-b{len(bs)}")
            bs.append(b)
            b.current.wait_ready(90)
            time.sleep(4)
            b.release()
            if kill:
                b.current.signal(signal.SIGKILL)
            else:
                assert b.current.terminate(within=25) == 0, b.describe()
        time.sleep(12)  # B's session (10 s) ends; A takes its partitions back
        assert feed.flowing
        sent = drain_and_stop(setup, feed, a, 180, what="after the churn", stop_within=30)
        for sup in (a, *bs):
            sup.assert_exits_documented()
    finally:
        feed.halt.set()
        a.kill_all()
        for b in bs:
            b.kill_all()
    # the SIGKILLed B's file copy is left out: never restarted, it has no signed checkpoint yet (by design,
    # `auditor verify` calls it unsigned until that instance runs again), which is not the pipeline's doing
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[a.trail_dir, *(b.trail_dir for b in bs[:-1])])


def assert_stopped_cleanly(setup: Any, trail: Path, partitions: int) -> None:
    """Nothing half-done at a clean stop: each partition's committed offset is one past the last input
    the audit topic holds a record of, and the file copy holds each chain up to the topic's last record."""
    got = count_audit(setup.bootstrap, setup.audit)
    assert not got.problems, got.problems[:5]
    last: dict[int, int] = {}
    top: dict[str, int] = {}
    for r in got.rows:
        _, p, o = r.source
        last[p] = max(last.get(p, -1), o)
        top[r.record["chain_id"]] = max(top.get(r.record["chain_id"], -1), r.record["seq"])
    committed = stable_committed(setup.bootstrap, setup.group, setup.events, partitions)
    assert {p: o for p, o in committed.items() if o >= 0} == {p: o + 1 for p, o in last.items()}, \
        f"committed offsets {committed} against the last audited inputs {last}"
    copied: dict[str, int] = {}
    for segment in sorted((trail / "segments").glob("*.avro")):
        with segment.open("rb") as fh:
            for rec in fastavro.reader(fh):
                assert isinstance(rec, dict)
                copied[rec["chain_id"]] = max(copied.get(rec["chain_id"], -1), rec["seq"])
    assert copied == top, f"the file copy ends at {copied}, the audit topic at {top}"


def test_a_zombie_fenced_by_its_restart_with_a_batch_in_flight_exits_3_and_forks_nothing(kafka_bootstrap, tmp_path):
    """The orchestrator starts the same instance id again while the old process is frozen with batch N
    on the commit worker and N+1 processed after N's heads (hook next_processed:stop). The new one fences
    the old producer and takes the partitions after the old session; woken, the old one must exit 3
    (fenced) and nothing of N+1 may land: no loss, no duplicate, no fork, and its file copy holds only
    what the topic holds."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=200)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(45)), rate=400)
    old_trail, new_trail = tmp_path / "trail-old", tmp_path / "trail-new"
    old = Daemon(setup, "fence", {"AUDITOR_TRAIL_DIR": str(old_trail), "AUDITOR_TEST_HOOK": "next_processed:stop:3",
                                  "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    new: Daemon | None = None
    try:
        old.wait_ready(90)
        feed.start()
        wait_until(lambda: (hooks / "next_processed.reached").exists(), 60,
                   lambda: f"the old process to freeze at next_processed: {old.describe()}")
        new = Daemon(setup, "fence", {"AUDITOR_TRAIL_DIR": str(new_trail)})
        new.wait_ready(90)  # assigned once the frozen process's session (10 s) has expired
        assert old.alive(), old.describe()
        old.signal(signal.SIGCONT)
        assert old.wait_exit(60, "after the fenced zombie woke") == 3, old.describe()
        assert any("fenced" in (doc.get("event", "") + str(doc.get("error", ""))) for doc in old.log_lines()), \
            old.describe()
        time.sleep(3)
        assert feed.flowing
        sent = feed.finish()
        wait_audited(setup, len(sent), 150, "after the zombie exited", describe=new.describe)
        assert new.terminate(within=30) == 0, new.describe()
    finally:
        feed.halt.set()
        old.kill()
        if new is not None:
            new.kill()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[old_trail, new_trail])
