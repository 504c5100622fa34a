#!/usr/bin/env bash
# demo.sh: `make demo`. Runs examples/sandbox.Caddyfile (credgate in front
# of the demo app, the provider sandbox, the token API and the metrics)
# with nothing else to set up:
#   - refuses to start when one of the demo's ports is taken (Caddy binds
#     with SO_REUSEPORT: a second demo would silently share them);
#   - uses DATABASE_URL when its server answers, else PostgreSQL on
#     127.0.0.1:5432, else a throwaway cluster under .demo/pg on a free
#     port (installing Debian's postgresql when it is missing and this
#     runs as root);
#   - keeps its own master key (.demo/key) and flag file (.demo/flags.json,
#     the example at 50 %), so no tracked file changes;
#   - prints a banner when ready, and on Ctrl-C stops what it started.
# DEMO_ONCE=1 runs examples/connect.sh once when ready and exits (the
# smoke test uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
CADDY_BIN=${CADDY_BIN:-bin/caddy}
ports=(8080 8081 3000 9090 9180)
# The demo's own ports, whatever the environment says (the Caddyfile
# would otherwise move them away from the ones checked and printed here).
unset CREDGATE_DEMO_PORT CREDGATE_DEMO_INTERNAL_PORT CREDGATE_DEMO_APP_PORT CREDGATE_DEMO_SANDBOX_PORT CREDGATE_DEMO_METRICS_PORT
demo=.demo

say() { printf 'make demo: %s\n' "$*"; }
die() { printf 'make demo: %s\n' "$*" >&2; exit 1; }

for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use (another \`make demo\`?). Stop it first: Caddy shares ports silently, and two demos would split each other's requests."
  fi
done

# Tools the demo needs; installed with apt when missing and allowed.
missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: install them (sudo apt-get install -y ${missing[*]})"
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$demo"

caddy_pid="" cluster="" pgdir=""
cleanup() {
  [[ -n $caddy_pid ]] && kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null
  if [[ -n $cluster ]]; then
    run_pg "$cluster/bin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdir" "$demo/pg"
    say "stopped and removed the throwaway PostgreSQL"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_pg runs a PostgreSQL server binary: as the postgres user when this is
# root (initdb and postgres refuse to run as root).
run_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

answers() { psql "$(sed -E 's#^([a-z]+://[^/]*/)[^?]*#\1postgres#' <<<"$1")" -Atc 'SELECT 1' >/dev/null 2>&1; }

default_url=postgres://postgres@127.0.0.1:5432/credgate_demo?sslmode=disable
if [[ -n ${DATABASE_URL:-} ]] && answers "$DATABASE_URL"; then
  say "using DATABASE_URL"
elif [[ -z ${DATABASE_URL:-} ]] && answers "$default_url"; then
  DATABASE_URL=$default_url
  say "using PostgreSQL on 127.0.0.1:5432"
else
  [[ -n ${DATABASE_URL:-} ]] && say "DATABASE_URL does not answer; starting a throwaway PostgreSQL instead"
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z $initdb ]]; then
    [[ $(id -u) == 0 ]] || die "no PostgreSQL server: install it (sudo apt-get install -y postgresql) or set DATABASE_URL"
    say "installing PostgreSQL"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)
  fi
  cluster=$(dirname "$(dirname "$initdb")")
  pgport=55432
  while (exec 3<>"/dev/tcp/127.0.0.1/$pgport") 2>/dev/null; do pgport=$((pgport + 1)); done
  # The cluster lives outside the checkout, which the postgres user may
  # not be able to enter (a clone under /root); .demo/pg points at it.
  pgdir=$(mktemp -d "${TMPDIR:-/tmp}/credgate-demo-pg.XXXXXX")
  [[ $(id -u) == 0 ]] && chown postgres "$pgdir"
  ln -sfn "$pgdir" "$demo/pg"
  run_pg "$initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  run_pg "$cluster/bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $pgport -c listen_addresses=127.0.0.1 -k $pgdir" start >/dev/null
  DATABASE_URL=postgres://postgres@127.0.0.1:$pgport/credgate_demo?sslmode=disable
  say "started a throwaway PostgreSQL on 127.0.0.1:$pgport ($demo/pg; removed on exit)"
fi
export DATABASE_URL

bash scripts/createdb.sh "$DATABASE_URL" >/dev/null
"$CADDY_BIN" credgate migrate up >/dev/null
# The key stays in .demo/ (an older checkout kept it in .demo-key).
if [[ ! -s $demo/key ]]; then
  if [[ -s .demo-key ]]; then cp .demo-key "$demo/key"; else "$CADDY_BIN" credgate keygen >"$demo/key"; fi
  chmod 600 "$demo/key"
fi
export ENCRYPTION_MASTER_KEY=${ENCRYPTION_MASTER_KEY:-$(cat "$demo/key")}
if [[ ! -s $demo/flags.json ]]; then
  jq '.flags["oauth-new-flow"].targeting.if[2].fractional = [["new", 50], ["legacy", 50]]' flags/flags.example.json >"$demo/flags.json"
fi
export CREDGATE_FLAGS_FILE=$demo/flags.json

"$CADDY_BIN" run --config examples/sandbox.Caddyfile --adapter caddyfile >"$demo/caddy.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 1 100); do
  curl -sf -o /dev/null http://localhost:8080/ && break
  if ! kill -0 "$caddy_pid" 2>/dev/null; then
    tail -5 "$demo/caddy.log" >&2
    grep -q "does not match the fingerprint" "$demo/caddy.log" &&
      say "the database was set up with another master key (another checkout's $demo/key?): use that key, point DATABASE_URL at another database, or drop this one"
    die "Caddy stopped; its log is $demo/caddy.log"
  fi
  sleep 0.1
done

cat <<BANNER

  credgate demo is running (log: $demo/caddy.log). Ctrl-C stops it.

  The app            http://localhost:8080/     sign in as alice, bob or carol, then Connect: the page
                     shows where each click goes and why (the rollout), both arms' connections
                     (credgate's, and those the stub app on :3000 made itself), and the webhook
                     events credgate sent the app (POST http://localhost:3000/hooks/credgate, verified)
  The sandbox        http://localhost:9090/     the four platforms, their apps and faults
  Metrics            http://127.0.0.1:9180/metrics
  Token API          http://127.0.0.1:8081/api/internal/credentials/<user>/<platform>/token
                     (Authorization: Bearer development-service-token-do-not-use)

  Demo users         alice 11111111-1111-4111-8111-111111111111
                     bob   22222222-2222-4222-8222-222222222222
                     carol 33333333-3333-4333-8333-333333333333
                     (each is signed in at the sandbox's platforms as themselves: accounts of their own)
  Admin token        curl -H 'Authorization: Bearer development-admin-token' http://localhost:8080/api/credentials/service-health

  Operator commands against this demo:
    export DATABASE_URL='$DATABASE_URL' ENCRYPTION_MASTER_KEY=\$(cat $demo/key)
    $CADDY_BIN credgate rollout status --flags "flagd $demo/flags.json"
    $CADDY_BIN credgate report

  The rollout is $demo/flags.json (created at LinkedIn 0 %, the others 50 %; kept across runs:
  \`rollout status\` says what is in force). Change it, e.g. every platform to 100 %
  (--force: the demo's stand-in app has no back end that reads tokens through credgate,
  which rollout set otherwise waits for; see docs/RUNBOOK.md, Phase 3½):
    $CADDY_BIN credgate rollout set 100 --force --flags "flagd $demo/flags.json"

BANNER

if [[ -n ${DEMO_ONCE:-} ]]; then
  CADDY_BIN=$CADDY_BIN bash examples/connect.sh twitter
  exit 0
fi
wait "$caddy_pid"
