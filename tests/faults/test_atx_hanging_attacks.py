"""atx (session 10): attacks on the daemon's abort of a hanging transaction of its own producer
(attr's 39e49d0: resume only on proof from the log; the offsets abort of a one-partition daemon sends
an offset; the abort touches every violations and dead-letter partition). made on a real broker with
hangkit.make_hanging (see test_attr_hanging.py for how the hanging transaction is made).

Each scenario ends as attr's do: every input audited once (the independent reader), the chains and
the file copies verified, each violation and dead letter visible once to a read_committed reader."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from daemonkit import Setup, wait_until
from faultkit import Daemon, Expect, assert_trail_intact, reached
from hangkit import FAST, OUTPUTS, make_hanging, run_to_end, violations_seen_once

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

#: longer than the consumer session (10 s) and than the restarted daemons' transaction timeout (10 s)
FROZEN_S = 25


def frozen_in_the_abort(setup: Setup, tmp_path: Path) -> Daemon:
    """Instance ``hang`` again (B), which freezes inside its abort of the hanging transaction (its
    messages delivered, offsets sent when it sends any, not aborted)."""
    return Daemon(setup, "hang", {**FAST, "AUDITOR_TEST_HOOK": "in_close_hanging:stop",
                                  "AUDITOR_TEST_HOOK_DIR": str(tmp_path / "hooks-b"),
                                  "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-b")})


def test_frozen_alone_between_the_offsets_abort_send_offsets_and_its_abort(own_broker, tmp_path):
    """Gap (a), one partition: B sends the group's offset in its abort transaction and freezes before
    aborting it, alone (no process takes over). Meanwhile its session ends and the coordinator aborts
    that transaction by its timeout (bumping the producer's epoch). B wakes: it must not be left in
    the group with a dead producer; either it goes on and audits everything, or it exits (3 or 4) and
    the next process does."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=(*OUTPUTS, "__consumer_offsets"))
    b = frozen_in_the_abort(setup, tmp_path)
    daemons = [b]
    try:
        wait_until(lambda: reached(tmp_path / "hooks-b", "in_close_hanging"), 120,
                   lambda: f"B to abort the hanging offsets: {b.describe()}")
        time.sleep(FROZEN_S)
        b.signal(signal.SIGCONT)
        try:
            run_to_end(setup, feeder, daemons)
        except AssertionError:
            assert not b.alive(), f"B woke, is alive and audits nothing: {b.describe()}"
            assert b.proc.returncode in (3, 4), b.describe()
            daemons.append(Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-c")}))
            run_to_end(setup, feeder, daemons, more=0)
        last = daemons[-1]
        print(f"B after waking: {'alive' if b.alive() else f'exit {b.proc.returncode}'}")
        assert last.terminate(30) == 0, last.describe()
    finally:
        for d in daemons:
            d.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)


def test_frozen_inside_the_offsets_abort_and_fenced_by_its_successor(own_broker, tmp_path):
    """Gap (a), one partition, as attr's [stop] case but in the offsets abort: B frozen after sending
    the offset, C (same instance id) fences it and must end both the abort and the hanging offsets."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=(*OUTPUTS, "__consumer_offsets"))
    b = frozen_in_the_abort(setup, tmp_path)
    c: Daemon | None = None
    try:
        wait_until(lambda: reached(tmp_path / "hooks-b", "in_close_hanging"), 120,
                   lambda: f"B to abort the hanging offsets: {b.describe()}")
        c = Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-c")})
        c.port  # noqa: B018 - started: its producer has fenced B
        time.sleep(3)
        b.signal(signal.SIGCONT)
        assert b.wait_exit(60, "the fenced zombie B") == 3, b.describe()
        run_to_end(setup, feeder, [c, b])
        assert c.terminate(30) == 0, c.describe()
    finally:
        b.kill()
        if c is not None:
            c.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)


@pytest.mark.parametrize("then", ["c-stays", "c-killed"])
def test_another_instance_takes_the_partition_while_the_abort_is_frozen(own_broker, tmp_path, then):
    """attx's case (offsets committed, audit records hidden): B freezes inside its abort (messages
    delivered, not aborted), its session ends and instance C (another instance id: it cannot end our
    producer's transactions) is given the partition. The coordinator aborts B's abort transaction by
    its timeout (10 s), and its ABORT marker ends the hanging transaction too (the same producer): C
    finds the proof in the log and audits again from the chain's visible end. B, woken, is fenced (the
    timeout bumped its producer's epoch) and exits 3 (seen: both cases, 12:04-12:07).
    ``c-stays``: C holds the partition when B wakes. ``c-killed``: C is SIGKILLed before B wakes (a
    second rebalance during the abort): the partition goes back to B, which exits 3; its restart
    (instance ``hang`` again) audits the rest."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=OUTPUTS)
    b = frozen_in_the_abort(setup, tmp_path)
    daemons = [b]
    try:
        wait_until(lambda: reached(tmp_path / "hooks-b", "in_close_hanging"), 120,
                   lambda: f"B to abort the hanging transaction: {b.describe()}")
        c = Daemon(setup, "other", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-c")})
        daemons.append(c)
        wait_until(lambda: any(e.get("event") == "partitions assigned; restoring their chains" and e.get("partitions")
                               for e in c.log_lines()), 90, lambda: f"C given the partition: {c.describe()}")
        time.sleep(FROZEN_S)
        if then == "c-killed":
            c.kill()
        b.signal(signal.SIGCONT)
        assert b.wait_exit(60, "B woken after its abort transaction timed out") == 3, b.describe()
        if then == "c-killed":
            daemons.append(Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-d")}))
        run_to_end(setup, feeder, daemons)
        assert daemons[-1].terminate(30) == 0, daemons[-1].describe()
    finally:
        for d in daemons:
            d.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)


def test_offsets_hanging_alone_while_the_records_committed(own_broker, tmp_path):
    """Partial markers (a broker of a cluster back without some of a commit's markers): the transaction's
    audit records, checkpoint, violations and dead letters committed, its offsets hanging (only the
    group's offsets partition put back). attr left it for a cluster; one broker makes it too."""
    setup, feeder = make_hanging(own_broker, tmp_path, partitions=1, revert=("__consumer_offsets",),
                                 records_open=False)
    b = Daemon(setup, "hang", {**FAST, "AUDITOR_TRAIL_DIR": str(tmp_path / "trail-b")})
    try:
        run_to_end(setup, feeder, [b])
        assert b.terminate(30) == 0, b.describe()
    finally:
        b.kill()
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
    violations_seen_once(setup)
