"""Deployment files: Kubernetes manifests, compose, systemd, and the alerts' runbook and tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
CORE_MANIFESTS = ["namespace.yaml", "configmap.yaml", "secret.yaml", "service.yaml", "statefulset.yaml",
                  "poddisruptionbudget.yaml"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


RUNBOOK_BASE = "https://auditor.example.com/deploy/RUNBOOK.md"  # deploy/prometheus/runbook_base.py DEFAULT_BASE


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --------------------------------------------------------------------------- alerts, runbook, tests

def test_every_alert_has_severity_summary_description_and_runbook(rules: list[dict[str, Any]]) -> None:
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info", "{{ $labels.severity }}"}, rule
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        assert "runbook" not in notes, f"{rule['alert']}: the convention is runbook_url"
        assert notes["runbook_url"] == f"{RUNBOOK_BASE}#{rule['alert'].lower()}", rule["alert"]
        assert "{{" in notes["summary"] + notes["description"] or rule["alert"] == "AuditorNoInstanceReady", (
            f"{rule['alert']}: annotations should template label values")


def test_every_alert_has_a_runbook_section(rules: list[dict[str, Any]]) -> None:
    text = (DEPLOY / "RUNBOOK.md").read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#{2,3} (.+)$", text, flags=re.M)}
    for rule in rules:
        base, anchor = rule["annotations"]["runbook_url"].split("#", 1)
        assert base.endswith("/RUNBOOK.md") and anchor in anchors, f"RUNBOOK.md has no section for {rule['alert']}"


def test_runbook_base_is_configurable_and_keeps_every_anchor(tmp_path: Path) -> None:
    import subprocess
    import sys

    copies = []
    for name in ("rules.yml", "rules_test.yml"):
        copies.append(tmp_path / name)
        copies[-1].write_text((DEPLOY / "prometheus" / name).read_text())
    base = "https://wiki.example.org/ops/auditor/RUNBOOK.md"
    script = DEPLOY / "prometheus" / "runbook_base.py"
    assert subprocess.run([sys.executable, str(script), base, *map(str, copies)], check=False).returncode == 0
    for path, original in zip(copies, ("rules.yml", "rules_test.yml"), strict=True):
        old = re.findall(r'runbook_url: "([^"]+)"', (DEPLOY / "prometheus" / original).read_text())
        new = re.findall(r'runbook_url: "([^"]+)"', path.read_text())
        assert old and [u.replace(RUNBOOK_BASE, base) for u in old] == new
    assert subprocess.run([sys.executable, str(script), "not a url#x", str(copies[0])],
                          check=False).returncode == 2


def test_runbook_tables_have_consistent_columns() -> None:
    """Every row of every Markdown table in the runbook has as many cells as its header."""
    rows_seen = 0
    for block in re.split(r"\n(?!\|)", (DEPLOY / "RUNBOOK.md").read_text(encoding="utf-8")):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if not lines:
            continue
        widths = {len(re.split(r"(?<!\\)\|", line.strip().strip("|"))) for line in lines}
        assert len(widths) == 1, lines
        rows_seen += len(lines)
    assert rows_seen


def test_every_runbook_section_is_an_alert(rules: list[dict[str, Any]]) -> None:
    text = (DEPLOY / "RUNBOOK.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (.+)$", text, flags=re.M)) - {"Common tools"}
    assert sections == {rule["alert"] for rule in rules}


def test_every_alert_is_tested_firing_and_silent(rules: list[dict[str, Any]]) -> None:
    doc = _yaml(DEPLOY / "prometheus" / "rules_test.yml")
    assert doc["rule_files"] == ["rules.yml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in rules}
    assert names - fires == set(), "alerts never fired by rules_test.yml"
    assert names - silent == set(), "alerts never shown silent by rules_test.yml"
    assert (fires | silent) <= names, "rules_test.yml tests alerts that do not exist"


def test_firing_tests_check_every_annotation(rules: list[dict[str, Any]]) -> None:
    doc = _yaml(DEPLOY / "prometheus" / "rules_test.yml")
    by_name = {rule["alert"]: rule for rule in rules}
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                expected = set(by_name[case["alertname"]]["annotations"])
                assert set(alert.get("exp_annotations", {})) == expected, (test["name"], case["alertname"])


# --------------------------------------------------------------------------- Kubernetes

def test_prometheusrule_is_up_to_date(make_prometheusrule: ModuleType) -> None:
    make = make_prometheusrule
    assert (K8S / "prometheusrule.yaml").read_text(encoding="utf-8") == make.render(), (
        "deploy/k8s/prometheusrule.yaml is stale: run python deploy/k8s/make_prometheusrule.py")


def test_prometheusrule_holds_exactly_the_rules() -> None:
    crd = _yaml(K8S / "prometheusrule.yaml")
    assert crd["apiVersion"] == "monitoring.coreos.com/v1" and crd["kind"] == "PrometheusRule"
    assert crd["spec"]["groups"] == _yaml(DEPLOY / "prometheus" / "rules.yml")["groups"]


@pytest.mark.parametrize("name", CORE_MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
        kv.validate(doc, kv.latest_version(), strict=True)


def test_kustomization_lists_existing_files_but_not_the_secret_template() -> None:
    kust = _yaml(K8S / "kustomization.yaml")
    for resource in kust["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.yaml" not in kust["resources"]


def test_kustomize_builds_every_resource_into_the_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "Service", "StatefulSet",
                                         "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"}
    assert all(d["metadata"].get("namespace") == "auditor" for d in docs if d["kind"] != "Namespace")


def test_service_monitor_scrapes_the_pods_through_the_service() -> None:
    sts = _yaml(K8S / "statefulset.yaml")
    svc = _yaml(K8S / "service.yaml")
    mon = _yaml(K8S / "servicemonitor.yaml")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["metadata"]["name"] == "auditor", "the job label (service name) must be 'auditor'"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in mon["spec"]["endpoints"]} <= port_names
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]


def test_statefulset_probes_keys_and_config() -> None:
    sts = _yaml(K8S / "statefulset.yaml")
    pod = sts["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert {"containerPort": 9400, "name": "metrics", "protocol": "TCP"} in main["ports"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert main["resources"]["requests"] and main["resources"]["limits"]
    env = {e["name"]: e for e in main["env"]}
    assert env["AUDITOR_KEYS"]["value"] == "/etc/auditor/keys"
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "/etc/auditor/keys" in mounts
    config_arg = main["args"][main["args"].index("--config") + 1]
    config_mount = next(m for m in main["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes[config_mount["name"]]["configMap"]["name"]
    assert config_map == _yaml(K8S / "configmap.yaml")["metadata"]["name"]
    assert volumes["keys-secret"]["secret"]["secretName"] == _yaml(K8S / "secret.yaml")["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > 30


def test_configmap_and_example_config_load(tmp_path: Path) -> None:
    config = pytest.importorskip("auditor.config")
    path = tmp_path / "auditor.yaml"
    path.write_text(_yaml(K8S / "configmap.yaml")["data"]["auditor.yaml"], encoding="utf-8")
    from_cm = config.load_config(path, env={})
    assert from_cm.http_port == 9400
    example = config.load_config(DEPLOY / "auditor.example.yaml", env={})
    assert example.http_port == 9400
    assert str(example.keys_dir) == "/etc/auditor/keys"


# --------------------------------------------------------------------------- compose

def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0


def test_compose_file_is_valid() -> None:
    if not _compose_available():
        pytest.skip("docker compose plugin not installed")
    compose = DEPLOY / "compose" / "docker-compose.yml"
    result = subprocess.run(["docker", "compose", "-f", str(compose), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_mounts_and_build_files_exist() -> None:
    here = DEPLOY / "compose"
    doc = _yaml(here / "docker-compose.yml")
    assert {"kafka", "auditor", "prometheus", "alertmanager", "grafana"} <= set(doc["services"])
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (here / source).exists(), f"{name}: {source}"
        if "build" in svc:
            assert (here / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name


# --------------------------------------------------------------------------- systemd, install script

def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "auditor.service").read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_runs_the_daemon_hardened() -> None:
    s = _unit_settings()
    assert s["ExecStart"] == ["/usr/local/bin/auditor run --config /etc/auditor/auditor.yaml"]
    assert s["Type"][0] in {"simple", "notify"}
    assert s["Restart"] == ["on-failure"]
    assert s["KillSignal"] == ["SIGTERM"] and s["TimeoutStopSec"] == ["30"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert "/var/lib/auditor/trail" in s["ReadWritePaths"]
    assert "User" in s or s.get("DynamicUser") == ["yes"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that ExecStart's binary exists: point it at one that does.
    exe = shutil.which("auditor") or sys.executable
    text = (DEPLOY / "systemd" / "auditor.service").read_text(encoding="utf-8")
    unit = tmp_path / "auditor.service"
    unit.write_text(text.replace("/usr/local/bin/auditor", str(Path(exe).resolve())), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Unknown or unparsable settings are only warnings (exit 0): any output is a failure.
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


def test_install_script_is_valid_shell() -> None:
    script = DEPLOY / "install-prometheus.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run([shellcheck, "-s", "sh", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_install_script_is_a_no_op_when_the_tools_are_there(promtool: str, amtool: str) -> None:
    result = subprocess.run(["sh", str(DEPLOY / "install-prometheus.sh")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""

