#!/bin/sh
# tests/e2e/mpi.sh — data-parallel training under mpirun (docs/training.md): 2 ranks with local
# batch B/2 against 1 process with batch B, for DIN, EM3-DIN and FREEDOM (top-K); 2 ranks of
# 2 threads against 4 shards in turn; a rank
# killed mid-training stops the job with a message, and the run resumes from its last
# checkpoint on 2 ranks or on 1, exactly; metrics over 2 ranks equal 1's.
# The batches repeat embedding ids across the ranks: 300 items, 64 rows of 21 ids per batch,
# and the padding id 0 in most histories.
# Usage: mpi.sh EM3_BINARY SOURCE_DIR WORK_DIR MPIRUN
set -eu
EM3=$1 SRC=$2 W=$3 MPIRUN=$4
rm -rf "$W" && mkdir -p "$W"
# containers forbid the cross-process memory reads of Open MPI's shared-memory single copy
export OMPI_MCA_btl_vader_single_copy_mechanism=none
"$EM3" data gen --out "$W/data" --size tiny --seed 7 >/dev/null
SET="--set users=100 --set items=300 --set seq=20 --set d=8 --set batch_size=64
     --set eval_batch_size=128 --set patience=0 --no-progress"
# one NAME ARGS / two NAME ARGS: `em3 train ARGS` in 1 process / on 2 ranks, output in $W/NAME.log
one() { n=$1; shift; "$EM3" train "$@" >"$W/$n.log" 2>&1 || { cat "$W/$n.log"; exit 1; }; }
two() {
    n=$1; shift
    "$MPIRUN" --oversubscribe --allow-run-as-root -np 2 "$EM3" train "$@" >"$W/$n.log" 2>&1 || { cat "$W/$n.log"; exit 1; }
}
# the largest difference of two checkpoints' weights (safetensors) must be at most $3
near() {
    /usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
a, b = load(sys.argv[1]), load(sys.argv[2])
d, k = max((float(np.max(np.abs(a[k].astype(np.float64) - b[k]), initial=0)), k) for k in a)
print("max abs diff %.3g (%s)" % (d, k))
sys.exit(d > float(sys.argv[3]))
EOF
}

# 1. DIN, SGD: 2 ranks (MPI's allreduce) ≈ 1 process, 20 steps
SGD="--set optimizer=sgd --set lr=0.1 --set max_steps=20"
one din1 "$SRC/models/din.em3" --data "$W/data" $SET $SGD --set deterministic=true --out "$W/din1"
two din2 "$SRC/models/din.em3" --data "$W/data" $SET $SGD --out "$W/din2"
near "$W/din1/last.ckpt" "$W/din2/last.ckpt" 1e-6 || { echo "FAIL: DIN on 2 ranks differs from 1 process"; exit 1; }
#    and with dropout: each rank's rows get the masks one process draws for them (opt.row0)
one dr1 "$SRC/models/din.em3" --data "$W/data" $SET $SGD --set mlp_dropout=0.3 --set deterministic=true --out "$W/dr1"
two dr2 "$SRC/models/din.em3" --data "$W/data" $SET $SGD --set mlp_dropout=0.3 --out "$W/dr2"
near "$W/dr1/last.ckpt" "$W/dr2/last.ckpt" 1e-6 || { echo "FAIL: DIN with dropout on 2 ranks differs from 1 process"; exit 1; }

# 2. EM3-DIN, deterministic, SGD: 2 ranks = 2 shards bit for bit (the contrastive loss takes
#    its in-batch negatives from the shard), and ≈ 1 process with the whole batch without it
EM3SET="--set words=1000 --set cic_weight=0 --set optimizer=sgd --set lr=0.03 --set max_steps=6
        --set deterministic=true"
one em1 "$SRC/models/em3_din.em3" --data "$W/data" $SET $EM3SET --out "$W/em1"
one ems "$SRC/models/em3_din.em3" --data "$W/data" $SET $EM3SET --set shards=2 --out "$W/ems"
two em2 "$SRC/models/em3_din.em3" --data "$W/data" $SET $EM3SET --out "$W/em2"
cmp "$W/ems/last.ckpt" "$W/em2/last.ckpt" || { echo "FAIL: EM3-DIN on 2 ranks differs from 2 shards"; exit 1; }
near "$W/em1/last.ckpt" "$W/em2/last.ckpt" 1e-6 || { echo "FAIL: EM3-DIN on 2 ranks differs from 1 process"; exit 1; }
#    2 ranks × 2 threads = 4 shards in turn in 1 process, bit for bit
one em4 "$SRC/models/em3_din.em3" --data "$W/data" $SET $EM3SET --set shards=4 --out "$W/em4"
two em22 "$SRC/models/em3_din.em3" --data "$W/data" $SET $EM3SET --set shards=4 --set threads=2 --out "$W/em22"
cmp "$W/em4/last.ckpt" "$W/em22/last.ckpt" || { echo "FAIL: EM3-DIN on 2 ranks x 2 threads differs from 4 shards"; exit 1; }

# 3. FREEDOM (a top-K model: graphs, sampled negatives, full-ranking metrics), SGD: 2 ranks = 2
#    shards bit for bit, and ≈ 1 process (each row's negatives are its own, however the batch
#    is split), with the same Recall/NDCG at the end
"$EM3" data gen --out "$W/gen" --size tiny --seed 7 --topk >/dev/null
TOPK="--set batch_size=64 --set eval_batch_size=128 --set patience=0 --no-progress --set optimizer=sgd
      --set lr=0.1 --set max_steps=20 --set deterministic=true"
one fr1 "$SRC/models/freedom.em3" --data "$W/gen/topk" $TOPK --out "$W/fr1"
one frs "$SRC/models/freedom.em3" --data "$W/gen/topk" $TOPK --set shards=2 --out "$W/frs"
two fr2 "$SRC/models/freedom.em3" --data "$W/gen/topk" $TOPK --out "$W/fr2"
cmp "$W/frs/last.ckpt" "$W/fr2/last.ckpt" || { echo "FAIL: FREEDOM on 2 ranks differs from 2 shards"; exit 1; }
near "$W/fr1/last.ckpt" "$W/fr2/last.ckpt" 1e-6 || { echo "FAIL: FREEDOM on 2 ranks differs from 1 process"; exit 1; }
grep -E "^(valid|test) " "$W/frs.log" >"$W/topk1.txt"
grep -E "^(valid|test) " "$W/fr2.log" >"$W/topk2.txt"
[ -s "$W/topk1.txt" ] && cmp "$W/topk1.txt" "$W/topk2.txt" ||
    { echo "FAIL: FREEDOM's top-K metrics on 2 ranks differ from 2 shards' (or are missing)"; exit 1; }

# 4. DIN, Adam with lazy sparse tables, deterministic: kill rank 1 of a 2-rank run after its
#    first checkpoint; the job must end with an error and a message within 10 s. Resumed on 2
#    ranks, and a copy on 1 process computing the same 2 shards, both end bit for bit where one
#    process with 2 shards ends uninterrupted; the evaluations the resumed 2 ranks make (after
#    each epoch; the final valid and test rows) have exactly the metrics of that process's.
DET="--set deterministic=true --set epochs=4 --set checkpoint_every=5"
"$MPIRUN" --oversubscribe --allow-run-as-root -np 2 "$EM3" train "$SRC/models/din.em3" --data "$W/data" \
    $SET $DET --out "$W/killed" >"$W/killed.log" 2>&1 &
job=$!
while [ ! -f "$W/killed/last.ckpt" ]; do sleep 0.02; done
for p in $(ps -o pid= --ppid $job); do
    tr '\0' '\n' <"/proc/$p/environ" | grep -qx OMPI_COMM_WORLD_RANK=1 && kill -9 "$p"
done
start=$(date +%s)
if wait $job; then echo "FAIL: the job survived a killed rank (or finished first)"; exit 1; fi
[ $(($(date +%s) - start)) -le 10 ] || { echo "FAIL: the job took more than 10 s to stop"; exit 1; }
grep -q "rank 0: stopped: the MPI job is being terminated" "$W/killed.log" ||
    { echo "FAIL: no message from the surviving rank"; cat "$W/killed.log"; exit 1; }
cp -r "$W/killed" "$W/killed1"
two resume2 --resume "$W/killed"
one resume1 --resume "$W/killed1" --set shards=2
one whole "$SRC/models/din.em3" --data "$W/data" $SET $DET --set shards=2 --out "$W/whole"
cmp "$W/whole/last.ckpt" "$W/killed/last.ckpt" || { echo "FAIL: resumed on 2 ranks differs"; exit 1; }
cmp "$W/whole/last.ckpt" "$W/killed1/last.ckpt" || { echo "FAIL: resumed on 1 process differs"; exit 1; }
grep -E "^(\[eval|valid |test )" "$W/resume2.log" >"$W/metrics2.txt"
n=$(wc -l <"$W/metrics2.txt")
grep -E "^(\[eval|valid |test )" "$W/whole.log" | tail -n "$n" >"$W/metrics1.txt"
[ "$n" -ge 4 ] && cmp "$W/metrics1.txt" "$W/metrics2.txt" ||
    { echo "FAIL: the metrics of 2 ranks differ from 1 (or are missing)"; exit 1; }
echo "ok: 2 ranks = 1 process (DIN, EM3-DIN, FREEDOM), metrics equal, a killed rank stops the job, resume is exact"
