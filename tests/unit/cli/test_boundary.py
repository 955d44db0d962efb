"""The one error boundary: every failure is one line saying what to fix, with the table's exit code."""

from __future__ import annotations

import errno

import pytest
from clikit import assert_one_line_error, run_cli

from auditor.cli import boundary
from auditor.config import CLIENT_ERRORS
from auditor.errors import BrokerError, ConfigError, DecodeError, PolicyError, TrailCorruption, TrailError
from auditor.exitcodes import ExitCode, exit_code


class FakeKafkaError:
    """Our own stand-in for confluent-kafka's KafkaError (the boundary duck-types it)."""

    def __init__(self, name: str, text: str) -> None:
        self._name, self._text = name, text

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text

    def code(self) -> int:
        return -1


class KafkaException(Exception):  # the class name is what the boundary recognises
    pass


@pytest.fixture(autouse=True)
def _clean():
    CLIENT_ERRORS.clear()
    boundary.FACTS.clear()
    yield
    CLIENT_ERRORS.clear()
    boundary.FACTS.clear()


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigError("x"), ExitCode.USAGE), (PolicyError("x"), ExitCode.USAGE), (DecodeError("x"), ExitCode.USAGE),
    (TrailError("x"), ExitCode.USAGE), (TrailCorruption("x"), ExitCode.FOUND), (BrokerError("x"), ExitCode.BROKER),
])
def test_exit_code_table(exc, code):
    assert exit_code(exc) == code


def test_wrong_password_is_reported_as_authentication_not_address():
    CLIENT_ERRORS.record("FAIL [rdkafka#producer-1] [thrd:sasl://k:9094/bootstrap]: k:9094/bootstrap: Connect to "
                         "ipv4#10.0.0.1:9094 failed: Connection refused")
    CLIENT_ERRORS.record(FakeKafkaError("_AUTHENTICATION", "SASL authentication error: Authentication failed "
                                        "during authentication due to invalid credentials with SASL mechanism PLAIN"))
    err = boundary.translate_kafka_error("_TRANSPORT", "Failed to get metadata: Local: Broker transport failure",
                                         "k:9094")
    assert isinstance(err, BrokerError) and exit_code(err) == ExitCode.BROKER
    assert str(err).startswith("authentication failed at Kafka k:9094")
    assert "sasl.password" in str(err) and "bootstrap" not in str(err).split("Check")[0]


def test_a_daemon_broker_error_is_refined_with_the_real_cause():
    CLIENT_ERRORS.record("SSL handshake failed: error:0A000086:SSL routines::certificate verify failed")

    def fail(_args):
        raise BrokerError("cannot reach Kafka at k:9093: Failed to get metadata. Check kafka.bootstrap_servers")

    assert boundary.run_command(fail, None) == ExitCode.BROKER


@pytest.mark.parametrize(("name", "text", "kind"), [
    ("_TRANSPORT", "Connect to ipv4#127.0.0.1:1 failed: Connection refused", "cannot reach Kafka"),
    ("_RESOLVE", "Failed to resolve 'nosuch:9092': Name or service not known", "cannot resolve"),
    ("TOPIC_AUTHORIZATION_FAILED", "Broker: Topic authorization failed", "not authorized"),
])
def test_kafka_causes_name_the_setting_to_fix(name, text, kind):
    err = boundary.translate_kafka_error(name, text, "h:1")
    assert str(err).startswith(kind) and exit_code(err) == ExitCode.BROKER


def test_a_bad_client_property_is_a_configuration_error():
    def fail(_args):
        raise KafkaException(FakeKafkaError("_INVALID_ARG", 'No such configuration property: "sasl.pasword"'))

    assert boundary.run_command(fail, None) == ExitCode.USAGE


def test_port_in_use_names_the_setting(capsys):
    boundary.note(http_port=9400)

    def fail(_args):
        raise OSError(errno.EADDRINUSE, "Address already in use")

    assert boundary.run_command(fail, None) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "port 9400 is already in use" in err and "--http-port" in err


def test_an_unexpected_exception_is_one_line_and_exit_70(capsys):
    def fail(_args):
        raise ZeroDivisionError("boom")

    assert boundary.run_command(fail, None) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "bug" in err


# ---------------------------------------------------------------- the real command, in a subprocess
# (the four commands of `unreachable` wait side by side from the end of collection on: conftest.py)

def test_verify_of_an_unreachable_topic_is_exit_3_in_one_line(unreachable):
    running, address = unreachable["verify"]
    r = running.result()
    assert_one_line_error(r, 3, f"cannot reach Kafka at {address}", "Connection refused")
    assert "rdkafka" not in r.err  # no librdkafka noise at the default level


def test_topics_create_without_a_broker_is_exit_3_in_one_line(unreachable):
    r = unreachable["topics"][0].result()
    assert_one_line_error(r, 3, "cannot reach Kafka", "kafka.bootstrap_servers")
    assert "rdkafka" not in r.err


def test_an_unresolvable_broker_says_so(unreachable):
    r = unreachable["unresolvable"][0].result()
    assert_one_line_error(r, 3, "cannot resolve the Kafka address no-such-host.invalid:9092")


def test_produce_without_a_broker_is_exit_3_in_one_line(unreachable):
    r = unreachable["produce"][0].result()
    assert_one_line_error(r, 3, "cannot reach Kafka", "Connection refused")
    assert "rdkafka" not in r.err


def test_prove_with_a_negative_seq_is_a_usage_error(tmp_path):
    r = run_cli("prove", tmp_path, "--seq", "-1", "--out", tmp_path / "p.json")
    assert r.code == 2 and "Traceback" not in r.err and "--seq: must be 0 or more" in r.err


@pytest.mark.parametrize(("text", "needle"), [
    ("kafka: {properties: [security.protocol, SSL]}\n", "kafka.properties"),
    ("checkpoint: {seconds: soon}\n", "checkpoint.seconds"),
    ("batch: {max_events: 0}\n", "batch.max_events"),
    ("shutdown_timeout_s: -1\n", "shutdown_timeout_s"),
])
def test_config_type_errors_are_exit_2_in_one_line(tmp_path, text, needle):
    cfg = tmp_path / "auditor.yaml"
    cfg.write_text(text)
    for argv in (("run", "--config", cfg), ("topics", "create", "--config", cfg)):
        r = run_cli(*argv)
        assert_one_line_error(r, 2, "invalid configuration", needle)


def test_config_error_from_environment_is_exit_2(tmp_path):
    r = run_cli("topics", "create", env={"AUDITOR_BATCH_MAX_EVENTS": "0"})
    assert_one_line_error(r, 2, "AUDITOR_BATCH_MAX_EVENTS")


def test_a_wrapped_connection_failure_gets_the_recorded_cause(capsys):
    CLIENT_ERRORS.record("FAIL [rdkafka#producer-1] [thrd:h:1/bootstrap]: h:1/bootstrap: Connect to ipv4#127.0.0.1:1 "
                         "failed: Connection refused (after 0ms in state CONNECT)")
    boundary.note(bootstrap="h:1")

    def fail(_args):
        try:
            raise KafkaException(FakeKafkaError("_TRANSPORT", "Failed to get metadata: Local: Broker transport"))
        except KafkaException as exc:
            raise BrokerError(f"cannot reach Kafka at h:1: {exc}") from exc

    assert boundary.run_command(fail, None) == ExitCode.BROKER
    err = capsys.readouterr().err
    assert "Connection refused" in err and "KafkaError{" not in err


def test_a_broker_error_of_its_own_keeps_its_message(capsys):
    CLIENT_ERRORS.record("Connect to ipv4#127.0.0.1:1 failed: Connection refused")

    def fail(_args):
        raise BrokerError("audit topic t does not exist")

    assert boundary.run_command(fail, None) == ExitCode.BROKER
    assert "audit topic t does not exist" in capsys.readouterr().err


def test_the_demo_points_at_the_metrics_port_it_used():
    from auditor.stream.demo import _keep_running_hint

    assert "localhost:9400/metrics" in _keep_running_hint(9400)
    assert "--http-port 9555" in _keep_running_hint(9555) and "localhost:9555/metrics" in _keep_running_hint(9555)
    assert "9400" not in _keep_running_hint(0)


def test_output_piped_into_head_is_not_an_error():
    """`auditor check ... | head -1`: the closed pipe ends the command quietly with exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    events = sorted(str(p) for p in (Path(__file__).parents[2] / "data" / "events").glob("*.jsonl"))
    proc = subprocess.Popen([sys.executable, "-m", "auditor", "check", *events], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"auditor:" not in err and b"Traceback" not in err, err


def test_run_help_lists_every_exit_code_of_the_daemon(capsys):
    """README "Operations": 0 stopped, 2 configuration, 3 fatal Kafka, 4 watchdog (the help lacked 4)."""
    from auditor.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    status = text[text.index("exit status:"):].split(" options:")[0]
    for code in (0, 2, 3, 4):
        assert f" {code} " in status, f"exit {code} missing from: {status}"
    assert "watchdog" in status and "fenced" in status
