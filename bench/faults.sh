#!/usr/bin/env bash
# bench/faults.sh: what database faults cost the background renewals.
#
# Two replicas (four workers each) renew ACCOUNTS Twitter accounts
# (default 5,000) against the sandbox, each reaching a throwaway
# PostgreSQL cluster of the run's own through its own TCP path. One cycle
# each: no fault, a fast restart of the cluster, replica A's path
# black-holed for 45 s and for 150 s then reset, and replica A killed.
# For each it prints the renewals, the refresh tokens replayed at the
# platform, the accounts left needing their user, the stored tokens the
# platform no longer accepts, and the renewals stored on a retry after
# their first store failed. Needs PostgreSQL's server binaries. Takes
# about ten minutes at 5,000 accounts on two cores.
#
#   ACCOUNTS=5000 bash bench/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CREDGATE_BENCH_ACCOUNTS=${ACCOUNTS:-5000} go test -run XXX -bench RenewalFaults -benchtime 1x -timeout 60m ./worker/ |
  grep --line-buffered -vE '^\{'
