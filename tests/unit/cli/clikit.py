"""Run the real ``auditor`` command in a subprocess with bounded time and memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: address space a command may use (RLIMIT_AS): generous for Python + librdkafka + fastavro,
#: far below what the hostile inputs would take unbounded (a deflate bomb wants 1 GB and more)
MEMORY_LIMIT = 768 * 1024 * 1024


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("auditor:")]


class Running:
    """A command started by :func:`start_cli`; :meth:`result` waits for it (bounded) and reads its output."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes | None, timeout: float) -> None:
        self.proc, self.stdin, self.timeout = proc, stdin, timeout
        self._result: Result | None = None

    def result(self) -> Result:
        if self._result is None:
            try:
                out, err = self.proc.communicate(self.stdin, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise
            self._result = Result(self.proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        return self._result

    def stop(self) -> None:
        """Kill it if still running (a test that failed before reading its result)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def start_cli(*args: str | Path, timeout: float = 120, cwd: Path | None = None, stdin: bytes | None = None,
              env: dict[str, str] | None = None, memory: int = MEMORY_LIMIT) -> Running:
    """Start the command and return at once: commands that only wait (for a broker that never
    answers) can then wait side by side. ``timeout`` counts from the call to :meth:`Running.result`."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    proc = subprocess.Popen([sys.executable, "-m", "auditor", *map(str, args)],
                            stdin=subprocess.PIPE if stdin is not None else None,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env={**base, **(env or {})},
                            preexec_fn=limit)
    return Running(proc, stdin, timeout)


def run_cli(*args: str | Path, timeout: float = 120, cwd: Path | None = None, stdin: bytes | None = None,
            env: dict[str, str] | None = None, memory: int = MEMORY_LIMIT) -> Result:
    return start_cli(*args, timeout=timeout, cwd=cwd, stdin=stdin, env=env, memory=memory).result()


def assert_one_line_error(r: Result, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one 'auditor: error' line holding every needle."""
    assert r.code == code, (r.code, r.err[-2000:])
    assert "Traceback" not in r.err and "Traceback" not in r.out, r.err[-2000:]
    lines = r.error_lines
    assert len(lines) == 1, r.err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
