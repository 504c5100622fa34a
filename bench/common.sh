# bench/common.sh: sourced by the bench scripts that run credgate against
# a database of their own (connect.sh, tokenapi.sh, renewals.sh). Before
# sourcing it, set bench_name (for messages) and next_port (the script's
# own port base, which BENCH_PORT_BASE overrides). It provides:
#   die MSG               "bench/<bench_name>: MSG" on stderr, exit 1
#   work, pids            a temporary directory (kept with KEEP=1) and the
#                         processes stopped on exit
#   take_port VAR         a port nothing answers on (bench/ports.sh)
#   wait_up PORT [PATH]   wait until something answers on 127.0.0.1:PORT
#   fresh_database        a database made for the run, migrated, dropped on
#                         exit: sets DATABASE_URL and master_key
#   credgate_config PORT OPTIONS
#                         a Caddyfile: credgate's global options (the run's
#                         database and key, a static 100 % rollout, then
#                         OPTIONS: providers, background …; admin off
#                         unless bench_admin names an address) and a site
#                         on PORT whose credgate takes the bench's HS256
#                         session JWTs (jwt_secret) in sb-access-token
#   twitter_provider SITE-PORT SANDBOX-PORT
#                         the provider block for Twitter on the sandbox
#   CADDY_BIN, ADMIN_URL  the binary (built when missing) and the server
#                         (DATABASE_ADMIN_URL, default the local one as
#                         `make test` uses it)

CADDY_BIN=${CADDY_BIN:-bin/caddy}
ADMIN_URL=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}

die() { echo "bench/$bench_name: $*" >&2; exit 1; }
[[ -x $CADDY_BIN ]] || make build >/dev/null
command -v psql >/dev/null || die "psql is needed to create the run's database"

work=$(mktemp -d)
db=credgate_bench_$$
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

next_port=${BENCH_PORT_BASE:-$next_port}
source bench/ports.sh

wait_up() { # port [path]
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1${2:-/}" && return 0
    sleep 0.1
  done
  die "nothing answers on 127.0.0.1:$1 (logs in $work)"
}

fresh_database() {
  psql -q "$ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
  DATABASE_URL=${ADMIN_URL/\/postgres\?//$db?}
  [[ $DATABASE_URL == *"/$db?"* ]] || die "DATABASE_ADMIN_URL must end in /postgres?<options>, got $ADMIN_URL"
  "$CADDY_BIN" credgate migrate up --database-url "$DATABASE_URL" >/dev/null
  master_key=$("$CADDY_BIN" credgate keygen)
}

jwt_secret=bench-only-jwt-secret-bench-only-jwt-secret
credgate_config() { # port options
  cat <<CADDY
{
	admin ${bench_admin:-off}
	credgate {
		database_url $DATABASE_URL${POOL_MAX_CONNS:+&pool_max_conns=$POOL_MAX_CONNS}
		master_key $master_key
		flags static 100
$2
	}
}
http://127.0.0.1:$1 {
	credgate {
		public_origin http://127.0.0.1:$1
		identity {
			jwt_secret $jwt_secret
			cookie sb-access-token
		}
		return_to_allow /
	}
	respond "app" 200
}
CADDY
}

twitter_provider() { # site-port sandbox-port
  cat <<CADDY
		provider twitter {
			client_id twitter-client-id
			client_secret twitter-client-secret
			redirect_url http://127.0.0.1:$1/api/auth/oauth/twitter/callback
			sandbox http://127.0.0.1:$2
		}
CADDY
}
