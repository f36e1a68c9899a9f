#!/bin/sh
# tools/test.sh — the README's test command: install what is missing, build, and run the whole
# suite (cmocka units, lit + FileCheck golden tests, end-to-end runs). Extra arguments go to
# CMake's configure step (e.g. -DEM3_SANITIZE=ON).
set -eu
cd "$(dirname "$0")/.."
./tools/build.sh "$@"
ctest --test-dir "${EM3_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)"
