"""``auditor run --processes N``: what each child is given (the pure part of the supervisor)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from auditor.stream.supervisor import child_argv, common_run_argv, exit_code_of, plan_members


def test_members_get_their_own_instance_id_port_and_file_copy():
    members = plan_members(3, "node-7", 9400, Path("/var/trail"))
    assert [m.instance_id for m in members] == ["node-7-0", "node-7-1", "node-7-2"]
    assert [m.http_port for m in members] == [9400, 9401, 9402]
    assert [m.trail_dir for m in members] == [Path("/var/trail/node-7-0"), Path("/var/trail/node-7-1"),
                                             Path("/var/trail/node-7-2")]
    assert len({m.instance_id for m in members}) == 3  # distinct transactional ids: no mutual fencing


def test_port_zero_means_any_free_port_for_every_child_and_no_trail_stays_none():
    members = plan_members(2, "a", 0, None)
    assert [m.http_port for m in members] == [0, 0]
    assert [m.trail_dir for m in members] == [None, None]


def test_zero_processes_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        plan_members(0, "a", 0, None)


def test_the_parent_keeps_shared_options_and_drops_what_each_child_sets_itself():
    argv = ["--log-level", "info", "run", "--config", "c.yaml", "--processes", "2", "--instance-id", "x",
            "--http-port=9400", "--trail", "/t", "--create-topics", "3", "--keys", "/k"]
    common = common_run_argv(argv, ("--instance-id", "--http-port", "--trail"))
    assert common == ["--log-level", "info", "run", "--config", "c.yaml", "--keys", "/k"]


def test_child_command_line_is_a_whole_auditor_run():
    (m,) = plan_members(1, "n", 9400, Path("/t"))
    argv = child_argv(["run", "--config", "c.yaml"], m)
    assert argv[:3] == [sys.executable, "-m", "auditor"]
    assert argv[3:] == ["run", "--config", "c.yaml", "--instance-id", "n-0", "--http-port", "9400", "--trail", "/t/n-0"]


def test_a_child_killed_by_a_signal_reports_as_a_shell_does():
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143
    assert exit_code_of(4) == 4
    assert exit_code_of(0) == 0
