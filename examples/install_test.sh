#!/usr/bin/env bash
# Install ftmem from a build tree into a scratch prefix, then build and run
# a consumer with find_package(ftmem) and another with pkg-config.
set -euo pipefail
build=$1 src=$2 work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/examples/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer/consumer"
libdir=$(ls -d "$work/prefix"/lib*/pkgconfig | head -1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs ftmem)
cc -o "$work/hello-pc" "$src/examples/hello.c" $flags
LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/hello-pc"
test -f "$work/prefix/include/ftmem.h"
echo "install test: find_package and pkg-config consumers built and ran"
