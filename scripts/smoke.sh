#!/usr/bin/env bash
# smoke.sh: the built binary, end to end: modules are registered, keygen
# prints a key, migrate up/status/down work on a fresh database and errors
# are one line with exit status 1. Run by `make test` after the Go tests.
# It prints a line per check; the Caddys it runs log to files in a temp
# dir, whose last lines it prints only when a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
CADDY_BIN=${CADDY_BIN:-bin/caddy}
server=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
db="cgsmoke_$$_$RANDOM"
url=$(sed -E "s#^([a-z]+://[^/]*/)[^?]*#\1$db#" <<<"$server")
passed=0 failed=0
logs=$(mktemp -d -t credgate-smoke.XXXXXX)

check() { # check NAME COMMAND...: run, count, show output on failure
  local name=$1; shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' <<<"$out"
  fi
}

# finish, on exit: stop what runs, show the logs if a check failed, and
# remove them and the database.
finish() {
  kill ${sandbox_pid:-} ${caddy_pid:-} 2>/dev/null || true
  [[ -n ${bouncer_dir:-} && -f $bouncer_dir/pgbouncer.pid ]] && kill "$(cat "$bouncer_dir/pgbouncer.pid")" 2>/dev/null || true
  if [[ $failed -ne 0 ]]; then
    for log in "$logs"/*.log; do
      [[ -s $log ]] || continue
      echo "--- the last 50 lines of $(basename "$log")"
      tail -n 50 "$log" | sed 's/^/     /'
    done
  fi
  rm -rf "$logs" Caddyfile.$$
  psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}
psql "$server" -qc "CREATE DATABASE $db"
trap finish EXIT

check "list-modules shows the credgate app" \
  bash -c "'$CADDY_BIN' list-modules | grep -qx credgate"
check "keygen prints base64 of 32 bytes" \
  bash -c "test \$('$CADDY_BIN' credgate keygen | base64 -d | wc -c) -eq 32"
check "migrate up creates the tables" \
  bash -c "'$CADDY_BIN' credgate migrate up --database-url '$url' | grep -q '✓ Created table: oauth_states'"
check "migrate status reports a complete schema" \
  bash -c "DATABASE_URL='$url' '$CADDY_BIN' credgate migrate status | grep -q 'Schema complete.'"
check "migrate down keeps social_accounts" \
  bash -c "'$CADDY_BIN' credgate migrate down --database-url '$url' | grep -q 'Kept social_accounts' &&
           psql '$url' -Atc \"SELECT to_regclass('social_accounts') IS NOT NULL, to_regclass('oauth_states') IS NULL\" | grep -qx 't|t'"
check "an unreachable server is one error line and exit 1" \
  bash -c "'$CADDY_BIN' credgate migrate up --database-url 'postgres://u:hunter2@127.0.0.1:1/x' >/dev/null 2>err.$$; rc=\$?;
           lines=\$(wc -l <err.$$); leaked=\$(grep -c hunter2 err.$$ || true); rm -f err.$$;
           test \$rc -eq 1 -a \$lines -eq 1 -a \$leaked -eq 0"
check "the example Caddyfile validates" \
  env DATABASE_URL="$url" ENCRYPTION_MASTER_KEY="$("$CADDY_BIN" credgate keygen)" \
  SUPABASE_PROJECT_URL=https://abcd.supabase.co SUPABASE_PUBLISHABLE_KEY=sb_publishable_validate \
  SUPABASE_JWT_SECRET=validate-only-secret-validate-only-secret CREDGATE_ADMIN_TOKEN=x CREDGATE_SERVICE_TOKEN=validate-only-service-token \
  TWITTER_CLIENT_ID=x TWITTER_CLIENT_SECRET=x LINKEDIN_CLIENT_ID=x LINKEDIN_CLIENT_SECRET=x \
  FACEBOOK_CLIENT_ID=x FACEBOOK_CLIENT_SECRET=x INSTAGRAM_CLIENT_ID=x INSTAGRAM_CLIENT_SECRET=x \
  CREDGATE_FLAGS_FILE=flags/flags.example.json \
  "$CADDY_BIN" validate --config Caddyfile --adapter caddyfile
check "the example Caddyfile refuses to start without CREDGATE_FLAGS_FILE, naming it" \
  bash -c "out=\$(env -u CREDGATE_FLAGS_FILE DATABASE_URL='$url' ENCRYPTION_MASTER_KEY='$("$CADDY_BIN" credgate keygen)' \
             SUPABASE_PROJECT_URL=https://abcd.supabase.co SUPABASE_PUBLISHABLE_KEY=sb_publishable_validate \
             SUPABASE_JWT_SECRET=validate-only-secret-validate-only-secret CREDGATE_ADMIN_TOKEN=x CREDGATE_SERVICE_TOKEN=validate-only-service-token \
             TWITTER_CLIENT_ID=x TWITTER_CLIENT_SECRET=x LINKEDIN_CLIENT_ID=x LINKEDIN_CLIENT_SECRET=x \
             FACEBOOK_CLIENT_ID=x FACEBOOK_CLIENT_SECRET=x INSTAGRAM_CLIENT_ID=x INSTAGRAM_CLIENT_SECRET=x \
             '$CADDY_BIN' validate --config Caddyfile --adapter caddyfile 2>&1) && exit 1; grep -q 'set CREDGATE_FLAGS_FILE' <<<\"\$out\""
check "examples/sandbox.Caddyfile validates" \
  env DATABASE_URL="$url" ENCRYPTION_MASTER_KEY="$("$CADDY_BIN" credgate keygen)" \
  "$CADDY_BIN" validate --config examples/sandbox.Caddyfile --adapter caddyfile

# The provider emulator, standalone and as a Caddy handler.
# Two ports nothing answers on (Caddy binds with SO_REUSEPORT, and a
# port taken by another program fails the bind): a random pair, checked.
free_pair() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "smoke: no two free ports found in 20000-30000" >&2
  return 1
}
sandbox_port=$(free_pair)
"$CADDY_BIN" credgate sandbox --listen "127.0.0.1:$sandbox_port" --auto-approve >"$logs/sandbox.log" 2>&1 &
sandbox_pid=$!
caddy_port=$((sandbox_port + 1))
cat >Caddyfile.$$ <<CADDY
{
	admin off
}
:$caddy_port {
	credgate_sandbox {
		auto_approve
	}
}
CADDY
"$CADDY_BIN" run --config Caddyfile.$$ --adapter caddyfile >"$logs/caddy_sandbox.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$sandbox_port/_sandbox/stats" >/dev/null && curl -sf "http://127.0.0.1:$caddy_port/_sandbox/stats" >/dev/null && break
  sleep 0.2
done
authorize="/twitter/i/oauth2/authorize?response_type=code&client_id=twitter-client-id&state=s&code_challenge=abc&code_challenge_method=S256&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fapi%2Ftwitter%2Fcallback"
check "credgate sandbox prints the apps it accepts" \
  grep -q "client_id=twitter-client-id client_secret=twitter-client-secret" "$logs/sandbox.log"
check "credgate sandbox issues a code" \
  bash -c "curl -s -o /dev/null -w '%{redirect_url}' 'http://127.0.0.1:$sandbox_port$authorize' | grep -q 'code='"
check "credgate_sandbox in a Caddyfile issues a code" \
  bash -c "curl -s -o /dev/null -w '%{redirect_url}' 'http://127.0.0.1:$caddy_port$authorize' | grep -q 'code='"
check "sandbox stats count the codes" \
  bash -c "curl -s 'http://127.0.0.1:$caddy_port/_sandbox/stats' | grep -q '\"codes_issued\":1'"

# The README walkthrough: examples/sandbox.Caddyfile on the built binary,
# one connect per platform with curl (examples/connect.sh). Uses the
# example's fixed ports (8080, 8081, 3000, 9090, 9180): Caddy binds with
# SO_REUSEPORT, so a second server on one of them would silently share it.
for port in 8080 8081 3000 9090 9180; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "smoke: port $port is in use (a running \`make demo\`?); stop it and run again" >&2
    exit 1
  fi
done
psql "$server" -qc "SET client_min_messages TO warning" -qc "DROP DATABASE IF EXISTS ${db}_demo WITH (FORCE)" -qc "CREATE DATABASE ${db}_demo"
demo_url=$(sed -E "s#^([a-z]+://[^/]*/)[^?]*#\1${db}_demo#" <<<"$server")
"$CADDY_BIN" credgate migrate up --database-url "$demo_url" >/dev/null
demo_key=$("$CADDY_BIN" credgate keygen)
# run_example DATABASE_URL LOG: examples/sandbox.Caddyfile in the
# background (its pid in example_pid), once its sandbox answers.
run_example() {
  DATABASE_URL="$1" ENCRYPTION_MASTER_KEY="$demo_key" \
    "$CADDY_BIN" run --config examples/sandbox.Caddyfile --adapter caddyfile >"$2" 2>&1 &
  example_pid=$!
  for _ in $(seq 1 50); do curl -sf -o /dev/null http://localhost:9090/_sandbox/stats && break; sleep 0.2; done
}
# connect_and_post HOW EGRESS_PATH: a connect per platform, then a post
# through the egress proxy by the app's back end, which holds no token.
connect_and_post() {
  for platform in twitter linkedin facebook instagram; do
    check "examples/connect.sh $platform $1" bash examples/connect.sh "$platform"
  done
  check "a post through the egress proxy, the app holding no token, $1" \
    bash -c "test \$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer development-service-token-do-not-use' \
             -H 'X-Credgate-User: 11111111-1111-4111-8111-111111111111' -H 'Content-Type: application/json' -d '{\"text\":\"hello\"}' \
             http://127.0.0.1:8081/egress/$2) = 201"
}
run_example "$demo_url" "$logs/example.log"
demo_pid=$example_pid
connect_and_post "through examples/sandbox.Caddyfile" twitter/2/tweets
check "the token API is not on the public origin" \
  bash -c "test \$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer development-service-token-do-not-use' \
           http://localhost:8080/api/internal/credentials/11111111-1111-4111-8111-111111111111/twitter/token) = 404"
check "/metrics counts the four new-flow connections" \
  bash -c "curl -s http://127.0.0.1:9180/metrics | grep -E '^credgate_connections_total\\{' | grep 'flow=\"new\"' | grep 'outcome=\"success\"' | awk '{s+=\$2} END {exit !(s==4)}'"
check "report shows the four connections" \
  bash -c "'$CADDY_BIN' credgate report --database-url '$demo_url' | grep -Eq '^connect +success +4$'"
check "verify passes on the demo database" \
  bash -c "for _ in 1 2 3 4 5; do  # each replica adds its back-end reads to the shared count every second
             out=\$(ENCRYPTION_MASTER_KEY='$demo_key' '$CADDY_BIN' credgate verify --database-url '$demo_url' 2>&1) && exit 0;
             sleep 1; done; echo \"\$out\"; exit 1"
check "cleanup runs" \
  bash -c "'$CADDY_BIN' credgate cleanup --database-url '$demo_url' | grep -q '✓ deleted'"
check "rollout status shows the flags in force and the demo's Twitter flow" \
  bash -c "for _ in 1 2 3 4 5; do  # each replica adds its outcomes to the shared window every second
             out=\$('$CADDY_BIN' credgate rollout status --database-url '$demo_url' --config examples/sandbox.Caddyfile 2>&1 | grep -A3 '^twitter');
             grep -q '0.0 % new, kill switch on' <<<\"\$out\" && grep -q 'guard:  on (min_success 0.950' <<<\"\$out\" && grep -q 'new flow 100.0 % of 1,' <<<\"\$out\" && exit 0;
             sleep 1; done; echo \"\$out\"; exit 1"
check "rollout set moves every platform of a copy of the example, and rollout status prints the status and nothing else" \
  bash -c "cp flags/flags.example.json flags.$$.json && '$CADDY_BIN' credgate rollout set --force 25 --flags 'flagd flags.$$.json' >/dev/null &&
           out=\$('$CADDY_BIN' credgate rollout status --database-url '$demo_url' --flags 'flagd flags.$$.json' 2>&1) &&
           test \$(grep -c '^  flags:  25.0 % new, kill switch on$' <<<\"\$out\") -eq 4 &&
           ! grep -vE '^(facebook|instagram|linkedin|twitter|  (flags:|guard:|last|decisions:|back end:|⚠) .*)$' <<<\"\$out\"; rc=\$?; rm -f flags.$$.json; exit \$rc"
check "rollout resume of a platform that is not halted is one error line and exit 1" \
  bash -c "! '$CADDY_BIN' credgate rollout resume --database-url '$demo_url' --platform twitter 2>err.$$ >/dev/null &&
           test \$(wc -l <err.$$) -eq 1 && grep -q 'not halted' err.$$; rc=\$?; rm -f err.$$; exit \$rc"
check "migrate status exits 1 on an empty database" \
  bash -c "! DATABASE_URL='$url' '$CADDY_BIN' credgate migrate status >/dev/null 2>&1"
check "a command's error is one plain line, not JSON" \
  bash -c "'$CADDY_BIN' credgate report --database-url 'postgres://u:hunter2@127.0.0.1:1/x' 2>&1 >/dev/null | grep -qx 'Error: .*127.0.0.1:1.*'"
check "a second demo refuses to share the running one's ports" \
  bash -c "out=\$(CADDY_BIN='$CADDY_BIN' bash scripts/demo.sh 2>&1); rc=\$?; test \$rc -ne 0 && grep -q 'port 8080 is in use' <<<\"\$out\""
kill $demo_pid 2>/dev/null; wait $demo_pid 2>/dev/null || true
psql "$server" -qc "DROP DATABASE IF EXISTS ${db}_demo WITH (FORCE)"

# The same example through PgBouncer in transaction mode (what Supabase's
# pooler on port 6543 is): migrate goes direct, as the README says, and
# the gateway, the token API, egress and verify go through the pooler. PgBouncer refuses to run as root: as root (CI) it runs as the
# postgres user, like the tests' PgBouncers.
bouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[[ -x $bouncer_bin ]] || { echo "smoke: pgbouncer is missing (apt-get install pgbouncer; .ci/run does it)" >&2; exit 1; }
bouncer_port=""
for p in $(seq 16432 16532); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then bouncer_port=$p; break; fi
done
[[ -n $bouncer_port ]] || { echo "smoke: no free port for PgBouncer in 16432-16532" >&2; exit 1; }
bouncer_dir=$(mktemp -d)
pool_db="${db}_pool"
server_host=$(sed -E 's#^[a-z]+://([^@/]*@)?([^:/?]*).*#\2#' <<<"$server")
server_port=$(sed -nE 's#^[a-z]+://([^@/]*@)?[^:/?]*:([0-9]+).*#\2#p' <<<"$server")
server_user=$(sed -nE 's#^[a-z]+://([^:@/]*)[:@].*#\1#p' <<<"$server")
cat >"$bouncer_dir/pgbouncer.ini" <<INI
[databases]
$pool_db = host=$server_host port=${server_port:-5432} dbname=$pool_db user=${server_user:-postgres}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $bouncer_dir/userlist.txt
pool_mode = transaction
server_reset_query =
logfile = $bouncer_dir/pgbouncer.log
pidfile = $bouncer_dir/pgbouncer.pid
INI
echo "\"${server_user:-postgres}\" \"\"" >"$bouncer_dir/userlist.txt"
if [[ $(id -u) -eq 0 ]]; then
  chown -R postgres "$bouncer_dir"
  runuser -u postgres -- "$bouncer_bin" -d "$bouncer_dir/pgbouncer.ini"
else
  "$bouncer_bin" -d "$bouncer_dir/pgbouncer.ini"
fi
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$bouncer_port") 2>/dev/null && break; sleep 0.1; done
psql "$server" -qc "SET client_min_messages TO warning" -qc "DROP DATABASE IF EXISTS $pool_db WITH (FORCE)" -qc "CREATE DATABASE $pool_db"
pool_direct=$(sed -E "s#^([a-z]+://[^/]*/)[^?]*#\1$pool_db#" <<<"$server")
through="postgres://${server_user:-postgres}@127.0.0.1:$bouncer_port/$pool_db?sslmode=disable&pooler=transaction"
"$CADDY_BIN" credgate migrate up --database-url "$pool_direct" >/dev/null
check "migrate through the transaction pooler refuses at once, naming what to use" \
  bash -c "'$CADDY_BIN' credgate migrate up --database-url '$through' 2>&1 | grep -q 'direct or session-mode connection'"
run_example "$through" "$logs/example_through_pgbouncer.log"
pool_pid=$example_pid
connect_and_post "through the transaction pooler" linkedin/v2/ugcPosts
# (Renewals through the pooler are in TestTheGatewayWorksThroughATransactionPooler,
# whose sandbox clock the gateway shares; this one's tokens live two hours.)
check "the token API serves a token through the transaction pooler" \
  bash -c "curl -sf -H 'Authorization: Bearer development-service-token-do-not-use' \
             http://127.0.0.1:8081/api/internal/credentials/11111111-1111-4111-8111-111111111111/twitter/token | grep -q access_token"
check "verify passes through the transaction pooler" \
  bash -c "for _ in 1 2 3 4 5; do
             out=\$(ENCRYPTION_MASTER_KEY='$demo_key' '$CADDY_BIN' credgate verify --database-url '$through' 2>&1) && exit 0;
             sleep 1; done; echo \"\$out\"; exit 1"
kill $pool_pid 2>/dev/null; wait $pool_pid 2>/dev/null || true
kill "$(cat "$bouncer_dir/pgbouncer.pid")" 2>/dev/null || true
cp "$bouncer_dir/pgbouncer.log" "$logs/pgbouncer.log" 2>/dev/null || true
rm -rf "$bouncer_dir"
psql "$server" -qc "DROP DATABASE IF EXISTS $pool_db WITH (FORCE)"

# `make demo` itself, once (DEMO_ONCE: connect one platform and stop).
check "make demo starts, connects and stops cleanly" \
  bash -c "DATABASE_URL='$(sed -E "s#^([a-z]+://[^/]*/)[^?]*#\1${db}_once#" <<<"$server")' DEMO_ONCE=1 CADDY_BIN='$CADDY_BIN' timeout 120 bash scripts/demo.sh >demo-once.$$.log 2>&1 && grep -q 'connected=twitter' demo-once.$$.log;
           rc=\$?; test \$rc -eq 0 || cat demo-once.$$.log; rm -f demo-once.$$.log; exit \$rc"

psql "$server" -qc "DROP DATABASE IF EXISTS ${db}_once WITH (FORCE)"

echo "smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
