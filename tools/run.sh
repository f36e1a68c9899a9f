#!/bin/sh
# tools/run.sh — the README's main command: install what is missing, build, and run the
# bundled EM3 model. Today it compiles EM3-DIN and shows its IR; training lands with the
# runtime (see the issues).
set -eu
cd "$(dirname "$0")/.."
./tools/build.sh >/dev/null
BUILD_DIR="${EM3_BUILD_DIR:-build}"
"$BUILD_DIR/tools/em3" check models/em3_din.em3
"$BUILD_DIR/tools/em3" ir models/em3_din.em3 "$@"
