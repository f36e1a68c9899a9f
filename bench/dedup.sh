#!/bin/sh
# bench/dedup.sh — what dedup-rows saves in training (docs/performance.md): EM3-DIN trained on
# the default generated dataset (data/gen: 10,000 items, its batches as they come, seed 1)
# with the content encodings computed once per distinct item of the batch and, with
# --set disable_passes=dedup-rows, once per occurrence; per history mode, the median over 3
# interleaved rounds of the milliseconds per step (the steps after the first 10, which hold
# the warm-up) and the run's peak memory. Prints a Markdown table. The machine is shared: run
# it twice and compare.
# Usage: bench/dedup.sh [BUILD_DIR] (default: build)
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
EM3=$(cd "${1:-$SRC/build}" && pwd)/tools/em3
W=${TMPDIR:-/tmp}/em3-bench-dedup
mkdir -p "$W"
[ -f "$W/data/dataset.yaml" ] || "$EM3" data gen --out "$W/data" --size default --seed 1 >/dev/null

# "ms/step peak_MB" of one run: history mode $1, steps $2, dedup on (1) or off (0)
run() {
    rm -rf "$W/run"
    off=""
    [ "$3" = 1 ] || off=dedup-rows
    "$EM3" train "$SRC/models/em3_din.em3" --data "$W/data" --set "history=$1" --set batch_size=256 \
        --set max_steps="$2" --set log_every=10 --set eval_test=false --set "disable_passes=$off" --no-progress \
        --out "$W/run" \
        >"$W/log" 2>&1
    awk -F'[:,]' -v n="$2" '
        /"event":"train"/ { for (i = 1; i < NF; i++) { if ($i ~ /"step"/) s = $(i + 1); if ($i ~ /"seconds"/) t = $(i + 1) }
                            if (s == 10) t10 = t; if (s == n) tn = t }
        /"event":"done"/ { for (i = 1; i < NF; i++) if ($i ~ /"peak_rss_mb"/) m = $(i + 1) }
        END { printf "%.1f %.0f\n", 1000 * (tn - t10) / (n - 10), m }' "$W/run/log.jsonl"
}

median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

echo "| EM3-DIN, batch 256, data/gen | steps | per occurrence: ms/step | peak MB | per distinct item: ms/step | peak MB | speed-up |"
echo "|---|---|---|---|---|---|---|"
for mode in top all full; do
    steps=200
    [ "$mode" = top ] || steps=40
    on="" off="" mon="" moff=""
    for round in 1 2 3; do # interleaved, so that load from elsewhere falls on both alike
        set -- $(run "$mode" "$steps" 0); off="$off $1"; moff=$2
        set -- $(run "$mode" "$steps" 1); on="$on $1"; mon=$2
    done
    a=$(median3 $off) b=$(median3 $on)
    echo "| history=$mode | $steps | $a | $moff | $b | $mon | $(echo "$a $b" | awk '{ printf "%.2f", $1 / $2 }')x |"
done
