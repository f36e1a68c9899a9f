#!/bin/sh
# tools/run.sh — the README's main command: install what is missing, build, generate the
# default multimodal dataset (once, into data/gen) and train EM3-DIN on it, printing progress
# and the final metrics table. Arguments go to `em3 train` (e.g. --set epochs=1).
set -eu
cd "$(dirname "$0")/.."
./tools/build.sh >/dev/null
EM3="${EM3_BUILD_DIR:-build}/tools/em3"
[ -f data/gen/dataset.yaml ] || "$EM3" data gen --out data/gen --size default --seed 1
exec "$EM3" train models/em3_din.em3 --data data/gen --set epochs=2 "$@"
