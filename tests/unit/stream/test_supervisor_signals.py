"""The ``--processes`` supervisor with real child processes: signals, a frozen member, a deaf one,
members killed together, the parent killed, a stop requested while members start.

The parent is a real process running :class:`auditor.stream.supervisor.Supervisor` (this test's
own process must not install its signal handlers); its members are small Python programs that
behave as the daemon does at its edges: SIGTERM or SIGINT ends them with 0, after they have
written ``<i>.ready`` (so that no signal arrives before their handler), or they exit with a given
code, or ignore SIGTERM. The daemon itself is under the same supervisor in
tests/integration/test_run_processes.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor.cli import build_parser
from auditor.errors import ConfigError
from auditor.exitcodes import ExitCode
from auditor.stream.supervisor import _die_with, child_argv, common_run_argv, plan_members

MEMBER = r"""
import os, signal, sys, time
kind, where, index = sys.argv[1], sys.argv[2], sys.argv[3]
# as the daemon: SIGTERM and SIGINT blocked and taken with sigwait (no handler to race the exit)
stops = {signal.SIGTERM, signal.SIGINT} - ({signal.SIGTERM} if kind == "deaf" else set())
if kind == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, stops)
with open(os.path.join(where, f"{index}.ready"), "w") as fh:
    fh.write(str(os.getpid()))
if kind.startswith("exit"):  # once member 0 is ready (its SIGTERM must not find it starting)
    while not os.path.exists(os.path.join(where, "0.ready")):
        time.sleep(0.02)
    sys.exit(int(kind[4:]))
got = signal.sigtimedwait(stops, 120)
if got is None:
    sys.exit(99)
with open(os.path.join(where, f"{index}.signals"), "a") as fh:
    fh.write(f"{got.si_signo}\n")
sys.exit(0)
"""

PARENT = r"""
import json, os, signal, sys, time
from auditor.cli.boundary import run_command
from auditor.stream.supervisor import Supervisor, plan_members
kinds, where, member, timeout = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])

def argv_of(m):
    if kinds[m.index] == "term-parent":  # a SIGTERM that arrives while the members are being started
        while not os.path.exists(os.path.join(where, f"{m.index - 1}.ready")):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
    if kinds[m.index] == "unstartable":  # fork or exec fails (EAGAIN at the process limit, ENOMEM, ...)
        while not os.path.exists(os.path.join(where, f"{m.index - 1}.ready")):
            time.sleep(0.02)
        return [os.path.join(where, "no-such-program")]
    return [sys.executable, member, "daemon" if kinds[m.index] == "term-parent" else kinds[m.index],
            where, str(m.index)]

# as `auditor run` does: run_command turns an escaped KeyboardInterrupt into 130
sys.exit(run_command(lambda _: Supervisor(argv_of, plan_members(len(kinds), "t", 0, None), timeout).run(), None))
"""


class Parent:
    """The supervising parent of members of the given kinds, in its own session."""

    def __init__(self, tmp: Path, kinds: list[str], shutdown_timeout_s: float = 5.0) -> None:
        self.where = tmp
        (tmp / "member.py").write_text(MEMBER)
        (tmp / "parent.py").write_text(PARENT)
        self.log = tmp / "parent.log"
        self.kinds = kinds
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(tmp / "parent.py"), json.dumps(kinds), str(tmp),
                                          str(tmp / "member.py"), str(shutdown_timeout_s)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def describe(self) -> str:
        return f"parent exit {self.proc.poll()}; log:\n{self.log.read_text(errors='replace')[-3000:]}"

    def ready(self, index: int, timeout: float = 20.0) -> int:
        path = self.where / f"{index}.ready"
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text()):
            assert time.monotonic() < deadline, f"member {index} not ready: {self.describe()}"
            assert self.proc.poll() is None, f"the parent ended early: {self.describe()}"
            time.sleep(0.05)
        return int(path.read_text())

    def all_ready(self) -> list[int]:
        return [self.ready(i) for i in range(len(self.kinds))]

    def wait(self, timeout: float) -> tuple[int, float]:
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout}s: {self.describe()}") from None
        return code, time.monotonic() - start

    def signals_of(self, index: int) -> list[int]:
        path = self.where / f"{index}.signals"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def cleanup(self) -> None:
        for path in self.where.glob("*.ready"):
            if path.read_text():
                _kill(int(path.read_text()))
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _kill(pid: int) -> None:
    """SIGKILL a member left running, if ``pid`` is still one of this test's members."""
    with contextlib.suppress(OSError):
        if b"member.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (or stopped), not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def gone_within(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def parents(tmp_path):
    made: list[Parent] = []

    def make(kinds: list[str], shutdown_timeout_s: float = 5.0) -> Parent:
        p = Parent(tmp_path, kinds, shutdown_timeout_s)
        made.append(p)
        return p

    yield make
    for p in made:
        p.cleanup()


def test_sigterm_stops_every_member_and_the_group_exits_0(parents):
    p = parents(["daemon", "daemon"])
    pids = p.all_ready()
    p.proc.send_signal(signal.SIGTERM)
    code, _ = p.wait(10)
    assert code == 0, p.describe()
    assert gone_within(pids, 2)
    assert p.signals_of(0) == p.signals_of(1) == [signal.SIGTERM]


def test_a_frozen_member_is_woken_to_stop_instead_of_being_killed_after_the_bound(parents):
    """A member frozen (SIGSTOP) when the group is stopped: a SIGTERM stays pending until the
    process runs again, so the parent must send SIGCONT after it (as systemd does); before, it
    waited out its bound (shutdown_timeout_s + 5) and SIGKILLed the member: exit 137."""
    p = parents(["daemon", "daemon"], shutdown_timeout_s=5.0)
    pids = p.all_ready()
    os.kill(pids[0], signal.SIGSTOP)
    p.proc.send_signal(signal.SIGTERM)
    code, took = p.wait(20)
    assert code == 0, p.describe()
    assert took < 5, f"the group took {took:.1f}s to stop: the frozen member was not woken"
    assert p.signals_of(0) == [signal.SIGTERM], "the frozen member did not stop itself"


def test_a_member_deaf_to_sigterm_is_killed_after_the_bound_and_the_group_exits_4(parents):
    """A member that does not stop within shutdown_timeout_s (+ 5 s): SIGKILL, and the group's
    status is the documented one of a shutdown past its bound (4, the watchdog), not 137."""
    p = parents(["daemon", "deaf"], shutdown_timeout_s=1.0)
    pids = p.all_ready()
    p.proc.send_signal(signal.SIGTERM)
    code, took = p.wait(20)
    assert code == ExitCode.WATCHDOG, p.describe()
    assert 5 <= took < 10, took
    assert gone_within(pids, 2)
    assert "did not stop in time" in p.log.read_text()


def test_a_stop_requested_while_the_members_start_reaches_every_member(parents):
    """SIGTERM while the parent starts its members: none may be left running to be SIGKILLed after
    the bound (before: the members started after the signal never got it; exit 137 after 10 s)."""
    p = parents(["daemon", "term-parent", "daemon"], shutdown_timeout_s=5.0)
    first = p.ready(0)
    code, took = p.wait(20)
    assert code == 0, p.describe()
    assert took < 5, f"{took:.1f}s: a member started after the SIGTERM was left to the bound"
    started = [int(line.split("pid=")[1].split()[0]) for line in p.log.read_text().splitlines()
               if "process started" in line]
    assert first in started
    assert gone_within(started, 2)


def test_a_member_that_cannot_be_started_stops_the_started_ones_cleanly(parents):
    """The second member cannot be started (here: no such program; in life fork's EAGAIN or ENOMEM):
    the first, already auditing, must be stopped as on SIGTERM, not SIGKILLed mid-transaction
    (before: the parent's clean-up SIGKILLed it); the group exits 2 with the reason."""
    p = parents(["daemon", "unstartable"])
    first = p.ready(0)
    code, _ = p.wait(15)
    assert code == ExitCode.USAGE, p.describe()
    assert gone_within([first], 2)
    assert p.signals_of(0) == [signal.SIGTERM], f"member 0 was not stopped with SIGTERM: {p.describe()}"
    assert "no-such-program" in p.log.read_text(), p.describe()


def test_two_members_killed_at_once_end_the_group_with_137_and_stop_the_third(parents):
    p = parents(["daemon", "daemon", "daemon"])
    pids = p.all_ready()
    os.kill(pids[0], signal.SIGKILL)
    os.kill(pids[1], signal.SIGKILL)
    code, _ = p.wait(15)
    assert code == 128 + signal.SIGKILL, p.describe()
    assert gone_within(pids, 2)
    assert p.signals_of(2) == [signal.SIGTERM], "the surviving member was not stopped cleanly"


def test_a_member_that_exits_3_ends_the_group_with_3(parents):
    p = parents(["daemon", "exit3"])
    code, _ = p.wait(15)
    assert code == ExitCode.BROKER, p.describe()
    assert p.signals_of(0) == [signal.SIGTERM]


def test_sigint_twice_stops_the_group_once_with_0(parents):
    """Ctrl-C twice in a terminal: SIGINT to the whole process group, twice."""
    p = parents(["daemon", "daemon"])
    pids = p.all_ready()
    os.killpg(p.proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(p.proc.pid, signal.SIGINT)
    code, _ = p.wait(10)
    assert code == 0, p.describe()
    assert gone_within(pids, 2)
    assert "Traceback" not in p.log.read_text(), p.describe()


def test_ctrl_c_hammered_until_the_parent_exits_still_exits_0(parents):
    """SIGINT again and again until the parent is gone: one that lands after the supervisor is done
    must not turn a clean stop into 'interrupted' (before: the parent put the previous handlers
    back before it returned, and a late SIGINT raised KeyboardInterrupt: exit 130)."""
    p = parents(["daemon", "daemon"])
    pids = p.all_ready()
    sent = 0
    while p.proc.poll() is None:
        os.kill(p.proc.pid, signal.SIGINT)
        sent += 1
        time.sleep(0.0005)
    assert p.proc.returncode == 0, f"after {sent} SIGINTs: {p.describe()}"
    assert gone_within(pids, 2)


def test_members_of_a_parent_killed_with_sigkill_end(parents):
    p = parents(["daemon", "daemon"])
    pids = p.all_ready()
    p.proc.send_signal(signal.SIGKILL)
    p.wait(5)
    assert gone_within(pids, 5), "a member outlived its parent"
    assert p.signals_of(0) == p.signals_of(1) == [signal.SIGTERM], "not stopped by SIGTERM (PR_SET_PDEATHSIG)"


def test_a_member_whose_parent_died_before_it_asked_for_pdeathsig_exits_at_once():
    """Between fork and prctl(PR_SET_PDEATHSIG) the parent may die: the signal would then never
    come and the member would audit on as an orphan. The child checks that its parent is still the
    one that started it (here: a parent pid that is not its parent, as after re-parenting)."""
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                              preexec_fn=_die_with(os.getpid() + 4_000_000))
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=_die_with(os.getpid()))
    try:
        assert orphan.wait(10) == 0
        time.sleep(0.5)
        assert kept.poll() is None, "a member of a living parent exited"
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()


def test_an_abbreviated_processes_option_is_not_passed_on_to_the_members():
    """argparse accepts a unique prefix (``--proc 2``): a member given it would start members of
    its own, and each of those again (a fork bomb). The member's command line must say 1."""
    for given in (["--proc", "2"], ["--proc=2"], ["--processes", "2"], ["--processes=2"]):
        argv = ["run", "--config", "c.yaml", *given]
        (m,) = plan_members(1, "n", 0, None)
        child = child_argv(common_run_argv(argv, ("--instance-id", "--http-port", "--trail")), m)
        args = build_parser().parse_args(child[3:])
        assert args.processes == 1, (given, child)


def test_ports_past_65535_are_a_configuration_error_of_the_group():
    """http.port 65535 with 2 processes: the second member's port does not exist. The parent says
    so (before: the member failed on 'http.port (the command line)', which the user never gave)."""
    with pytest.raises(ConfigError, match="--processes 2"):
        plan_members(2, "a", 65535, None)
    assert [m.http_port for m in plan_members(2, "a", 65534, None)] == [65534, 65535]


@pytest.mark.parametrize(("given", "said"), [("0", "must be 1 or more, got 0"), ("-1", "must be 1 or more, got -1"),
                                              ("-3", "must be 1 or more, got -3"), ("two", "not a whole number")])
def test_processes_zero_negative_or_not_a_number_is_a_usage_error(given, said, capsys):
    """Exit 2 with one message; before, -1 was answered 'must be 0 or more' (0 is refused too)."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", f"--processes={given}"])
    assert exc.value.code == ExitCode.USAGE
    assert f"argument --processes: {said}" in capsys.readouterr().err
