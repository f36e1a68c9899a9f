#!/bin/sh
# bench/data_parallel.sh — data-parallel training on this machine (docs/training.md): DIN's and
# EM3-DIN's samples/s in 1 process, in 1 process computing 2 shards one after the other, in 1
# process computing them on 2 threads (threads=2) and on 2 MPI ranks (best of 3); the CPU
# time of a DIN step in 1 process and on 2 ranks; the bytes rank 0 receives per step as the
# item table grows from 10^4 to 10^7 rows, with embedding rows exchanged sparsely (lazy=true)
# or the table's gradient summed densely (lazy=false). Prints Markdown tables. The machine is
# shared: run it twice and compare.
# Usage: bench/data_parallel.sh [BUILD_DIR] (default: build)
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
EM3=$(cd "${1:-$SRC/build}" && pwd)/tools/em3
W=${TMPDIR:-/tmp}/em3-bench-dp
mkdir -p "$W"
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI="mpirun --oversubscribe --allow-run-as-root -np 2"
[ -f "$W/data/dataset.yaml" ] || "$EM3" data gen --out "$W/data" --size default >/dev/null
# a run's time for its steps (no evaluation inside: max_steps ends the run before the epoch)
steps_time() { sed -n 's/^trained \([0-9]*\) steps in \([0-9.]*\) s.*/\1 \2/p' "$1"; }

# samples/s of one run of model $2, in the way $1 names
rate() {
    rm -rf "$W/run"
    set -- "$1" "$SRC/models/$2.em3" --data "$W/data" --set batch_size=256 --set max_steps=200 --no-progress --out "$W/run"
    case $1 in
    1) shift; "$EM3" train "$@" >"$W/log" 2>&1 ;;
    s) shift; "$EM3" train "$@" --set shards=2 >"$W/log" 2>&1 ;;
    t) shift; "$EM3" train "$@" --set threads=2 >"$W/log" 2>&1 ;;
    2) shift; $MPI "$EM3" train "$@" >"$W/log" 2>&1 ;;
    esac
    steps_time "$W/log" | awk '{ printf "%.0f", $1 * 256 / $2 }'
}

echo "| batch 256, 200 steps, samples/s, best of 3 | 1 process | 1 process, shards=2 | 1 process, threads=2 | 2 ranks |"
echo "|---|---|---|---|---|"
for model in din em3_din; do
    best1=0 bests=0 bestt=0 best2=0
    for round in 1 2 3; do # interleaved, so that load from elsewhere falls on all four alike
        r=$(rate 1 $model); [ "$r" -gt "$best1" ] && best1=$r
        r=$(rate s $model); [ "$r" -gt "$bests" ] && bests=$r
        r=$(rate t $model); [ "$r" -gt "$bestt" ] && bestt=$r
        r=$(rate 2 $model); [ "$r" -gt "$best2" ] && best2=$r
    done
    echo "| $model | $best1 | $bests | $bestt | $best2 |"
done

# CPU seconds per step, which load from elsewhere changes less than wall time: the CPU time of
# a 300-step run minus a 100-step run's (compilation and set-up cancel), over 200 steps; one
# OpenBLAS thread per process (deterministic), so 2 ranks could run at once on 2 idle cores
cpu_of() {
    rm -rf "$W/run"
    set -- "$1" "$SRC/models/din.em3" --data "$W/data" --set batch_size=256 --set max_steps="$2" \
        --set eval_test=false --set deterministic=true --no-progress --out "$W/run"
    if [ "$1" = 1 ]; then shift; /usr/bin/time -f "%U %S" -o "$W/cpu.txt" "$EM3" train "$@" >/dev/null 2>&1
    else shift; /usr/bin/time -f "%U %S" -o "$W/cpu.txt" $MPI "$EM3" train "$@" >/dev/null 2>&1; fi
    awk '{ print $1 + $2 }' "$W/cpu.txt"
}
echo
echo "| DIN, batch 256, CPU ms per step (all ranks) | 1 process | 2 ranks |"
echo "|---|---|---|"
line="| CPU ms per step |"
for how in 1 2; do
    a=$(cpu_of $how 100) b=$(cpu_of $how 300)
    line="$line $(echo "$a $b" | awk '{ printf "%.0f", ($2 - $1) / 200 * 1000 }') |"
done
echo "$line"

echo
echo "| item table rows (d = 16) | lazy=true: dense + sparse kB/step | lazy=false: dense kB/step |"
echo "|---|---|---|"
for rows in 10000 100000 1000000 10000000; do
    line="| $rows |"
    for lazy in true false; do
        rm -rf "$W/run"
        $MPI "$EM3" train "$SRC/models/din.em3" --data "$W/data" --set items=$rows --set d=16 --set lazy=$lazy \
            --set batch_size=256 --set max_steps=3 --set eval_test=false --no-progress --out "$W/run" >"$W/log" 2>&1
        kb=$(sed -n 's/.*per step \([0-9.]*\) kB of dense gradients.*, \([0-9.]*\) kB of embedding rows.*/\1 \2/p' "$W/log")
        if [ $lazy = true ]; then line="$line $(echo "$kb" | awk '{ printf "%.0f + %.0f", $1, $2 }') |"
        else line="$line $(echo "$kb" | awk '{ printf "%.0f", $1 }') |"; fi
    done
    echo "$line"
done
