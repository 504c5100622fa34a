#!/usr/bin/env bash
# bench/passthrough-callgrind.sh: instructions Caddy executes per request
# credgate does not own, with credgate in the route and without it.
#
# valgrind's callgrind counts instructions, not seconds, so the figure does
# not move with whatever else the machine is doing. Two Caddy configs on
# the same binary, as in bench/passthrough.sh: A has `credgate` in the
# route, B does not (both load the credgate app, so its background work is
# on both sides). Each runs under callgrind with instrumentation off until
# warmed up; then REQUESTS requests on one keep-alive connection are
# counted, and the count is divided by REQUESTS. Target: A within 1 % of B.
# Go's preemption signals crash callgrind, hence GODEBUG=asyncpreemptoff=1.
#
#   REQUESTS=2000 ROUNDS=2 bash bench/passthrough-callgrind.sh
#
# Needs valgrind (Debian: apt-get install valgrind) and curl; PostgreSQL
# at DATABASE_URL for the app's pool (pass-through never queries it).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-2000} ROUNDS=${ROUNDS:-2}
CADDY_BIN=${CADDY_BIN:-bin/caddy}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
die() { echo "bench/passthrough-callgrind.sh: $*" >&2; exit 1; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || die "needs valgrind (apt-get install valgrind)"
[[ -x $CADDY_BIN ]] || make build >/dev/null

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"; }
trap cleanup EXIT

# Only ports nobody answers on (bench/ports.sh).
next_port=${BENCH_PORT_BASE:-28600}
source bench/ports.sh
take_port up
"$CADDY_BIN" respond --listen "127.0.0.1:$up" --body "hello from the app" >"$work/upstream.log" 2>&1 &
pids+=($!)
key=$("$CADDY_BIN" credgate keygen)

config() { # port, with|without
  cat <<CADDY
{
	admin off
	credgate {
		database_url $DATABASE_URL
		master_key $key
		background off
	}
}
http://127.0.0.1:$1 {
CADDY
  if [[ $2 == with ]]; then
    cat <<CADDY
	credgate {
		public_origin http://127.0.0.1:$1
		identity {
			jwt_secret bench-only-secret-bench-only-secret-0000
		}
	}
CADDY
  fi
  echo "	reverse_proxy 127.0.0.1:$up"
  echo "}"
}

# count <variable> <with|without>: sets variable to the instructions per
# request of one run. (Not in a $(…): set -e would not stop it there.)
count() {
  local port out pid ready=""
  take_port port
  config "$port" "$2" >"$work/$2.Caddyfile"
  out=$work/$2.$port.callgrind
  GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$CADDY_BIN" run --config "$work/$2.Caddyfile" --adapter caddyfile >"$work/$2.$port.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && { ready=1; break; }
    kill -0 "$pid" 2>/dev/null || die "Caddy under valgrind exited (see $work/$2.$port.log)"
    sleep 0.2
  done
  [[ -n $ready ]] || die "Caddy under valgrind did not answer on $port within 2 minutes"
  curl -sf -o /dev/null "http://127.0.0.1:$port/warm/[1-200]"
  callgrind_control -i on "$pid" >/dev/null
  curl -sf -o /dev/null "http://127.0.0.1:$port/some/page?n=[1-$REQUESTS]"
  callgrind_control -i off "$pid" >/dev/null
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total=$(awk '/^totals:/ {print $2; exit}' "$out")
  [[ $total -gt 0 ]] || die "no instruction count in $out"
  printf -v "$1" %d $((total / REQUESTS))
}

printf '%-8s %-16s %-16s %s\n' round with without ratio
for r in $(seq 1 "$ROUNDS"); do
  if ((r % 2)); then count a with; count b without; else count b without; count a with; fi
  printf '%-8s %-16s %-16s %s\n' "$r" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.4f", a / b}')"
done
