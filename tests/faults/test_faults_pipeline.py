"""batch.pipeline under faults: the daemon killed, or frozen past its session, at the moment the next
batch is processed (chained after the in-flight batch's working heads) while the in-flight batch's
send_offsets + commit run on the commit worker (AUDITOR_TEST_HOOK step ``next_processed``).

A backlog of full batches comes first (a batch gathers until the in-flight one committed unless it
is full, so at a paced rate alone the next batch is processed after the commit); events then flow
from a paced feeder through the fault; the audit topic is then counted by the
independent reader (faultkit) and verified: no loss, no duplicate, every chain intact.
"""

from __future__ import annotations

import signal
import time
from itertools import islice

import pytest
from daemonkit import Feeder, PacedFeeder, make_setup, wait_until
from faultkit import Expect, Supervisor, assert_trail_intact, committed_count, endless, reached, wait_audited

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

STEP = "next_processed"
#: sent at once before the paced feed: full batches, so that a batch is processed while one commits
BACKLOG = 3000


def test_sigkill_while_a_batch_commits_and_the_next_is_processed_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=200)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    feeder, items = Feeder(kafka_bootstrap, setup.events), iter(endless(41))
    feed = PacedFeeder(feeder, items, rate=600)
    sup = Supervisor(setup, "pipe-kill", {"AUDITOR_TEST_HOOK": f"{STEP}:kill:3", "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    try:
        sup.current.wait_ready(90)
        feeder.send_all(islice(items, BACKLOG))  # full batches: the next is processed while one commits
        feed.start()
        wait_until(lambda: reached(hooks, STEP), 60,
                   lambda: f"the daemon to process a batch while its 3rd in-flight one commits: {sup.describe()}")
        wait_until(lambda: bool(sup.exits), 30, lambda: f"the hooked daemon to die: {sup.describe()}")
        assert sup.exits[0] == -signal.SIGKILL, f"the hook did not SIGKILL the daemon: {sup.describe()}"
        sup.current.wait_ready(90)
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 300, 90, "from the restarted daemon", describe=sup.describe)
        assert feed.flowing, "the feeder stopped before the restarted daemon audited anything"
        sent = feed.finish()
        wait_audited(setup, len(sent), 120, "after the feeder stopped", describe=sup.describe)
        assert sup.stop(within=30) == 0, sup.describe()
        assert sup.exits[1:] == [], f"the restarted daemon exited by itself: {sup.describe()}"
    finally:
        feed.halt.set()
        sup.kill_all()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])


def test_zombie_frozen_with_a_batch_in_flight_and_the_next_processed_does_not_fork_the_chain(
        kafka_bootstrap, tmp_path):
    """A freezes with batch N on the commit worker and N+1 processed after N's working heads, past the
    session timeout (10 s); B takes its partitions; A wakes: N commits or aborts, N+1 must not land."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=200)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    feeder, items = Feeder(kafka_bootstrap, setup.events), iter(endless(42))
    feed = PacedFeeder(feeder, items, rate=400)
    a = Supervisor(setup, "pipe-zombie-a", {"AUDITOR_TEST_HOOK": f"{STEP}:stop:3", "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    b: Supervisor | None = None
    try:
        a.current.wait_ready(90)
        feeder.send_all(islice(items, BACKLOG))
        feed.start()
        wait_until(lambda: reached(hooks, STEP), 60, lambda: f"A to freeze at {STEP}: {a.describe()}")
        frozen_at = time.monotonic()
        b = Supervisor(setup, "pipe-zombie-b")
        b.current.wait_ready(90)  # B is assigned A's partitions once A's session (10 s) has expired
        wait_until(lambda: time.monotonic() - frozen_at > 25, 40, "A frozen for 25 s (> session timeout)")
        assert a.current.alive(), f"A died while frozen: {a.describe()}"
        a.current.signal(signal.SIGCONT)
        time.sleep(8)
        assert feed.flowing
        sent = feed.finish()
        wait_audited(setup, len(sent), 150, "after the zombie woke",
                     describe=lambda: f"{a.describe()}\n{b.describe() if b else ''}")
        for sup in (a, b):
            sup.release()
            if sup.current.alive():
                assert sup.stop(within=30) == 0, sup.describe()
            sup.assert_exits_documented()
    finally:
        feed.halt.set()
        a.kill_all()
        if b is not None:
            b.kill_all()
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[a.trail_dir, b.trail_dir])
