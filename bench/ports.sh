# bench/ports.sh: sourced by the bench scripts. take_port VAR sets VAR to
# the next port from next_port (the script's own base, or BENCH_PORT_BASE)
# that nothing answers on. Caddy binds with SO_REUSEPORT, so a taken port
# would not fail: another server would quietly get half the requests.
take_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do next_port=$((next_port + 1)); done
  printf -v "$1" %d "$next_port"
  next_port=$((next_port + 1))
}
