#!/usr/bin/env bash
# The main job in one command: installs what is missing, builds, starts two plain HTTP
# services on loopback (gateway -> billing, no tracing code in them), sends them a few
# requests while `flowtracer capture` runs, and shows what it saw.
# Usage: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target flowtracer

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
OTEL_SERVICE_NAME=billing python3 tests/e2e/servers.py 38081 >/dev/null &
pids+=($!)
OTEL_SERVICE_NAME=gateway python3 tests/e2e/servers.py 38080 --downstream http://127.0.0.1:38081/charge/42 >/dev/null &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:38080/ && curl -s -o /dev/null http://127.0.0.1:38081/ && break; sleep 0.1; done

(
  sleep 2
  for i in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:38080/call?order=$i"; done
  curl -s -o /dev/null http://127.0.0.1:38081/status/500
) &
echo "flowtracer capture --duration 5s --port 38080 --port 38081"
./build/flowtracer capture --duration 5s --port 38080 --port 38081
