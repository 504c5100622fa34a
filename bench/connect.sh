#!/usr/bin/env bash
# bench/connect.sh: whole connects per second (start → the provider's
# authorize → callback → store), and the CPU each costs.
#
# Targets, measured in alternating rounds in one run (ratios mean more
# than absolute numbers on a shared 2-core machine):
#   sandbox-inproc   credgate and the sandbox (auto_approve) in one Caddy
#   sandbox-apart    credgate, with the sandbox in a process of its own
#                    (`caddy credgate sandbox --auto-approve`)
#   sandbox-only     the sandbox alone, in a process of its own, with a
#                    trivial client in credgate's place: Twitter's
#                    authorize, token exchange and users/me per flow, and
#                    neither Caddy nor PostgreSQL in the loop, so its
#                    rounds show the sandbox's own pace
# and, when OAUTH2_PROXY names an oauth2-proxy binary, on one shared
# mockoidc (served one request at a time: it is not safe for concurrent
# use, so it is a ceiling both share):
#   mockoidc-only    the provider alone, with a trivial client (the ceiling)
#   oauth2-proxy     oauth2-proxy's /oauth2/start with the oidc provider
#   credgate-oidc    credgate's generic provider on the same mockoidc
#
# Every flow is a fresh user (a session JWT signed for a new user id).
# CPU per flow is read from /proc for the gateway's process and for every
# process named postgres (backends and PostgreSQL's own workers), over the
# measured seconds only. Background work is off in credgate's config, so
# only the connect path is measured. For credgate's targets the WAL
# PostgreSQL wrote per flow is reported too (the cluster's: run on one of
# its own), with its full-page images and checkpoints. The database is a
# fresh one made for the run and dropped after it.
#
#   ROUNDS=3 DURATION=10s CONC=8 bash bench/connect.sh
#   COMPARE="before=/path/to/older/caddy" bash bench/connect.sh   # before/after in one run
#   TARGETS="sandbox-inproc sandbox-apart" bash bench/connect.sh
#   TARGETS=sandbox-only ROUNDS=3 DURATION=30s bash bench/connect.sh
#     does the sandbox hold its pace: three rounds of one process, which
#     reaches its caps on codes and tokens in the first
#   POOL_MAX_CONNS=4 bash bench/connect.sh   # credgate's pool size (default refresh_workers + 8, at least max(4, cores))
#   OAUTH2_PROXY=/path/to/oauth2-proxy bash bench/connect.sh
#   FRESH_TABLES=1 TARGETS=sandbox-inproc bash bench/connect.sh
#     before each round of a credgate target, empty the tables connects
#     fill and take a checkpoint: every round meets the same database and
#     starts the same full-page-image cycle, and only the processes (the
#     sandbox's memory, Caddy's) carry over from round to round, which is
#     what "the sandbox holds its pace" asks about
#   (GOBIN=$PWD/bin go install github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6)
#
# Needs PostgreSQL at DATABASE_ADMIN_URL (default the local server as
# `make test` uses it) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} CONC=${CONC:-8}
OAUTH2_PROXY=${OAUTH2_PROXY:-}
bench_name=connect.sh next_port=28400
source bench/common.sh
go build -o bin/connectload ./bench/connectload
if [[ -n $OAUTH2_PROXY && ! -x $OAUTH2_PROXY ]]; then
  die "OAUTH2_PROXY=$OAUTH2_PROXY is not an executable"
fi
fresh_database
client_id=connectload-client client_secret=connectload-secret-0123456789

start_caddy() { # name binary config: starts it, and its site on the port it waits for
  echo "$3" >"$work/$1.Caddyfile"
  "$2" run --config "$work/$1.Caddyfile" --adapter caddyfile >"$work/$1.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$1.pid"
}

targets=()
declare -A start_url sandbox_url cpu_spec
up=()

# The binaries measured: this build, and any named in COMPARE
# ("label=path …", say a build of an earlier commit), each target once
# per binary, as <target>@<label>.
builds=("=$CADDY_BIN") # label=path; this build's label is empty
read -r -a more <<<"${COMPARE:-}"
for spec in "${more[@]}"; do
  [[ $spec == ?*=?* && -x ${spec#*=} ]] || die "COMPARE: want label=path-to-caddy, got $spec"
  builds+=("$spec")
done

if [[ -n $OAUTH2_PROXY ]]; then
  take_port m
  bin/connectload -serve-provider "127.0.0.1:$m" -client-id "$client_id" -client-secret "$client_secret" >"$work/mockoidc.log" 2>&1 &
  pids+=($!)
  wait_up "$m" /oidc/.well-known/openid-configuration
  oidc=http://127.0.0.1:$m/oidc
fi


for build in "${builds[@]}"; do
  label=${build%%=*} bin=${build#*=}
  suffix=${label:+@$label}

  # credgate and the sandbox in one process.
  t=sandbox-inproc$suffix
  take_port a; take_port as
  start_caddy "$t" "$bin" "$(credgate_config "$a" "background off
$(twitter_provider "$a" "$as")")
http://127.0.0.1:$as {
	credgate_sandbox {
		auto_approve
		app_origin http://127.0.0.1:$a
	}
}"
  targets+=("$t") up+=("$a")
  start_url[$t]="http://127.0.0.1:$a/api/auth/oauth/twitter?return_to=/"
  cpu_spec[$t]="caddy=$work/$t.pid,postgres=postgres"

  # credgate, with the sandbox in a process of its own.
  t=sandbox-apart$suffix
  take_port a; take_port sb
  "$bin" credgate sandbox --listen "127.0.0.1:$sb" --auto-approve --app-origin "http://127.0.0.1:$a" >"$work/sandbox$suffix.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/sandbox$suffix.pid"
  start_caddy "$t" "$bin" "$(credgate_config "$a" "background off
$(twitter_provider "$a" "$sb")")"
  targets+=("$t") up+=("$a")
  start_url[$t]="http://127.0.0.1:$a/api/auth/oauth/twitter?return_to=/"
  cpu_spec[$t]="caddy=$work/$t.pid,sandbox=$work/sandbox$suffix.pid,postgres=postgres"

  # The sandbox alone, driven directly: its redirect URIs are on its own
  # origin, which nothing calls (the driver reads the code off the
  # redirect).
  t=sandbox-only$suffix
  take_port so
  "$bin" credgate sandbox --listen "127.0.0.1:$so" --auto-approve --app-origin "http://127.0.0.1:$so" >"$work/$t.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$t.pid"
  targets+=("$t") up+=("$so")
  sandbox_url[$t]="http://127.0.0.1:$so"
  cpu_spec[$t]="sandbox=$work/$t.pid"

  # credgate's generic provider on mockoidc.
  if [[ -n $OAUTH2_PROXY ]]; then
    t=credgate-oidc$suffix
    take_port a
    start_caddy "$t" "$bin" "$(credgate_config "$a" "background off
		provider oidc {
			kind generic
			client_id $client_id
			client_secret $client_secret
			redirect_url http://127.0.0.1:$a/api/auth/oauth/oidc/callback
			auth_url $oidc/authorize
			token_url $oidc/token
			userinfo_url $oidc/userinfo
			scopes openid profile email
		}")"
    targets+=("$t") up+=("$a")
    start_url[$t]="http://127.0.0.1:$a/api/auth/oauth/oidc?return_to=/"
    cpu_spec[$t]="gateway=$work/$t.pid,postgres=postgres"
  fi
done

if [[ -n $OAUTH2_PROXY ]]; then
  take_port o
  "$OAUTH2_PROXY" --provider=oidc --oidc-issuer-url="$oidc" \
    --client-id="$client_id" --client-secret="$client_secret" \
    --cookie-secret="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')" \
    --email-domain='*' --upstream=static://200 \
    --http-address="127.0.0.1:$o" --redirect-url="http://127.0.0.1:$o/oauth2/callback" \
    --cookie-secure=false --skip-provider-button=true --code-challenge-method=S256 \
    --insecure-oidc-allow-unverified-email=true \
    --request-logging=false --auth-logging=false --standard-logging=false >"$work/oauth2-proxy.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/oauth2-proxy.pid"
  targets+=(mockoidc-only oauth2-proxy)
  start_url[oauth2-proxy]="http://127.0.0.1:$o/oauth2/start?rd=%2F"
  cpu_spec[oauth2-proxy]="gateway=$work/oauth2-proxy.pid"
  wait_up "$o" /ping
fi
for p in "${up[@]}"; do wait_up "$p"; done

measure() { # target
  local t=$1
  if [[ $t == mockoidc-only ]]; then
    bin/connectload -label "$t" -provider-only "http://127.0.0.1:$m" -client-id "$client_id" -client-secret "$client_secret" -c "$CONC" -d "$DURATION"
  elif [[ -n ${sandbox_url[$t]:-} ]]; then
    bin/connectload -label "$t" -sandbox-only "${sandbox_url[$t]}" -app-origin "${sandbox_url[$t]}" -c "$CONC" -d "$DURATION" -cpu "${cpu_spec[$t]}"
  elif [[ ${cpu_spec[$t]} == *postgres* ]]; then
    bin/connectload -label "$t" -start "${start_url[$t]}" -jwt-secret "$jwt_secret" -c "$CONC" -d "$DURATION" -cpu "${cpu_spec[$t]}" \
      -wal-database-url "$DATABASE_URL"
  else
    bin/connectload -label "$t" -start "${start_url[$t]}" -jwt-secret "$jwt_secret" -c "$CONC" -d "$DURATION" -cpu "${cpu_spec[$t]}"
  fi
}

# The tables a connect fills (the queue goes with social_accounts); the
# keys, settings and halts stay.
fresh_tables() {
  psql -q "$DATABASE_URL" -c "TRUNCATE social_accounts, oauth_states, credential_audit_log, token_refresh_queue,
    rollout_outcomes, rollout_decisions, renewal_leases, backend_reads, legacy_flows, credgate_webhook_outbox CASCADE" \
    -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null || die "FRESH_TABLES: emptying the tables failed"
}

if [[ -n ${TARGETS:-} ]]; then # a subset, in the order given
  read -r -a targets <<<"$TARGETS"
  for t in "${targets[@]}"; do
    [[ -n ${start_url[$t]:-} || -n ${sandbox_url[$t]:-} || ($t == mockoidc-only && -n $OAUTH2_PROXY) ]] ||
      die "TARGETS: no target $t here (mockoidc-only, oauth2-proxy and credgate-oidc need OAUTH2_PROXY)"
  done
fi
echo "targets: ${targets[*]}; $ROUNDS rounds of $DURATION at $CONC concurrent flows; $(nproc) cores" >&2
for t in "${targets[@]}"; do measure "$t" >/dev/null || die "$t: the warm-up failed (logs in $work)"; done # warm-up
: >"$work/results"
# Rotate the order each round, so no target always runs first or last.
for r in $(seq 0 $((ROUNDS - 1))); do
  n=${#targets[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${targets[$(((i + r) % n))]}
    [[ -n ${FRESH_TABLES:-} && ${cpu_spec[$t]:-} == *postgres* ]] && fresh_tables
    measure "$t" | tee -a "$work/results" >&2
  done
done
echo
baseline=sandbox-inproc
[[ -n $OAUTH2_PROXY ]] && baseline=oauth2-proxy
bin/connectload -summarize "$work/results" -baseline "$baseline"
