#!/usr/bin/env bash
# The query_scale questions of the embedded store, asked over HTTP of a release `apus run`
# (the binary users run, no separate optimised bench build): slow-SQL TOP 100 and pool
# ranking over the day, a day of p99 by lane in 15-minute buckets, root cause over the last
# hour. The data set is the query bench's (`ROWS=… cargo bench -p apus-query --bench
# query_10m` generates it once into /tmp/apus-bench/query-ROWS, and this script runs it
# when missing); it is copied, so the all-in-one's retention and WAL never touch the
# original (benches/query_common.sh).
#
#   APUS_BIN=…/release/apus benches/query_embedded.sh [ROWS] [RUNS]
#
# Ends with: RESULT query_scale store=embedded rows=… shards=1 top100_ms=… pool_ranking_ms=…
#   timeseries_ms=… rootcause_ms=…   (medians of RUNS, after one warm-up each)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
RUNS=${2:-5}
APUS_BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
# shellcheck source=benches/query_common.sh
. benches/query_common.sh
start_apus_over_dataset
# Let start-up work (opening files, compaction of what the copy holds) settle first.
sleep 10
DAY="from=2026-10-31T00:00:00Z&to=2026-11-01T00:00:00Z"
HOUR="from=2026-10-31T23:00:00Z&to=2026-11-01T00:00:00Z"
ms() { # URL -> median ms of RUNS calls after two warm-up calls
  for _ in 1 2; do curl -sf "http://127.0.0.1:$Q$1" -o /dev/null; done
  for _ in $(seq 1 "$RUNS"); do
    curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$Q$1"
  done | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] * 1000 }'
}
top=$(ms "/api/v1/slow-sql/top?$DAY&limit=100")
pools=$(ms "/api/v1/rank/pools?$DAY")
series=$(ms "/api/v1/timeseries?$DAY&metric=p99_ms&by=tag&step=15m")
rca=$(ms "/api/v1/rootcause?$HOUR")
echo "RESULT query_scale store=embedded rows=$ROWS shards=1 top100_ms=$top pool_ranking_ms=$pools timeseries_ms=$series rootcause_ms=$rca"
