#!/usr/bin/env bash
# scripts/setup.sh - installs everything meshllm needs on Debian 12 (as root or with sudo).
# Safe to run again: installs only what is missing. Node.js packages for the interop tests
# are installed by the tests that use them (tests/interop/).
set -euo pipefail
pkgs=(build-essential pkg-config clang libclang-rt-14-dev
      libsodium-dev libuv1-dev libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev
      libsqlite3-dev libprotobuf-c-dev protobuf-c-compiler libcmocka-dev
      unicode-data python3 python3-jsonschema python3-jinja2)
# The API end-to-end tests: Node.js + npm (openai, playwright-core) and Debian's Chromium.
pkgs+=(curl nodejs chromium)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [ "${MESHLLM_SETUP_EXTRA:-1}" = 1 ]; then
    pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
echo "setup: all packages present" >&2
