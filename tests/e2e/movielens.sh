#!/bin/sh
# tests/e2e/movielens.sh — em3 data movielens end to end on the hand-made tests/data/movielens_tiny:
# the figures it prints, byte-identical output from a second run, DIN training on it unchanged
# (the model constants come from the dataset), and a malformed CSV stopping the conversion with
# file:line and status 1, writing nothing.
# Usage: movielens.sh EM3_BINARY SOURCE_DIR WORK_DIR
set -eu
EM3=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
fail() { echo "FAIL: $*"; cat "$W/out.txt" 2>/dev/null; exit 1; }
TINY="$SRC/tests/data/movielens_tiny"

"$EM3" data movielens "$TINY" --out "$W/ml" --max-len 4 --text-len 8 >"$W/out.txt" 2>&1 || fail "converting"
grep -q '^  train *15 *9 *0.600 *0$' "$W/out.txt" || fail "train figures"
grep -q '^  test *2 *1 *0.500 *2$' "$W/out.txt" || fail "test figures (2 cold-item rows)"
grep -q '3 users, 10 items (1 cold' "$W/out.txt" || fail "users, items, cold items"
grep -q -- '--set users=4 --set items=11 --set seq=4 --set patches=1 --set patch_dim=13 --set text_len=8 --set words=13' \
    "$W/out.txt" || fail "model constants"
"$EM3" data movielens "$TINY" --out "$W/ml2" --max-len 4 --text-len 8 >/dev/null 2>&1 || fail "converting again"
diff -r "$W/ml" "$W/ml2" >/dev/null || fail "two conversions differ"

"$EM3" train "$SRC/models/din.em3" --data "$W/ml" --out "$W/run" --set epochs=1 --no-progress >"$W/out.txt" 2>&1 \
    || fail "training DIN"
grep -q '^test .* 2$' "$W/out.txt" || fail "no cold rows in the final table's test line"

# a row with a missing field: file:line, status 1, no dataset
mkdir "$W/bad" && cp "$TINY"/*.csv "$W/bad/"
printf '3,2,4.0\n' >>"$W/bad/ratings.csv"
status=0
"$EM3" data movielens "$W/bad" --out "$W/badout" >"$W/out.txt" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a malformed CSV exited with $status, not 1"
grep -q "em3: error: $W/bad/ratings.csv:21: 3 fields, but the header has 4" "$W/out.txt" || fail "no file:line message"
[ ! -e "$W/badout/dataset.yaml" ] || fail "a dataset was written from bad input"
# usage mistakes: status 2
status=0
"$EM3" data movielens "$TINY" >"$W/out.txt" 2>&1 || status=$?
[ "$status" -eq 2 ] || fail "a missing --out exited with $status, not 2"
echo "ok: movielens conversion, determinism, DIN on it, malformed CSV"
