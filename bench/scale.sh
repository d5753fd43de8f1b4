#!/usr/bin/env bash
# Scale: 10 000 concurrent keep-alive connections to nginx (busy), a pool of idle
# keep-alive connections, then 100 000 connections opened and closed, under one
# `flowtracer capture` (--mode otlp: the agent exporting to a local OTLP sink); the agent's
# RSS (and with --heap its live malloc heap) and the kernel connection table's size show
# all stay bounded. --baseline FLOWTRACER runs another build through the same scenario in
# the same session.
#   bench/scale.sh [BUILD_DIR] [load_bench.py scale options, e.g. --heap --baseline /path/flowtracer]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-$HERE/../build}
shift || true
# 10 000 connections: wrk and nginx each hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)"
exec python3 "$HERE/load_bench.py" --flowtracer "$BUILD/flowtracer" --workers 2 \
  ${DURATION:+--duration $DURATION} ${JSON:+--json $JSON} scale "$@"
