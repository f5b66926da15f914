#!/usr/bin/env bash
# Flips under load: what nginx cannot do without a reload. Each gateway (Apus, nginx
# geo + map, HAProxy 2.6, nginx + Lua) routes the rule set of benches/gateway_common.sh
# under wrk at a fixed rate below saturation (CONNS connections, each waiting DELAY_MS
# between requests), after a 5 s warm-up first SECS seconds steady, then SECS seconds with one flip a second
# (benches/flip_driver.py: the 100k-tenant rule changes the way that gateway is changed at
# run time, and a probe times how long until the change routes a new client).
#
#   benches/gateway_flips.sh [WORKERS] [SECONDS] [CONNS] [DELAY_MS]
#
# Per gateway: errors (non-2xx + socket errors) while flipping, p99 and max latency steady
# and while flipping, their ratio, the median and worst time from a change accepted to in
# force (and a probe's own round trip, the floor under it), peak RSS of the gateway's
# processes, and how much of it the flips added (peak less the RSS when they began).
# Ends with: RESULT gateway_flips apus_errors=… apus_p99_ratio=… apus_apply_ms=… nginx_errors=…
#   nginx_p99_ratio=… nginx_apply_ms=… haproxy_… nginx_lua_…
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/gateway_common.sh
. benches/gateway_common.sh
WORKERS=${1:-1}
SECS=${2:-30}
CONNS=${3:-16}
DELAY_MS=${4:-4}
install_peers
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet --bin apus --bin apus-gateway
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
gateway_cmd
W=$(mktemp -d /tmp/apus-flips-XXXX)
trap cleanup EXIT
gen_rules
write_upstream
write_apus 18081 18091
write_nginx 18080
write_nginx_lua 18083 18093
write_haproxy 18084
cat > "$W/rate.lua" <<LUA
math.randomseed(7)
request = function()
  return wrk.format("GET", "/api/orders", { ["x-tenant-id"] = "tenant-" .. math.random(0, 199999) })
end
delay = function() return $DELAY_MS end
LUA
export WRK_SCRIPT=$W/rate.lua CONNS

nginx -c "$W/upstream.conf"
nginx -c "$W/nginx.conf"
nginx -c "$W/nginx-lua.conf"
haproxy -D -f "$W/haproxy.cfg"
APUS_LOG=warn "${GW[@]}" --config "$W/apus.toml" --data-dir "$W/apus-data" 2>"$W/apus.log" &
APUS_PID=$!; PIDS+=("$APUS_PID")
for p in 18080 18081 18083 18084; do wait_port "$p" && check_routing "$p"; done

declare -A port=([apus]=18081 [nginx]=18080 [haproxy]=18084 [nginx_lua]=18083)
declare -A admin=([apus]=18091 [nginx_lua]=18093)
root_of() {
  case $1 in
    apus) echo "$APUS_PID" ;;
    nginx) cat "$W/nginx.pid" ;;
    nginx_lua) cat "$W/nginx-lua.pid" ;;
    haproxy) cat "$W/haproxy.pid" ;;
  esac
}
result="RESULT gateway_flips"
printf '%-10s %7s %9s %9s %8s %8s %9s %9s %9s %9s %8s %8s %8s %8s\n' gateway rps errors p99_st_ms p99_fl_ms ratio max_st_ms max_fl_ms call_ms apply_ms probe_ms apply_max rss_mb rss_grew
for g in apus nginx haproxy nginx_lua; do
  root=$(root_of "$g")
  # Warm-up (connections, caches, a fresh process's first allocations) before steady.
  wrk -t1 -c"$CONNS" -d5s -s "$WRK_SCRIPT" "http://127.0.0.1:${port[$g]}/" >/dev/null 2>&1
  steady=$(run_wrk "${port[$g]}" "$root")
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$WRK_SCRIPT" "http://127.0.0.1:${port[$g]}/" > "$W/$g-flips.wrk" 2>/dev/null &
  WRK_PID=$!
  flips=$(python3 benches/flip_driver.py "$g" "${port[$g]}" "$SECS" "$W" "$(root_of "$g")" "${admin[$g]:-0}")
  wait "$WRK_PID"
  flipping=$(parse_wrk 0 < "$W/$g-flips.wrk")
  read -r _ p99s _ maxs _ <<<"$steady"
  read -r rps p99f _ maxf errs <<<"$flipping"
  kv() { echo "$flips" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  ratio=$(python3 -c "print(round($p99f / $p99s, 3) if $p99s > 0 else -1)")
  # A flip that never routed in 5 s counts as an error of the gateway too.
  errs=$((errs + $(kv missed)))
  # What flipping cost in memory: peak during the flips less the RSS when they began
  # (nginx's reload keeps two generations of workers).
  grew=$(python3 -c "print(round($(kv rss_peak_mb) - $(kv rss_start_mb), 1))")
  printf '%-10s %7s %9s %9s %8s %8s %9s %9s %9s %9s %8s %8s %8s %8s\n' "$g" "$rps" "$errs" "$p99s" "$p99f" "$ratio" "$maxs" "$maxf" \
    "$(kv call_ms_med)" "$(kv apply_ms_med)" "$(kv probe_ms_med)" "$(kv apply_ms_max)" "$(kv rss_peak_mb)" "$grew"
  result="$result ${g}_errors=$errs ${g}_p99_ratio=$ratio ${g}_max_steady_ms=$maxs ${g}_max_flips_ms=$maxf ${g}_apply_ms=$(kv apply_ms_med) ${g}_probe_ms=$(kv probe_ms_med) ${g}_apply_max_ms=$(kv apply_ms_max) ${g}_call_ms=$(kv call_ms_med) ${g}_rss_mb=$(kv rss_peak_mb) ${g}_rss_grew_mb=$grew"
done
echo "workers=$WORKERS seconds=$SECS conns=$CONNS delay_ms=$DELAY_MS (steady, then one flip a second)"
echo "$result"
