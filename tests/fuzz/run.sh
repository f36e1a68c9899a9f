#!/bin/sh
# tests/fuzz/run.sh — build a libFuzzer target with ASan/UBSan, seed its corpus from the
# repository and run it for a given time, printing libFuzzer's final statistics. Crashes,
# leaks and timeouts land in build-fuzz/artifacts-TARGET/; the corpus persists between runs.
# usage: tests/fuzz/run.sh frontend|ir_parser [SECONDS]   (default 600)
set -eu
[ $# -ge 1 ] || { echo "usage: $0 frontend|ir_parser [SECONDS]" >&2; exit 2; }
target=$1
secs=${2:-600}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
case $target in
    frontend) pattern='*.em3' ;;
    ir_parser) pattern='*.ir' ;;
    *) echo "$0: unknown target '$target' (frontend or ir_parser)" >&2; exit 2 ;;
esac
[ -f "$out/CMakeCache.txt" ] || CC=clang-19 cmake -S "$root" -B "$out" -DEM3_FUZZ=ON -DEM3_SANITIZE=ON >/dev/null
cmake --build "$out" --target "fuzz_$target" -j"$(nproc)" >/dev/null
seeds=$out/seeds-$target
mkdir -p "$seeds" "$out/corpus-$target" "$out/artifacts-$target"
# Seeds named by content hash, so that reruns add nothing twice. The IR target also gets the
# IR of every bundled model after each stage of the pipeline.
find "$root/models" "$root/tests/lit" -type f -name "$pattern" | while IFS= read -r f; do
    cp "$f" "$seeds/$(sha1sum < "$f" | cut -c1-40)"
done
if [ "$target" = ir_parser ]; then
    for m in "$root"/models/*.em3; do
        "$out/tools/em3" ir "$m" > "$seeds/model.ir" 2>/dev/null || continue
        mv "$seeds/model.ir" "$seeds/$(sha1sum < "$seeds/model.ir" | cut -c1-40)"
    done
fi
cd "$out"
exec "./tests/fuzz/fuzz_$target" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=10 \
    -dict="$root/tests/fuzz/fuzz_$target.dict" -print_final_stats=1 \
    -artifact_prefix="artifacts-$target/" "corpus-$target" "seeds-$target"
