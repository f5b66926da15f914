#!/usr/bin/env bash
# End-to-end ingest throughput of JSON log lines: HTTP receiver → template mining → Arrow
# batch → WAL (group commit + fsync) → in-memory store (Parquet flushes every 10 s) and
# Tantivy (commit every second). Only acknowledged (2xx) requests are counted.
#
#   benches/ingest_throughput.sh [SECONDS] [LINES_PER_REQUEST] [CONNECTIONS]
#
# Ends with: RESULT ingest_throughput lines_per_s=… mb_per_s=… rejected_requests=…
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
LINES=${2:-5000}
CONNS=${3:-4}
scripts/setup >/dev/null
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-ingest-bench-XXXX)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; true; }
trap cleanup EXIT

python3 - "$W/body.ndjson" "$LINES" <<'PY'
import json, random, sys
random.seed(7)
path, n = sys.argv[1], int(sys.argv[2])
pools = ["stable", "gray"]
kinds = [
    lambda i: ("INFO", f"order {random.randint(1, 10**7)} created for tenant-{random.randint(1, 5000)} in {random.randint(1, 900)} ms"),
    lambda i: ("INFO", f"GET /api/v1/orders/{random.randint(1, 10**6)} 200 {random.randint(100, 90000)} bytes"),
    lambda i: ("WARN", f"slow call to inventory-service took {random.randint(500, 5000)} ms (threshold 500 ms)"),
    lambda i: ("ERROR", f"payment {random.randint(1, 10**6)} failed: connection reset by peer 10.{random.randint(0,255)}.{random.randint(0,255)}.{random.randint(1,254)}:3306"),
    lambda i: ("DEBUG", f"cache hit ratio {random.random():.3f} for key user:{random.randint(1, 10**5)}:profile"),
]
with open(path, "w") as f:
    for i in range(n):
        level, msg = random.choice(kinds)(i)
        f.write(json.dumps({"@timestamp": f"2026-11-22T05:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
                            "level": level, "logger": "com.shop.OrderService", "message": msg,
                            "pool": random.choice(pools), "host": f"web-{i % 8}",
                            "request_id": f"{random.getrandbits(64):016x}", "tenant": f"tenant-{i % 5000}"}) + "\n")
PY
BYTES=$(stat -c %s "$W/body.ndjson")
cat > "$W/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$W/body.ndjson", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer bench-shipper-token-1"
LUA
# A shipper token, as a real sender would present (authentication is part of the path).
cat > "$W/tokens.toml" <<TOML
[[tokens]]
name = "bench"
token = "bench-shipper-token-1"
role = "shipper"
TOML

APUS_LOG=warn "$BIN" ingest --data-dir "$W/data" --listen 127.0.0.1:19200 --tokens "$W/tokens.toml" 2>"$W/ingest.log" &
PID=$!
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19200/health >/dev/null 2>&1 && break; sleep 0.1; done
OUT=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 30s -s "$W/post.lua" "http://127.0.0.1:19200/ingest/v1/logs?project=shop&env=prod")
echo "$OUT"
REQS=$(echo "$OUT" | awk '/requests in/ { print $1 }')
NON2XX=$(echo "$OUT" | awk '/Non-2xx/ { print $5 }')
NON2XX=${NON2XX:-0}
# Rows the receiver made durable (WAL fsync): at least every acknowledged line, plus those
# of requests still in flight when wrk stopped counting.
sleep 1
DURABLE=$(curl -fsS http://127.0.0.1:19200/metrics | awk '/^apus_ingest_rows_total\{table="logs"\}/ { print $2 }')
python3 - "$REQS" "$NON2XX" "$SECS" "$LINES" "$BYTES" "${DURABLE:-0}" <<'PY'
import sys
reqs, bad, secs, lines, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
durable = int(float(sys.argv[6]))
ok = reqs - bad
print(f"lines/request={lines} bytes/request={size} acknowledged_requests={ok} seconds={secs} durable_rows={durable}")
if durable < ok * lines:
    sys.exit(f"only {durable} rows durable for {ok * lines} acknowledged lines")
print(f"RESULT ingest_throughput lines_per_s={ok * lines / secs:.0f} mb_per_s={ok * size / secs / 1e6:.1f} rejected_requests={bad}")
PY
