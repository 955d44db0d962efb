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


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
