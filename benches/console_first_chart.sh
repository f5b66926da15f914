#!/usr/bin/env bash
# The console's page weight and its time to a first chart, in Debian's headless chromium
# driven over WebDriver (plain HTTP to chromedriver), against `apus run` on an embedded
# store holding ROWS rows in each of access_log, slow_sql and logs (the query_10m bench's
# generated day, 2026-10-31).
#
#   APUS_BIN=$CARGO_TARGET_DIR/release/apus benches/console_first_chart.sh [ROWS] [ROUNDS] [PAGE]
#
# Each round is a fresh browser profile (a cold cache). "first chart" is the
# `apus-first-chart` performance mark chart.js sets when it has drawn a chart with data,
# counted from the start of navigation. Page weight is what went over the wire for the
# console's own files (gzipped when the browser asks), and their size unpacked.
# Ends with
#   RESULT console_first_chart rows=… page=… weight_kb=… unpacked_kb=… first_chart_ms=… api_ms=…
# (medians over the rounds).
set -euo pipefail
ROWS=${1:-1000000}
ROUNDS=${2:-5}
PAGE=${3:-overview}
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/apus-target}"
export CARGO_TARGET_DIR
APUS_BIN=${APUS_BIN:-$CARGO_TARGET_DIR/release/apus}
command -v chromedriver >/dev/null || apt-get install -y chromium chromium-driver >/dev/null
[ -x "$APUS_BIN" ] || cargo build --release --bin apus

# shellcheck source=benches/query_common.sh
. benches/query_common.sh
start_apus_over_dataset
DRV=$(port)
chromedriver --port="$DRV" >/dev/null 2>&1 &
DRIVER_PID=$!
EXTRA_PIDS+=("$DRIVER_PID")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$DRV/status" >/dev/null && break
  sleep 0.1
done

URL="http://127.0.0.1:$Q/#/$PAGE?from=2026-10-31T00:00:00Z&to=2026-11-01T00:00:00Z"
wd() { curl -fsS -H 'content-type: application/json' -X "$1" "http://127.0.0.1:$DRV$2" ${3:+-d "$3"}; }
js() { wd POST "/session/$SID/execute/sync" "{\"script\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"), \"args\": []}"; }
caps='{"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"binary":"/usr/bin/chromium","args":["--headless","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--no-first-run","--disable-background-networking","--window-size=1280,800"]}}}}'
MEASURE='
const mark = performance.getEntriesByName("apus-first-chart")[0];
if (!mark) return null;
const own = performance.getEntriesByType("resource").filter(e => e.name.includes("/console/"));
const nav = performance.getEntriesByType("navigation")[0];
const api = performance.getEntriesByType("resource").filter(e => e.name.includes("/api/"));
const slowest = api.map(e => [Math.round(e.duration), e.name.replace(/^.*\/api\//, "")]).sort((a, b) => b[0] - a[0]).slice(0, 3);
const sum = (a, k) => a.reduce((s, e) => s + e[k], 0);
return {
  first_chart_ms: mark.startTime,
  weight: nav.transferSize + sum(own, "transferSize"),
  unpacked: nav.decodedBodySize + sum(own, "decodedBodySize"),
  files: own.length + 1,
  api_ms: Math.max(0, ...api.map(e => e.responseEnd)) - Math.min(...api.map(e => e.startTime)),
  slowest,
};'
results=()
for r in $(seq "$ROUNDS"); do
  SID=$(wd POST /session "$caps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"]["sessionId"])')
  wd POST "/session/$SID/url" "{\"url\": \"$URL\"}" >/dev/null
  out=null
  for _ in $(seq 600); do
    out=$(js "$MEASURE" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["value"]))')
    [ "$out" != null ] && break
    sleep 0.1
  done
  wd DELETE "/session/$SID" >/dev/null
  [ "$out" = null ] && { echo "round $r: no chart within 60 s" >&2; tail -20 "$WORK/apus.log" >&2; exit 1; }
  echo "round $r: $out"
  results+=("$out")
done
printf '%s\n' "${results[@]}" | ROWS=$ROWS PAGE=$PAGE python3 -c '
import json, os, statistics, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
def med(k):
    return statistics.median(r[k] for r in rs)
print("RESULT console_first_chart rows=%s page=%s files=%d weight_kb=%.1f unpacked_kb=%.1f first_chart_ms=%.0f api_ms=%.0f" % (
    os.environ["ROWS"], os.environ["PAGE"], rs[0]["files"], med("weight") / 1024,
    med("unpacked") / 1024, med("first_chart_ms"), med("api_ms")))
'
