"""The one table of process exit codes, for every command and the daemon.

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     success
1     the audit found something: a violation (``--fail-on-violation``) or a trail, proof or
      evidence that does not verify
2     a usage or configuration error; the message says what to fix
3     a broker, network or authentication error (the daemon: a fatal Kafka error, e.g. fenced)
4     a watchdog stopped the daemon: shutdown exceeded its bound, or the main loop stalled
70    an internal error: a bug (the message says so; ``--log-level debug`` logs the traceback)
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations

from enum import IntEnum

from auditor.errors import AuditorError, BrokerError, TrailCorruption, TransientError


class ExitCode(IntEnum):
    OK = 0
    FOUND = 1
    USAGE = 2
    BROKER = 3
    WATCHDOG = 4
    INTERNAL = 70
    INTERRUPTED = 130


def exit_code(exc: AuditorError) -> ExitCode:
    """The exit code of a command that failed with ``exc`` (the table above)."""
    if isinstance(exc, TrailCorruption):
        return ExitCode.FOUND  # the trail does not verify: the audit found something
    if isinstance(exc, BrokerError | TransientError):
        return ExitCode.BROKER
    return ExitCode.USAGE
