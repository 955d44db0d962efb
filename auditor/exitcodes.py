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


#: the exit codes of the daemon (``auditor run``), in the words its --help prints (README "Operations")
DAEMON_EXITS: dict[ExitCode, str] = {
    ExitCode.OK: "stopped cleanly",
    ExitCode.USAGE: "configuration error",
    ExitCode.BROKER: "fatal Kafka error (fenced by a newer instance with the same instance id, the broker "
                     "unreachable at start)",
    ExitCode.WATCHDOG: "the watchdog (the main loop stalled, a client call past its timeout plus "
                       "watchdog.call_margin_s, or a shutdown past shutdown_timeout_s)",
}


def daemon_exit_status() -> str:
    """The "exit status:" line of ``auditor run --help``, from :data:`DAEMON_EXITS`."""
    return "exit status: " + ", ".join(f"{int(code)} {what}" for code, what in DAEMON_EXITS.items()) + "."


def exit_code(exc: AuditorError) -> ExitCode:
    """The exit code of a command that failed with ``exc`` (the table above)."""
    if isinstance(exc, TrailCorruption):
        return ExitCode.FOUND  # the trail does not verify: the audit found something
    if isinstance(exc, BrokerError | TransientError):
        return ExitCode.BROKER
    return ExitCode.USAGE
