#!/usr/bin/env python3
"""bench/experiments_report.py — turns the run folders of bench/experiments.sh into the tables of
docs/results.md (between its <!-- experiments:SIZE:begin/end --> markers) and the plots
docs/img/experiments-SIZE-*.png (gnuplot). Every figure comes from a run's log.jsonl: the
"test" record (scored once with the best weights), the "eval" records (valid AUC per epoch)
and the "done" record (seconds, peak resident memory). Standard library only."""
import argparse, json, math, os, re, statistics, subprocess, sys

ORDER = ["din", "em3_din", "em3_din-no_fqf", "em3_din-no_cic", "em3_din-history_frozen",
         "em3_din-history_all", "em3_din-history_full", "em3_din-cic_sampled", "em3_din-dropout",
         "em3_din-from_pretrained", "preextracted_din",
         "dcnv2", "em3_dcnv2", "deepfm", "em3_deepfm"]
WHAT = {
    "din": "DIN, ID features only",
    "em3_din": "EM3-DIN: FQF, LoRA top + cache, CIC (λ = 0.1)",
    "em3_din-no_fqf": "EM3-DIN without FQF (mean-pooled tokens + linear)",
    "em3_din-no_cic": "EM3-DIN without CIC",
    "em3_din-history_frozen": "EM3-DIN without LoRA (history by the frozen encoder)",
    "em3_din-history_all": "EM3-DIN, LoRA on every linear of the history encoder",
    "em3_din-history_full": "EM3-DIN, history through the trainable encoder (full fine-tuning)",
    "em3_din-cic_sampled": "EM3-DIN, CIC over 8 sampled negatives instead of in-batch ones",
    "em3_din-dropout": "EM3-DIN with dropout 0.2 in the MLP",
    "em3_din-from_pretrained": "EM3-DIN starting from the pretrained encoder",
    "preextracted_din": "pre-extracted: pretrained encoder frozen, embeddings fed to DIN",
    "dcnv2": "DCN-v2, ID features only",
    "em3_dcnv2": "EM3-DCN-v2",
    "deepfm": "DeepFM, ID features only",
    "em3_deepfm": "EM3-DeepFM",
}
METRICS = [("auc", "AUC"), ("gauc", "gAUC"), ("logloss", "logloss"), ("auc_cold", "AUC cold"),
           ("auc_warm", "AUC warm")]


def read_run(folder):
    test, done, evals, steps_per_epoch = None, None, [], None
    with open(os.path.join(folder, "log.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["event"] == "test":
                test = r
            elif r["event"] == "done":
                done = r
            elif r["event"] == "eval":
                evals.append((r["epoch"], r["auc"]))
                if steps_per_epoch is None and r["epoch"] > 0:
                    steps_per_epoch = r["step"] / r["epoch"]
    if not (test and done and evals):
        return None
    epochs = done["step"] / steps_per_epoch
    return {"test": test, "s_per_epoch": done["seconds"] / epochs, "peak": done["peak_rss_mb"],
            "evals": evals, "epochs": epochs}


def mean_std(xs):
    xs = [x for x in xs if x is not None and x >= 0 and not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def plot(path, script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"note: no plot {path}: {e}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", default="small")
    ap.add_argument("--doc", default="docs/results.md")
    ap.add_argument("--title", default=None)
    ap.add_argument("--command", default=None)
    a = ap.parse_args()
    runs = {}
    for entry in sorted(os.listdir(a.out)):
        m = re.fullmatch(r"(.+)-s(\d+)", entry)
        path = os.path.join(a.out, entry)
        if m and os.path.isdir(path) and m.group(1) in WHAT:
            r = read_run(path)
            if r:
                runs.setdefault(m.group(1), {})[int(m.group(2))] = r
    if not runs:
        sys.exit(f"no finished runs in {a.out}")
    seeds = sorted({s for v in runs.values() for s in v})
    data = ("`em3 data movielens ../shared/data/movielens-small`" if a.size == "movielens"
            else f"`em3 data gen --size {a.size} --seed 1`")
    lines = [f"Command: `{a.command or 'bench/experiments.sh --size ' + a.size}` (data: {data}; "
             f"weight seeds {', '.join(map(str, seeds))}). Test split, best-valid-AUC weights, mean ± std over seeds; "
             "seconds per epoch include the epoch's evaluation; peak memory is the process's resident set.", "",
             "| model | n | " + " | ".join(h for _, h in METRICS) + " | s/epoch | peak MB |",
             "|---|---|" + "---|" * (len(METRICS) + 2)]
    for name in ORDER:
        if name not in runs:
            continue
        rs = list(runs[name].values())
        cells = [mean_std([r["test"][k] for r in rs]) for k, _ in METRICS]
        spe = statistics.median(r["s_per_epoch"] for r in rs)
        peak = statistics.median(r["peak"] for r in rs)
        lines.append(f"| {WHAT[name]} | {len(rs)} | " + " | ".join(cells) + f" | {spe:.1f} | {peak:.0f} |")
    img = os.path.join(os.path.dirname(a.doc), "img")
    os.makedirs(img, exist_ok=True)
    # valid AUC per epoch, seed means, for the base models and their EM3 versions
    curves = [n for n in ["din", "em3_din", "dcnv2", "em3_dcnv2", "deepfm", "em3_deepfm", "preextracted_din"] if n in runs]
    dat = os.path.join(a.out, "curves.dat")
    with open(dat, "w") as f:
        for n in curves:
            by_epoch = {}
            for r in runs[n].values():
                for e, auc in r["evals"]:
                    by_epoch.setdefault(round(e), []).append(auc)
            f.write(f'"{n}"\n')
            for e in sorted(by_epoch):
                f.write(f"{e} {statistics.mean(by_epoch[e]):.6f}\n")
            f.write("\n\n")
    png1 = os.path.join(img, f"experiments-{a.size}-valid-auc.png")
    plot(png1, f'set terminal png noenhanced size 800,500\nset output "{png1}"\nset key bottom right\n'
               'set xtics 1\nset xlabel "epoch"\nset ylabel "valid AUC (mean over seeds)"\nset grid\n'
               f'plot for [i=0:{len(curves) - 1}] "{dat}" index i using 1:2 with linespoints title columnheader(1)\n')
    # the ablations: test AUC and cold-item AUC with their std over seeds
    abl = [n for n in ORDER[:8] if n in runs]
    dat2 = os.path.join(a.out, "ablations.dat")
    with open(dat2, "w") as f:
        for i, n in enumerate(abl):
            rs = list(runs[n].values())
            def ms(k):
                xs = [r["test"][k] for r in rs]
                return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0)
            (a1, s1), (a2, s2) = ms("auc"), ms("auc_cold")
            f.write(f'{i} "{n}" {a1:.6f} {s1:.6f} {a2:.6f} {s2:.6f}\n')
    png2 = os.path.join(img, f"experiments-{a.size}-ablations.png")
    plot(png2, f'set terminal png noenhanced size 900,500\nset output "{png2}"\nset style data histogram\n'
               'set style histogram errorbars gap 1 lw 1\nset style fill solid 0.6\nset key top left\n'
               'set ylabel "test AUC (mean ± std over seeds)"\nset xtics rotate by -30\nset grid ytics\n'
               'set yrange [0.45:*]\n'
               f'plot "{dat2}" using 3:4:xtic(2) title "all items", "" using 5:6 title "cold items"\n')
    rel = lambda p: os.path.relpath(p, os.path.dirname(a.doc))
    lines += ["", f"![valid AUC per epoch]({rel(png1)})", "", f"![EM3-DIN ablations]({rel(png2)})"]
    purity = os.path.join(a.out, "embeddings.txt")
    emb = os.path.join(img, f"embeddings-{a.size}.png")
    if os.path.exists(purity) and os.path.exists(emb):
        by = "a movie's first genre" if a.size == "movielens" else "the generator's latent topic"
        lines += ["", "Item embeddings of EM3-DIN (seed 1) with and without CIC, exported with `em3 export-embeddings` "
                  f"and drawn by `bench/plot_embeddings.py` (2-D PCA, coloured by {by}). "
                  "Purity: the share of an item's 10 nearest neighbours (cosine, full dimension) that "
                  "share its label; chance: the share of item pairs that do.", "", "```"] + open(purity).read().strip().splitlines() + ["```", "",
                  f"![item embeddings]({rel(emb)})"]
    begin, end = f"<!-- experiments:{a.size}:begin -->", f"<!-- experiments:{a.size}:end -->"
    block = begin + "\n" + "\n".join(lines) + "\n" + end
    doc = open(a.doc).read() if os.path.exists(a.doc) else "# Results\n"
    if begin in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + f"\n\n## {a.title or 'Generated data (' + a.size + ')'}\n\n" + block + "\n"
    open(a.doc, "w").write(doc)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
