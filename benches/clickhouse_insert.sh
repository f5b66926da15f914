#!/usr/bin/env bash
# Insert rate into a real ClickHouse server (Debian's 18.16 here): Apus end to end
# (`POST /ingest/v1/access` JSON lines → WAL fsync → RowBinary INSERTs by the sink) versus
# `clickhouse-client` inserting the same rows as JSONEachRow straight into the table, in
# the same run against the same server. Counts rows as landed in ClickHouse.
#
#   benches/clickhouse_insert.sh [ROWS] [ROWS_PER_REQUEST]
#
# Ends with: RESULT clickhouse_insert rows=… apus_rows_per_s=… client_rows_per_s=… ratio=…
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
PER=${2:-20000}
scripts/setup >/dev/null
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
[ -x "$BIN" ] || cargo build --release --quiet
W=$(mktemp -d /tmp/apus-ch-bench-XXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); TCP=$(free_port); ING=$(free_port)
CH_PID=$(scripts/clickhouse-start "$W/ch" "$HTTP" "$TCP")
cleanup() { kill "${APUS_PID:-}" 2>/dev/null; kill "$CH_PID" 2>/dev/null; rm -rf "$W"; true; }
trap cleanup EXIT
q() { curl -sf "http://127.0.0.1:$HTTP/" --data-binary "$1"; }

python3 - "$W" "$ROWS" "$PER" <<'PY'
import json, random, sys, os
random.seed(7)
w, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = 1795330800 * 10**6
os.makedirs(f"{w}/req", exist_ok=True)
apus = None
with open(f"{w}/rows.jsoneachrow", "w") as ch:
    for i in range(n):
        if i % per == 0:
            if apus: apus.close()
            apus = open(f"{w}/req/{i // per:06d}.ndjson", "w")
        ts = t0 + i * 1000
        pool = random.choice(["stable", "stable", "gray"])
        r = {"request_id": f"r{i}", "project": "shop", "env": "prod", "route": f"route-{i % 50}",
             "pool": pool, "upstream": f"10.0.0.{i % 7}:8080", "tag": "gray" if pool == "gray" else "stable",
             "tenant": f"tenant-{random.randint(1, 10000)}", "client_ip": f"10.9.{i % 250}.{i % 200}",
             "method": "GET", "host": "shop.example", "path": "/api/orders",
             "status": 500 if i % 100 == 0 else 200, "latency_us": random.randint(1000, 200000),
             "upstream_latency_us": random.randint(900, 190000), "bytes_in": 300, "bytes_out": random.randint(1000, 20000)}
        apus.write(json.dumps(dict(r, ts=ts)) + "\n")
        import time as _t
        d = dict(r, ts=_t.strftime("%Y-%m-%d %H:%M:%S", _t.gmtime(ts // 10**6)), ts_us=ts % 10**6, _node="client", _seq=0)
        ch.write(json.dumps(d) + "\n")
apus.close()
PY

# Apus: an ingest node writing to database apus_bench, fed by a gateway token.
printf '[[tokens]]\nname = "bench"\ntoken = "bench-gateway-token-1"\nrole = "gateway"\n' >"$W/tokens.toml"
AUTH='authorization: Bearer bench-gateway-token-1'
"$BIN" ingest --listen "127.0.0.1:$ING" --data-dir "$W/data" --tokens "$W/tokens.toml" --store "clickhouse://127.0.0.1:$HTTP/apus_bench" 2>"$W/ingest.log" &
APUS_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ING/health" >/dev/null && break; sleep 0.1; done
# Let the sink create the schema (first insert), then time the full load.
echo '{"ts":1795330800000000,"request_id":"warm","project":"","env":"","route":"","pool":"","upstream":"","tag":"","tenant":"","client_ip":"","method":"","host":"","path":"","status":200,"latency_us":0,"upstream_latency_us":0,"bytes_in":0,"bytes_out":0}' \
  | curl -sf -H "$AUTH" "http://127.0.0.1:$ING/ingest/v1/access" --data-binary @- >/dev/null
until [ "$(q 'SELECT count() FROM apus_bench.access_log' 2>/dev/null || echo 0)" = "1" ]; do sleep 0.2; done
START=$(date +%s.%N)
ls "$W"/req/*.ndjson | xargs -P 4 -I{} curl -sf -o /dev/null -H "$AUTH" "http://127.0.0.1:$ING/ingest/v1/access" --data-binary @{}
until [ "$(q 'SELECT count() FROM apus_bench.access_log')" -ge $((ROWS + 1)) ]; do sleep 0.05; done
APUS_S=$(echo "$(date +%s.%N) - $START" | bc)

# clickhouse-client: the same rows into an identical table.
q "CREATE TABLE apus_bench.access_log_client AS apus_bench.access_log" >/dev/null
START=$(date +%s.%N)
clickhouse-client --port "$TCP" --query "INSERT INTO apus_bench.access_log_client FORMAT JSONEachRow" < "$W/rows.jsoneachrow"
CLIENT_S=$(echo "$(date +%s.%N) - $START" | bc)
[ "$(q 'SELECT count() FROM apus_bench.access_log_client')" = "$ROWS" ]

python3 - "$ROWS" "$APUS_S" "$CLIENT_S" <<'PY'
import sys
n, a, c = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"apus: {n} rows in {a:.2f} s (HTTP JSON lines -> WAL fsync -> RowBinary INSERT)")
print(f"clickhouse-client: {n} rows in {c:.2f} s (JSONEachRow over the native protocol)")
print(f"RESULT clickhouse_insert rows={n} apus_rows_per_s={n/a:.0f} client_rows_per_s={n/c:.0f} ratio={(n/a)/(n/c):.2f}")
PY
