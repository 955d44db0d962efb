"""The one error tree of auditor.

    AuditorError
    ├── ConfigError          bad configuration or missing keys; says what to fix
    ├── DecodeError          input that cannot be decoded into an Event (dead-lettered)
    │   └── SchemaError      unknown or disallowed writer schema
    ├── PolicyError          a pack that cannot be loaded, or fails lint
    ├── TrailError           trail I/O problems
    │   └── TrailCorruption  tampering or damage found by verification
    ├── LedgerError          the subject ledger's store cannot be opened, read or written
    ├── BrokerError          Kafka problems that are not retried away
    └── TransientError       a dependency is briefly unavailable (registry, broker): pause, retry

Third-party exceptions are translated at one boundary with ``raise ... from exc``.
Errors carry their context (file, line, topic, partition, offset, seq) as attributes.
"""

from __future__ import annotations


class AuditorError(Exception):
    """Base of every error auditor raises on purpose."""


class ConfigError(AuditorError):
    """Configuration is missing or invalid; the message says what to fix."""


class DecodeError(AuditorError):
    """Input could not be decoded into an Event.

    ``reason`` is a short, bounded machine label (used as a metric label and a
    dead-letter header); the message is human-readable and never contains payloads.
    """

    def __init__(self, message: str, *, reason: str = "invalid", source: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        return f"{where}{super().__str__()}"


class SchemaError(DecodeError):
    """The writer schema is unknown or not allow-listed."""


class PolicyError(AuditorError):
    """A policy pack could not be loaded or failed validation."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.path is None:
            return super().__str__()
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {super().__str__()}"


class PolicyLintError(PolicyError):
    """A pack has one or more lint findings; ``findings`` lists them all."""

    def __init__(self, findings: list[PolicyError]) -> None:
        super().__init__("\n".join(str(f) for f in findings))
        self.findings = findings

    def __str__(self) -> str:
        return "\n".join(str(f) for f in self.findings)


class TrailError(AuditorError):
    """The trail could not be read or written."""


class TrailCorruption(TrailError):
    """Verification found the trail altered or damaged at ``seq``."""

    def __init__(self, message: str, *, chain: str | None = None, seq: int | None = None,
                 expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(message)
        self.chain = chain
        self.seq = seq
        self.expected = expected
        self.actual = actual


class LedgerError(AuditorError):
    """The subject ledger's on-disk store failed; ``path`` names it. It is rebuilt from the facts topic."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class BrokerError(AuditorError):
    """A Kafka error that retrying does not cure."""


class TransientError(AuditorError):
    """A dependency is unavailable for now; the caller pauses and retries, never dead-letters."""
