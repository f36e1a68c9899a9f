#!/bin/sh
# tools/topk_results.sh — the "Top-K (MMRec setting)" results table (docs/results.md): trains
# each model with each seed on one MMRec folder under the MMRec protocol (Adam 1e-3, batch 2048,
# at most 1000 epochs, early stop when 20 evaluations after the best did not improve valid
# Recall@20), then prints a Markdown table: per model, the mean ± std over the seeds of the test
# metrics at the best validation epoch, the best validation Recall@20, the epochs trained and
# the seconds per training epoch (evaluations excluded). A run folder that already holds a
# finished run is reported, not retrained, so the table can be rebuilt, or extended seed by seed.
#
# usage: tools/topk_results.sh [-b BUILD] [-o RUNS] [-m "MODELS"] [-s "SEEDS"] DATA [em3 train args]
#        tools/topk_results.sh -r [-o RUNS] [-m "MODELS"] [-s "SEEDS"]      (report only)
#   -b BUILD   the build folder (default: build); -o RUNS where run folders go (default:
#              runs/topk-NAME, NAME the data folder's name); -m the models (default: lightgcn
#              vbpr freedom em3_freedom); -s the seeds (default: 1 2 3); further arguments are
#              passed to every `em3 train` (e.g. --set reg=0.001).
set -eu
cd "$(dirname "$0")/.."
BUILD=build RUNS= MODELS="lightgcn vbpr freedom em3_freedom" SEEDS="1 2 3" REPORT=0
while getopts b:o:m:s:r opt; do
    case $opt in
    b) BUILD=$OPTARG ;;
    o) RUNS=$OPTARG ;;
    m) MODELS=$OPTARG ;;
    s) SEEDS=$OPTARG ;;
    r) REPORT=1 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$REPORT" = 0 ]; then
    [ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
    DATA=$1
    shift
    [ -n "$RUNS" ] || RUNS="runs/topk-$(basename "$DATA")"
    mkdir -p "$RUNS"
    for m in $MODELS; do
        for s in $SEEDS; do
            run="$RUNS/$m-s$s"
            if grep -q '"event":"test"' "$run/log.jsonl" 2>/dev/null; then continue; fi
            rm -rf "$run" # an unfinished run starts over: its epochs would not be one protocol's
            echo "== $m, seed $s -> $run" >&2
            "$BUILD/tools/em3" train "models/$m.em3" --data "$DATA" --out "$run" --no-progress \
                --set seed="$s" --set epochs=1000 --set patience=21 --set batch_size=2048 \
                --set eval_batch_size=2048 --set lr=0.001 "$@" >"$RUNS/$m-s$s.log" 2>&1 ||
                { echo "em3 train failed: see $RUNS/$m-s$s.log" >&2; exit 1; }
        done
    done
fi
[ -n "$RUNS" ] || { echo "-r needs -o RUNS" >&2; exit 2; }

# One line per finished run: model, seed, then the numbers the table needs, from log.jsonl.
for m in $MODELS; do
    for s in $SEEDS; do
        log="$RUNS/$m-s$s/log.jsonl"
        grep -q '"event":"test"' "$log" 2>/dev/null || continue
        awk -v m="$m" -v s="$s" '
            function num(key,   r) { if (match($0, "\"" key "\":[-0-9.e]+")) { r = substr($0, RSTART, RLENGTH);
                                         sub(/.*:/, "", r); return r + 0 } return -1 }
            /"event":"eval"/ { epochs++; secs = num("train_seconds"); if (/"best":true/) valid = num("recall@20") }
            /"event":"test"/ { r10 = num("recall@10"); r20 = num("recall@20"); n10 = num("ndcg@10"); n20 = num("ndcg@20") }
            END { printf "%s %s %.6f %.6f %.6f %.6f %.6f %d %.3f\n", m, s, r10, r20, n10, n20, valid, epochs, secs / epochs }
        ' "$log"
    done
done | awk '
    function cell(k,   mean, sd, i, x) {
        mean = sum[m, k] / n[m]
        for (i = 1; i <= n[m]; i++) { x = val[m, k, i] - mean; sd += x * x }
        sd = n[m] > 1 ? sqrt(sd / (n[m] - 1)) : 0
        return sprintf(k == 6 ? "%.0f ± %.0f" : k == 7 ? "%.2f ± %.2f" : "%.4f ± %.4f", mean, sd)
    }
    { if (!($1 in n)) order[++models] = $1
      n[$1]++; for (k = 3; k <= 9; k++) { val[$1, k - 2, n[$1]] = $k; sum[$1, k - 2] += $k } }
    END {
        print "| model | seeds | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | valid Recall@20 | epochs | s / epoch |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= models; i++) {
            m = order[i]
            printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", m, n[m], cell(1), cell(2), cell(3), cell(4),
                   cell(5), cell(6), cell(7)
        }
    }'
