#!/usr/bin/env bash
# The query tier over a 2-shard ClickHouse cluster (two servers on this machine, each
# holding half the rows) at ROWS rows per table (default 100M): slow-SQL TOP 100, pool
# ranking, a day of p99 by lane, root cause over the last hour, and the TOP 100 and pool
# ranking written by hand over raw rows; the data size on disk of both shards.
#
#   benches/query_cluster.sh [ROWS] [DATA_DIR]
#
# The servers make the data themselves (INSERT … SELECT FROM numbers(), the same
# distributions as the embedded bench's generator) into DATA_DIR (default
# /tmp/apus-bench/cluster-ROWS), kept for later runs. Needs clickhouse-server (scripts/setup).
# QUERY_BENCH_BIN=… runs an already built bench binary instead of `cargo bench` (the client
# mostly waits on the servers, so a debug build measures the same).
# Ends with: RESULT query_scale store=clickhouse rows=… shards=2 top100_ms=… pool_ranking_ms=…
#   timeseries_ms=… rootcause_ms=… hand_top100_ms=… hand_pool_ranking_ms=… data_mb=…
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000000}
DIR=${2:-/tmp/apus-bench/cluster-$ROWS}
mkdir -p "$DIR"
H1=28201 T1=29201 H2=28202 T2=29202
cat > "$DIR/remote_servers.xml" <<XML
<remote_servers><apus2>
<shard><replica><host>127.0.0.1</host><port>$T1</port></replica></shard>
<shard><replica><host>127.0.0.1</host><port>$T2</port></replica></shard>
</apus2></remote_servers>
XML
P1=$(scripts/clickhouse-start "$DIR/s1" "$H1" "$T1" "$DIR/remote_servers.xml")
P2=$(scripts/clickhouse-start "$DIR/s2" "$H2" "$T2" "$DIR/remote_servers.xml")
trap 'kill $P1 $P2 2>/dev/null || true' EXIT
export CLICKHOUSE_SHARDS="clickhouse://127.0.0.1:$H1/scale,clickhouse://127.0.0.1:$H2/scale"
export CLICKHOUSE_CLUSTER=apus2 ROWS
if [ -n "${QUERY_BENCH_BIN:-}" ]; then
  "$QUERY_BENCH_BIN" --bench
else
  cargo bench -p apus-query --bench query_10m
fi
