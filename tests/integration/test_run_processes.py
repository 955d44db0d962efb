"""``auditor run --processes 2`` on a real broker: two members of one consumer group, each with
its own instance id, sharing the partitions; exactly once across both; SIGTERM stops the group;
a member that dies takes the group down with its status, so the orchestrator restarts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from daemonkit import Feeder, Setup, TopicTail, assert_exactly_once, make_setup, mixed_events, read_audit, wait_until

pytestmark = pytest.mark.kafka


class Group:
    def __init__(self, setup: Setup, n: int) -> None:
        self.log_path = setup.work / "group.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
        cmd = [sys.executable, "-m", "auditor", "--log-level", "info", "run", "--config", str(setup.config_path),
               "--instance-id", "grp", "--http-port", "0", "--processes", str(n)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def lines(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == event:
                out.append(doc)
        return out

    def describe(self) -> str:
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        return f"group (exit {self.proc.poll()}); log tail:\n{tail}"

    def child_pids(self) -> list[int]:
        return [int(d["pid"]) for d in self.lines("process started")]

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by its (dead) parent counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def _members(setup: Setup) -> int:
    """Group members that hold partitions (a member that joined but whose cooperative rebalance has
    not handed it any yet does not count: events sent then are all audited by the other one)."""
    admin = AdminClient(setup.admin_conf)
    (future,) = admin.describe_consumer_groups([setup.group]).values()
    return sum(1 for m in future.result(10).members
               if m.assignment is not None and m.assignment.topic_partitions)


def test_two_processes_share_the_partitions_exactly_once_and_stop_together(kafka_bootstrap, tmp_path):
    setup = make_setup(tmp_path, kafka_bootstrap, partitions=4, trail=True)
    events = mixed_events(1200, seed=31)
    group = Group(setup, 2)
    try:
        wait_until(lambda: len(group.lines("auditor started")) == 2 or group.proc.poll() is not None, 90,
                   group.describe)
        started = group.lines("auditor started")
        assert group.proc.poll() is None, group.describe()
        assert len({d["http_port"] for d in started}) == 2, "the two members share an HTTP port"
        wait_until(lambda: _members(setup) == 2, 60, lambda: f"2 group members holding partitions; {group.describe()}")
        feeder = Feeder(kafka_bootstrap, setup.events)
        feeder.send_all(events)
        feeder.flush()
        with TopicTail(kafka_bootstrap, setup.audit) as tail:
            tail.wait_for(len(events), 120, "every event audited by the group")
        pids = group.child_pids()
        assert len(pids) == 2
        group.proc.send_signal(signal.SIGTERM)
        assert group.proc.wait(40) == 0, group.describe()
        assert not any(_alive(p) for p in pids), "a member outlived the group"
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
        wait_until(lambda: len(group.lines("auditor started")) == 2 or group.proc.poll() is not None, 90,
                   group.describe)
        first, second = group.child_pids()
        os.kill(first, signal.SIGKILL)
        assert group.proc.wait(40) == 128 + signal.SIGKILL, group.describe()
        wait_until(lambda: not _alive(second), 10, "the surviving member to stop")
        assert group.lines("a process ended on its own: stopping the others so the group restarts together")
    finally:
        group.kill_all()
