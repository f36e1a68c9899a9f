#!/bin/sh
# bench/experiments.sh — the EM3 experiment grid: ranking models × EM3 variants × seeds on the
# built-in generated dataset; then the embeddings of EM3-DIN with and without CIC are exported
# and drawn (bench/plot_embeddings.py), and bench/experiments_report.py turns the run folders
# into docs/results.md's tables and docs/img/*.png plots. Runs already finished (their log.jsonl
# has the "done" record) are kept, so an interrupted grid continues where it stopped.
#
# usage: bench/experiments.sh [--size small|default | --movielens] [--seeds "1 2 3"] [--epochs N]
#                             [--only "NAME ..."] [--out DIR] [--no-report]
# Every run: batch 256, Adam lr 1e-3, early stopping on valid AUC (patience 2), the test
# split scored once with the best weights. The data is generated with seed 1 (or converted
# from ../shared/data/movielens-small with `em3 data movielens`); --seeds are the seeds of the
# weights and the batch order.
set -eu
cd "$(dirname "$0")/.."
SIZE=small SEEDS="1 2 3" EPOCHS=5 ONLY="" OUT="" REPORT=1 MOVIELENS=0
while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE=$2; shift 2 ;;
    --movielens) MOVIELENS=1; SIZE=movielens; shift ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-report) REPORT=0; shift ;;
    *) echo "usage: bench/experiments.sh [--size S | --movielens] [--seeds LIST] [--epochs N] [--only NAMES] [--out DIR] [--no-report]" >&2
       exit 2 ;;
    esac
done
OUT=${OUT:-runs/experiments-$SIZE}
./tools/build.sh >/dev/null
EM3="${EM3_BUILD_DIR:-build}/tools/em3"
if [ "$MOVIELENS" = 1 ]; then
    DATA=data/movielens TITLE="MovieLens (ml-latest-small)"
    [ -f "$DATA/dataset.yaml" ] || "$EM3" data movielens ../shared/data/movielens-small --out "$DATA" >/dev/null
else
    DATA=data/gen-$SIZE TITLE="Generated data ($SIZE)"
    [ -f "$DATA/dataset.yaml" ] || "$EM3" data gen --out "$DATA" --size "$SIZE" --seed 1 >/dev/null
fi
mkdir -p "$OUT"

MAP="init_map=content.:em3.content.,content.:em3.behaviour."
# name | model | --set options (PT stands for the seed's pretrained content encoder)
GRID="din|din|
dcnv2|dcnv2|
deepfm|deepfm|
em3_din|em3_din|
em3_dcnv2|em3_dcnv2|
em3_deepfm|em3_deepfm|
preextracted_din|em3_din|encoder=frozen history=frozen init=PT $MAP
em3_din-from_pretrained|em3_din|init=PT $MAP
em3_din-no_fqf|em3_din|fqf=false
em3_din-no_cic|em3_din|cic_weight=0
em3_din-history_frozen|em3_din|history=frozen
em3_din-history_all|em3_din|history=all
em3_din-history_full|em3_din|history=full
em3_din-cic_sampled|em3_din|cic_negatives=8
em3_din-dropout|em3_din|mlp_dropout=0.2"

finished() { grep -q '"event":"done"' "$1/log.jsonl" 2>/dev/null; }
selected() { [ -z "$ONLY" ] || echo " $ONLY " | grep -q " $1 "; }

for seed in $SEEDS; do
    PT="$OUT/pretrain-s$seed"
    if selected pretrain || echo "$GRID" | grep -q "init=PT"; then
        if ! finished "$PT"; then
            rm -rf "$PT"
            echo "== pretrain (seed $seed)"
            "$EM3" pretrain models/pretrain_content.em3 --data "$DATA" --out "$PT" --no-progress \
                --set seed="$seed" --set epochs=20 --set patience=3 >"$OUT/pretrain-s$seed.log" 2>&1
        fi
    fi
    echo "$GRID" | while IFS='|' read -r name model sets; do
        selected "$name" || continue
        run="$OUT/$name-s$seed"
        finished "$run" && continue
        rm -rf "$run"
        echo "== $name (seed $seed)"
        args=""
        for s in $sets; do args="$args --set $(echo "$s" | sed "s|PT|$PT/best.ckpt|")"; done
        # shellcheck disable=SC2086
        "$EM3" train "models/$model.em3" --data "$DATA" --out "$run" --no-progress --set seed="$seed" \
            --set epochs="$EPOCHS" --set patience=2 $args >"$run.log" 2>&1 || { echo "FAILED: see $run.log"; exit 1; }
        grep -E '^(valid|test) ' "$run.log"
    done
done
# the paper's visualisation: item content and ID embeddings, with and without CIC, coloured by
# the generator's latent topics (MovieLens: by a movie's first genre, from the multi-hot genre
# token the converter writes as items/image.npy, in items/genres.txt's order)
if finished "$OUT/em3_din-s1" && finished "$OUT/em3_din-no_cic-s1"; then
    if [ "$MOVIELENS" = 1 ]; then
        LABELS=$OUT/genre.npy LABEL_NAME=genre
        /usr/bin/python3 -c 'import sys, numpy as np
g = np.load(sys.argv[1]).reshape(-1, 20) > 0
np.save(sys.argv[2], np.where(g.any(1), g.argmax(1), 0).astype(np.int32))' "$DATA/items/image.npy" "$LABELS"
    else
        LABELS=$DATA/items/topic.npy LABEL_NAME=topic
        [ -f "$LABELS" ] || "$EM3" data gen --out "$DATA" --size "$SIZE" --seed 1 >/dev/null
    fi
    for r in em3_din-s1 em3_din-no_cic-s1; do "$EM3" export-embeddings "$OUT/$r" >/dev/null; done
    mkdir -p docs/img
    if [ -f "$OUT/em3_din-s1/embeddings/item_content.npy" ] && [ -f "$OUT/em3_din-no_cic-s1/embeddings/item_content.npy" ]; then
        /usr/bin/python3 bench/plot_embeddings.py --topics "$LABELS" --label-name "$LABEL_NAME" \
            --out "docs/img/embeddings-$SIZE.png" \
            "EM3-DIN=$OUT/em3_din-s1" "EM3-DIN without CIC=$OUT/em3_din-no_cic-s1" >"$OUT/embeddings.txt.new"
        mv "$OUT/embeddings.txt.new" "$OUT/embeddings.txt"
    else  # a run trained before the models had their item_content output
        echo "embeddings not drawn: rerun $OUT/em3_din-s1 and em3_din-no_cic-s1 (no item_content output)"
    fi
fi
[ "$REPORT" = 1 ] && python3 bench/experiments_report.py "$OUT" --size "$SIZE" --title "$TITLE" \
    --command "bench/experiments.sh $([ "$MOVIELENS" = 1 ] && echo --movielens || echo --size "$SIZE") --epochs $EPOCHS"
exit 0
