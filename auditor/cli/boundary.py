"""The command line's one error boundary, like httpx's ``map_httpcore_exceptions``.

Every command runs through :func:`run_command`. Whatever it raises becomes one line on stderr that
says what to fix, and the exit code comes from :func:`auditor.exitcodes.exit_code`; no traceback
reaches a user (``--log-level debug`` logs it). Third-party errors are translated here:

- Kafka client errors (``KafkaException``, found by duck typing so that only ``auditor.stream``
  imports confluent-kafka) become :class:`BrokerError` with the real cause, read from what
  librdkafka reported while the call was failing (:data:`auditor.config.CLIENT_ERRORS`): a refused
  SASL password says "authentication failed", not "cannot reach"; a bad client property is a
  :class:`ConfigError`;
- ``OSError`` (a port in use, a missing or unreadable file, a full disk) becomes a
  :class:`ConfigError` naming the file or the setting;
- anything else is a bug: one line saying so, exit 70.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from auditor.config import CLIENT_ERRORS
from auditor.errors import AuditorError, BrokerError, ConfigError
from auditor.exitcodes import ExitCode, exit_code
from auditor.logging import get_logger

log = get_logger("auditor.cli")

#: Facts a command learnt before failing that make a message precise (the port it bound, ...).
FACTS: dict[str, Any] = {}

_MAX_LINE = 2000

_AUTH = ("SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION")
_AUTHZ = ("TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED",
          "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "DELEGATION_TOKEN_AUTHORIZATION_FAILED")
_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("auth", re.compile(r"SASL authentication error|Authentication failed|invalid credentials|"
                        r"SASL (?:PLAIN|SCRAM)[^:]*: .*fail|authentication failure", re.I)),
    ("authz", re.compile(r"not authorized|AUTHORIZATION_FAILED", re.I)),
    ("tls", re.compile(r"SSL handshake failed|certificate verify failed|ssl\.|SSL routines|_SSL", re.I)),
    ("resolve", re.compile(r"Failed to resolve|_RESOLVE|Name or service not known", re.I)),
    ("protocol", re.compile(r"Disconnected while requesting ApiVersion|might be caused by incorrect "
                            r"security\.protocol|ApiVersionRequest failed|connection closed by peer", re.I)),
    ("refused", re.compile(r"Connection refused|Connect to .* failed|Network is unreachable|"
                           r"No route to host|Connection timed out", re.I)),
)


class SkipBad:
    """The good items of decoded rows (``row.error`` None, the item under ``row.<attr>``), in order;
    each bad row is said on stderr (``skipped: <error>``) and counted in :attr:`bad`. Lazy, so that
    ``bad`` is known once the items have been used (by ``convert`` and ``produce``)."""

    def __init__(self, rows: Iterable[Any], attr: str) -> None:
        self.rows, self.attr, self.bad = rows, attr, 0

    def __iter__(self) -> Iterator[Any]:
        for row in self.rows:
            if row.error is not None:
                self.bad += 1
                print(f"skipped: {row.error}", file=sys.stderr)
            elif (item := getattr(row, self.attr)) is not None:
                yield item


def note(**facts: Any) -> None:
    """Remember facts for error messages (e.g. ``note(bootstrap="k:9092", http_port=9400)``)."""
    FACTS.update({k: v for k, v in facts.items() if v is not None})


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run one command; return its exit code. The only place a command's exception is turned into
    a message."""
    try:
        with map_exceptions():
            return int(func(args) or 0)
    except AuditorError as exc:
        print(f"auditor: error: {one_line(str(exc))}", file=sys.stderr)
        return int(exit_code(exc))
    except BrokenPipeError:
        _quiet_stdout()  # output piped into head & co.: not an error
        return int(ExitCode.OK)
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so in one line; the traceback only at debug level
        log.debug("internal error", exc_info=True)
        print(f"auditor: internal error: {exc.__class__.__name__}: {one_line(str(exc), 300)}. "
              "This is a bug; please report it with the output of the same command run with "
              "--log-level debug.", file=sys.stderr)
        return int(ExitCode.INTERNAL)


@contextmanager
def map_exceptions() -> Iterator[None]:
    """Translate third-party exceptions into the auditor's error tree, keeping the cause."""
    try:
        yield
    except BrokerError as exc:
        drain_clients(exc)
        better = _refine_broker(exc)
        if better is exc:
            raise
        raise better from exc
    except (AuditorError, BrokenPipeError):
        raise  # a closed stdout (output piped into head) is not an error: run_command ends quietly
    except OSError as exc:
        raise translate_os_error(exc) from exc
    except MemoryError as exc:
        raise ConfigError("out of memory; the input is too large for this machine or hostile") from exc
    except RecursionError as exc:
        raise ConfigError("input nested too deeply to process") from exc
    except Exception as exc:
        kafka = kafka_error_of(exc)
        if kafka is None:
            raise
        drain_clients(exc)
        raise translate_kafka_error(*kafka) from exc


# ---------------------------------------------------------------- Kafka

def kafka_error_of(exc: BaseException) -> tuple[str, str] | None:
    """(error name, text) of a confluent-kafka ``KafkaException`` or ``KafkaError``, else None."""
    err: Any = exc.args[0] if type(exc).__name__ == "KafkaException" and exc.args else exc
    if callable(getattr(err, "name", None)) and callable(getattr(err, "str", None)) and \
            callable(getattr(err, "code", None)):
        return str(err.name()), str(err.str())
    return None


_POLLABLE = ("Producer", "AdminClient", "_AdminClientImpl")


def drain_clients(exc: BaseException) -> None:
    """Serve the pending callbacks of the Kafka clients in the failing frames.

    librdkafka hands its logs and ``error_cb`` reports over only when the application polls the
    client, and a blocking call that fails (``list_topics``, ``flush``) leaves the real cause
    queued. The clients are found as locals of the frames the exception passed through (its cause
    chain too); producers and admin clients are polled once with no wait (a consumer is not: a
    poll could consume a message, and its errors arrive with its own polls anyway).
    """
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and len(seen) < 64:
        tb = chain.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                if type(value).__name__ in _POLLABLE and id(value) not in seen and \
                        type(value).__module__ in ("cimpl", "confluent_kafka.admin"):
                    seen.add(id(value))
                    try:
                        value.poll(0)
                    except Exception:  # noqa: S112 - best effort: only to read the cause
                        continue
            tb = tb.tb_next
        chain = chain.__cause__ or chain.__context__


def _recorded_cause(*own: tuple[str, str]) -> tuple[str, str] | None:
    """The most telling error librdkafka reported lately (or the failing call's ``own``): (kind, text)."""
    texts: list[tuple[str, str]] = list(own)
    for err in CLIENT_ERRORS.errors:
        kafka = kafka_error_of(err) if not isinstance(err, str) else None
        texts.append(kafka if kafka is not None else ("", str(err)))
    for kind, pattern in _CAUSES:
        for name, text in reversed(texts):
            if (kind == "auth" and name in _AUTH) or (kind == "authz" and name in _AUTHZ) or \
                    pattern.search(f"{name} {text}"):
                return kind, _clean(text)
    return None


def _clean(text: str) -> str:
    # "%3|1796|FAIL|rdkafka#producer-1| [thrd:...]: host:port/bootstrap: Connect to ..." -> the tail
    text = re.sub(r"^\[thrd:[^\]]*\]:\s*", "", text.strip())
    text = re.sub(r"^\S+/(?:bootstrap|\d+):\s*", "", text)
    return one_line(text, 300)


def translate_kafka_error(name: str, text: str, bootstrap: str | None = None) -> AuditorError:
    """A Kafka client error as an error that names the real cause and the setting to fix."""
    bootstrap = bootstrap or FACTS.get("bootstrap") or CLIENT_ERRORS.bootstrap or "the configured brokers"
    if name == "_INVALID_ARG" or "configuration property" in text.lower():
        return ConfigError(f"Kafka client configuration: {text}. Fix kafka.properties "
                           f"(or AUDITOR_KAFKA_PROPERTIES__<NAME>)")
    if name in _AUTH:
        return _explain("auth", text, bootstrap)
    if name in _AUTHZ:
        return _explain("authz", text, bootstrap)
    cause = _recorded_cause((name, text))
    if cause is not None:
        return _explain(cause[0], cause[1], bootstrap)
    if name in ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_RESOLVE", "_MSG_TIMED_OUT"):
        return _explain("refused", text, bootstrap)
    return BrokerError(f"Kafka at {bootstrap}: {text} ({name})")


def _explain(kind: str, cause: str, bootstrap: str) -> BrokerError:
    fix_servers = "kafka.bootstrap_servers (--bootstrap-servers, AUDITOR_KAFKA_BOOTSTRAP_SERVERS)"
    messages = {
        "auth": f"authentication failed at Kafka {bootstrap}: {cause}. Check kafka.properties "
                "sasl.mechanism, sasl.username and sasl.password (AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD)",
        "authz": f"not authorized by Kafka {bootstrap}: {cause}. Grant this principal the ACLs on the "
                 "topics and group it uses, or fix topics.* and kafka.group_id",
        "tls": f"TLS with Kafka {bootstrap} failed: {cause}. Check kafka.properties security.protocol "
               "and ssl.ca.location (and the broker's certificate name)",
        "resolve": f"cannot resolve the Kafka address {bootstrap}: {cause}. Check {fix_servers}",
        "protocol": f"Kafka {bootstrap} accepted the connection but not this client's protocol: {cause}. "
                    "Check kafka.properties security.protocol (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL) "
                    "and sasl.mechanism",
        "refused": f"cannot reach Kafka at {bootstrap}: {cause}. Check that the broker runs and that "
                   f"{fix_servers} names it",
    }
    return BrokerError(messages[kind])


def _refine_broker(exc: BrokerError) -> BrokerError:
    """A BrokerError raised elsewhere ("cannot reach Kafka ...") with the real cause when known."""
    cause = _recorded_cause()
    wraps_client_error = exc.__cause__ is not None and kafka_error_of(exc.__cause__) is not None
    # "refused" is only trusted for an error that wraps the client's own failure: a broker that was
    # briefly unreachable earlier is not the cause of, say, a missing topic
    if cause is None or (cause[0] == "refused" and not wraps_client_error):
        return exc
    return _explain(cause[0], cause[1], FACTS.get("bootstrap") or CLIENT_ERRORS.bootstrap or "the brokers")


# ---------------------------------------------------------------- OS

def translate_os_error(exc: OSError) -> AuditorError:
    what = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        port = FACTS.get("http_port")
        which = f"port {port}" if port else "the metrics port"
        return ConfigError(f"{which} is already in use by another process: choose another with --http-port "
                           "or http.port (AUDITOR_HTTP_PORT), or 0 for any free port")
    if exc.errno in (errno.EADDRNOTAVAIL,):
        return ConfigError(f"cannot listen on http.host {FACTS.get('http_host', '')}: {what}; use an address "
                           "of this machine or 0.0.0.0")
    name = exc.filename
    if exc.errno == errno.ENOSPC:
        return ConfigError(f"no space left on the device{f' writing {name}' if name else ''}; free space and "
                           "run again")
    if name is not None:
        return ConfigError(f"cannot use {name}: {what}")
    return ConfigError(f"input/output error: {what}")


# ---------------------------------------------------------------- helpers

def one_line(text: str, limit: int = _MAX_LINE) -> str:
    text = "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quiet_stdout() -> None:
    with suppress(OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of the exit


def _at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (a record's seq, a count)."""
    return _at_least(text, 0)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return _at_least(text, 1)
