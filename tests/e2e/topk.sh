#!/bin/sh
# tests/e2e/topk.sh — the top-K (MMRec) setting end to end on a generated MMRec folder:
# LightGCN trains with BPR and sampled negatives, evaluation ranks every item (Recall@20 well
# above chance), `em3 eval` reproduces the run's test row; and FREEDOM (drop-edge graphs drawn
# per epoch, an item-item kNN graph) stopped mid-epoch and resumed ends byte-identical to an
# uninterrupted run.
# Usage: topk.sh EM3_BINARY SOURCE_DIR WORK_DIR
set -eu
EM3=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
fail() { echo "FAIL: $*"; cat "$W/out.txt" 2>/dev/null; exit 1; }
"$EM3" data gen --out "$W/data" --size small --seed 5 --topk >/dev/null
SET="--set batch_size=2048 --set eval_batch_size=1024 --set patience=0 --no-progress"

"$EM3" train "$SRC/models/lightgcn.em3" --data "$W/data/topk" --out "$W/run" $SET --set epochs=6 \
    >"$W/out.txt" 2>&1 || fail "training LightGCN"
grep -q '^test ' "$W/out.txt" || fail "no final table"
r20=$(awk '$1 == "valid" { print $4 }' "$W/out.txt")
# chance is 20 / 2000 items = 0.01
awk -v r="$r20" 'BEGIN { exit !(r > 0.08 && r <= 1) }' || fail "valid Recall@20 $r20 is not above 0.08"
grep -q '"event":"eval".*"recall@20":' "$W/run/log.jsonl" || fail "no Recall@20 in log.jsonl"
head -1 "$W/run/metrics.csv" | grep -q '^epoch,step,seconds,recall@10,' || fail "metrics.csv has no top-K columns"
"$EM3" eval "$W/run" --split test >"$W/eval.txt" 2>&1 || fail "em3 eval"
[ "$(awk '$1 == "test"' "$W/eval.txt")" = "$(awk '$1 == "test"' "$W/out.txt")" ] || fail "em3 eval disagrees with the run"

D="$SET --set deterministic=true --set epochs=2 --set checkpoint_every=4 --set eval_test=false"
"$EM3" train "$SRC/models/freedom.em3" --data "$W/data/topk" --out "$W/full" $D >"$W/out.txt" 2>&1 || fail "full run"
"$EM3" train "$SRC/models/freedom.em3" --data "$W/data/topk" --out "$W/split" $D --set max_steps=13 \
    >"$W/out.txt" 2>&1 || fail "stopped run"
"$EM3" train --resume "$W/split" --set max_steps=0 --no-progress >"$W/out.txt" 2>&1 || fail "resumed run"
cmp "$W/full/last.ckpt" "$W/split/last.ckpt" || fail "FREEDOM stopped at step 13 + resumed differs"
echo "ok: LightGCN valid Recall@20 $r20; em3 eval agrees; FREEDOM's resume is exact"
