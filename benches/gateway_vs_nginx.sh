#!/usr/bin/env bash
# Side by side: nginx (Debian) doing the same gray routing with geo + map vs `apus gateway`.
# Same upstream (a separate nginx answering 200), same wrk load, same worker count
# (nginx worker_processes = apus threads), same run, runs interleaved; medians reported.
#
#   benches/gateway_vs_nginx.sh [WORKERS] [SECONDS] [ROUNDS]
#
# Ends with: RESULT gateway_vs_nginx apus_rps=… nginx_rps=… ratio=… apus_p99_ms=… nginx_p99_ms=…
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-1}
SECS=${2:-10}
ROUNDS=${3:-3}
CONNS=${CONNS:-64}
scripts/setup >/dev/null
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-bench-XXXX)
cleanup() {
  [ -n "${APUS_PID:-}" ] && kill "$APUS_PID" 2>/dev/null
  for p in up gw; do [ -f "$W/$p.pid" ] && kill "$(cat "$W/$p.pid")" 2>/dev/null; done
  true
}
trap cleanup EXIT

# 10k tenants and 1k CIDRs, the same for both gateways.
python3 - "$W" <<'PY'
import sys
w = sys.argv[1]
tenants = [f"tenant-{i}" for i in range(0, 100000, 10)]
cidrs = [f"{11 + (i >> 8) % 200}.{i & 255}.0.0/16" for i in range(1000)]
open(f"{w}/tenants.txt", "w").write("\n".join(tenants) + "\n")
with open(f"{w}/nginx-map.conf", "w") as f:
    f.write("map $http_x_tenant_id $gray_tenant {\n  default 0;\n")
    for t in tenants:
        f.write(f"  {t} 1;\n")
    f.write("}\ngeo $gray_cidr {\n  default 0;\n")
    for c in cidrs:
        f.write(f"  {c} 1;\n")
    f.write("}\n")
with open(f"{w}/cidrs.toml", "w") as f:
    f.write("cidrs = [" + ",".join(f'"{c}"' for c in cidrs) + "]\n")
PY

cat > "$W/upstream.conf" <<CONF
worker_processes 1;
pid $W/up.pid;
error_log $W/up-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:18001; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:18002; location / { return 200 "gray\n"; } }
}
CONF
cat > "$W/gateway.conf" <<CONF
worker_processes $WORKERS;
pid $W/gw.pid;
error_log $W/gw-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  map_hash_bucket_size 128;
  include $W/nginx-map.conf;
  map "\$gray_tenant\$gray_cidr" \$pool { default stable; ~1 gray; }
  upstream stable { server 127.0.0.1:18001; keepalive 64; }
  upstream gray { server 127.0.0.1:18002; keepalive 64; }
  server {
    listen 127.0.0.1:18080;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-request-id \$request_id;
      proxy_set_header x-env-tag \$pool;
      proxy_set_header baggage "env=\$pool";
      add_header x-env-tag \$pool;
      add_header x-request-id \$request_id;
      proxy_pass http://\$pool;
    }
  }
}
CONF
cat > "$W/apus.toml" <<CONF
listen = "127.0.0.1:18081"
admin_listen = "127.0.0.1:18091"
threads = $WORKERS
work_stealing = ${WORK_STEALING:-false}
access_log = "off"
[[pools]]
name = "stable"
servers = ["127.0.0.1:18001"]
[[pools]]
name = "gray"
servers = ["127.0.0.1:18002"]
[[routes]]
name = "api"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }]
[[routes.gray_rules]]
name = "beta"
pool = "gray"
tenants_file = "tenants.txt"
[[routes.gray_rules]]
name = "office"
pool = "gray"
$(cat "$W/cidrs.toml")
CONF
cat > "$W/req.lua" <<'LUA'
math.randomseed(42)
request = function()
  return wrk.format("GET", "/api/orders", { ["x-tenant-id"] = "tenant-" .. math.random(0, 99999) })
end
LUA

nginx -c "$W/upstream.conf"
nginx -c "$W/gateway.conf"
APUS_LOG=warn "$BIN" gateway --config "$W/apus.toml" 2>"$W/apus.log" &
APUS_PID=$!
sleep 2
for p in 18080 18081; do
  curl -fsS -H 'x-tenant-id: tenant-10' "http://127.0.0.1:$p/api/x" | grep -q gray || { echo "gateway on $p does not route tenant-10 to gray"; exit 1; }
  curl -fsS -H 'x-tenant-id: tenant-11' "http://127.0.0.1:$p/api/x" | grep -q stable || { echo "gateway on $p does not route tenant-11 to stable"; exit 1; }
done

run() { # port -> "rps p99_ms"
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$W/req.lua" "http://127.0.0.1:$1/" 2>/dev/null | awk '
    /Requests\/sec/ { rps = $2 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v = v * 1000 }; p99 = v }
    END { printf "%s %s\n", rps, p99 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: > "$W/apus.res"
: > "$W/nginx.res"
for r in $(seq 1 "$ROUNDS"); do
  n=$(run 18080)
  a=$(run 18081)
  echo "round $r: nginx rps p99_ms = $n | apus rps p99_ms = $a"
  echo "$n" >> "$W/nginx.res"
  echo "$a" >> "$W/apus.res"
done
nr=$(cut -d' ' -f1 "$W/nginx.res" | median); np=$(cut -d' ' -f2 "$W/nginx.res" | median)
ar=$(cut -d' ' -f1 "$W/apus.res" | median); ap=$(cut -d' ' -f2 "$W/apus.res" | median)
ratio=$(python3 -c "print(round($ar / $nr, 3))")
echo "workers=$WORKERS conns=$CONNS seconds=$SECS rounds=$ROUNDS (medians of interleaved rounds)"
echo "RESULT gateway_vs_nginx apus_rps=$ar nginx_rps=$nr ratio=$ratio apus_p99_ms=$ap nginx_p99_ms=$np"
