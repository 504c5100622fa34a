#!/usr/bin/env bash
# bench/tokenapi.sh: token API reads per second against a prepared SELECT
# of the same row (the floor), in alternating rounds of one run.
#
# One Caddy serves credgate with the token API and the sandbox; USERS
# whole connects (bench/connectload) give it USERS Twitter accounts with
# sealed tokens two hours from expiry, so no read renews one. Then each
# round runs bench/tokenload both ways, CONC readers cycling through the
# same accounts, the order alternating:
#   token-api  GET /api/internal/credentials/{user}/twitter/token, service token
#   select     a prepared SELECT of the row the API reads, from a pool of
#              CONC connections (pgx prepares and caches it)
#   http-respond  the same Caddy answering the same requests with a fixed
#              body of the token answer's size (Caddy's `respond`): what
#              HTTP alone costs on this machine, for scale
# CPU per read is reported for the Caddy process and for PostgreSQL. The
# database is a fresh one made for the run and dropped after it.
#
#   ROUNDS=5 DURATION=10s CONC=8 USERS=1000 bash bench/tokenapi.sh
#   CADDY_BIN=/path/to/older/caddy bash bench/tokenapi.sh   # another build
#   CADDY_ADMIN=127.0.0.1:28599 bash bench/tokenapi.sh  # admin on, for
#     go tool pprof http://127.0.0.1:28599/debug/pprof/profile?seconds=5
#
# Needs PostgreSQL at DATABASE_ADMIN_URL (default the local server as
# `make test` uses it) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-10s} CONC=${CONC:-8} USERS=${USERS:-1000}
bench_name=tokenapi.sh next_port=28500 bench_admin=${CADDY_ADMIN:-off}
source bench/common.sh
go build -o bin/connectload ./bench/connectload
go build -o bin/tokenload ./bench/tokenload
take_port a; take_port sb; take_port tk; take_port hr

fresh_database
service_token=bench-only-service-token-0123456789abcdef

{
  credgate_config "$a" "background off
$(twitter_provider "$a" "$sb")"
  cat <<CADDY
http://127.0.0.1:$sb {
	credgate_sandbox {
		auto_approve
		app_origin http://127.0.0.1:$a
	}
}
http://127.0.0.1:$tk {
	credgate_tokens {
		service_token $service_token
	}
	respond 404
}
http://127.0.0.1:$hr {
	respond \`{"access_token":"0123456789012345678901234567890123456789012","token_type":"bearer","expires_at":"2026-12-06T06:10:54.077307Z","platform_user_id":"8283053950","scopes":["tweet.read","users.read","offline.access"]}\` 200
}
CADDY
} >"$work/Caddyfile"
"$CADDY_BIN" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)
echo $! >"$work/caddy.pid"
wait_up "$a"; wait_up "$tk"; wait_up "$hr"
# The baseline answers a body of the token answer's size, or it measures
# less than it claims (a shell quoting slip once left it empty).
[[ $(curl -s "http://127.0.0.1:$hr/") == '{"access_token":"'*'}' ]] || die "http-respond does not answer the token-sized body"

bin/connectload -start "http://127.0.0.1:$a/api/auth/oauth/twitter?return_to=/" -jwt-secret "$jwt_secret" \
  -c 8 -flows "$USERS" >"$work/seed.json" || die "connecting $USERS accounts failed: $(cat "$work/seed.json")"
psql -q "$DATABASE_URL" -c "VACUUM ANALYZE" >/dev/null

measure() { # label
  case $1 in
  token-api) bin/tokenload -label token-api -database-url "$DATABASE_URL" -users "$USERS" -c "$CONC" -d "$DURATION" \
    -api "http://127.0.0.1:$tk" -service-token "$service_token" -cpu "caddy=$work/caddy.pid,postgres=postgres" ;;
  http-respond) bin/tokenload -label http-respond -database-url "$DATABASE_URL" -users "$USERS" -c "$CONC" -d "$DURATION" \
    -api "http://127.0.0.1:$hr" -service-token "$service_token" -cpu "caddy=$work/caddy.pid" ;;
  select) bin/tokenload -label select -database-url "$DATABASE_URL" -users "$USERS" -c "$CONC" -d "$DURATION" \
    -select -cpu "postgres=postgres" ;;
  esac
}
targets=(select token-api http-respond)
echo "token reads: $ROUNDS rounds of $DURATION at $CONC concurrent readers over $USERS accounts; $(nproc) cores" >&2
for t in "${targets[@]}"; do measure "$t" >/dev/null || die "$t: the warm-up failed (logs in $work)"; done
: >"$work/results"
n=${#targets[@]}
for r in $(seq 0 $((ROUNDS - 1))); do
  for i in $(seq 0 $((n - 1))); do
    measure "${targets[$(((i + r) % n))]}" | tee -a "$work/results" >&2
  done
done
echo
bin/tokenload -summarize "$work/results" -baseline select
