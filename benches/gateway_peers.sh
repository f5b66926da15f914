#!/usr/bin/env bash
# The same gray routing on every gateway a user would pick, side by side in one run:
# Apus, nginx geo + map, nginx + Lua (OpenResty style), HAProxy 2.6, Caddy 2.6, and the
# Pingora floor (examples/pingora_floor.rs: no routing at all, tuned as Apus is; `plain`
# beside it is Pingora's defaults). The rule set (10k CIDRs, 100k tenants, a header rule, a
# sticky percentage) and the upstream are the same for all; see benches/gateway_common.sh.
# Rounds are interleaved; each reports rps, p99 and CPU µs per request (utime + stime of
# the gateway's processes over the round, which CPU steal on a shared host skews less).
#
#   benches/gateway_peers.sh [WORKERS] [SECONDS] [ROUNDS]
#   APUS_BEFORE=/path/to/older/apus benches/gateway_peers.sh ...   # adds that build too
#
# Ends with: RESULT gateway_peers workers=… apus_rps=… floor_rps=… apus_vs_floor=…
#   vs_nginx=… vs_nginx_lua=… vs_haproxy=… vs_caddy=…   (vs_X = Apus rps / X rps)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/gateway_common.sh
. benches/gateway_common.sh
WORKERS=${1:-1}
SECS=${2:-10}
ROUNDS=${3:-3}
CONNS=${CONNS:-64}
install_peers
find_binaries
gateway_cmd
W=$(mktemp -d /tmp/apus-peers-XXXX)
trap cleanup EXIT
gen_rules
write_upstream
write_wrk_script
write_apus 18081 18091
write_nginx 18080
write_nginx_lua 18083 18093
write_haproxy 18084
write_caddy 18085

nginx -c "$W/upstream.conf"
nginx -c "$W/nginx.conf"
nginx -c "$W/nginx-lua.conf"
haproxy -D -f "$W/haproxy.cfg"
GOMAXPROCS=$WORKERS caddy run --adapter caddyfile --config "$W/Caddyfile" >"$W/caddy.log" 2>&1 &
CADDY_PID=$!; PIDS+=("$CADDY_PID")
APUS_LOG=warn "${GW[@]}" --config "$W/apus.toml" --data-dir "$W/apus-data" 2>"$W/apus.log" &
APUS_PID=$!; PIDS+=("$APUS_PID")
"$FLOOR" 127.0.0.1:18082 127.0.0.1:$UP_STABLE "$WORKERS" tuned 2>"$W/floor.log" &
FLOOR_PID=$!; PIDS+=("$FLOOR_PID")
"$FLOOR" 127.0.0.1:18086 127.0.0.1:$UP_STABLE "$WORKERS" plain 2>"$W/floor-plain.log" &
PLAIN_PID=$!; PIDS+=("$PLAIN_PID")
names=(nginx apus floor floor_plain nginx_lua haproxy caddy)
ports=(18080 18081 18082 18086 18083 18084 18085)
if [ -n "${APUS_BEFORE:-}" ]; then
  sed -e "s/:18081/:18087/" -e "s/:18091/:18097/" "$W/apus.toml" > "$W/apus-before.toml"
  APUS_LOG=warn "$APUS_BEFORE" gateway --config "$W/apus-before.toml" --data-dir "$W/before-data" 2>"$W/before.log" &
  BEFORE_PID=$!; PIDS+=("$BEFORE_PID")
  names+=(apus_before); ports+=(18087)
fi
for p in "${ports[@]}"; do wait_port "$p"; done
for i in "${!names[@]}"; do
  case ${names[$i]} in floor*) ;; *) check_routing "${ports[$i]}" ;; esac
done
pids_of() {
  case $1 in
    nginx) pgrep -P "$(cat "$W/nginx.pid")" | tr '\n' ' ' ;;
    nginx_lua) pgrep -P "$(cat "$W/nginx-lua.pid")" | tr '\n' ' ' ;;
    haproxy) cat "$W/haproxy.pid" ;;
    caddy) echo "$CADDY_PID" ;;
    apus) echo "$APUS_PID" ;;
    apus_before) echo "$BEFORE_PID" ;;
    floor) echo "$FLOOR_PID" ;;
    floor_plain) echo "$PLAIN_PID" ;;
  esac
}
for n in "${names[@]}"; do : > "$W/$n.res"; done
for r in $(seq 1 "$ROUNDS"); do
  line="round $r (rps p99_ms cpu_us/req):"
  for i in "${!names[@]}"; do
    n=${names[$i]}
    # shellcheck disable=SC2046
    res=$(run_wrk "${ports[$i]}" $(pids_of "$n"))
    echo "$res" >> "$W/$n.res"
    line="$line $n $(echo "$res" | cut -d' ' -f1-3) |"
  done
  echo "$line"
done
med() { cut -d' ' -f"$2" "$W/$1.res" | median; }
echo "workers=$WORKERS conns=$CONNS seconds=$SECS rounds=$ROUNDS (medians of interleaved rounds)"
printf '%-12s %10s %8s %8s %8s\n' gateway rps p99_ms cpu_us vs_apus
ar=$(med apus 1)
for n in "${names[@]}"; do
  printf '%-12s %10s %8s %8s %8s\n' "$n" "$(med "$n" 1)" "$(med "$n" 2)" "$(med "$n" 3)" \
    "$(python3 -c "print(round($ar / $(med "$n" 1), 3))")"
done
ratio() { python3 -c "print(round($ar / $(med "$1" 1), 3))"; }
extra=""
[ -n "${APUS_BEFORE:-}" ] && extra=" apus_before_rps=$(med apus_before 1) apus_before_us=$(med apus_before 3)"
echo "RESULT gateway_peers workers=$WORKERS apus_rps=$ar floor_rps=$(med floor 1) apus_vs_floor=$(ratio floor) vs_nginx=$(ratio nginx) vs_nginx_lua=$(ratio nginx_lua) vs_haproxy=$(ratio haproxy) vs_caddy=$(ratio caddy) apus_us=$(med apus 3) floor_us=$(med floor 3) floor_plain_rps=$(med floor_plain 1) floor_plain_us=$(med floor_plain 3) nginx_us=$(med nginx 3) nginx_lua_us=$(med nginx_lua 3) haproxy_us=$(med haproxy 3) caddy_us=$(med caddy 3)$extra"
