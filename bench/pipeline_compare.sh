#!/usr/bin/env bash
# The pipeline benchmark of this tree against the same benchmark built from another
# revision's pipeline sources (default: where this branch left main), run alternately in
# one session so the ratio is not an artefact of a busy machine.
#   bench/pipeline_compare.sh [REV] [ROUNDS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REV=${1:-$(git -C "$ROOT" merge-base HEAD main)}
ROUNDS=${2:-3}
WORK=$(mktemp -d /tmp/ft-pipeline-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Same compiler flags as the RelWithDebInfo build.
build() {
  local src=$1 out=$2
  # The pipeline: every source of the stages the benchmark drives (no libbpf, no CLI).
  local sources
  sources=$(find "$src/agent/protocols" "$src/agent/conntrack" "$src/agent/spans" "$src/agent/process" \
    -name '*.cc' -not -name '*_test.cc' | sort)
  # shellcheck disable=SC2086
  g++ -std=c++20 -O2 -g -DNDEBUG -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -DFMT_SHARED -I"$src" -I"$src/bpf/include" \
    "$ROOT/bench/pipeline_bench.cc" $sources -o "$out" -lbenchmark -lspdlog -lfmt -lpthread
}
mkdir -p "$WORK/base"
git -C "$ROOT" archive "$REV" | tar -x -C "$WORK/base"
echo "# building the pipeline benchmark against $REV and against this tree" >&2
build "$WORK/base" "$WORK/pipeline_base" &
build "$ROOT" "$WORK/pipeline_this"
wait

FILTER=${FILTER:-BM_KeepAlive|BM_SameHost|BM_Churn|BM_ConnectionChurn}
for round in $(seq 1 "$ROUNDS"); do
  for which in base this; do
    "$WORK/pipeline_$which" --benchmark_filter="$FILTER" --benchmark_min_time=1 \
      --benchmark_format=csv 2>/dev/null | grep '^"BM_' | sed "s/^/$which,/" >>"$WORK/results.csv"
  done
done
# csv: which,"name",iterations,real_time,cpu_time,time_unit,bytes_per_second,items_per_second,...
# (the head parser rows compare bytes/s)
echo "benchmark,${REV:0:12}_items_per_s,this_items_per_s,ratio (medians of $ROUNDS alternating runs, CPU time)"
python3 - "$WORK/results.csv" <<'EOF'
import csv, statistics, sys
rows = {}
for r in csv.reader(open(sys.argv[1])):
    # items_per_second, or bytes_per_second for benchmarks that count no items
    rows.setdefault((r[1], r[0]), []).append(float(r[7] or r[6]))
for name in sorted({n for n, _ in rows}):
    base, this = statistics.median(rows[(name, "base")]), statistics.median(rows[(name, "this")])
    print(f"{name},{base:.0f},{this:.0f},{this / base:.2f}")
EOF
