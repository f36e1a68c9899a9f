#!/bin/sh
# tests/e2e/resume.sh — exactness: in deterministic mode a run with memory reuse off, shards
# on 2 threads (DIN, EM3-DIN) against the same shards in turn, a run
# stopped early and resumed, and a run killed with SIGKILL at arbitrary moments (also while
# writing a checkpoint) and resumed each time, all end with checkpoints byte-identical to an
# uninterrupted run's.
# Usage: resume.sh EM3_BINARY SOURCE_DIR WORK_DIR
set -eu
EM3=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
"$EM3" data gen --out "$W/data" --size tiny --seed 7 >/dev/null
SET="--set users=100 --set items=300 --set seq=20 --set d=8 --set epochs=3 --set batch_size=64
     --set eval_batch_size=256 --set deterministic=true --set checkpoint_every=5 --set patience=0
     --set lr=0.01 --no-progress"
train() { "$EM3" train "$SRC/models/din.em3" --data "$W/data" $SET "$@" >"$W/log.txt" 2>&1; }

train --out "$W/full"
train --out "$W/noreuse" --set no_mem_reuse=true
cmp "$W/full/last.ckpt" "$W/noreuse/last.ckpt" || { echo "FAIL: memory reuse changes the results"; exit 1; }
# shards on 2 threads (threads=2) compute what they compute one after the other, bit for bit:
# DIN, and EM3-DIN with dropout (attention kernels, LoRA, the cache, CIC)
train --out "$W/shards" --set shards=4
train --out "$W/threads" --set shards=4 --set threads=2
cmp "$W/shards/last.ckpt" "$W/threads/last.ckpt" || { echo "FAIL: threads=2 differs from shards in turn"; exit 1; }
for t in 1 2; do
    "$EM3" train "$SRC/models/em3_din.em3" --data "$W/data" $SET --set epochs=1 --set mlp_dropout=0.2 \
        --set shards=2 --set threads=$t --out "$W/em3-t$t" >"$W/log.txt" 2>&1 || { cat "$W/log.txt"; exit 1; }
done
cmp "$W/em3-t1/last.ckpt" "$W/em3-t2/last.ckpt" || { echo "FAIL: EM3-DIN on 2 threads differs"; exit 1; }
train --out "$W/split" --set max_steps=33
"$EM3" train --resume "$W/split" --set max_steps=0 --no-progress >"$W/log.txt" 2>&1
cmp "$W/full/last.ckpt" "$W/split/last.ckpt" || { echo "FAIL: stop at step 33 + resume differs"; exit 1; }
cmp "$W/full/best.ckpt" "$W/split/best.ckpt" || { echo "FAIL: best checkpoints differ"; exit 1; }

# kill -9 at spread-out moments until the run completes, resuming after each kill (the first
# kill waits for the first checkpoint, so there is something to resume from)
"$EM3" train "$SRC/models/din.em3" --data "$W/data" --out "$W/killed" $SET >"$W/log.txt" 2>&1 &
pid=$!
while [ ! -f "$W/killed/last.ckpt" ]; do sleep 0.02; done
kill -9 "$pid" 2>/dev/null && kills=1 || kills=0
wait "$pid" 2>/dev/null || true
for delay in 0.05 0.15 0.3 0.1 0.45 0.2 0.6 0.35; do
    "$EM3" train --resume "$W/killed" --no-progress >"$W/log.txt" 2>&1 &
    pid=$!
    sleep "$delay"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
done
: >"$W/killed/last.ckpt.tmp.AbC123" # what a kill during a checkpoint's write leaves: removed on resume
"$EM3" train --resume "$W/killed" --no-progress >"$W/log.txt" 2>&1 &
wait $! || { echo "FAIL: the last resume did not finish:"; cat "$W/log.txt"; exit 1; }
cmp "$W/full/last.ckpt" "$W/killed/last.ckpt" || { echo "FAIL: killed $kills times + resumed differs"; exit 1; }
ls "$W/killed"/*.tmp.* 2>/dev/null && { echo "FAIL: temporary files left behind"; exit 1; }
echo "ok: memory reuse and threads change nothing; resume is exact (stopped once; killed $kills times)"
