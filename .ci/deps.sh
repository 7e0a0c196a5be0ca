#!/usr/bin/env bash
# deps.sh — install what ftmem's build and tests need on Debian 12.
#
# Idempotent: asks apt only when a package is missing (and runs
# `apt-get update` only then).  Needs root, or passwordless sudo.  Ends by
# fetching Debian's ck source for the TSan build (.ci/fetch_ck_source.sh),
# which does nothing once it is cached.
set -euo pipefail

packages=(
  cmake make gcc libc6-dev clang pkg-config # toolchain (gcc ships the ASan/TSan runtimes)
  libck-dev liburcu-dev                     # Concurrency Kit, userspace RCU
  libdw-dev                                 # elfutils: traced call sites to file and line
  graphviz                                  # tests render ftm_refgraph_dump with dot
  chromium                                  # tests/report renders the HTML report headless
  libcriterion-dev                          # unit tests
  python3 valgrind libgc-dev                # override tests, memory checks
  time libpython3.11-testsuite sqlite3 git memcached binutils # tests/realprog
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

sudo=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
else
  if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
    echo "deps: missing ${missing[*]} and not root (no sudo): install them first" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's Concurrency Kit source: the TSan build compiles ck_epoch.c and
# ck_hs.c from it (cmake/ck_tsan_sources.cmake).  Cheap once cached (no
# root needed then); the first fetch needs root.
fetch=(bash "$(dirname "${BASH_SOURCE[0]}")/fetch_ck_source.sh")
if [ "$(id -u)" -ne 0 ] && ! "${fetch[@]}" >/dev/null 2>&1; then
  fetch=("${sudo[@]}" env "FTMEM_CK_SOURCE_DIR=${FTMEM_CK_SOURCE_DIR:-}" "${fetch[@]}")
fi
ck_src=$("${fetch[@]}") # an assignment, so that a failure stops the script
echo "deps: ck source in $ck_src"
