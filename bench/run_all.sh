#!/usr/bin/env bash
# Every benchmark, in order, as root: builds what they need, then runs
#   1. the userspace pipeline (Google Benchmark),
#   2. the syscall cost of a traced read/write (ping-pong; no-op hooks as the floor),
#   3. nginx under wrk and h2load with no agent / capture / capture+OTLP,
#   4. scale: 10 000 keep-alive connections and 100 000 connections churned.
# Results go to stdout and to RESULTS_DIR (default bench-results/<date>).
#   sudo bench/run_all.sh [BUILD_DIR]
# Only ratios between phases of one run are meaningful on a shared machine: every
# script interleaves its phases and repeats them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${1:-$ROOT/build}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench-results/$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$RESULTS_DIR"

if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD" -j"$(nproc)" --target benchmarks

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "nproc: $(nproc)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$RESULTS_DIR/machine.txt"

echo "== 1. pipeline"
taskset -c 0 "$BUILD/bench/pipeline_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_min_time=1 | tee "$RESULTS_DIR/pipeline.txt"

echo "== 2. syscall overhead"
"$HERE/syscall_overhead.sh" "$BUILD" | tee "$RESULTS_DIR/syscall_overhead.txt"

echo "== 3. nginx"
JSON=$RESULTS_DIR/nginx.json "$HERE/nginx_wrk.sh" "$BUILD" --nice-phase | tee "$RESULTS_DIR/nginx.txt"

echo "== 4. scale"
JSON=$RESULTS_DIR/scale.json "$HERE/scale.sh" "$BUILD" | tee "$RESULTS_DIR/scale.txt"

echo "results in $RESULTS_DIR"
