"""``auditor run --processes N`` on a real broker: members of one consumer group, each with its own
instance id, sharing the partitions; exactly once across them; SIGTERM stops the group; a member
that dies takes the group down with its status, so the orchestrator restarts it.

And an SRE's worst day: a member frozen between send_offsets and commit while the group is
stopped, two members SIGKILLed at once, the parent SIGKILLed, Ctrl-C twice, a member that cannot
bind its HTTP port, more members than partitions. After each, the group is started again (as an
orchestrator would) and in the end every event has exactly one audit record and the chains verify
(the fault suite's independent reader, its file-copy check and ``auditor verify``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

import fastavro
import pytest
from daemonkit import (
    DaemonProcess,
    Feeder,
    PacedFeeder,
    Sent,
    Setup,
    TopicTail,
    assert_exactly_once,
    fault_suite_only,
    group_assignments,
    group_members,
    make_setup,
    mixed_events,
    read_audit,
    wait_until,
)

from auditor.events.model import Event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from faultkit import Expect, assert_trail_intact, endless, reached  # noqa: E402

pytestmark = pytest.mark.kafka

# The longest attack scenarios (@fault_suite_only) run with the full fault suite (AUDITOR_FAULTS=all,
# README "Fault suite"), not in every CI run: together about 5 of this file's 9.5 minutes at load 11,
# and one ([briefly]) once timed out in CI with 1,436 of 2,310 events audited after the restart (passed
# on re-run; not explained yet). The supervisor behaviour they found is also covered by the
# real-process tests in tests/unit/stream/test_supervisor_signals.py.


class PartitionFeeder(Feeder):
    """A feeder that sends round-robin to the given partitions only (all of them until set)."""

    partitions: list[int] | None = None

    def send(self, item: Event | bytes | None, partition: int | None = None) -> None:
        if partition is None and self.partitions:
            partition = self.partitions[self.count % len(self.partitions)]
        super().send(item, partition)


class Group(DaemonProcess):
    """The parent ``auditor run --processes n`` (instance id ``grp``: members ``grp-0`` ..)."""

    def __init__(self, setup: Setup, n: int, env: dict[str, str] | None = None, http_port: int = 0) -> None:
        # a second --http-port wins over DaemonProcess's 0 (any free port for every member)
        super().__init__(setup, "grp", env, args=["--processes", str(n), "--http-port", str(http_port)])
        self.n = n

    def child_pids(self) -> dict[str, int]:
        """instance id -> pid of each member started."""
        return {d["instance_id"]: int(d["pid"]) for d in self.events("process started")}

    def started(self, timeout: float = 90.0) -> dict[str, int]:
        """Until every member has logged "auditor started"; their pids."""
        wait_until(lambda: len(self.events("auditor started")) >= self.n or self.proc.poll() is not None,
                   timeout, self.describe)
        assert self.proc.poll() is None, self.describe()
        return self.child_pids()

    def ended(self, code: int, timeout: float, what: str) -> None:
        """The group exits with ``code`` within ``timeout`` and no member outlives it."""
        got = self.wait_exit(timeout, what)
        assert got == code, f"exit {got} {what}, expected {code}: {self.describe()}"
        left = _gone(list(self.child_pids().values()), 10)
        assert not left, f"members {left} outlived the group {what}: {self.describe()}"

    def kill_all(self) -> None:
        """The test's own clean-up: SIGKILL the parent and every member it logged."""
        for pid in self.child_pids().values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.kill()


class Day:
    """Groups started one after another (as an orchestrator restarts them) on one setup, under one
    paced stream; ``finish`` starts the last group, which must audit everything sent, and
    ``check`` counts the trail."""

    def __init__(self, setup: Setup, seed: int, rate: float) -> None:
        self.setup = setup
        self.feeder = PartitionFeeder(setup.bootstrap, setup.events)
        self.feed = PacedFeeder(self.feeder, iter(endless(seed)), rate=rate)
        self.groups: list[Group] = []
        self.sent: list[Sent] = []

    def start(self, n: int, env: dict[str, str] | None = None) -> tuple[Group, dict[str, int]]:
        group = Group(self.setup, n, env)
        self.groups.append(group)
        pids = group.started()
        wait_until(lambda: group_members(self.setup) == n, 90,
                   lambda: f"{n} group members holding partitions; {group.describe()}")
        return group, pids

    def finish(self, n: int) -> None:
        assert self.feed.flowing, "the feeder stopped"
        group, _ = self.start(n)
        self.feeder.partitions = None  # every partition again
        self.sent = self.feed.finish()
        with TopicTail(self.setup.bootstrap, self.setup.audit) as tail:
            tail.wait_for(len(self.sent), 180, f"every event audited after the restart; {group.describe()}")
        group.proc.send_signal(signal.SIGTERM)
        group.ended(0, 40, "after SIGTERM")

    def check(self, n: int) -> None:
        """Nothing lost, nothing doubled, chains link, each file copy mirrors the topic, verify passes."""
        assert self.setup.trail_dir is not None
        copies = [c for c in (self.setup.trail_dir / f"grp-{i}" for i in range(n)) if _holds_records(c)]
        assert copies, "no member's file copy holds a record"
        assert_trail_intact(self.setup, Expect(self.sent, self.setup.events), console=False, file_copies=copies)

    def __enter__(self) -> Day:
        return self

    def __exit__(self, *exc: object) -> None:
        self.feed.halt.set()
        for g in self.groups:
            g.kill_all()


def _holds_records(trail: Path) -> bool:
    """A member that never held a partition with events has a file copy without records."""
    for segment in sorted((trail / "segments").glob("*.avro")):
        with segment.open("rb") as fh:
            if next(iter(fastavro.reader(fh)), None) is not None:
                return True
    return False


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie not yet reaped by its (dead) parent counts as gone."""
    return _state(pid) not in ("Z", "gone")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return "gone"


def _gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after ``timeout`` seconds (none, when every one ended)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_two_processes_share_the_partitions_exactly_once_and_stop_together(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=4, trail=True)
    events = mixed_events(1200, seed=31)
    group = Group(setup, 2)
    try:
        group.started()
        started = group.events("auditor started")
        assert len({d["http_port"] for d in started}) == 2, "the two members share an HTTP port"
        wait_until(lambda: group_members(setup) == 2, 60,
                   lambda: f"2 group members holding partitions; {group.describe()}")
        feeder = Feeder(kafka_bootstrap, setup.events)
        feeder.send_all(events)
        feeder.flush()
        with TopicTail(kafka_bootstrap, setup.audit) as tail:
            tail.wait_for(len(events), 120, "every event audited by the group")
        assert len(group.child_pids()) == 2
        group.proc.send_signal(signal.SIGTERM)
        group.ended(0, 40, "after SIGTERM")
    finally:
        group.kill_all()
    entries = read_audit(kafka_bootstrap, setup.audit)
    assert_exactly_once(entries, feeder.sent, setup.events)
    assert {e.record.instance_id for e in entries} == {"grp-0", "grp-1"}, "one member audited everything"
    # each member kept its own file copy
    assert sorted(p.name for p in setup.trail_dir.iterdir() if p.is_dir()) == ["grp-0", "grp-1"]  # type: ignore[union-attr]


def test_a_member_that_dies_stops_the_group_with_its_status(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    group = Group(setup, 2)
    try:
        first, _ = group.started().values()
        os.kill(first, signal.SIGKILL)
        group.ended(128 + signal.SIGKILL, 40, "after a member was SIGKILLed")
        assert group.events("a process ended on its own: stopping the others so the group restarts together")
    finally:
        group.kill_all()


@pytest.mark.faults
@fault_suite_only
@pytest.mark.parametrize("past_session", [False, True], ids=["briefly", "past-the-session-timeout"])
def test_a_member_frozen_between_send_offsets_and_commit_stops_with_the_group(kafka_bootstrap, tmp_path,
                                                                               past_session):
    """SIGTERM to the group while one member is frozen (SIGSTOP) after send_offsets_to_transaction
    and before commit. Before: its SIGTERM stayed pending, the parent SIGKILLed it after
    shutdown_timeout_s + 5 s and exited 137. Now it is woken (SIGCONT), commits and stops: exit 0.
    ``past_session``: frozen until its session (10 s) expired and the other member holds all the
    partitions, waiting for the frozen member's open transaction (KIP-447) when it is woken.
    Then the group is started again: nothing lost, nothing doubled, chains verify."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=4, trail=True, batch_max_events=200)
    hooks = tmp_path / "hooks"
    with Day(setup, seed=41, rate=200) as day:
        group, pids = day.start(2, {"AUDITOR_TEST_HOOK": "after_send_offsets:stop:3",
                                    "AUDITOR_TEST_HOOK_DIR": str(hooks)})
        # events only to grp-0's partitions: only grp-0 runs transactions, so only it freezes
        day.feeder.partitions = group_assignments(setup)["auditor-grp-0"]
        day.feed.start()
        wait_until(lambda: reached(hooks, "after_send_offsets"), 90,
                   lambda: f"grp-0 to freeze after send_offsets of its 3rd transaction; {group.describe()}")
        wait_until(lambda: _state(pids["grp-0"]) == "T", 10, "grp-0 stopped (SIGSTOP)")
        if past_session:
            wait_until(lambda: list(group_assignments(setup)) == ["auditor-grp-1"], 60,
                       lambda: f"grp-1 alone in the group; {group.describe()}")
        group.proc.send_signal(signal.SIGTERM)
        group.ended(0, 60, "after SIGTERM with a frozen member")
        day.finish(2)
    day.check(2)


@pytest.mark.faults
@fault_suite_only
def test_members_killed_together_the_parent_killed_and_ctrl_c_twice(kafka_bootstrap, tmp_path):
    """Three members under a paced stream: two SIGKILLed at once (the group exits 137 and stops the
    third); started again and the parent SIGKILLed (every member ends: SIGTERM from the kernel when
    its parent dies, no orphan keeps auditing under its transactional id); started again and Ctrl-C
    twice to the process group (exit 0). Then nothing lost, nothing doubled, chains verify."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=4, trail=True, batch_max_events=200)
    with Day(setup, seed=42, rate=150) as day:
        day.feed.start()
        group, pids = day.start(3)
        os.kill(pids["grp-0"], signal.SIGKILL)
        os.kill(pids["grp-1"], signal.SIGKILL)
        group.ended(128 + signal.SIGKILL, 60, "after two members were SIGKILLed")

        group, pids = day.start(3)
        group.proc.send_signal(signal.SIGKILL)
        group.proc.wait(10)
        left = _gone(list(pids.values()), 40)
        assert not left, f"members {left} outlived their parent: {group.describe()}"

        group, pids = day.start(3)
        os.killpg(group.proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(group.proc.pid, signal.SIGINT)
        group.ended(0, 60, "after Ctrl-C twice")
        day.finish(3)
    day.check(3)


def test_a_member_that_cannot_bind_its_port_stops_the_group_with_2(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    with socket.socket() as taken, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        taken.bind(("0.0.0.0", base + 1))  # the second member's port
        taken.listen()
        group = Group(setup, 2, http_port=base)
        try:
            group.ended(2, 90, "with the second member's port taken")
            assert f"port {base + 1} is already in use" in group.log_path.read_text(), group.describe()
        finally:
            group.kill_all()


def test_more_members_than_partitions(kafka_bootstrap, tmp_path):
    """Three members, two partitions: one member holds none. Every event is still audited once."""
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=2, trail=False)
    group = Group(setup, 3)
    try:
        group.started()
        wait_until(lambda: group_members(setup) == 2, 90, lambda: f"2 members holding partitions; {group.describe()}")
        feeder = Feeder(kafka_bootstrap, setup.events)
        feeder.send_all(mixed_events(400, seed=43))
        with TopicTail(kafka_bootstrap, setup.audit) as tail:
            tail.wait_for(len(feeder.sent), 120, f"every event audited; {group.describe()}")
        group.proc.send_signal(signal.SIGTERM)
        group.ended(0, 40, "after SIGTERM")
    finally:
        group.kill_all()
    assert_exactly_once(read_audit(kafka_bootstrap, setup.audit), feeder.sent, setup.events)
