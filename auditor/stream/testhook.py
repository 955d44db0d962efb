"""``AUDITOR_TEST_HOOK``: freeze, kill or wedge the daemon at one step of its commit sequence.

Test-only. ``AUDITOR_TEST_HOOK="<step>:<action>[:<nth>]"`` is read once when the daemon is built
and acts the nth time (default 1) the commit sequence reaches ``<step>``. Several rules may be
given, comma-separated (``after_send_offsets:stop:8,after_commit:kill:8``: a zombie that, once
woken, commits and dies before it can rejoin the group):

========  ===================================================================================
action    what happens
========  ===================================================================================
stop      write ``$AUDITOR_TEST_HOOK_DIR/<step>.reached`` (when that variable is set), then
          SIGSTOP the whole process: a zombie, frozen until SIGCONT
kill      the same file, then SIGKILL the process
hang      the same file, then block the main thread in a C call that never returns and that
          no Python signal handler can interrupt (like a librdkafka call that outlives its
          own timeout); the daemon's other threads keep running
========  ===================================================================================

Steps: ``after_begin``, ``after_produce``, ``in_send_offsets``, ``after_send_offsets``,
``after_commit``, ``after_heads``; with ``batch.pipeline`` the three of steps 3-4 act on the commit
worker thread, and ``next_processed`` acts on the main thread once the next batch, taken while
this transaction was on the worker, is processed (the transaction still running if the batch came
full, else over and settled first), before that batch's own transaction begins. ``in_send_offsets``
acts inside the watchdog's watch of the ``send_offsets_to_transaction`` call, before the client is
called: ``hang`` there is a client call that outlives its own timeout (the watchdog's call rule);
``hang`` after a step is a loop that makes no progress outside any call (its stall rule).
``in_close_hanging`` (attr) acts in :meth:`Ownership._close_hanging`, the transaction that aborts a
hanging transaction of ours: after its messages were delivered (and its offsets sent), before its
abort. Unset,
the hook is ``None`` and the commit sequence does not call it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import ConfigError

STEPS = ("after_begin", "after_produce", "in_send_offsets", "after_send_offsets", "after_commit", "after_heads",
         "next_processed", "in_close_hanging")
ACTIONS = ("stop", "kill", "hang")
ENV, DIR_ENV = "AUDITOR_TEST_HOOK", "AUDITOR_TEST_HOOK_DIR"


@dataclass
class HookRule:
    step: str
    action: str
    nth: int = 1
    reached: int = field(default=0, init=False)

    @classmethod
    def parse(cls, spec: str) -> HookRule:
        parts = spec.strip().split(":")
        nth = 1
        if len(parts) == 3 and parts[2].isdigit() and int(parts[2]) >= 1:
            nth = int(parts[2])
        elif len(parts) != 2:
            raise ConfigError(f"{ENV}={spec!r}: expected <step>:<action>[:<nth>], nth a whole number >= 1")
        step, action = parts[0], parts[1]
        if step not in STEPS:
            raise ConfigError(f"{ENV}={spec!r}: step must be one of {', '.join(STEPS)}")
        if action not in ACTIONS:
            raise ConfigError(f"{ENV}={spec!r}: action must be one of {', '.join(ACTIONS)}")
        return cls(step, action, nth)


@dataclass
class TestHook:
    __test__ = False  # not a pytest class

    rules: tuple[HookRule, ...]
    directory: Path | None = None

    @property
    def spec(self) -> str:
        return ",".join(f"{r.step}:{r.action}:{r.nth}" for r in self.rules)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TestHook | None:
        env = os.environ if env is None else env
        spec = env.get(ENV, "").strip()
        if not spec:
            return None
        rules = tuple(HookRule.parse(part) for part in spec.split(","))
        directory = Path(env[DIR_ENV]) if env.get(DIR_ENV) else None
        return cls(rules, directory)

    def __call__(self, step: str) -> None:
        for rule in self.rules:
            if rule.step == step:
                rule.reached += 1
                if rule.reached == rule.nth:
                    self._act(step, rule.action)

    def _act(self, step: str, action: str) -> None:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{step}.reached").write_bytes(b"")
        if action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            _wedge()


def _wedge() -> None:
    """Lock a fresh pthread mutex twice: blocks in C forever, with the GIL released and no EINTR."""
    libc = ctypes.CDLL(None, use_errno=True)
    mutex = ctypes.create_string_buffer(128)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)
