#!/bin/sh
# tests/fuzz/make_corpus.sh — seed corpus for fuzz_ir_parser: copies every .ir file under
# tests/lit, and under any further directories given (e.g. --dump-dir output of the models),
# into OUTDIR, named by content hash so that reruns add nothing twice.
# usage: tests/fuzz/make_corpus.sh OUTDIR [DIR...]
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [DIR...]" >&2; exit 2; }
out=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
find "$root/tests/lit" "$@" -type f -name '*.ir' | while IFS= read -r f; do
    sum=$(sha1sum < "$f" | cut -c1-40)
    cp "$f" "$out/$sum"
done
echo "$(find "$out" -type f | wc -l) files in $out"
