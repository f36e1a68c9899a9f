#!/bin/sh
# tests/e2e/train.sh — em3 train / eval / predict end to end on generated data: a run folder
# with every file, metrics in a plausible band, a NaN loss stopping training with the step
# named and the last good checkpoint intact, a corrupt checkpoint refused and not
# overwritten, a run folder never trained into twice, an undefined monitor refused, options
# outside their ranges refused, a model larger than the machine refused, and (when
# ../shared/data is present) DIN on the real FuxiCTR CTR samples.
# Usage: train.sh EM3_BINARY SOURCE_DIR WORK_DIR
set -eu
EM3=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
fail() { echo "FAIL: $*"; cat "$W/out.txt" 2>/dev/null; exit 1; }
"$EM3" data gen --out "$W/data" --size tiny --seed 3 >/dev/null
SET="--set users=100 --set items=300 --set seq=20 --set d=8 --set batch_size=64 --set eval_batch_size=256
     --set lr=0.01 --no-progress"

"$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/run" $SET --set epochs=4 >"$W/out.txt" 2>&1 \
    || fail "training DIN"
for f in config.yaml model.ir log.jsonl metrics.csv best.ckpt last.ckpt; do
    [ -s "$W/run/$f" ] || fail "run folder lacks $f"
done
grep -q '^test ' "$W/out.txt" || fail "no final table"
auc=$(awk '$1 == "valid" { print $3 }' "$W/out.txt")
awk -v a="$auc" 'BEGIN { exit !(a > 0.55 && a <= 1) }' || fail "valid AUC $auc is not above 0.55"
"$EM3" eval "$W/run" --split valid >"$W/eval.txt" 2>&1 || fail "em3 eval"
[ "$(awk '$1 == "valid" { print $3 }' "$W/eval.txt")" = "$auc" ] || fail "em3 eval disagrees with the run"
"$EM3" predict "$W/run" -o "$W/scores.csv" 2>/dev/null || fail "em3 predict"
[ "$(wc -l <"$W/scores.csv")" -eq 201 ] || fail "predict wrote $(wc -l <"$W/scores.csv") lines, not 201"

# resuming with another model size: both shapes named
if "$EM3" train --resume "$W/run" --set d=16 --no-progress >"$W/out.txt" 2>&1; then fail "resumed with d=16"; fi
grep -q "holds user_id.table as f32\[100, 8\], the model as f32\[100, 16\]" "$W/out.txt" \
    || fail "no message naming both shapes"

# SGD with an absurd rate: the loss overflows; training stops naming the step
if "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/nan" $SET --set optimizer=sgd \
       --set lr=1e30 --set epochs=2 --set checkpoint_every=1 >"$W/out.txt" 2>&1; then
    fail "a diverging run succeeded"
fi
grep -q "the loss is .* at step [0-9]" "$W/out.txt" || fail "no message naming the step of the NaN loss"
[ -s "$W/nan/last.ckpt" ] || fail "the last good checkpoint is gone"

# a corrupt checkpoint is refused and left as it is
cp "$W/run/last.ckpt" "$W/saved.ckpt"
printf 'X' | dd of="$W/run/last.ckpt" bs=1 seek=4000 conv=notrunc 2>/dev/null
if "$EM3" train --resume "$W/run" --no-progress >"$W/out.txt" 2>&1; then fail "resumed from a corrupt checkpoint"; fi
grep -q "corrupt" "$W/out.txt" || fail "no clear message for a corrupt checkpoint"
cmp -s "$W/run/last.ckpt" "$W/saved.ckpt" && fail "the corrupt checkpoint was overwritten"

# a run folder is never trained into twice
cp "$W/run/log.jsonl" "$W/saved.jsonl"
if "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/run" $SET >"$W/out.txt" 2>&1; then
    fail "trained into a folder that holds a run"
fi
grep -q "already holds a run: continue it with --resume" "$W/out.txt" || fail "no clear message for a taken run folder"
cmp -s "$W/run/log.jsonl" "$W/saved.jsonl" || fail "the earlier run's log changed"

# a valid split of one class has no AUC: a clear message naming the monitor, not a missing best.ckpt
cp -r "$W/data" "$W/oneclass" && rm -rf "$W/oneclass/.em3cache"
python3 - "$W/oneclass/valid/click.npy" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
n = 10 + int.from_bytes(b[8:10], "little")
b[n:] = bytes(len(b) - n)
open(sys.argv[1], "wb").write(b)
PY
if "$EM3" train "$SRC/models/din.em3" --data "$W/oneclass" --out "$W/oneclass-run" $SET --set epochs=1 \
       >"$W/out.txt" 2>&1; then fail "trained with an undefined monitor"; fi
grep -q "monitor 'auc': auc is undefined on the valid split (a single class" "$W/out.txt" \
    || fail "no clear message for a valid split of one class"

# an option outside its range is a usage error (exit 2) naming the key and the range; nothing
# is trained and no run folder is made
for bad in "lr=-0.1|[0, inf)" "beta2=1|[0, 1)" "eps=0|(0, inf)" "lr_factor=2|(0, 1]" "batch_size=0|[1, inf)"; do
    set +e
    "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/bad" $SET --set "${bad%%|*}" >"$W/out.txt" 2>&1
    status=$?
    set -e
    [ "$status" -eq 2 ] || fail "--set ${bad%%|*}: exit status $status, not 2"
    grep -qF -- "--set ${bad%%|*}: must be in ${bad#*|}" "$W/out.txt" || fail "--set ${bad%%|*}: no message with the range"
    [ ! -e "$W/bad" ] || fail "--set ${bad%%|*} made a run folder"
done

# threads need a shard each
if "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/thr" $SET --set threads=2 --set shards=1 \
       >"$W/out.txt" 2>&1; then fail "threads=2 ran with one shard"; fi
grep -q "threads=2 needs at least 2 shards per rank, not 1" "$W/out.txt" || fail "no message for threads without shards"

# only -O2 passes can be left out, and only known ones; the run then makes no folder
if "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/nopass" $SET --set disable_passes=autodiff \
       >"$W/out.txt" 2>&1; then fail "trained without autodiff"; fi
grep -q "pass 'autodiff' is not an optimisation (-O2) and cannot be disabled" "$W/out.txt" \
    || fail "no message for disabling autodiff"
[ ! -e "$W/nopass" ] || fail "disabling autodiff left a run folder"

# a vocabulary smaller than the data's ids is found before the run folder is made
if "$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/vocab" $SET --set items=10 >"$W/out.txt" 2>&1; then
    fail "trained with a vocabulary smaller than the data's"
fi
grep -q "input item has vocabulary 10 in the model but ids up to 299" "$W/out.txt" || fail "no message for the vocabulary"
[ ! -e "$W/vocab" ] || fail "a vocabulary mismatch left a run folder"

# a model whose tables cannot fit in memory (300 x 1e9 weights): a message with the sizes, no
# run folder, never an allocation failure halfway through initialising them
cat >"$W/big.em3" <<'EOF'
model big {
    input item : i32[B] vocab 300
    label click : f32[B]
    param wide : f32[300, 1000000000] = zeros
    fn forward() {
        logit = sum(gather(wide, item), -1)
        output score = sigmoid(logit)
        loss = bce_with_logits(logit, click)
    }
}
EOF
if "$EM3" train "$W/big.em3" --data "$W/data" --out "$W/big" --no-progress >"$W/out.txt" 2>&1; then
    fail "trained a model larger than the machine"
fi
grep -q "model big needs .* GB of memory .* and this machine has" "$W/out.txt" || fail "no message for a model too large"
[ ! -e "$W/big" ] || fail "a model too large made a run folder"

REAL="$SRC/../shared/data/ctr-samples/fuxictr-tiny-csv"
if [ -d "$REAL" ]; then
    "$EM3" train "$SRC/tests/data/fuxictr_tiny_din.em3" --data "$SRC/tests/data/fuxictr_tiny_csv.yaml" \
        --out "$W/real" --no-progress --set epochs=2 --set batch_size=16 --set eval_batch_size=64 \
        >"$W/out.txt" 2>&1 || fail "DIN on the FuxiCTR samples"
    echo "ok: trained DIN on $REAL"
else
    echo "note: $REAL is absent; the real-data run is skipped"
fi
echo "ok: train, eval, predict, NaN stop, corrupt checkpoint, taken run folder, undefined monitor, option ranges, a vocabulary mismatch, a model too large"
