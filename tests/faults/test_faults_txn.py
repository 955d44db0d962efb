"""The daemon killed or frozen inside its own transaction (AUDITOR_TEST_HOOK, README "The daemon"):
SIGKILL at each step of the commit sequence, and a zombie frozen between send_offsets and commit
for longer than the session timeout while a second instance takes its partitions.

Events flow from a paced feeder through every fault; the audit topic is then counted by the
independent reader (and Kafka's console consumer) and verified.
"""

from __future__ import annotations

import pytest
from daemonkit import Feeder, PacedFeeder, make_setup, wait_until
from faultkit import (
    HOOK_STEPS,
    Expect,
    Supervisor,
    assert_trail_intact,
    committed_count,
    configure,
    drain_and_stop,
    endless,
    reached,
    sigkill_at_hook_loses_and_duplicates_nothing,
    wait_audited,
    zombie_frozen_at_hook_does_not_fork_the_chain,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


@pytest.mark.parametrize("step", HOOK_STEPS)
def test_sigkill_at_each_transaction_step_loses_and_duplicates_nothing(kafka_bootstrap, tmp_path, step):
    sigkill_at_hook_loses_and_duplicates_nothing(
        kafka_bootstrap, tmp_path, step, instance_id="txn-kill", seed=31, rate=300,
        reaching=f"reach {step} of its 3rd transaction (AUDITOR_TEST_HOOK)")


def test_zombie_frozen_between_send_offsets_and_commit_does_not_fork_the_chain(kafka_bootstrap, tmp_path):
    """Issue 9 item 1: A freezes after send_offsets_to_transaction, past the session timeout (10 s)
    but within the transaction timeout (60 s); B takes its partitions; A wakes and commits."""
    zombie_frozen_at_hook_does_not_fork_the_chain(
        kafka_bootstrap, tmp_path, "after_send_offsets", instance_id="zombie", seed=32, rate=200,
        freezing="after send_offsets of its 3rd transaction")


def test_main_loop_wedged_in_c_after_send_offsets_is_restarted_by_the_watchdog(kafka_bootstrap, tmp_path):
    """Issue 9 item 2: the main thread blocked in C (AUDITOR_TEST_HOOK action `hang`, like a librdkafka
    call that never returns): /healthz must fail and the process exit 4; once restarted, nothing is
    lost or doubled."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=3, trail=True, batch_max_events=200)
    configure(setup, {"watchdog": {"stall_timeout_s": 15}})
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    feed = PacedFeeder(Feeder(kafka_bootstrap, setup.events), iter(endless(33)), rate=200)
    sup = Supervisor(setup, "wedged", {"AUDITOR_TEST_HOOK": "after_send_offsets:hang:3",
                                       "AUDITOR_TEST_HOOK_DIR": str(hooks)})
    try:
        sup.current.wait_ready(90)
        wedged = sup.current
        feed.start()
        wait_until(lambda: reached(hooks, "after_send_offsets"), 60,
                   lambda: f"the daemon to wedge after send_offsets of its 3rd transaction: {sup.describe()}")
        saw_unhealthy = [False]

        def unhealthy_or_gone() -> bool:
            if wedged.alive() and wedged.get("/healthz")[0] not in (0, 200):
                saw_unhealthy[0] = True
            return bool(sup.exits)

        wait_until(unhealthy_or_gone, 90, lambda: f"the watchdog to end the wedged daemon: {sup.describe()}",
                   interval=0.5)
        assert sup.exits[0] == 4, f"a wedged main loop must exit 4 (watchdog): {sup.describe()}"
        sup.current.wait_ready(90)
        before = committed_count(setup.bootstrap, setup.audit)
        wait_audited(setup, before + 300, 90, "from the restarted daemon", describe=sup.describe)
        sent = drain_and_stop(setup, feed, sup, 120, stop_within=30)
        sup.assert_exits_documented()
    finally:
        feed.halt.set()
        sup.kill_all()
    assert sup.trail_dir is not None
    assert_trail_intact(setup, Expect(sent, setup.events), file_copies=[sup.trail_dir])
