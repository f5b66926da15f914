#!/usr/bin/env bash
# Profile-guided optimisation of Pingora's proxy path, measured on the Pingora floor
# (benches/pgo_floor: examples/pingora_floor.rs `tuned`, as a crate of its own so it builds
# from Pingora's tree alone, in minutes rather than the tens of minutes the whole `apus`
# tree takes here, twice). Builds it plain, instrumented (-Cprofile-generate), trains the
# instrumented one on the routing workload of benches/gateway_peers.sh (wrk for
# TRAIN_SECS), merges the profile with the toolchain's llvm-profdata, builds it again with
# -Cprofile-use, then runs plain and PGO side by side in interleaved rounds: rps, p99 and
# CPU µs per request (utime + stime of each process).
#
#   benches/gateway_pgo.sh [WORKERS] [SECONDS] [ROUNDS]
#
# Target dirs under ${PGO_TARGET_DIR:-~/.cache/apus-pgo}. Needs the toolchain's llvm-tools
# (`rustup component add llvm-tools`: added if missing).
# Ends with: RESULT gateway_pgo workers=… floor_rps=… floor_pgo_rps=… floor_gain=…
#   floor_us=… floor_pgo_us=… cpu_gain=…   (floor_gain = PGO rps / plain rps,
#   cpu_gain = plain µs / PGO µs)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/gateway_common.sh
. benches/gateway_common.sh
WORKERS=${1:-1}
SECS=${2:-8}
ROUNDS=${3:-5}
TRAIN_SECS=${TRAIN_SECS:-20}
CONNS=${CONNS:-64}
install_peers
PGO=${PGO_TARGET_DIR:-$HOME/.cache/apus-pgo}
SYSROOT=$(rustc --print sysroot)
PROFDATA=$(find "$SYSROOT" -name llvm-profdata -type f | head -1)
if [ -z "$PROFDATA" ]; then
  rustup component add llvm-tools >/dev/null
  PROFDATA=$(find "$SYSROOT" -name llvm-profdata -type f | head -1)
fi
W=$(mktemp -d /tmp/apus-pgo-XXXX)
trap cleanup EXIT
PROFILES=$W/profiles
mkdir -p "$PROFILES"
build() { # TARGET_DIR RUSTFLAGS
  (cd benches/pgo_floor && RUSTFLAGS="$2" CARGO_TARGET_DIR="$1" cargo build --release --quiet)
}
echo "== plain build"
build "$PGO/floor-plain" ""
echo "== instrumented build"
build "$PGO/floor-gen" "-Cprofile-generate=$PROFILES"

gen_rules
write_upstream
write_wrk_script
nginx -c "$W/upstream.conf"
start() { # NAME BIN PORT
  "$2" "127.0.0.1:$3" "127.0.0.1:$UP_STABLE" "$WORKERS" 2>"$W/$1.log" &
  echo $! > "$W/$1.pid"; PIDS+=("$!")
  wait_port "$3"
}
echo "== training for ${TRAIN_SECS}s"
start gen "$PGO/floor-gen/release/pgo_floor" 18581
wrk -t1 -c"$CONNS" -d"${TRAIN_SECS}s" -s "$W/req.lua" http://127.0.0.1:18581/ >/dev/null
# SIGTERM: Pingora exits through `exit`, which writes the profile.
kill "$(cat "$W/gen.pid")"
for _ in $(seq 1 100); do kill -0 "$(cat "$W/gen.pid")" 2>/dev/null || break; sleep 0.2; done
ls "$PROFILES"/*.profraw >/dev/null || { echo "no profile written"; exit 1; }
"$PROFDATA" merge -o "$W/merged.profdata" "$PROFILES"
echo "== build with the profile"
build "$PGO/floor-use" "-Cprofile-use=$W/merged.profdata -Cllvm-args=-pgo-warn-missing-function=false"

start plain "$PGO/floor-plain/release/pgo_floor" 18582
start pgo "$PGO/floor-use/release/pgo_floor" 18583
names=(floor floor_pgo)
ports=(18582 18583)
pidf=(plain pgo)
for n in "${names[@]}"; do : > "$W/$n.res"; done
for r in $(seq 1 "$ROUNDS"); do
  line="round $r (rps p99_ms cpu_us/req):"
  for i in "${!names[@]}"; do
    res=$(run_wrk "${ports[$i]}" "$(cat "$W/${pidf[$i]}.pid")")
    echo "$res" >> "$W/${names[$i]}.res"
    line="$line ${names[$i]} $(echo "$res" | cut -d' ' -f1-3) |"
  done
  echo "$line"
done
med() { cut -d' ' -f"$2" "$W/$1.res" | median; }
echo "workers=$WORKERS conns=$CONNS seconds=$SECS rounds=$ROUNDS train_secs=$TRAIN_SECS (medians of interleaved rounds)"
echo "RESULT gateway_pgo workers=$WORKERS floor_rps=$(med floor 1) floor_pgo_rps=$(med floor_pgo 1) floor_gain=$(python3 -c "print(round($(med floor_pgo 1) / $(med floor 1), 3))") floor_us=$(med floor 3) floor_pgo_us=$(med floor_pgo 3) cpu_gain=$(python3 -c "print(round($(med floor 3) / $(med floor_pgo 3), 3))")"
