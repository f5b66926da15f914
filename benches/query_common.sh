# Shared by benches/query_embedded.sh and benches/console_first_chart.sh (sourced, not run):
# an all-in-one `apus run` over a copy of the query bench's generated day (2026-10-31,
# ROWS rows in each of access_log, slow_sql and logs), on free loopback ports, without
# authentication (loopback only). Expects APUS_BIN and ROWS; sets WORK, Q (the query
# port) and APUS_PID, and a cleanup trap (extend it with more PIDs in EXTRA_PIDS).

# The data set: the query_10m bench generates it once per size.
dataset() {
  DATA=/tmp/apus-bench/query-$ROWS
  if [ "$(cat "$DATA/_complete" 2>/dev/null)" != "$ROWS" ]; then
    ROWS=$ROWS APUS_SQL='SELECT 1' cargo bench -p apus-query --bench query_10m
  fi
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

EXTRA_PIDS=()
cleanup() {
  kill "${APUS_PID:-}" "${EXTRA_PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# Copy the data set (the all-in-one's WAL and retention never touch the original), start
# `apus run` on it and wait until the query API answers.
start_apus_over_dataset() {
  dataset
  WORK=$(mktemp -d /tmp/apus-query-bench.XXXX)
  trap cleanup EXIT
  cp -r "$DATA" "$WORK/data"
  local gw adm ing
  gw=$(port) adm=$(port) ing=$(port) Q=$(port)
  cat >"$WORK/apus.toml" <<CONF
[ingest]
listen = "127.0.0.1:$ing"
# The generated day is in the past: keep it.
retention_days = 36500
[query]
listen = "127.0.0.1:$Q"
[gateway]
listen = "127.0.0.1:$gw"
admin_listen = "127.0.0.1:$adm"
access_log = "off"
[[gateway.pools]]
name = "pool-0"
servers = ["127.0.0.1:9"]
[[gateway.routes]]
name = "route-0"
project = "shop"
env = "prod"
stable_pool = "pool-0"
CONF
  "$APUS_BIN" run --config "$WORK/apus.toml" --data-dir "$WORK/data" --no-auth \
    >"$WORK/apus.log" 2>&1 &
  APUS_PID=$!
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$Q/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "apus run did not answer on :$Q; see $WORK/apus.log" >&2
  return 1
}
