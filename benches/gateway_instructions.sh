#!/usr/bin/env bash
# CPU instructions per request, counted rather than timed: the Pingora floor
# (examples/pingora_floor.rs, `tuned`), the floor with the five tagging headers Apus sets
# (`tagged`), and `apus gateway` on the rule set of benches/gateway_common.sh, each run
# under valgrind's callgrind with instrumentation switched on only while wrk loads it (after
# a warm-up). A count does not move with CPU steal or a neighbour's build, where the rps of
# benches/gateway_peers.sh on a shared 2-core host swing ±20 % between rounds; it leaves out
# the kernel (the same TCP work for all three) and cache misses.
#
#   benches/gateway_instructions.sh [SECONDS]
#   APUS_BIN=…/release/apus benches/gateway_instructions.sh 10
#
# Per target: requests served while counted, instructions per request (user space, all
# threads). Writes $W/NAME.cg (callgrind profiles: `callgrind_annotate --inclusive=yes`).
# Ends with: RESULT gateway_instructions floor_ir=… floor_tagged_ir=… apus_ir=…
#   apus_vs_floor=… apus_vs_floor_tagged=… tagging_ir=… routing_ir=…
#   (vs = floor Ir / apus Ir: the share of the floor's rate Apus could reach on CPU alone;
#   tagging_ir = floor_tagged - floor, routing_ir = apus - floor_tagged)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/gateway_common.sh
. benches/gateway_common.sh
SECS=${1:-10}
WORKERS=1
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
install_peers
find_binaries
gateway_cmd
W=$(mktemp -d /tmp/apus-instr-XXXX)
trap cleanup EXIT
gen_rules
write_upstream
write_wrk_script
write_apus 18481 18491
nginx -c "$W/upstream.conf"

# count NAME PORT CMD... -> "requests instructions_per_request"
count() {
  local name=$1 port=$2 vp req ir
  shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/$name.cg" "$@" \
    >/dev/null 2>"$W/$name.log" &
  vp=$!
  PIDS+=("$vp")
  for _ in $(seq 1 1200); do
    curl -s -o /dev/null -H 'x-tenant-id: tenant-11' "http://127.0.0.1:$port/api/x" && break
    sleep 0.5
  done
  wrk -t1 -c8 -d3s -s "$W/req.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
  callgrind_control -i on "$vp" >/dev/null
  wrk -t1 -c8 -d"${SECS}s" --timeout 10s -s "$W/req.lua" "http://127.0.0.1:$port/" >"$W/$name.wrk" 2>&1
  callgrind_control -i off "$vp" >/dev/null
  callgrind_control -d "$vp" >/dev/null
  kill "$vp"
  wait "$vp" 2>/dev/null || true
  req=$(awk '/requests in/ { print $1 }' "$W/$name.wrk")
  ir=$(cat "$W/$name".cg* | awk '/^totals:/ { s += $2 } END { print s }')
  echo "$req $((ir / req))"
}
read -r fr fi < <(count floor 18482 "$FLOOR" 127.0.0.1:18482 "127.0.0.1:$UP_STABLE" 1 tuned)
read -r tr ti < <(count floor_tagged 18483 "$FLOOR" 127.0.0.1:18483 "127.0.0.1:$UP_STABLE" 1 tagged)
read -r ar ai < <(APUS_LOG=warn count apus 18481 "${GW[@]}" --config "$W/apus.toml" --data-dir "$W/apus-data")
printf '%-13s %9s %12s\n' target requests ir_per_req floor "$fr" "$fi" floor_tagged "$tr" "$ti" apus "$ar" "$ai"
echo "profiles: $W/*.cg (callgrind_annotate --inclusive=yes FILE)"
trap - EXIT
cleanup
echo "RESULT gateway_instructions floor_ir=$fi floor_tagged_ir=$ti apus_ir=$ai apus_vs_floor=$(python3 -c "print(round($fi / $ai, 3))") apus_vs_floor_tagged=$(python3 -c "print(round($ti / $ai, 3))") tagging_ir=$((ti - fi)) routing_ir=$((ai - ti))"
