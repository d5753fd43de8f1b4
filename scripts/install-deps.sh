#!/usr/bin/env bash
# Installs everything flowtracer needs to build, run and test on Debian 12, as root.
# Idempotent: packages already present are left alone, so a second run is quick.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  protobuf-compiler libprotobuf-dev libcurl4-openssl-dev libnghttp2-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev libclang-rt-14-dev
  # end-to-end tests and the demo: real servers and clients on loopback
  python3 curl nginx-light wrk iproute2
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
# nginx-light's package starts a system nginx on port 80; tests start their own instances.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
