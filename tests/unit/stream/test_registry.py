"""The schema registry through confluent-kafka's SchemaRegistryClient: authentication, outages
that show in readiness and metrics, and what each failure means for the input."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from auditor.errors import SchemaError, TransientError
from auditor.events.codec import event_to_mapping, load_schema
from auditor.events.wire import EventDecoder, SchemaAllowList, encode_confluent
from auditor.metrics import build_metrics
from auditor.stream.registry import ConfluentRegistry

USER, PASSWORD = "auditor", "s3cret-registry-pw"


class _Handler(BaseHTTPRequestHandler):
    """A Confluent-compatible registry: ids 1-99 are the bundled event schema, basic auth required."""

    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        auth = self.headers.get("Authorization")
        _Handler.requests.append((self.path, auth))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if auth != expected:
            return self._answer(401, {"error_code": 401, "message": "Unauthorized"})
        schema_id = int(self.path.split("?")[0].rsplit("/", 1)[1])
        if schema_id >= 100:
            return self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        return self._answer(200, {"schema": json.dumps(load_schema("privacy_event.avsc"))})

    def _answer(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture
def server() -> Iterator[_Server]:
    _Handler.requests = []
    s = _Server(_free_port())
    s.start()
    yield s
    s.stop()


def _value(schema_id: int) -> bytes:
    from auditor.events.codec import event_from_mapping

    doc = {"event_id": "ev-1", "occurred_at": "2026-01-15T10:00:00Z", "kind": "USE", "policy_id": "ipasar",
           "source_system": "crm", "actor": {"type": "EMPLOYEE", "id": "e-1", "role": "billing"},
           "subject": {"id": "u-1"}, "data_categories": ["contact_information"], "purpose": "billing"}
    return encode_confluent(event_to_mapping(event_from_mapping(doc)), schema_id)


def test_basic_auth_from_the_config_reaches_the_registry(server):
    allow = SchemaAllowList(registry_url=f"http://127.0.0.1:{server.port}", registry_basic_auth=f"{USER}:{PASSWORD}")
    assert isinstance(allow.registry, ConfluentRegistry)  # confluent-kafka's client, not our own HTTP code
    decoded = EventDecoder(allow).decode(_value(41))
    assert decoded.event.event_id == "ev-1"
    assert [p for p, _ in _Handler.requests] == ["/schemas/ids/41"]
    EventDecoder(allow).decode(_value(41))
    assert len(_Handler.requests) == 1  # cached by id


def test_credentials_in_the_url_work_and_are_masked(server):
    registry = ConfluentRegistry(f"http://{USER}:{PASSWORD}@127.0.0.1:{server.port}")
    assert PASSWORD not in registry.label and PASSWORD not in registry.url
    assert json.loads(registry.schema_text(3))["name"].endswith("PrivacyEvent")


def test_refused_credentials_are_transient_name_the_setting_and_hide_the_secret(server):
    states: list[bool] = []
    errors: list[str] = []
    registry = ConfluentRegistry(f"http://127.0.0.1:{server.port}", f"{USER}:wrong-{PASSWORD}",
                                 on_state=states.append, on_error=errors.append)
    with pytest.raises(TransientError) as info:
        registry.schema_text(1)
    assert "HTTP 401" in str(info.value) and "registry_basic_auth" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert registry.available is False and states[-1] is False and errors == ["auth"]


def test_an_unknown_id_is_a_schema_error_not_an_outage(server):
    registry = ConfluentRegistry(f"http://127.0.0.1:{server.port}", f"{USER}:{PASSWORD}")
    with pytest.raises(SchemaError) as info:
        registry.schema_text(404)
    assert info.value.reason == "unknown_schema" and registry.available


def test_an_outage_shows_in_readiness_and_metrics_and_clears_on_recovery():
    port = _free_port()  # nothing listens yet
    metrics = build_metrics(CollectorRegistry())
    from auditor.stream.app import watch_registry

    allow = SchemaAllowList(registry_url=f"http://127.0.0.1:{port}", registry_basic_auth=f"{USER}:{PASSWORD}")

    class _Daemon:
        ready_checks: list = []

    daemon = _Daemon()
    watch_registry(allow, metrics, daemon)  # type: ignore[arg-type]
    labels = {"registry": f"http://127.0.0.1:{port}"}
    sample = metrics.registry.get_sample_value
    assert sample("auditor_schema_registry_up", labels) == 1 and all(c() for c in daemon.ready_checks)
    with pytest.raises(TransientError, match="unreachable"):
        EventDecoder(allow).decode(_value(7))
    assert sample("auditor_schema_registry_up", labels) == 0
    assert sample("auditor_schema_registry_errors_total", {"reason": "unreachable"}) == 1
    assert not all(c() for c in daemon.ready_checks)
    server = _Server(port)
    server.start()
    try:
        assert EventDecoder(allow).decode(_value(7)).event.event_id == "ev-1"
    finally:
        server.stop()
    assert sample("auditor_schema_registry_up", labels) == 1 and all(c() for c in daemon.ready_checks)


def test_no_registry_configured_exports_no_up_sample():
    metrics = build_metrics(CollectorRegistry())
    from prometheus_client import generate_latest

    assert b"\nauditor_schema_registry_up{" not in generate_latest(metrics.registry)
