#!/usr/bin/env bash
# Flip propagation: how long from an admin PUT returning until every gateway node routes by
# the new rules, over FLIPS flips, for each control-store backend:
#   - etcd: three `apus gateway` nodes on one real etcd (Debian etcd-server 3.4); each flip
#     goes through a different node, and all three are probed;
#   - local: the embedded log serves one node (it is single-node by design), probed alone.
# A probe is a request carrying a tenant the flip moves between the stable and gray pools,
# sent over a kept-alive connection to each node in turn until every node has switched.
# Then the load side: wrk against one node for SECS s with no flips, and SECS s with a flip
# every second through another node: requests/s, p99 and errors of each.
#
#   benches/flip_propagation.sh [FLIPS] [SECS]
#
# Ends with one line per backend:
#   RESULT flip_propagation backend=etcd|local nodes=N flips=… p50_ms=… p99_ms=… max_ms=… failed_requests=…
# and RESULT flip_load rps_steady=… rps_flipping=… p99_steady_ms=… p99_flipping_ms=… p99_ratio=… errors=…
set -euo pipefail
cd "$(dirname "$0")/.."
FLIPS=${1:-200}
SECS=${2:-10}
scripts/setup >/dev/null
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-flip-XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

S1=$(free_port); G1=$(free_port)
"$BIN" upstream --listen 127.0.0.1:$S1 --name stable-1 >/dev/null 2>&1 & PIDS+=($!)
"$BIN" upstream --listen 127.0.0.1:$G1 --name gray-1 >/dev/null 2>&1 & PIDS+=($!)
wait_port $S1; wait_port $G1

node_config() { # dir port admin
  cat > "$1/gateway.toml" <<CONF
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
access_log = "off"
[[pools]]
name = "stable"
servers = ["127.0.0.1:$S1"]
health_check = { kind = "tcp", interval_ms = 1000, timeout_ms = 300 }
[[pools]]
name = "gray"
servers = ["127.0.0.1:$G1"]
health_check = { kind = "tcp", interval_ms = 1000, timeout_ms = 300 }
[[routes]]
name = "api"
path_prefix = "/"
project = "shop"
env = "prod"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }]
[[tokens]]
name = "bench"
token = "bench-admin-token-1"
role = "admin"
CONF
}

start_nodes() { # n control -> writes $W/nodes (port admin per line)
  : > "$W/nodes"
  for i in $(seq 1 "$1"); do
    local d="$W/node-$2-$i" p a
    mkdir -p "$d"; p=$(free_port); a=$(free_port)
    node_config "$d" "$p" "$a"
    "$BIN" gateway --config "$d/gateway.toml" --data-dir "$d/data" --control "$3" 2>"$d/log" & PIDS+=($!)
    wait_port "$p"; wait_port "$a"
    echo "$p $a" >> "$W/nodes"
  done
}

probe() { # backend nodes
  python3 - "$W/nodes" "$FLIPS" "$1" <<'PY'
import http.client, json, sys, time
nodes = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
flips, backend = int(sys.argv[2]), sys.argv[3]
proxy = [http.client.HTTPConnection("127.0.0.1", p, timeout=5) for p, _ in nodes]
admin = [http.client.HTTPConnection("127.0.0.1", a, timeout=5) for _, a in nodes]
H = {"authorization": "Bearer bench-admin-token-1", "content-type": "application/json"}
def lane(i, tenant):
    proxy[i].request("GET", "/", headers={"x-tenant-id": tenant})
    r = proxy[i].getresponse(); body = r.read()
    if r.status != 200:
        return None
    return json.loads(body)["upstream"]
times, failed = [], 0
for k in range(flips):
    gray = k % 2 == 0
    body = json.dumps({"rules": [{"name": "b", "pool": "gray", "tenants": ["probe"] if gray else ["nobody"]}], "reason": f"flip {k}"})
    c = admin[k % len(admin)]
    c.request("PUT", "/admin/v1/routes/api/rules", body=body, headers=H)
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"flip {k}: {r.status}")
    t0 = time.perf_counter()
    want = "gray-1" if gray else "stable-1"
    pending = set(range(len(nodes)))
    while pending:
        for i in list(pending):
            got = lane(i, "probe")
            if got is None:
                failed += 1
            elif got == want:
                pending.discard(i)
        if time.perf_counter() - t0 > 5:
            sys.exit(f"flip {k}: nodes {sorted(pending)} did not switch within 5 s")
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
print(f"RESULT flip_propagation backend={backend} nodes={len(nodes)} flips={flips} "
      f"p50_ms={q(0.5):.2f} p99_ms={q(0.99):.2f} max_ms={times[-1]:.2f} failed_requests={failed}")
PY
}

# etcd: three nodes.
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port)
ETCD_UNSUPPORTED_ARCH=arm64 etcd --name bench --data-dir "$W/etcd" \
  --listen-client-urls http://127.0.0.1:$ETCD_PORT --advertise-client-urls http://127.0.0.1:$ETCD_PORT \
  --listen-peer-urls http://127.0.0.1:$ETCD_PEER --initial-advertise-peer-urls http://127.0.0.1:$ETCD_PEER \
  --initial-cluster bench=http://127.0.0.1:$ETCD_PEER --log-level warn 2>"$W/etcd.log" & PIDS+=($!)
wait_port $ETCD_PORT
start_nodes 3 etcd "etcd://127.0.0.1:$ETCD_PORT/bench"
probe etcd

# Load with and without flips, on the etcd fleet: wrk on node 1, flips through node 2.
read -r P1 _ < <(sed -n 1p "$W/nodes"); read -r _ A2 < <(sed -n 2p "$W/nodes")
cat > "$W/lat.lua" <<'LUA'
wrk.headers["x-tenant-id"] = "load"
done = function(summary, latency, requests)
  io.write(string.format("STATS %d %.3f %d %d\n", summary.requests, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA
load() { wrk -t1 -c32 -d"${SECS}s" -s "$W/lat.lua" "http://127.0.0.1:$P1/" | awk '/^STATS/ { print $2, $3, $4 + $5 }'; }
read -r REQ0 P99_0 ERR0 < <(load)
( for k in $(seq 1 "$SECS"); do
    curl -fsS -o /dev/null -X PUT -H 'authorization: Bearer bench-admin-token-1' -H 'content-type: application/json' \
      -d "{\"rules\":[{\"name\":\"b\",\"pool\":\"gray\",\"tenants\":[\"load\"],\"percent\":$((k % 2 * 50))}],\"reason\":\"load $k\"}" \
      "http://127.0.0.1:$A2/admin/v1/routes/api/rules"
    sleep 1
  done ) &
FLIPPER=$!
read -r REQ1 P99_1 ERR1 < <(load)
wait $FLIPPER || true
python3 -c "
r0, r1 = $REQ0 / $SECS, $REQ1 / $SECS
print(f'RESULT flip_load rps_steady={r0:.0f} rps_flipping={r1:.0f} p99_steady_ms=$P99_0 p99_flipping_ms=$P99_1 p99_ratio={$P99_1 / max($P99_0, 0.001):.3f} errors={$ERR0 + $ERR1}')"

# local: one node on the embedded log.
start_nodes 1 local local
probe local
