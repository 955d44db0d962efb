"""The config object: file + environment, typed validation that says what to fix, masked secrets."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys

import pytest

from auditor.config import (
    config_keys,
    env_names,
    load_config,
    property_env_name,
    property_from_env,
)
from auditor.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "auditor.yaml"
    p.write_text(text)
    return p


def test_environment_overrides_the_file(tmp_path):
    p = write(tmp_path, "kafka: {bootstrap_servers: file:9092, group_id: g}\ntopics: {events: [a]}\n")
    cfg = load_config(p, env={"AUDITOR_KAFKA_BOOTSTRAP_SERVERS": "env:9092", "AUDITOR_TOPICS_EVENTS": "x,y"})
    assert cfg.kafka.bootstrap_servers == "env:9092" and cfg.kafka.group_id == "g"
    assert cfg.topics.events == ("x", "y")
    assert cfg.consumer_conf()["isolation.level"] == "read_committed"
    assert cfg.producer_conf("t")["transactional.id"] == "t"


def test_command_line_overrides_win_over_environment(tmp_path):
    cfg = load_config(env={"AUDITOR_HTTP_PORT": "1234"}, overrides={"http.port": 4321, "keys_dir": None})
    assert cfg.http_port == 4321 and cfg.keys_dir is None


def test_flat_attribute_api_is_kept(tmp_path):
    p = write(tmp_path, "batch: {max_events: 7, max_ms: 9}\ncheckpoint: {every: 3, seconds: 2.5}\n"
                        "http: {host: 127.0.0.1, port: 0}\npolicy: {packs: [ipasar]}\n")
    cfg = load_config(p, env={})
    assert (cfg.batch_max_events, cfg.batch_max_ms, cfg.checkpoint_every, cfg.checkpoint_seconds) == (7, 9, 3, 2.5)
    assert (cfg.http_host, cfg.http_port, cfg.packs) == ("127.0.0.1", 0, ("ipasar",))
    assert dataclasses.replace(cfg, trail_dir=None).trail_dir is None


def test_every_key_has_an_environment_variable():
    names = env_names()
    assert set(names.values()) == set(config_keys())
    assert all(var.startswith("AUDITOR_") for var in names)
    # the documented table in the module docstring names each of them (a new key must be documented)
    import auditor.config as mod
    doc = mod.__doc__ or ""
    for key in config_keys():
        assert key in doc, f"{key} missing from auditor.config's environment table"


@pytest.mark.parametrize(("key", "var", "text", "expected"), [
    ("batch.max_events", "AUDITOR_BATCH_MAX_EVENTS", "7", 7),
    ("checkpoint.seconds", "AUDITOR_CHECKPOINT_SECONDS", "0.5", 0.5),
    ("shutdown_timeout_s", "AUDITOR_SHUTDOWN_TIMEOUT_S", "12", 12.0),
    ("schemas.registry_url", "AUDITOR_SCHEMAS_REGISTRY_URL", "http://reg:8081", "http://reg:8081"),
    ("schemas.confluent_ids", "AUDITOR_SCHEMAS_CONFLUENT_IDS", "3=a,4=b", {3: "a", 4: "b"}),
    ("kafka.properties", "AUDITOR_KAFKA_PROPERTIES", '{"security.protocol": "SSL"}', {"security.protocol": "SSL"}),
    ("keys_dir", "AUDITOR_KEYS", "/k", "/k"),
    ("keys_dir", "AUDITOR_KEYS_DIR", "/k2", "/k2"),
    ("policy.packs", "AUDITOR_POLICY_PACKS", "ipasar, inper", ("ipasar", "inper")),
])
def test_environment_reaches_each_kind_of_key(key, var, text, expected):
    cfg = load_config(env={var: text})
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert (str(value) if key == "keys_dir" else (dict(value) if isinstance(expected, dict) else value)) == expected


def test_client_secrets_come_from_the_environment_and_reach_every_client():
    env = {"AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD": "hunter2",
           "AUDITOR_KAFKA_PROPERTIES__SASL_USERNAME": "auditor",
           "AUDITOR_KAFKA_PROPERTIES__SECURITY_PROTOCOL": "SASL_SSL"}
    cfg = load_config(env=env)
    for conf in (cfg.consumer_conf(), cfg.producer_conf("t"), cfg.admin_conf(), cfg.client_conf()):
        assert conf["sasl.password"] == "hunter2" and conf["security.protocol"] == "SASL_SSL"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)


def test_property_names_follow_confluents_env_convention():
    for prop in ("sasl.password", "ssl.endpoint.identification.algorithm", "a.b-c_d"):
        assert property_from_env(property_env_name(prop)) == prop
    assert property_env_name("sasl.password") == "AUDITOR_KAFKA_PROPERTIES__SASL_PASSWORD"


def test_file_properties_are_stringified_for_librdkafka(tmp_path):
    p = write(tmp_path, "kafka:\n  properties:\n    enable.ssl.certificate.verification: false\n"
                        "    socket.timeout.ms: 5000\n")
    props = load_config(p, env={}).kafka.properties
    assert props == {"enable.ssl.certificate.verification": "false", "socket.timeout.ms": "5000"}


# Each bad configuration: the key is named, with where its value came from and what to fix.
@pytest.mark.parametrize(("text", "message"), [
    ("kafka: {bootstrap: x}\n", "kafka.bootstrap (config file {p}): unknown key; 'kafka' takes bootstrap_servers"),
    ("kafak: {}\n", "kafak (config file {p}): unknown key; the top level takes kafka"),
    ("http: {port: 99999}\n", "http.port (config file {p}): must be at most 65535, got 99999"),
    ("topics: {events: [a], audit: a}\n", "three distinct topics"),
    ("batch: {max_events: lots}\n", "batch.max_events (config file {p}): must be a valid integer"),
    ("batch: {max_events: 0}\n", "batch.max_events (config file {p}): must be at least 1, got 0"),
    ("batch: {max_events: true}\n", "batch.max_events (config file {p}): must be a number, not true/false"),
    ("batch: {max_ms: -5}\n", "batch.max_ms (config file {p}): must be at least 1, got -5"),
    ("shutdown_timeout_s: -1\n", "shutdown_timeout_s (config file {p}): must be greater than 0, got -1"),
    ("shutdown_timeout_s: 0\n", "shutdown_timeout_s (config file {p}): must be greater than 0, got 0"),
    ("checkpoint: {seconds: soon}\n", "checkpoint.seconds (config file {p}): must be a valid number"),
    ("checkpoint: {seconds: .nan}\n", "checkpoint.seconds (config file {p}): must be greater than 0, got nan"),
    ("checkpoint: {every: 0}\n", "checkpoint.every (config file {p}): must be at least 1"),
    ("transaction_timeout_ms: 10\n", "transaction_timeout_ms (config file {p}): must be at least 1000"),
    ("schemas: {max_message_bytes: 0}\n", "schemas.max_message_bytes (config file {p}): must be at least 1024"),
    ("kafka: {properties: [security.protocol, SSL]}\n",
     "kafka.properties (config file {p}): must be a mapping of librdkafka property names"),
    ("kafka: {properties: {isolation.level: read_uncommitted}}\n",
     "kafka.properties (config file {p}): 'isolation.level' cannot be set here"),
    ("kafka: {properties: {bootstrap.servers: x}}\n", "set kafka.bootstrap_servers instead"),
    ("kafka: [1, 2]\n", "kafka (config file {p}): must be a mapping of bootstrap_servers, group_id, properties"),
    ("kafka: {bootstrap_servers: ''}\n", "kafka.bootstrap_servers (config file {p}): must not be empty"),
    ("topics: {events: []}\n", "topics.events (config file {p}): must name at least one"),
    ("instance_id: 'a b'\n", "instance_id (config file {p}): must be 1-200 letters"),
    ("schemas: {registry_url: 'ftp://x'}\n", "schemas.registry_url (config file {p}): must be an http"),
    ("[1, 2]\n", "must be a YAML mapping"),
    ("kafka: {bootstrap_servers: [\n", "is not valid YAML at line"),
])
def test_invalid_config_names_what_to_fix(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    assert message.format(p=p) in str(info.value)
    assert "\n" not in str(info.value)  # one line


def test_an_environment_error_names_the_variable():
    with pytest.raises(ConfigError, match=re.escape("batch.max_events (AUDITOR_BATCH_MAX_EVENTS): must be at least 1")):
        load_config(env={"AUDITOR_BATCH_MAX_EVENTS": "0"})
    with pytest.raises(ConfigError, match=re.escape("shutdown_timeout_s (AUDITOR_SHUTDOWN_TIMEOUT_S)")):
        load_config(env={"AUDITOR_SHUTDOWN_TIMEOUT_S": "-1"})


def test_a_bad_secret_is_named_but_never_echoed():
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"kafka.properties": {"sasl.password": ["hunter2"]}})
    assert "sasl.password" in str(info.value) and "hunter2" not in str(info.value)


def test_secrets_masked_in_repr():
    cfg = load_config(env={}, overrides={"kafka.properties": {"sasl.password": "hunter2", "sasl.username": "u"},
                                         "schemas.registry_url": "https://user:s3cret@registry:8081"})
    text = repr(cfg)
    assert "hunter2" not in text and "****" in text and "'u'" in text
    assert "s3cret" not in text and "user:****@registry:8081" in text


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_unknown_lookalike_environment_variable_warns(caplog):
    with caplog.at_level(logging.WARNING):
        load_config(env={"AUDITOR_KAFKA_BOOTSTRAP_SERVER": "x:1"})
    assert "did you mean AUDITOR_KAFKA_BOOTSTRAP_SERVERS" in caplog.text


def test_instance_id_stability_is_known():
    assert load_config(env={}).instance_id_generated
    a, b = load_config(env={}).instance_id, load_config(env={}).instance_id
    assert a != b  # a generated id changes at every start: the reason for the warning
    cfg = load_config(env={"AUDITOR_INSTANCE_ID": "auditor-0"})
    assert cfg.instance_id == "auditor-0" and not cfg.instance_id_generated


def test_run_warns_when_instance_id_is_generated(tmp_path):
    """`auditor run` without an instance_id says that zombie fencing is lost (then fails on keys)."""
    env = {"PATH": "/usr/bin:/bin", "AUDITOR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    p = subprocess.run([sys.executable, "-m", "auditor", "run"], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tmp_path)
    assert "instance_id is not set" in p.stderr and "fencing" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_batch_holds_up_to_5000_events_by_default():
    # one transaction per 5,000 events of a backlog rather than per 1,000 (auditor/config.py BatchConfig)
    assert load_config(env={}).batch_max_events == 5000
