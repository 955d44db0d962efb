#!/usr/bin/env bash
# The whole test suite: installs the system pieces it needs (Prometheus and Alertmanager from
# Debian, the Kafka jars from Maven Central), then lints, type-checks and runs every test (unit,
# the real Kafka broker, promtool and the Prometheus/Alertmanager e2e).
# The project itself is installed first, by the README's command:
#   python3 -m pip install -e '.[test]' && bash tests/run_all.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import auditor, auditor._native, pytest, grafanalib, hypothesis" 2>/dev/null || {
  echo "install the project first (it also builds the compiled part, auditor._native, with cargo):" >&2
  echo "  python3 -m pip install -e '.[test]'" >&2; exit 2; }
bash deploy/install-prometheus.sh
python3 -m auditor.localkafka fetch
python3 -m ruff check auditor tests bench
python3 -m mypy
python3 -m pytest "$@"
