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

import json
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from daemonkit import Feeder, Setup, make_setup, mixed_events, wait_until
from faultkit import Daemon, Expect, assert_trail_intact, configure, reached, read_committed

from auditor.stream.restore import stable_offsets
from auditor.stream.topics import checkpoint_topic_of

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

#: the restarted daemons' transaction timeout and settle time: a transaction open longer than 10 + 3 s
#: is hanging (the frozen daemon A keeps the default 60 s: its transaction must outlive two broker stops)
FAST = {"AUDITOR_TRANSACTION_TIMEOUT_MS": "10000", "AUDITOR_RESTORE_SETTLE_TIMEOUT_S": "3",
        "AUDITOR_RESTORE_RETRY_S": "1"}
OUTPUTS = ("audit", "checkpoints", "violations", "dead-letter")


def _stop_cleanly(broker: Any) -> None:
    broker.send_signal(signal.SIGTERM)
    wait_until(lambda: not broker.is_running(), 90, "the broker to stop after SIGTERM")


def _partition_dirs(data: Path, setup: Setup, revert: tuple[str, ...]) -> list[str]:
    topics = {"audit": setup.audit, "checkpoints": checkpoint_topic_of(setup.audit),
              "violations": setup.violations, "dead-letter": setup.dead_letter,
              "__consumer_offsets": "__consumer_offsets"}
    names = [topics[r] for r in revert]
    return sorted(d.name for d in data.iterdir() if d.is_dir() and d.name.rsplit("-", 1)[0] in names)


def _open_gaps(setup: Setup, partitions: int) -> dict[int, int]:
    """Per audit partition, high watermark minus last stable offset (asked again while a broker that
    just started answers with a stale leader epoch)."""
    out: dict[int, int] = {}

    def asked() -> bool:
        admin = AdminClient(setup.admin_conf)
        try:
            for p in range(partitions):
                stable, high = stable_offsets(admin, setup.audit, p, 10)
                out[p] = high - stable
        except KafkaException:
            return False
        return True

    wait_until(asked, 60, "the audit partitions' offsets")
    return out


def make_hanging(broker: Any, tmp_path: Path, *, partitions: int, revert: tuple[str, ...],
                 instance_id: str = "hang") -> tuple[Setup, Feeder]:
    """A setup whose instance ``instance_id`` left a transaction hanging on the partitions of ``revert``
    (its records there open for good, the coordinator done with it). The broker is running again."""
    bootstrap = broker.bootstrap_servers
    for attempt in range(1, 4):
        # A's records are sent by librdkafka's own thread; on a loaded machine send_offsets can return
        # (and the hook freeze the whole process) before they reach the broker: then they never will
        # while A is frozen, and the attempt starts again with fresh topics (seen 1 in 5 at load ~18)
        work = tmp_path / f"attempt-{attempt}"
        work.mkdir()
        setup = make_setup(work, bootstrap, partitions=partitions, trail=True, batch_max_events=40)
        configure(setup, {"batch": {"pipeline": False}})
        hooks = work / "hooks"
        feeder = Feeder(bootstrap, setup.events)
        feeder.send_all(mixed_events(400, seed=71))
        a = Daemon(setup, instance_id, {"AUDITOR_TEST_HOOK": "after_send_offsets:stop:4,after_commit:kill:4",
                                        "AUDITOR_TEST_HOOK_DIR": str(hooks), "AUDITOR_TRAIL_DIR": str(work / "trail-a"),
                                        "AUDITOR_TRANSACTION_TIMEOUT_MS": "300000"})
        wait_until(lambda h=hooks: reached(h, "after_send_offsets"), 90,
                   lambda d=a: f"A to freeze: {d.describe()}")
        try:
            wait_until(lambda s=setup: any(_open_gaps(s, partitions).values()), 20,
                       "the frozen transaction's records on an audit partition")
            break
        except AssertionError:
            a.kill()
            if attempt == 3:
                raise
    try:
        data = Path(broker.work_dir) / "data"
        _stop_cleanly(broker)
        snapshot = tmp_path / "snapshot"
        shutil.copytree(data, snapshot)
        broker.restart()
        a.signal(signal.SIGCONT)  # it commits that transaction, then the hook kills it
        assert a.wait_exit(90, "A committing its frozen transaction") == -signal.SIGKILL, a.describe()
        # commit_transaction returns at PREPARE_COMMIT: the markers, then COMPLETE_COMMIT, come after it
        wait_until(lambda: not any(_open_gaps(setup, partitions).values()), 60, "the commit's markers")
        time.sleep(5)
        _stop_cleanly(broker)
        for name in _partition_dirs(data, setup, revert):
            shutil.rmtree(data / name)
            shutil.copytree(snapshot / name, data / name)
        broker.restart()
    finally:
        a.kill()
    time.sleep(5)  # a coordinator that had not completed the commit would write its markers by now
    gaps = _open_gaps(setup, partitions)
    assert any(gaps.values()), f"no audit partition holds the transaction open after the revert: {gaps}"
    return setup, feeder


def violations_seen_once(setup: Setup) -> None:
    """Each input's violation message, and each dead letter, visible once to a read_committed reader."""
    sources: Counter[str] = Counter()
    for _p, _o, _key, value, _h in read_committed(setup.bootstrap, setup.violations):
        sources[json.loads(value)["source"]] += 1
    doubled = sorted(s for s, n in sources.items() if n > 1)
    assert sources, "no violation at all: the scenario proves nothing"
    assert not doubled, (f"{len(doubled)} of {len(sources)} inputs have their violation visible twice, "
                         f"e.g. {doubled[:3]}")


def _run_to_end(setup: Setup, feeder: Feeder, daemons: list[Daemon], more: int = 200) -> None:
    feeder.send_all(mixed_events(more, seed=72))
    total = feeder.count

    def audited() -> bool:
        raw = read_committed(setup.bootstrap, setup.audit, timeout=10, lower_bound=True)
        return len(raw) >= total

    wait_until(audited, 120, lambda: f"{total} inputs audited: " + "\n".join(d.describe() for d in daemons))


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
        _run_to_end(setup, feeder, daemons)
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
        _run_to_end(setup, feeder, [c, b])
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
        _run_to_end(setup, feeder, [b])
        assert b.terminate(30) == 0, b.describe()
    finally:
        b.kill()
    violations_seen_once(setup)
    assert_trail_intact(setup, Expect(feeder.sent, setup.events), console=False)
