"""``auditor run --processes N``: N members of one consumer group on one machine.

Python runs one event at a time per process, so one daemon uses one core. ``--processes N``
starts N whole ``auditor run`` processes that share nothing but the config: each has its own
instance id (``<instance_id>-<i>``, so its own transactional id), its own HTTP port
(``http.port + i``, or any free port when it is 0) and its own file copy of the trail
(``<trail_dir>/<instance_id>-<i>``; a file trail has one writer). Their chains and exactly-once
guarantees are therefore exactly those of N separate instances; Kafka's group protocol spreads the
partitions.

The parent only supervises: it forwards SIGTERM and SIGINT to every child, and when any child ends
on its own (a watchdog exit, a fatal Kafka error) it stops the others and exits with that child's
code, so the orchestrator restarts the group as it would restart a single daemon. Children get
SIGTERM if the parent dies (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps a transactional id.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import ConfigError
from auditor.exitcodes import ExitCode
from auditor.logging import get_logger

log = get_logger("auditor.supervisor")

_PR_SET_PDEATHSIG = 1
_MAX_PORT = 65535


@dataclass(frozen=True)
class Member:
    """What makes one child different from its siblings."""

    index: int
    instance_id: str
    http_port: int
    trail_dir: Path | None


def plan_members(n: int, instance_id: str, http_port: int, trail_dir: Path | None) -> list[Member]:
    """The N children: instance ids ``<id>-0`` .. ``<id>-(N-1)``, ports ``http_port + i`` (0 stays
    0: any free port), file copies in one sub-directory of ``trail_dir`` each."""
    if n < 1:
        raise ValueError("--processes must be at least 1")  # the command line refuses it first
    if http_port and http_port + n - 1 > _MAX_PORT:
        raise ConfigError(f"--processes {n} with http.port {http_port} needs ports up to {http_port + n - 1}, "
                          f"past {_MAX_PORT}: choose http.port at most {_MAX_PORT - n + 1}, or 0 for any free ports")
    return [Member(i, f"{instance_id}-{i}", http_port + i if http_port else 0,
                   trail_dir / f"{instance_id}-{i}" if trail_dir is not None else None) for i in range(n)]


def child_argv(common: Sequence[str], member: Member) -> list[str]:
    """The child's command line: ``common`` (global options, ``run`` and the options every child
    shares) plus what is its own."""
    argv = [sys.executable, "-m", "auditor", *common, "--instance-id", member.instance_id,
            "--http-port", str(member.http_port)]
    if member.trail_dir is not None:
        argv += ["--trail", str(member.trail_dir)]
    return argv


def exit_code_of(returncode: int) -> int:
    """A child's status as a shell reports it: a signal N becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: SIGTERM when the parent dies (Linux
    ``PR_SET_PDEATHSIG``), and an exit at once when it died before that was set (the child was
    already re-parented: the signal would never come)."""

    def preexec() -> None:
        # not Linux: no prctl; the orchestrator's process-group kill still applies
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(int(ExitCode.OK))

    return preexec


class Supervisor:
    """Starts the members, forwards signals, and ends the group when one member ends.

    The signal handlers only note the signal; the loop (every 0.2 s) sends SIGTERM and then SIGCONT
    to every member (a frozen member gets its SIGTERM only once it runs again: systemd does the
    same), so nothing is written from a signal handler. ``run`` is the last thing its process does:
    it leaves SIGTERM and SIGINT ignored, so a late Ctrl-C cannot turn a clean stop into
    "interrupted" (Python puts the default handlers back while it finalizes; ignored stays ignored)."""

    def __init__(self, argv_of: Callable[[Member], list[str]], members: Sequence[Member],
                 shutdown_timeout_s: float) -> None:
        self.argv_of = argv_of
        self.members = list(members)
        self.grace = shutdown_timeout_s + 5.0
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._requested: int | None = None  # the first SIGTERM/SIGINT received

    def _signal(self, signum: int, _frame: object) -> None:
        if self._requested is None:
            self._requested = signum

    def _stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                    proc.send_signal(signal.SIGCONT)

    def _kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in self.procs.values():
            proc.wait()

    def run(self) -> int:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._signal)
        try:
            try:
                self._start()
            except Exception:
                # a member that cannot be started (fork's EAGAIN, ENOMEM, ...): the ones already
                # auditing stop as on SIGTERM, within the bound, before the error is reported
                self._stop_all()
                deadline = time.monotonic() + self.grace
                while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
                    time.sleep(0.2)
                raise
            return self._supervise()
        finally:
            self._kill_all()  # only after an error of the supervisor itself: every member has ended otherwise
            for s in (signal.SIGTERM, signal.SIGINT):  # ignored from now on, also while Python finalizes
                signal.signal(s, signal.SIG_IGN)

    def _start(self) -> None:
        for m in self.members:
            if self._requested is not None:
                log.info("stop requested while starting: not starting the others", started=len(self.procs))
                return
            self.procs[m.index] = subprocess.Popen(self.argv_of(m), preexec_fn=_die_with(os.getpid()))
            log.info("process started", member=m.index, instance_id=m.instance_id, pid=self.procs[m.index].pid)

    def _supervise(self) -> int:
        """Until every member has ended; the group's exit status."""
        first: int | None = None  # the member that ended on its own, if one did before any stop request
        deadline: float | None = None
        killed = False
        while True:
            ended = [i for i, p in self.procs.items() if p.poll() is not None]
            if deadline is None and self._requested is not None:
                log.info("stopping every process", signal=signal.Signals(self._requested).name)
            elif deadline is None and ended:
                first = ended[0]
                log.error("a process ended on its own: stopping the others so the group restarts together",
                          member=first, exit_code=exit_code_of(self.procs[first].returncode))
            if deadline is None and (self._requested is not None or ended):
                deadline = time.monotonic() + self.grace
                self._stop_all()
            if len(ended) == len(self.procs):
                break
            if deadline is not None and time.monotonic() > deadline:
                log.error("processes did not stop in time: killing them", grace_s=self.grace,
                          members=[i for i, p in self.procs.items() if p.poll() is None],
                          exit_code=int(ExitCode.WATCHDOG))
                self._kill_all()
                killed = True
                break
            time.sleep(0.2)
        return self._status(first, killed)

    def _status(self, first: int | None, killed: bool) -> int:
        """The member that ended on its own decides; a member killed past the shutdown bound makes
        it 4 (the watchdog's code: a shutdown past its bound); otherwise the worst member's, where a
        member that the SIGTERM sent to it ended before it could handle it (while it was starting)
        has stopped as asked."""
        if first is not None and self.procs[first].returncode:
            return exit_code_of(self.procs[first].returncode)
        if killed:
            return int(ExitCode.WATCHDOG)
        return max((0 if p.returncode == -signal.SIGTERM else exit_code_of(p.returncode)
                    for p in self.procs.values()), default=0)


def common_run_argv(argv: Sequence[str], own: Sequence[str]) -> list[str]:
    """``argv`` (this process's arguments, after the program name) without the options each child
    sets itself (``own``, each of which takes a value) and without ``--processes`` and
    ``--create-topics`` (the parent does that once).

    An option is dropped under any name argparse took it by: a unique prefix (``--proc 2``) too.
    A child given ``--proc 2`` would start children of its own, and each of those again."""
    drop = ("--processes", "--create-topics", *own)
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if len(name) > 2 and name.startswith("--") and any(o.startswith(name) for o in drop):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def run_processes(n: int, instance_id: str, http_port: int, trail_dir: Path | None,
                  shutdown_timeout_s: float, argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = common_run_argv(argv, ("--instance-id", "--http-port", "--trail"))
    members = plan_members(n, instance_id, http_port, trail_dir)
    return Supervisor(lambda m: child_argv(common, m), members, shutdown_timeout_s).run()
