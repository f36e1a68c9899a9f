#!/usr/bin/python3
"""bench/torch/step.py — one measurement of the PyTorch peer's training step for bench/run, the
twin of bench_step (bench/step.c): builds a model of bench/torch/models.py, fills the caches
(EM3-DIN), runs full training steps (forward, backward, Adam) on one random batch with
torch.set_num_threads(T), and prints one JSON line: setup and precompute seconds, the median
step time after a warm-up and its samples/s, and this process's peak RSS (VmHWM).

  /usr/bin/python3 bench/torch/step.py MODEL [--set NAME=VALUE]... [--batch N] [--threads T]
                                      [--steps N] [--warmup N]
"""
import argparse
import json
import os
import statistics
import sys
import time


def threads_arg(argv):
    """--threads, read before torch is imported: OpenBLAS (Debian's torch does its GEMMs with
    the system's OpenBLAS, as em3) takes its thread count from the environment when it loads,
    and torch.set_num_threads sets only OpenMP's."""
    for i, a in enumerate(argv[:-1]):
        if a == "--threads":
            return argv[i + 1]
    return "1"


os.environ["OPENBLAS_NUM_THREADS"] = threads_arg(sys.argv)
# OpenMP threads that spin at barriers (libgomp's default) starve each other on a loaded machine:
# measured 7x slower steps at 2 threads with load average 12 on 2 cores. Sleeping waits, as an
# expert sets on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from models import MODELS, random_batch, random_tables  # noqa: E402


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def constant(text):
    """--set values as em3 reads them: ints, floats, true/false, strings (quoted or not)."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text.strip('"'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sets = {k: constant(v) for k, v in (s.split("=", 1) for s in args.set)}
    model = MODELS[args.model](**sets)
    gen = torch.Generator().manual_seed(1)
    random_tables(model, gen)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if hasattr(model, "precompute"):
        model.precompute()
    precompute_s = time.perf_counter() - t0
    batch = random_batch(model, args.batch, gen)
    opts = model.optimizers()

    def step():
        t = time.perf_counter()
        for o in opts:
            o.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        for o in opts:
            o.step()
        return time.perf_counter() - t

    for _ in range(args.warmup):
        step()
    times = sorted(step() for _ in range(args.steps))
    median = statistics.median(times)
    print(json.dumps({"impl": "torch", "batch": args.batch, "threads": args.threads,
                      "setup_s": round(setup_s, 3), "precompute_s": round(precompute_s, 3),
                      "step_ms": round(1e3 * median, 3), "min_ms": round(1e3 * times[0], 3),
                      "max_ms": round(1e3 * times[-1], 3), "samples_per_s": round(args.batch / median, 1),
                      "peak_rss_mib": round(peak_rss_mib(), 1)}))


if __name__ == "__main__":
    main()
