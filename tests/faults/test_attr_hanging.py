"""attr: hanging transactions of the daemon's own producer, made on a real broker.

Kafka 4.3.1's coordinator can complete a transaction without writing its markers (README "Hanging
transactions"). The broker here is made to do the same, deterministically: daemon A is frozen
after ``send_offsets_to_transaction`` of a transaction (its records and pending offsets are in the
logs), the broker is stopped cleanly and its data copied, the broker is restarted and A commits
that transaction and is killed; then the broker is stopped again and the partitions named by
``revert`` are put back as they were in the copy (the transaction's records there open, no
marker) while the coordinator's ``__transaction_state`` keeps COMPLETE_COMMIT. That is the state
the SIGKILLed broker left in test_broker_sigkill_and_restart (sk-7): a transaction of ours that no
one will ever close.

- ``revert`` without ``__consumer_offsets``: the group's offsets committed, the audit records
  hidden (the attx case: the chain ends before the committed offset);
- with ``__consumer_offsets``: the pending offsets hang too (the restore's committed-offset fetch
  never becomes stable).

Every scenario ends with every input audited once (the independent reader), the chains verified,
each violation and each dead letter visible once to a read_committed reader.
"""

from __future__ import annotations

import signal
import time

import pytest
from daemonkit import wait_until
from faultkit import Daemon, Expect, assert_trail_intact, reached
from hangkit import FAST, OUTPUTS, make_hanging, run_to_end, violations_seen_once

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


@pytest.mark.parametrize("killed", [False, True], ids=["once", "killed-inside-the-abort"])
def test_hanging_offsets_and_records_of_a_one_partition_daemon_are_aborted(own_broker, tmp_path, killed):
    """Gap (a): the pending offsets hang too, and no later transaction of ours closes them (one
    partition): the restore must not wait on "not stable" for ever. Gap (b): the violations and dead
    letters of the hidden inputs are aborted with them, so the inputs audited again have theirs once.
    ``killed``: B is SIGKILLed inside that abort (offsets sent, not aborted); C's init_transactions ends
    it, and with it the hanging offsets and records (the same producer's ABORT markers)."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=(*OUTPUTS, "__consumer_offsets"))
    hooks = tmp_path / "hooks-b"
    hook = {"AUDITOR_TEST_HOOK": "in_close_hanging:kill", "AUDITOR_TEST_HOOK_DIR": str(hooks)} if killed else {}
    b = Daemon(setup, "hang", {**FAST, **hook, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-b")})
    daemons = [b]
    try:
        if killed:
            assert b.wait_exit(90, "B killed inside its abort") == -signal.SIGKILL, b.describe()
            daemons.append(Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-c")}))
        run_to_end(setup, feeder, daemons)
        assert daemons[-1].terminate(30) == 0, daemons[-1].describe()
    finally:
        for d in daemons:
            d.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)


@pytest.mark.parametrize("action", ["kill", "stop"])
def test_daemon_killed_or_frozen_inside_its_abort_of_a_hanging_transaction(own_broker, tmp_path, action):
    """attx's case (group offsets committed, audit records hidden), and the daemon that aborts it dies
    (or freezes, and a second process of the same instance id fences it) between the abort
    transaction's produce and its abort. The next process's init_transactions aborts that
    transaction: the hidden records are gone, no transaction is open, and the chain still ends before
    the committed offset. It must audit them again, not stay paused for good."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=OUTPUTS)
    hooks = tmp_path / "hooks-b"
    b = Daemon(setup, "hang", {**FAST, "AUDITOR_TEST_HOOK": f"in_close_hanging:{action}",
                               "AUDITOR_TEST_HOOK_DIR": str(hooks), "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-b")})
    c: Daemon | None = None
    try:
        wait_until(lambda: reached(hooks, "in_close_hanging"), 90,
                   lambda: f"B to abort the hanging transaction: {b.describe()}")
        c = Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-c")})
        if action == "kill":
            assert b.wait_exit(10, "B killed at the hook") == -signal.SIGKILL
        c.port  # noqa: B018 - started: its producer has fenced B
        if action == "stop":
            time.sleep(3)
            b.signal(signal.SIGCONT)  # the zombie wakes: fenced, it exits 3
            assert b.wait_exit(60, "the fenced zombie B") == 3, b.describe()
        run_to_end(setup, feeder, [c, b])
        assert c.terminate(30) == 0, c.describe()
    finally:
        b.kill()
        if c is not None:
            c.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)


def test_violations_and_dead_letters_of_inputs_audited_again_are_visible_once(own_broker, tmp_path):
    """Gap (b), attx's case (group offsets committed, audit records hidden) with nothing else going on:
    the abort must take the hanging transaction's violations and dead letters with it. On main it
    touched the audit and checkpoint partitions only: the inputs audited again committed their
    violations next to the hanging ones (the same marker closed both)."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=OUTPUTS)
    b = Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-b")})
    try:
        run_to_end(setup, feeder, [b])
        assert b.terminate(30) == 0, b.describe()
    finally:
        b.kill()
    violations_seen_once(setup)
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
