"""The schema registry, through confluent-kafka's own client (``confluent_kafka.schema_registry``).

The decoder needs one thing from a registry: the writer schema of a Confluent schema id, whose
fingerprint it then checks against the allow-list (:class:`auditor.events.wire.SchemaAllowList`).
:class:`ConfluentRegistry` answers that with ``SchemaRegistryClient.get_schema`` and translates
its failures at this one place:

- HTTP 404 (an unknown id) is a :class:`SchemaError` (``unknown_schema``): the input is
  dead-lettered;
- refused credentials (401/403), a server error, a timeout or an unreachable registry are a
  :class:`TransientError`: the daemon pauses and retries the batch, and nothing is dead-lettered.

It also keeps the registry's state for operators: :attr:`available` feeds ``/readyz`` (not ready
while the registry fails), ``auditor_schema_registry_up`` and
``auditor_schema_registry_errors_total{reason}`` the ``AuditorSchemaRegistryDown`` alert.
Credentials come from ``schemas.registry_basic_auth`` (``user:password``, a secret) or the URL's
user info; they are never logged or put in a message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from auditor.config import mask_url
from auditor.errors import ConfigError, SchemaError, TransientError
from auditor.logging import get_logger

log = get_logger("auditor.registry")

#: bounded values of the errors metric's ``reason`` label
REASONS = ("unreachable", "auth", "server", "not_found", "unreadable")


def _split_user_info(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), f"{parts.username}:{parts.password or ''}"


class ConfluentRegistry:
    """``schema_text(id)`` from a Confluent-compatible schema registry; see the module doc."""

    def __init__(self, url: str, basic_auth: str | None = None, *, timeout_s: float = 5.0,
                 client: Any | None = None,
                 on_state: Callable[[bool], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        plain, from_url = _split_user_info(url.rstrip("/"))
        self.url = plain
        self.label = mask_url(url) or plain
        auth = basic_auth or from_url
        if auth is not None and ":" not in auth:
            raise ConfigError("schemas.registry_basic_auth must be user:password "
                              "(AUDITOR_SCHEMAS_REGISTRY_BASIC_AUTH)")
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            conf: dict[str, Any] = {"url": plain, "timeout": timeout_s, "max.retries": 1}
            if auth is not None:
                conf["basic.auth.user.info"] = auth
            client = SchemaRegistryClient(conf)
        self._client = client
        self._lock = threading.Lock()
        self.available = True
        self.on_state, self.on_error = on_state, on_error

    def schema_text(self, schema_id: int) -> str:
        """The schema the registry holds under ``schema_id`` (its JSON text)."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            code = exc.http_status_code
            if code == 404:
                self._state(True)
                raise SchemaError(f"schema registry {self.label} does not know schema id {schema_id}",
                                  reason="unknown_schema") from None
            if code in (401, 403):
                self._fail("auth")
                raise TransientError(f"schema registry {self.label} refused the credentials (HTTP {code}): "
                                     "check schemas.registry_basic_auth (AUDITOR_SCHEMAS_REGISTRY_BASIC_AUTH)"
                                     ) from None
            if code is not None and 200 <= code < 300:  # it answered: not an outage
                if self.on_error is not None:
                    self.on_error("unreadable")
                self._state(True)
                raise SchemaError(f"schema registry {self.label} returned an unreadable answer for schema id "
                                  f"{schema_id}", reason="unknown_schema") from None
            self._fail("server")
            raise TransientError(f"schema registry {self.label} answered HTTP {code}") from None
        except (SchemaError, TransientError):
            raise
        except Exception as exc:  # the client's transport errors (connection, timeout, TLS)
            self._fail("unreachable")
            raise TransientError(f"schema registry {self.label} unreachable: {exc.__class__.__name__}") from None
        self._state(True)
        text = getattr(schema, "schema_str", None)
        if not isinstance(text, str):
            raise SchemaError(f"schema registry {self.label} returned no schema text for id {schema_id}",
                              reason="unknown_schema")
        return text

    def _fail(self, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(reason)
        self._state(False, reason)

    def _state(self, up: bool, reason: str | None = None) -> None:
        with self._lock:
            changed, self.available = self.available != up, up
        if changed:
            if up:
                log.info("schema registry available again", registry=self.label)
            else:
                log.warning("schema registry unavailable", registry=self.label, reason=reason)
        if self.on_state is not None:
            self.on_state(up)
