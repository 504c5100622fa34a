#!/usr/bin/env bash
# bench/refresh.sh: background renewals per second.
#
# Two credgate instances (each its own pool, four workers) share one
# database and renew every Twitter account of a cycle against the sandbox
# over HTTP, all in one process on this machine. The baseline, measured in
# the same run on the same rows, is a bare one-row UPDATE per account from
# the same eight goroutines over the same two pools. Figures are reported
# as the ratio, because absolute numbers on a shared 2-core machine mean
# little. Needs PostgreSQL at TEST_DATABASE_URL (as `make test`).
#
#   ACCOUNTS=10000 CYCLES=3 bash bench/refresh.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${ACCOUNTS:-10000} CYCLES=${CYCLES:-3}
CREDGATE_BENCH_ACCOUNTS=$ACCOUNTS go test -run XXX -bench RefreshReplicas -benchtime "${CYCLES}x" -timeout 30m ./worker/ |
  grep -E '^(Benchmark|ok|FAIL|PASS)'
