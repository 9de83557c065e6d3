"""Optuna's per-trial overhead (ask + suggest_float x d + tell), trivially cheap objective.

Adapted from ../shared/reference/optuna-5.0/scripts/bench_overhead.py (same measuring
logic): one study per (sampler, d, rep) run for N_MAX trials with InMemoryStorage; the first
N trials of an N_MAX run are exactly an N-trial run, so checkpoints N in {100,500,1000,2000}
are read off one run: total_s(N) = sum of the first N trial times, mean_ms_last100(N) = mean
of trials N-100..N-1.

Usage: overhead.py --out OUT.json [--n-max 2000] [--reps 3] [--dims 8,20] [--samplers all]
"""
import argparse
import gc
import json
import platform
import sys
import time

import cmaes
import numpy as np
import optuna
from optuna.storages import InMemoryStorage

from samplers import DESCRIPTION, SAMPLERS, parse_names


def run(sampler_name, d, n_max, seed):
    sampler = SAMPLERS[sampler_name](seed)
    study = optuna.create_study(sampler=sampler, storage=InMemoryStorage(), direction="minimize")
    times = np.empty(n_max)
    pc = time.perf_counter_ns
    for i in range(n_max):
        t0 = pc()
        trial = study.ask()
        v = 0.0
        for j in range(d):
            x = trial.suggest_float(f"x{j}", -5.0, 5.0)
            v += x * x
        study.tell(trial, v)
        times[i] = pc() - t0
    return times / 1e6, study.best_value


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-max", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dims", default="8,20")
    ap.add_argument("--samplers", default="all")
    ap.add_argument("--gp-n-max", type=int, default=200,
                    help="trials per run for gp (its cost grows as n^3), as gaittune's side")
    a = ap.parse_args()
    if a.n_max < 100:
        raise SystemExit("--n-max must be at least 100 (the first checkpoint)")
    names = parse_names(a.samplers)
    dims = [int(v) for v in a.dims.split(",") if v]
    checkpoints = [c for c in (100, 500, 1000, 2000) if c <= a.n_max]
    res = {"meta": {"side": "optuna", "command": "overhead", "optuna": optuna.__version__,
                    "cmaes": cmaes.__version__, "numpy": np.__version__,
                    "python": sys.version.split()[0], "platform": platform.platform(),
                    "n_max": a.n_max, "reps": a.reps, "dims": dims,
                    "samplers": {n: DESCRIPTION[n] for n in names},
                    "timed": "study.ask() + d x trial.suggest_float + objective (sum of squares) "
                             "+ study.tell() over optuna.storages.InMemoryStorage"},
           "runs": []}
    for name in names:
        for d in dims:
            for rep in range(a.reps):
                gc.collect()
                t0 = time.perf_counter()
                n_max = min(a.n_max, a.gp_n_max) if name == "gp" else a.n_max
                ms, best = run(name, d, n_max, seed=rep)
                wall = time.perf_counter() - t0
                row = {"sampler": name, "d": d, "seed": rep, "wall_s": wall, "best": best, "cp": {},
                       # Time per trial at n = 50/100/200: the mean of the 10 trials before n.
                       "n_max": n_max, "at_ms": {str(c): float(ms[c - 10:c].mean()) for c in (50, 100, 200) if c <= n_max}}
                for c in [c for c in checkpoints if c <= n_max]:
                    last = ms[c - 100:c]
                    row["cp"][str(c)] = {"total_s": float(ms[:c].sum() / 1e3),
                                         "mean_ms_last100": float(last.mean()),
                                         "median_ms_last100": float(np.median(last)),
                                         "p90_ms_last100": float(np.percentile(last, 90))}
                res["runs"].append(row)
                print(f"optuna overhead {name} d={d} rep={rep} wall={wall:.2f}s ms/trial",
                      {c: round(v["mean_ms_last100"], 3) for c, v in row["cp"].items()},
                      file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
