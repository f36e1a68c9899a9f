#!/bin/sh
# tests/e2e/pretrain.sh — em3 pretrain end to end: CLIP-style pretraining of the content
# encoder on generated item content lowers the held-out loss, em3 eval reproduces it, and
# em3 train starts EM3-DIN from it (init + init_map): the frozen history encoder holds exactly
# the pretrained tensors after training; export-embeddings writes what the model computes;
# mistakes in init_map or shapes are refused clearly.
# Usage: pretrain.sh EM3_BINARY SOURCE_DIR WORK_DIR
set -eu
EM3=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
fail() { echo "FAIL: $*"; cat "$W/out.txt" 2>/dev/null; exit 1; }
"$EM3" data gen --out "$W/data" --size tiny --seed 3 >/dev/null
SET="--set d=16 --set batch_size=64 --set eval_batch_size=256 --set lr=0.003 --no-progress"

"$EM3" pretrain "$SRC/models/pretrain_content.em3" --data "$W/data" --out "$W/pt" $SET --set epochs=8 \
    >"$W/out.txt" 2>&1 || fail "pretraining"
first=$(awk '/^\[eval 1\]/ { print $9 }' "$W/out.txt")
best=$(awk '$1 == "valid" { print $3 }' "$W/out.txt")
awk -v f="$first" -v b="$best" 'BEGIN { exit !(b < f - 0.05) }' || fail "valid loss $first -> $best did not fall"
"$EM3" eval "$W/pt" --split valid >"$W/eval.txt" 2>&1 || fail "em3 eval of a pretraining run"
[ "$(awk '$1 == "valid" { print $3 }' "$W/eval.txt")" = "$best" ] || fail "em3 eval disagrees with the run"

MAP="init_map=content.:em3.content.,content.:em3.behaviour."
"$EM3" train "$SRC/models/em3_din.em3" --data "$W/data" --out "$W/run" $SET --set epochs=1 \
    --set init="$W/pt/best.ckpt" --set "$MAP" >"$W/out.txt" 2>&1 || fail "training from the pretrained encoder"
grep -q "^init: 32 of 58 parameters from" "$W/out.txt" || fail "no report of the loaded parameters"
python3 - "$W/pt/best.ckpt" "$W/run/last.ckpt" <<'PY' || fail "the frozen copy does not hold the pretrained weights"
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
pre, run = tensors(sys.argv[1]), tensors(sys.argv[2])
names = [k for k in pre if k.startswith("content.") and ".adam_" not in k]
assert len(names) == 16, names
for k in names:
    assert run["em3.behaviour." + k[8:]] == pre[k], k
PY

# export-embeddings: the ID table as trained, and each item's content embedding equal to what
# em3 predict gives for a row with that item
"$EM3" export-embeddings "$W/run" --checkpoint last >"$W/out.txt" 2>&1 || fail "export-embeddings"
"$EM3" predict "$W/run" --checkpoint last -o "$W/pred.csv" 2>/dev/null || fail "em3 predict"
python3 - "$W/run" "$W/data/test/item.npy" "$W/pred.csv" <<'PY' || fail "exported embeddings disagree with the model"
import ast, csv, struct, sys
def npy(path):
    b = open(path, "rb").read()
    n = struct.unpack("<H", b[8:10])[0]
    h = ast.literal_eval(b[10:10 + n].decode())
    fmt = {"<f4": "f", "<i4": "i"}[h["descr"]]
    count = 1
    for d in h["shape"]:
        count *= d
    return h["shape"], struct.unpack("<%d%s" % (count, fmt), b[10 + n:10 + n + 4 * count])
run = sys.argv[1]
shape, content = npy(run + "/embeddings/item_content.npy")
assert shape == (300, 16), shape
assert all(v == 0 for v in content[:16]), "row 0 (padding) is not zeros"
_, items = npy(sys.argv[2])
rows = list(csv.DictReader(open(sys.argv[3])))
for r in rows[:50]:
    item = items[int(r["row"])]
    want = [float(v) for v in r["item_content"].split()]
    got = content[item * 16:(item + 1) * 16]
    assert all(abs(a - b) <= 1e-5 * (1 + abs(b)) for a, b in zip(got, want)), (item, got, want)
shape, _ = npy(run + "/embeddings/item_id.npy")
assert shape == (300, 16), shape
PY

if "$EM3" train "$SRC/models/em3_din.em3" --data "$W/data" --out "$W/bad" $SET --set init="$W/pt/best.ckpt" \
       --set init_map=content.em3 >"$W/out.txt" 2>&1; then fail "accepted a malformed init_map"; fi
grep -q "each rule is FROM:TO" "$W/out.txt" || fail "no clear message for a malformed init_map"
if "$EM3" train "$SRC/models/em3_din.em3" --data "$W/data" --out "$W/bad" $SET --set d=8 \
       --set init="$W/pt/best.ckpt" --set "$MAP" >"$W/out.txt" 2>&1; then fail "accepted mismatched shapes"; fi
grep -q "has another shape or type" "$W/out.txt" || fail "no clear message for mismatched shapes"
[ ! -e "$W/bad" ] || fail "a refused run left a run folder"
echo "ok: pretrain, eval of a pretraining run, init + init_map, export-embeddings, refused mistakes"
