#!/usr/bin/env bash
# bench/statements.sh: SQL statements per whole connect, counted by
# PostgreSQL itself (pg_stat_statements), for this build and any named in
# COMPARE ("label=path …").
#
# pg_stat_statements must be loaded when the server starts, so the script
# starts a throwaway PostgreSQL cluster of its own (the local server's
# binaries, a free port, removed on exit) with it preloaded. For each
# build: a fresh database, migrated; a Caddy with credgate and the
# sandbox (auto_approve); the counters reset; FLOWS connects, one at a
# time, through bench/connectload; then every statement the database ran,
# by text, divided by the flows (with track=all, so the statements that
# triggers run are counted, marked nested). The database watch's ping
# (one a second) is listed apart.
#
#   FLOWS=500 bash bench/statements.sh
#   COMPARE="before=/path/to/older/caddy" bash bench/statements.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-500}
CADDY_BIN=${CADDY_BIN:-bin/caddy}
die() { echo "bench/statements.sh: $*" >&2; exit 1; }
[[ -x $CADDY_BIN ]] || make build >/dev/null
go build -o bin/connectload ./bench/connectload
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
[[ -n $initdb ]] || die "needs PostgreSQL's server binaries (apt-get install postgresql postgresql-contrib)"
pgbin=$(dirname "$initdb")

work=$(mktemp -d)
pids=()
run_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  run_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] && chmod 755 "$work"

# Only ports nobody answers on (bench/ports.sh).
next_port=${BENCH_PORT_BASE:-28700}
source bench/ports.sh
take_port pgport
mkdir -p "$work/pg"
[[ $(id -u) == 0 ]] && chown postgres "$work/pg"
run_pg "$initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
run_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pgport -c listen_addresses=127.0.0.1 -k $work/pg -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
  start >/dev/null
admin="postgres://postgres@127.0.0.1:$pgport/postgres?sslmode=disable"
psql -q "$admin" -c "CREATE EXTENSION pg_stat_statements" >/dev/null

builds=("this build=$CADDY_BIN")
read -r -a more <<<"${COMPARE:-}"
for spec in "${more[@]}"; do
  [[ $spec == ?*=?* && -x ${spec#*=} ]] || die "COMPARE: want label=path-to-caddy, got $spec"
  builds+=("$spec")
done

jwt_secret=bench-only-jwt-secret-bench-only-jwt-secret
n=0
for build in "${builds[@]}"; do
  label=${build%%=*} bin=${build#*=}
  n=$((n + 1))
  db=statements_$n
  psql -q "$admin" -c "CREATE DATABASE $db" >/dev/null
  url="postgres://postgres@127.0.0.1:$pgport/$db?sslmode=disable"
  "$bin" credgate migrate up --database-url "$url" >/dev/null
  take_port site; take_port sb
  cat >"$work/$n.Caddyfile" <<CADDY
{
	admin off
	credgate {
		database_url $url
		master_key $("$bin" credgate keygen)
		flags static 100
		background off
		provider twitter {
			client_id twitter-client-id
			client_secret twitter-client-secret
			redirect_url http://127.0.0.1:$site/api/auth/oauth/twitter/callback
			sandbox http://127.0.0.1:$sb
		}
	}
}
http://127.0.0.1:$site {
	credgate {
		public_origin http://127.0.0.1:$site
		identity {
			jwt_secret $jwt_secret
		}
		return_to_allow /
	}
	respond "app" 200
}
http://127.0.0.1:$sb {
	credgate_sandbox {
		auto_approve
		app_origin http://127.0.0.1:$site
	}
}
CADDY
  "$bin" run --config "$work/$n.Caddyfile" --adapter caddyfile >"$work/$n.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$site/" && break; sleep 0.1; done
  start="http://127.0.0.1:$site/api/auth/oauth/twitter?return_to=/"
  bin/connectload -start "$start" -jwt-secret "$jwt_secret" -c 1 -d 1s >/dev/null # warm the pool and the statement caches
  psql -q "$admin" -c "SELECT pg_stat_statements_reset()" >/dev/null
  bin/connectload -start "$start" -jwt-secret "$jwt_secret" -c 1 -flows "$FLOWS" >"$work/$n.result"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  flows=$(( $(sed -n 's/.*"flows":\([0-9]*\).*/\1/p' "$work/$n.result") + 1 )) # and the warm-up flow
  echo "== $label: statements per connect, over $flows connects"
  psql -X -q -A -F $'\t' "$admin" -c "
    SELECT round(sum(s.calls)::numeric / $flows, 2) AS per_flow,
           left(regexp_replace(s.query, '\s+', ' ', 'g'), 100) AS statement
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname = '$db'
    GROUP BY s.query ORDER BY 1 DESC, 2" | sed '1d;$d' |
    awk -F '\t' '
      $2 ~ /^-- ping|^SELECT 1$|^;$/ { printf "   (%s  %s: the database watch)\n", $1, $2; next }
      $2 ~ /^SELECT 1 FROM ONLY/ { nested += $1; printf "   %s  %s  (nested: a foreign key check its trigger runs)\n", $1, $2; next }
      { top += $1; printf "   %s  %s\n", $1, $2 }
      END { printf "   %s sent by credgate (each a round trip), %s nested\n", top, nested }'
done
