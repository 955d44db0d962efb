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
if [ "$#" -gt 0 ] || [ "${AUDITOR_TEST_SESSIONS:-2}" = 1 ]; then
  exec python3 -m pytest "$@"
fi
# Two pytest sessions side by side, each with its own Kafka broker: tests/unit with the Prometheus
# tests (tests/deploy, tests/e2e) and the subject ledger's two daemon test files, and the rest
# (tests/integration, tests/faults: the daemon on a real broker); together exactly what `python3 -m
# pytest` runs. The second mostly waits (for brokers, consumer groups, daemons), and the first uses the
# cores meanwhile; the ledger's files (~170 s quiet) even out their lengths (quiet CI, session 8: 11:57
# and 4:57 without them). AUDITOR_TEST_SESSIONS=1 runs one session, as before; so does any pytest argument.
out=$(mktemp -d)
mine=(tests/unit tests/deploy tests/e2e tests/integration/test_daemon_ledger.py tests/integration/test_ledger_attacks.py)
python3 -m pytest "${mine[@]}" >"$out/unit.log" 2>&1 &
unit=$!
trap 'kill "$unit" 2>/dev/null || true; rm -rf "$out"' EXIT  # a background job ignores Ctrl-C
rest=0
python3 -m pytest tests "${mine[@]/#/--ignore=}" 2>&1 | tee "$out/rest.log" || rest=$?
units=0
wait "$unit" || units=$?
echo "============ ${mine[*]} (the session that ran alongside the one above) ============"
cat "$out/unit.log"
python3 - "$out/rest.log" "$out/unit.log" <<'EOF' || true
import re, sys
total: dict[str, int] = {}
for path in sys.argv[1:]:  # each session's closing line, added up
    ends = [ln for ln in open(path, errors="replace").read().splitlines() if re.match(r"^=+ .* in [0-9.]+s", ln)]
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", ends[-1] if ends else ""):
        total[what] = total.get(what, 0) + int(n)
failed = total.get("failed", 0) + total.get("error", 0) + total.get("errors", 0)
print(f"both: {total.get('passed', 0)} passed, {failed} failed, {total.get('skipped', 0)} skipped")
EOF
echo "exit codes: the rest $rest, ${mine[*]} $units"
[ "$rest" = 0 ] && [ "$units" = 0 ]
