"""Structured logging, configured once by the entry point.

JSON lines on stderr when not on a terminal (daemons), readable key=value otherwise. A
processor drops keys that could carry personal data or secrets, as a safety net behind the
rule that we never log payloads, identifiers or secrets in the first place.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, MutableMapping

import structlog

#: Keys that must never reach a log line, whatever a caller passes.
FORBIDDEN_KEYS = frozenset({
    "subject", "subject_id", "actor_id", "payload", "event", "raw", "value", "password",
    "secret", "key", "hmac_key", "private_key", "sasl.password", "token",
})


def drop_sensitive(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace forbidden keys' values with a marker."""
    for k in list(event_dict):
        if k in FORBIDDEN_KEYS and k != "event":
            event_dict[k] = "[redacted]"
    return event_dict


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (tests swap it; a bound stream would go stale)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _BelowLevel(logging.Filter):
    """Drops a named logger's records below a level (librdkafka's, for one-shot commands)."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__()
        self.logger_name, self.level = name, level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != self.logger_name or record.levelno >= self.level


class _Repeats(logging.Filter):
    """Drops a line that repeats one of the same logger within ``window`` seconds (librdkafka says
    "Connection refused" about twenty times a second while a broker is down)."""

    def __init__(self, name: str, window: float = 30.0, size: int = 256) -> None:
        super().__init__()
        self.logger_name, self.window, self.size = name, window, size
        self.seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self.logger_name:
            return True
        # librdkafka's lines differ only in their client and thread prefix: compare the rest
        key = record.getMessage().split("]: ", 1)[-1]
        now = record.created
        last = self.seen.get(key)
        if last is not None and now - last < self.window:
            return False
        if len(self.seen) >= self.size:
            self.seen.clear()
        self.seen[key] = now
        return True


def configure_logging(level: str = "info", *, json: bool | None = None, kafka_level: str | None = None) -> None:
    """Configure structlog and the stdlib root logger once, in the entry point.

    ``kafka_level``: the least level of librdkafka's lines that reach stderr (default: ``level``).
    One-shot commands pass ``"debug"`` only when the user asked for debug, and hide them otherwise:
    their failure is reported as one line by the CLI's error boundary, with the cause librdkafka
    gave (recorded by :data:`auditor.config.CLIENT_ERRORS`, which sees every warning regardless).
    """
    from auditor.config import CLIENT_ERRORS, KAFKA_LOGGER

    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_sensitive,
        structlog.processors.format_exc_info,
    ]
    # Third-party stdlib loggers (librdkafka's, via confluent-kafka's ``logger`` setting) render
    # through the same processors, so every line on stderr is one structured record.
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]))
    handler.addFilter(_Repeats(KAFKA_LOGGER.name))
    if kafka_level is not None:
        handler.addFilter(_BelowLevel(KAFKA_LOGGER.name, _LEVELS.get(kafka_level, logging.CRITICAL + 1)))
    if CLIENT_ERRORS not in KAFKA_LOGGER.handlers:
        KAFKA_LOGGER.addHandler(CLIENT_ERRORS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "none": logging.CRITICAL + 1}


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
