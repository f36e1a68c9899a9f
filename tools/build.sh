#!/bin/sh
# tools/build.sh — configure and build EM3 into a build folder (default: build), installing
# missing Debian packages first. Extra arguments go to CMake's configure step.
set -eu
cd "$(dirname "$0")/.."
./tools/deps.sh
BUILD_DIR="${EM3_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${EM3_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
