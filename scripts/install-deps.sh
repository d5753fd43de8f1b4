#!/usr/bin/env bash
# Installs everything flowtracer needs to build, run and test on Debian 12, as root.
# Idempotent: packages already present are left alone, so a second run is quick.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  protobuf-compiler libprotobuf-dev libnghttp2-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev libclang-rt-14-dev libgrpc++-dev protobuf-compiler-grpc
  # end-to-end tests and the demo: real servers and clients on loopback
  python3 curl nginx-light wrk iproute2 nats-server prometheus nghttp2-client
  # benchmarks and profiling
  linux-perf
)
# The machine image may ship its own Node.js (which bundles npm and conflicts with Debian's npm).
command -v npm >/dev/null || packages+=(nodejs npm)

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: run as root (apt-get needs it): sudo $0" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Packaged services must not hold the ports and data the tests use; tests start their own.
for service in nginx prometheus nats-server; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done

# Independent OpenTelemetry implementations for the tests (Node SDK, OTLP decoders), pinned
# by tests/node/package-lock.json. Reinstalled only when the lock file changes.
node_dir="$(dirname "$0")/../tests/node"
lock_hash=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
if [[ "$(cat "$node_dir/node_modules/.flowtracer-lock-hash" 2>/dev/null)" != "$lock_hash" ]]; then
  echo "install-deps: npm ci in tests/node"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > "$node_dir/node_modules/.flowtracer-lock-hash"
fi
