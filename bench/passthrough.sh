#!/usr/bin/env bash
# bench/passthrough.sh: what credgate costs traffic it does not own.
#
# Two Caddy configs on the same binary, each in front of the same static
# upstream: A has `credgate` in the route, B does not. They are measured
# alternately (A, B, A, B …) in one run, on loopback only, and reported as
# ratios A/B, because absolute numbers on a shared 2-core machine mean
# little. Target: at most 3 % fewer requests/s with credgate.
#
#   ROUNDS=5 DURATION=5s CONNS=16 bash bench/passthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-5s} CONNS=${CONNS:-16}
CADDY_BIN=${CADDY_BIN:-bin/caddy}
[[ -x $CADDY_BIN ]] || make build >/dev/null
go build -o bin/loadgen ./bench/loadgen

# Only ports nobody answers on (bench/ports.sh).
next_port=${BENCH_PORT_BASE:-18090}
source bench/ports.sh
take_port up; take_port with; take_port without

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/upstream.Caddyfile" <<CADDY
{
	admin off
}
:$up {
	respond "hello from the app" 200
}
CADDY
common() { # the credgate app config; pass-through never touches the database
cat <<CADDY
{
	admin off
	credgate {
		database_url postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
		master_key $("$CADDY_BIN" credgate keygen)
	}
}
CADDY
}
{ common; cat <<CADDY; } >"$work/with.Caddyfile"
:$with {
	credgate {
		public_origin http://127.0.0.1:$with
		identity {
			jwt_secret bench-only-secret-bench-only-secret-0000
		}
	}
	reverse_proxy 127.0.0.1:$up
}
CADDY
{ common; cat <<CADDY; } >"$work/without.Caddyfile"
:$without {
	reverse_proxy 127.0.0.1:$up
}
CADDY

for cfg in upstream with without; do
  "$CADDY_BIN" run --config "$work/$cfg.Caddyfile" --adapter caddyfile >"$work/$cfg.log" 2>&1 &
  pids+=($!)
done
for port in $up $with $without; do
  for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
done

run() { bin/loadgen -url "http://127.0.0.1:$1/some/page" -c "$CONNS" -d "$DURATION"; }
run $with >/dev/null; run $without >/dev/null # warm-up
: >"$work/results"
# Alternate which side goes first, so neither always runs on a warmer or
# cooler machine.
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then
    echo "with $(run $with)" >>"$work/results"
    echo "without $(run $without)" >>"$work/results"
  else
    echo "without $(run $without)" >>"$work/results"
    echo "with $(run $with)" >>"$work/results"
  fi
done

python3 - "$work/results" <<'PY'
import json, statistics, sys
rows = [l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines()]
a = [json.loads(j) for k, j in rows if k == "with"]
b = [json.loads(j) for k, j in rows if k == "without"]
rps = [x["rps"] / y["rps"] for x, y in zip(a, b)]
p99 = [x["p99_us"] / y["p99_us"] for x, y in zip(a, b)]
errs = sum(x["errors"] for x in a + b)
print(f"rounds: {len(rps)}   errors: {errs}")
print(f"with credgate    rps median {statistics.median(x['rps'] for x in a):9.0f}   p99 median {statistics.median(x['p99_us'] for x in a):7.0f} us")
print(f"without credgate rps median {statistics.median(x['rps'] for x in b):9.0f}   p99 median {statistics.median(x['p99_us'] for x in b):7.0f} us")
print(f"ratio with/without: requests/s {statistics.median(rps):.3f} (rounds {', '.join(f'{r:.3f}' for r in rps)})")
print(f"ratio with/without: p99        {statistics.median(p99):.3f} (rounds {', '.join(f'{r:.3f}' for r in p99)})")
PY
