"""The bundled broker's JVM options: the defaults, and AUDITOR_KAFKA_JVM_OPTS on its command line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from auditor.localkafka import jvm
from auditor.localkafka.broker import LocalKafka


@pytest.fixture(autouse=True)
def _fake_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jvm, "find_java", lambda: "/opt/java/bin/java")


def _broker_cmd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kwargs: Any) -> list[str]:
    """The command LocalKafka launches the broker JVM with (Popen captured, nothing started)."""
    seen: list[list[str]] = []

    class _Popen:
        def __init__(self, cmd: list[str], **_: Any) -> None:
            seen.append(cmd)

    monkeypatch.setattr(subprocess, "Popen", _Popen)
    kafka = LocalKafka(**kwargs)
    kafka.work_dir = tmp_path
    try:
        kafka._launch(tmp_path / "lib", ["-Dlog4j2.configurationFile=x"], tmp_path / "server.properties", "wb")
    finally:
        assert kafka._log_fh is not None
        kafka._log_fh.close()
    assert len(seen) == 1
    cmd = seen[0]
    return cmd[cmd.index("/opt/java/bin/java"):]


def test_the_default_options_reach_the_broker_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(jvm.BROKER_JVM_OPTS_ENV, raising=False)
    cmd = _broker_cmd(monkeypatch, tmp_path)
    assert cmd[1] == f"-Xmx{jvm._DEFAULT_HEAP}"
    for opt in jvm._COMMON_JVM_FLAGS + jvm._BROKER_JVM_FLAGS:
        assert opt in cmd or (jvm._GC_SELECT.match(opt) and opt not in jvm._BROKER_JVM_FLAGS)
    assert cmd[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]


def test_the_environment_options_come_last_so_they_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(jvm.BROKER_JVM_OPTS_ENV, "  -Xmx1g   -XX:MaxGCPauseMillis=50 ")
    cmd = _broker_cmd(monkeypatch, tmp_path, jvm_options=["-Dfrom.caller=1"])
    java_opts = cmd[: cmd.index("-cp")]
    assert java_opts[-3:] == ["-Dfrom.caller=1", "-Xmx1g", "-XX:MaxGCPauseMillis=50"]


def test_a_collector_named_in_the_environment_replaces_the_default_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(jvm.BROKER_JVM_OPTS_ENV, "-XX:+UseParallelGC")
    cmd = _broker_cmd(monkeypatch, tmp_path)
    collectors = [opt for opt in cmd if opt.startswith("-XX:+Use") and opt.endswith("GC")]
    assert collectors == ["-XX:+UseParallelGC"]
    assert "-XX:TieredStopAtLevel=1" in cmd  # the other defaults stay


def test_a_collector_from_jvm_options_replaces_the_default_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(jvm.BROKER_JVM_OPTS_ENV, raising=False)
    cmd = _broker_cmd(monkeypatch, tmp_path, jvm_options=["-XX:+UseG1GC"])
    assert [opt for opt in cmd if opt.startswith("-XX:+Use") and opt.endswith("GC")] == ["-XX:+UseG1GC"]


def test_the_environment_options_are_for_the_broker_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(jvm.BROKER_JVM_OPTS_ENV, "-XX:+UseParallelGC -Xmx2g")
    tool = jvm._java_cmd(tmp_path, "kafka.tools.StorageTool", heap="256m")
    assert "-XX:+UseParallelGC" not in tool and "-Xmx2g" not in tool


def test_broker_jvm_options_orders_defaults_then_caller_then_environment() -> None:
    env = {jvm.BROKER_JVM_OPTS_ENV: " -Xmn64m  -Xms128m "}
    assert jvm.broker_jvm_options(["-Da=1"], env) == [*jvm._BROKER_JVM_FLAGS, "-Da=1", "-Xmn64m", "-Xms128m"]
    assert jvm.broker_jvm_options((), {jvm.BROKER_JVM_OPTS_ENV: "  "}) == list(jvm._BROKER_JVM_FLAGS)
    assert jvm.broker_jvm_options((), {}) == list(jvm._BROKER_JVM_FLAGS)


def test_the_broker_collects_in_parallel_and_the_tools_serially(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(jvm.BROKER_JVM_OPTS_ENV, raising=False)
    broker = _broker_cmd(monkeypatch, tmp_path)
    tool = jvm._java_cmd(tmp_path, "kafka.tools.StorageTool", heap="256m")
    assert [opt for opt in broker if jvm._GC_SELECT.match(opt)] == ["-XX:+UseParallelGC"]
    assert [opt for opt in tool if jvm._GC_SELECT.match(opt)] == ["-XX:+UseSerialGC"]


@pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="needs java")
@pytest.mark.parametrize("env_opts", ["", "-XX:+UseG1GC -XX:MaxGCPauseMillis=20", "-XX:+UseSerialGC -Xmn32m"])
def test_a_real_jvm_accepts_the_broker_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env_opts: str
) -> None:
    monkeypatch.undo()  # the real java
    cmd = jvm._java_cmd(tmp_path, "kafka.Kafka", heap=jvm._DEFAULT_HEAP,
                        extra=jvm.broker_jvm_options((), {jvm.BROKER_JVM_OPTS_ENV: env_opts}))
    cmd = cmd[: cmd.index("-cp")] + ["-version"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
