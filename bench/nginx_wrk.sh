#!/usr/bin/env bash
# nginx on loopback (port 21080, temporary prefix) serving a small response: wrk at
# saturation, then h2load at fixed 10 000 and 20 000 requests/s and the same rates evenly
# spaced (BUILD/bench/paced_client), each with no agent,
# no-op programs on the socket tracepoints (the floor; BUILD/bench/noop_hooks), `flowtracer capture`, and capture + OTLP export to a local sink (when the build has
# `flowtracer agent`); phases interleaved, rotated and repeated in one run.
#   bench/nginx_wrk.sh [BUILD_DIR] [load_bench.py nginx options, e.g. --rounds 5]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-$HERE/../build}
shift || true
exec python3 "$HERE/load_bench.py" --flowtracer "$BUILD/flowtracer" ${DURATION:+--duration $DURATION} \
  ${JSON:+--json $JSON} nginx "$@"
