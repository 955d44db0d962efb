#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) broker from Maven-fetched jars.
#
# Usage:
#   deploy/kafka/kafka.sh fetch                 # fetch the jars once (needs mvn + java)
#   deploy/kafka/kafka.sh run [--port 9092]     # run a broker; prints host:port on stdout,
#                                               # stops cleanly on Ctrl-C / SIGTERM
#   deploy/kafka/kafka.sh --help
#
# Jars are cached in $AUDITOR_CACHE/kafka-<version> (default ~/.cache/auditor/kafka-<version>).
# Set PYTHON to choose the interpreter (default: python3).
# This is a thin wrapper around `python -m auditor.localkafka`; see auditor/localkafka/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m auditor.localkafka "$@"
