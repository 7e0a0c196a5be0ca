#!/usr/bin/env bash
# deps.sh — install what ftmem's build and tests need on Debian 12.
#
# Idempotent: asks apt only when a package is missing (and runs
# `apt-get update` only then).  Needs root, or passwordless sudo.
set -euo pipefail

packages=(
  cmake make gcc libc6-dev clang pkg-config # toolchain (gcc ships the ASan/TSan runtimes)
  libck-dev liburcu-dev                     # Concurrency Kit, userspace RCU
  libcriterion-dev                          # unit tests
  python3 valgrind                          # override tests, memory checks
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo -n)
  else
    echo "deps: missing ${missing[*]} and not root (no sudo): install them first" >&2
    exit 1
  fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
