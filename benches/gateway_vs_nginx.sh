#!/usr/bin/env bash
# Side by side: nginx (Debian) doing the same gray routing with geo + map vs `apus gateway`.
# Same upstream (a separate nginx answering 200), same wrk load, same worker count
# (nginx worker_processes = apus threads), same run, runs interleaved; medians reported.
#
# A third contender calibrates the comparison: the Pingora floor (examples/pingora_floor.rs,
# the thinnest ProxyHttp: fixed upstream, no filters), same Pingora, allocator and profile.
# Beside requests/s, each round measures CPU time per request of each gateway process
# (utime+stime from /proc, all threads/workers), which CPU steal on a shared host skews less.
#
#   benches/gateway_vs_nginx.sh [WORKERS] [SECONDS] [ROUNDS]
#
# Ends with: RESULT gateway_vs_nginx apus_rps=… nginx_rps=… ratio=… apus_p99_ms=… nginx_p99_ms=…
#            floor_rps=… apus_vs_floor=… apus_us=… nginx_us=… floor_us=…
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-1}
SECS=${2:-10}
ROUNDS=${3:-3}
CONNS=${CONNS:-64}
scripts/setup >/dev/null
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
# The floor is built next to the apus binary under test (same target dir and profile).
BINDIR=$(cd "$(dirname "$BIN")" && pwd)
FLOOR=$BINDIR/examples/pingora_floor
if [ "$(basename "$BINDIR")" = release ]; then
  CARGO_TARGET_DIR=$(dirname "$BINDIR") cargo build --release --quiet --example pingora_floor
fi
[ -x "$FLOOR" ] || { echo "no Pingora floor binary at $FLOOR"; exit 1; }
W=$(mktemp -d /tmp/apus-bench-XXXX)
cleanup() {
  [ -n "${APUS_PID:-}" ] && kill "$APUS_PID" 2>/dev/null
  [ -n "${FLOOR_PID:-}" ] && kill "$FLOOR_PID" 2>/dev/null
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
  map_hash_max_size 65536;
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
APUS_LOG=warn "$BIN" gateway --config "$W/apus.toml" --data-dir "$W/data" 2>"$W/apus.log" &
APUS_PID=$!
"$FLOOR" 127.0.0.1:18082 127.0.0.1:18001 "$WORKERS" 2>"$W/floor.log" &
FLOOR_PID=$!
sleep 2
curl -fsS "http://127.0.0.1:18082/" | grep -q stable || { echo "the Pingora floor on 18082 does not proxy"; exit 1; }
NGINX_WORKERS=$(pgrep -P "$(cat "$W/gw.pid")" | tr '\n' ' ')
for p in 18080 18081; do
  curl -fsS -H 'x-tenant-id: tenant-10' "http://127.0.0.1:$p/api/x" | grep -q gray || { echo "gateway on $p does not route tenant-10 to gray"; exit 1; }
  curl -fsS -H 'x-tenant-id: tenant-11' "http://127.0.0.1:$p/api/x" | grep -q stable || { echo "gateway on $p does not route tenant-11 to stable"; exit 1; }
done

ticks() { # pids -> CPU ticks (user + system) of those processes, all threads
  for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ t += $1 } END { print t }'
}
HZ=$(getconf CLK_TCK)
run() { # port pids... -> "rps p99_ms cpu_us_per_request"
  local port=$1; shift
  local t0 t1 out
  t0=$(ticks "$@")
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$W/req.lua" "http://127.0.0.1:$port/" 2>/dev/null)
  t1=$(ticks "$@")
  echo "$out" | awk -v t="$((t1 - t0))" -v hz="$HZ" '
    /Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v = v * 1000 }; p99 = v }
    END { printf "%s %s %.1f\n", rps, p99, (n > 0) ? t * 1e6 / hz / n : 0 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: > "$W/apus.res"
: > "$W/nginx.res"
: > "$W/floor.res"
for r in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  n=$(run 18080 $NGINX_WORKERS)
  a=$(run 18081 "$APUS_PID")
  f=$(run 18082 "$FLOOR_PID")
  echo "round $r (rps p99_ms cpu_us/req): nginx $n | apus $a | pingora floor $f"
  echo "$n" >> "$W/nginx.res"
  echo "$a" >> "$W/apus.res"
  echo "$f" >> "$W/floor.res"
done
med() { cut -d' ' -f"$2" "$W/$1.res" | median; }
nr=$(med nginx 1); np=$(med nginx 2); nu=$(med nginx 3)
ar=$(med apus 1); ap=$(med apus 2); au=$(med apus 3)
fr=$(med floor 1); fu=$(med floor 3)
ratio=$(python3 -c "print(round($ar / $nr, 3))")
vs_floor=$(python3 -c "print(round($ar / $fr, 3))")
echo "workers=$WORKERS conns=$CONNS seconds=$SECS rounds=$ROUNDS (medians of interleaved rounds)"
echo "RESULT gateway_vs_nginx apus_rps=$ar nginx_rps=$nr ratio=$ratio apus_p99_ms=$ap nginx_p99_ms=$np floor_rps=$fr apus_vs_floor=$vs_floor apus_us=$au nginx_us=$nu floor_us=$fu"
