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


def run_cli(*args: str | Path, timeout: float = 120, cwd: Path | None = None, stdin: bytes | None = None,
            env: dict[str, str] | None = None, memory: int = MEMORY_LIMIT) -> Result:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    p = subprocess.run([sys.executable, "-m", "auditor", *map(str, args)], input=stdin, capture_output=True,
                       timeout=timeout, cwd=cwd, env={**base, **(env or {})}, preexec_fn=limit)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def assert_one_line_error(r: Result, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one 'auditor: error' line holding every needle."""
    assert r.code == code, (r.code, r.err[-2000:])
    assert "Traceback" not in r.err and "Traceback" not in r.out, r.err[-2000:]
    lines = r.error_lines
    assert len(lines) == 1, r.err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
