#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then lints, type-checks and
# runs every test (unit, the real Kafka broker, promtool and the Prometheus/Alertmanager e2e).
# Usage: bash tests/run_all.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
bash deploy/install-prometheus.sh
python3 -m auditor.localkafka fetch
python3 -m ruff check auditor tests bench
python3 -m mypy
python3 -m pytest "$@"
