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
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.logging import get_logger

log = get_logger("auditor.supervisor")

_PR_SET_PDEATHSIG = 1


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
        raise ValueError("--processes must be at least 1")
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


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # not Linux: no prctl; the orchestrator's process-group kill still applies
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts the members, forwards signals, and ends the group when one member ends."""

    def __init__(self, common: Sequence[str], members: Sequence[Member], shutdown_timeout_s: float) -> None:
        self.common = list(common)
        self.members = list(members)
        self.grace = shutdown_timeout_s + 5.0
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _signal(self, signum: int, _frame: object) -> None:
        log.info("stopping every process", signal=signal.Signals(signum).name)
        self._stopping = True
        self._send(signal.SIGTERM)

    def _send(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for m in self.members:
                self.procs[m.index] = subprocess.Popen(child_argv(self.common, m), preexec_fn=_die_with_parent)
                log.info("process started", member=m.index, instance_id=m.instance_id, pid=self.procs[m.index].pid)
            first = self._wait_first()
            if not self._stopping:
                self._stopping = True
                log.error("a process ended on its own: stopping the others so the group restarts together",
                          member=first, exit_code=exit_code_of(self.procs[first].returncode))
                self._send(signal.SIGTERM)
            self._wait_all()
            codes = [exit_code_of(p.returncode) for p in self.procs.values()]
            # the first member to end decides, unless it was stopped by us and another failed
            code = exit_code_of(self.procs[first].returncode)
            return code if code else max(codes)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self._send(signal.SIGKILL)

    def _wait_first(self) -> int:
        while True:
            for index, proc in self.procs.items():
                if proc.poll() is not None:
                    return index
            time.sleep(0.2)

    def _wait_all(self) -> None:
        deadline = time.monotonic() + self.grace
        while any(p.poll() is None for p in self.procs.values()):
            if time.monotonic() > deadline:
                log.error("processes did not stop in time: killing them", grace_s=self.grace)
                self._send(signal.SIGKILL)
                for p in self.procs.values():
                    p.wait()
                return
            time.sleep(0.2)


def common_run_argv(argv: Sequence[str], own: Sequence[str]) -> list[str]:
    """``argv`` (this process's arguments, after the program name) without the options each child
    sets itself (``own``: option -> takes a value) and without ``--processes`` and
    ``--create-topics`` (the parent does that once)."""
    drop = {"--processes": True, "--create-topics": True, **{o: True for o in own}}
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop:
            skip = "=" not in arg and drop[name]
            continue
        out.append(arg)
    return out


def run_processes(n: int, instance_id: str, http_port: int, trail_dir: Path | None,
                  shutdown_timeout_s: float, argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = common_run_argv(argv, ("--instance-id", "--http-port", "--trail"))
    members = plan_members(n, instance_id, http_port, trail_dir)
    return Supervisor(common, members, shutdown_timeout_s).run()
