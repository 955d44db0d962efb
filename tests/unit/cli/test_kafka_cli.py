"""Kafka commands against real brokers: client properties reach the client, and failures name
their real cause (a refused SASL password is "authentication failed", a busy port names the port).

One test starts its own broker with a SASL/PLAIN listener (``auditor.localkafka`` with an extra
listener); the others use the session's broker.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from clikit import assert_one_line_error, run_cli, start_cli

from auditor.localkafka.broker import LocalKafka

pytestmark = pytest.mark.kafka

DATA = Path(__file__).resolve().parents[2] / "data"
EVENTS = DATA / "events" / "ipmart.jsonl"
N_EVENTS = sum(1 for line in EVENTS.read_text().splitlines() if line.startswith("{"))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SaslKafka(LocalKafka):
    """The local broker plus a SASL_PLAINTEXT listener with one PLAIN user, alice/alice-secret."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.sasl_port = _free_port(self.host)

    def server_properties(self) -> dict[str, str]:  # type: ignore[override]
        p = dict(super().server_properties())
        listener = f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}"
        p["listeners"] += f",{listener}"
        p["advertised.listeners"] = ",".join(
            [*(x for x in p["advertised.listeners"].split(",") if not x.startswith("CONTROLLER")), listener])
        p["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        p["sasl.enabled.mechanisms"] = "PLAIN"
        p["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
            'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";')
        return p


def _config(tmp_path: Path, bootstrap: str, **properties: str) -> Path:
    tag = tmp_path.name[-20:].replace("_", "-")
    cfg = {"kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{tag}", "properties": properties},
           "topics": {"events": [f"ev-{tag}"], "audit": f"au-{tag}", "violations": f"vi-{tag}",
                      "dead_letter": f"dl-{tag}"}}
    path = tmp_path / "auditor.yaml"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def sasl_kafka():
    with SaslKafka() as kafka:
        yield kafka


def test_sasl_password_reaches_every_kafka_command(tmp_path, sasl_kafka):
    cfg = _config(tmp_path, f"127.0.0.1:{sasl_kafka.sasl_port}", **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "alice"})
    env = {"AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD": "alice-secret"}
    r = run_cli("topics", "create", "--config", cfg, "--partitions", "1", env=env, timeout=120)
    assert r.code == 0 and "created:" in r.out, r.err[-2000:]
    r = run_cli("produce", "--config", cfg, "-", stdin=EVENTS.read_bytes(), env=env, timeout=120)
    assert r.code == 0 and f"produced {N_EVENTS} events" in r.out, r.err[-2000:]
    audit = json.loads(cfg.read_text())["topics"]["audit"]
    r = run_cli("replay", f"kafka://127.0.0.1:{sasl_kafka.sasl_port}/{audit}", "--config", cfg,
                "--checkpoint-topic", audit, "--format", "jsonl", env=env, timeout=120)
    assert r.code == 0 and r.out == "", r.err[-2000:]  # reached and read (nothing audited yet)


def test_a_wrong_sasl_password_says_authentication_failed(tmp_path, sasl_kafka):
    cfg = _config(tmp_path, f"127.0.0.1:{sasl_kafka.sasl_port}", **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "alice"})
    env = {"AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD": "wrong-password"}
    # the three wait side by side (each gives up after its own timeout, about 25 s)
    started = [start_cli(*argv, env=env, timeout=150) for argv in (
        ("topics", "create", "--config", cfg), ("produce", "--config", cfg, EVENTS),
        ("verify", f"kafka://127.0.0.1:{sasl_kafka.sasl_port}/auditor.audit", "--config", cfg))]
    try:
        for running in started:
            r = running.result()
            line = assert_one_line_error(r, 3, "authentication failed", "sasl.password")
            assert "wrong-password" not in r.err and "bootstrap_servers" not in line, line
    finally:
        for running in started:
            running.stop()


def test_plaintext_client_on_a_sasl_listener_names_the_protocol(tmp_path, sasl_kafka):
    cfg = _config(tmp_path, f"127.0.0.1:{sasl_kafka.sasl_port}")
    r = run_cli("topics", "create", "--config", cfg, timeout=150)
    assert_one_line_error(r, 3, "security.protocol")


def test_metrics_port_in_use_is_one_line_naming_the_port(tmp_path, kafka_bootstrap):
    keys = tmp_path / "keys"
    assert run_cli("keys", "generate", "--out", keys).code == 0
    cfg = _config(tmp_path, kafka_bootstrap)
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = run_cli("run", "--config", cfg, "--keys", keys, "--instance-id", "port-test", "--http-port", str(port),
                    "--create-topics", "1", timeout=180)
    finally:
        busy.close()
    assert_one_line_error(r, 2, f"port {port} is already in use", "--http-port")


def test_produce_reads_standard_input_and_the_config(tmp_path, kafka_bootstrap):
    cfg = _config(tmp_path, kafka_bootstrap)
    assert run_cli("topics", "create", "--config", cfg, "--partitions", "1").code == 0
    r = run_cli("produce", "--config", cfg, "-", stdin=EVENTS.read_bytes() + b"garbage\n", timeout=120)
    assert r.code == 0 and f"produced {N_EVENTS} events" in r.out and "1 malformed" in r.out, r.err[-2000:]
