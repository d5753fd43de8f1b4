#!/usr/bin/env bash
# Installs what is missing, builds from a clean build directory, and runs every test:
# unit tests, fuzz targets (bounded time), and end-to-end tests that load the real eBPF
# programs (root). Idempotent. Usage: sudo scripts/test.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
rm -rf build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure "$@"
