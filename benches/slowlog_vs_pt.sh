#!/usr/bin/env bash
# Side by side: `apus slowlog digest` against `pt-query-digest` (percona-toolkit) on one real
# MariaDB slow log of at least 60 MB made by sysbench (scripts/gen-mariadb-slowlog). Checks
# that the top 20 fingerprints of pt-query-digest have the same call counts in our digest
# (matched by fingerprint text), times both, and ends with
#   RESULT slowlog_vs_pt apus_s=… pt_s=… ratio=… top20_match=M/N
# where ratio = pt_s / apus_s and N = min(20, fingerprints pt-query-digest found).
#
#   benches/slowlog_vs_pt.sh [LOG]
#
# LOG is reused if it exists, else generated there (default: $TMPDIR/apus-bench/
# mariadb-slow-60mb.log). Env: SLOWLOG_MB (size to generate, default 60); APUS_BIN (use this
# apus binary instead of building the release one).
set -euo pipefail
cd "$(dirname "$0")/.."
mb="${SLOWLOG_MB:-60}"
log="${1:-${TMPDIR:-/tmp}/apus-bench/mariadb-slow-${mb}mb.log}"

if [ ! -s "$log" ]; then
  scripts/gen-mariadb-slowlog "$log" "$mb" >&2
fi
if ! command -v pt-query-digest >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq percona-toolkit >/dev/null
fi
if [ -z "${APUS_BIN:-}" ]; then
  cargo build --release --quiet
  APUS_BIN="${CARGO_TARGET_DIR:-target}/release/apus"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

size_mb="$(awk -v b="$(stat -c %s "$log")" 'BEGIN { printf "%.1f", b / 1048576 }')"
echo "log: $log (${size_mb} MB)" >&2

# Medians (the machine is shared and noisy): apus 5 runs, pt-query-digest 3 runs.
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }'; }
apus_s="$(for _ in 1 2 3 4 5; do
  t0="$(now)"
  "$APUS_BIN" slowlog digest "$log" --limit 20 --format json >"$tmp/apus.json"
  elapsed "$t0" "$(now)"; echo
done | median)"
pt_s="$(for _ in 1 2 3; do
  t0="$(now)"
  pt-query-digest --limit 20 --output json "$log" </dev/null >"$tmp/pt.json" 2>"$tmp/pt.err"
  elapsed "$t0" "$(now)"; echo
done | median)"

# pt's classes in its own order (total time, descending); ours looked up by fingerprint.
match="$(perl -MJSON::PP -e '
  sub slurp { local $/; open(my $f, "<", $_[0]) or die "$_[0]: $!"; <$f> }
  my $ours = decode_json(slurp($ARGV[0]));
  my $pt = decode_json(slurp($ARGV[1]));
  my %ours = map { ($_->{fingerprint} => $_) } @$ours;
  my @classes = @{ $pt->{classes} || [] };
  splice(@classes, 20) if @classes > 20;
  my $ok = 0;
  for my $c (@classes) {
    my $r = $ours{ $c->{fingerprint} };
    if ($r && $r->{calls} == $c->{query_count}) { $ok++; next }
    printf STDERR "mismatch: %s: pt %d calls, apus %s\n", $c->{fingerprint},
      $c->{query_count}, $r ? $r->{calls} : "none";
  }
  printf "%d/%d\n", $ok, scalar @classes;
' "$tmp/apus.json" "$tmp/pt.json")"

ratio="$(awk -v a="$apus_s" -v p="$pt_s" 'BEGIN { printf "%.1f", (a > 0 ? p / a : 0) }')"
echo "apus: ${apus_s}s  pt-query-digest: ${pt_s}s  top-20 call counts equal: $match" >&2
echo "RESULT slowlog_vs_pt apus_s=$apus_s pt_s=$pt_s ratio=$ratio top20_match=$match log_mb=$size_mb"
