"""The config object: file + environment, validation that says what to fix, masked secrets."""

from __future__ import annotations

import pytest

from auditor.config import load_config
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


@pytest.mark.parametrize(("text", "message"), [
    ("kafka: {bootstrap: x}\n", "kafka.bootstrap"),
    ("kafak: {}\n", "unknown keys ['kafak']"),
    ("http: {port: 99999}\n", "http.port must be between 0 and 65535"),
    ("topics: {events: [a], audit: a}\n", "three distinct topics"),
    ("batch: {max_events: lots}\n", "batch.max_events must be a whole number"),
    ("kafka: [1, 2]\n", "'kafka' must be a mapping"),
])
def test_invalid_config_names_what_to_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_config(write(tmp_path, text), env={})


def test_secrets_masked_in_repr():
    cfg = load_config(env={}, overrides={"kafka.properties": {"sasl.password": "hunter2", "sasl.username": "u"}})
    text = repr(cfg)
    assert "hunter2" not in text and "****" in text and "'u'" in text
