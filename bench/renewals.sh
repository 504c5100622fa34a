#!/usr/bin/env bash
# bench/renewals.sh: background renewals per second, against a warm floor,
# in alternating rounds of one run.
#
# Three processes besides PostgreSQL: the sandbox (`caddy credgate
# sandbox`, Twitter tokens living TTL, default 2m), and two Caddy
# instances with credgate, four refresh workers each, sharing one fresh
# database. ACCOUNTS Twitter accounts are connected through the first
# (bench/connectload), then bench/renewload runs ROUNDS rounds:
#   floor   a warm one-row UPDATE of each account from 8 goroutines over
#           2 pools (the shape of 2 × 4 workers), opened once for the run
#   burst   every refresh job due at once; renewals/s from the platform's
#           first renewal to its last
#   steady  (with SPREAD, e.g. 20s) the jobs due evenly over SPREAD; what
#           tells is how many ms behind the schedule the last renewal came
# The end of a cycle is watched at the sandbox, never by polling the
# database; each cycle then checks that every renewal was stored. CPU per
# renewal is reported for both instances, the sandbox, PostgreSQL and the
# driver (the floor's client: its share of the floor's cost), and so are
# the WAL written per renewal (or update) and the checkpoints each round
# saw: PostgreSQL's whole cluster's, so give the run a cluster of its own.
#
#   ROUNDS=3 ACCOUNTS=5000 bash bench/renewals.sh
#   SPREAD=20s bash bench/renewals.sh
#
# Needs PostgreSQL at DATABASE_ADMIN_URL (default the local server as
# `make test` uses it) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} ACCOUNTS=${ACCOUNTS:-5000} TTL=${TTL:-2m} SPREAD=${SPREAD:-0s}
bench_name=renewals.sh next_port=28600
source bench/common.sh
go build -o bin/connectload ./bench/connectload
go build -o bin/renewload ./bench/renewload
take_port a; take_port b; take_port sb

fresh_database

echo "{\"auto_approve\": true, \"access_ttl\": {\"twitter\": \"$TTL\"}}" >"$work/sandbox.json"
"$CADDY_BIN" credgate sandbox --listen "127.0.0.1:$sb" --app-origin "http://127.0.0.1:$a" --config "$work/sandbox.json" >"$work/sandbox.log" 2>&1 &
pids+=($!)
echo $! >"$work/sandbox.pid"

instance() { # name site-port
  credgate_config "$2" "refresh_workers 4
$(twitter_provider "$a" "$sb")" >"$work/$1.Caddyfile"
  "$CADDY_BIN" run --config "$work/$1.Caddyfile" --adapter caddyfile >"$work/$1.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$1.pid"
}
instance a "$a"
instance b "$b"
wait_up "$sb"; wait_up "$a"; wait_up "$b"

bin/connectload -start "http://127.0.0.1:$a/api/auth/oauth/twitter?return_to=/" -jwt-secret "$jwt_secret" \
  -c 8 -flows "$ACCOUNTS" >"$work/seed.json" || die "connecting $ACCOUNTS accounts failed: $(cat "$work/seed.json")"
psql -q "$DATABASE_URL" -c "VACUUM ANALYZE" >/dev/null

echo "renewals: $ROUNDS rounds over $ACCOUNTS Twitter accounts (tokens live $TTL), 2 instances × 4 workers; $(nproc) cores" >&2
bin/renewload -database-url "$DATABASE_URL" -sandbox "http://127.0.0.1:$sb" -rounds "$ROUNDS" -ttl "$TTL" -spread "$SPREAD" \
  -cpu "caddy-a=$work/a.pid,caddy-b=$work/b.pid,sandbox=$work/sandbox.pid,postgres=postgres,driver=self" -out "$work/results"
