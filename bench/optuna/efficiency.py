"""Optuna's sample efficiency: every trial's value for N trials (best-so-far read at
50/100/200), seeds 0..S-1, minimise, on the shared problem suite (common.py) and our own
noisy_sphere (figure: the true value of the best observed trial) and gait_mixed.

Adapted from ../shared/reference/optuna-5.0/scripts/bench_efficiency.py (same objective
wiring: suggest_float x0..x{D-1} in the problem's box; mixed_space_suggest for `mixed`).

Usage: efficiency.py --out OUT.json [--seeds 30] [--trials 200] [--dim 8] [--workers 2]
                     [--samplers all] [--problems all] [--gp-seeds 10] [--gp-trials 100]
"""
import argparse
import json
import multiprocessing as mp
import sys
import time

import cmaes
import numpy as np
import optuna

from common import (NOISY_SD, OWN_PROBLEMS, continuous_problems, gait_objective, gait_space_suggest,
                    mixed_objective, mixed_space_suggest, noisy_sphere_true)
from samplers import DESCRIPTION, SAMPLERS, parse_names

CHECK = (25, 50, 100, 200)


def task(args):
    prob, sname, seed, d, n = args
    t0 = time.perf_counter()
    study = optuna.create_study(sampler=SAMPLERS[sname](seed), direction="minimize")
    true_values = []
    if prob == "mixed":
        def obj(trial):
            return mixed_objective(*mixed_space_suggest(trial))
    elif prob == "gait_mixed":
        def obj(trial):
            return gait_objective(*gait_space_suggest(trial))
    elif prob == "noisy_sphere":
        noise = np.random.default_rng([seed, 7])

        def obj(trial):
            true = noisy_sphere_true([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(8)])
            true_values.append(true)
            return true + NOISY_SD * float(noise.normal())
    else:
        f, lo, hi, _ = continuous_problems(d)[prob]

        def obj(trial):
            return f([trial.suggest_float(f"x{i}", lo, hi) for i in range(d)])
    study.optimize(obj, n_trials=n)
    vals = [t.value for t in study.trials]
    return prob, sname, seed, vals, true_values or None, time.perf_counter() - t0


def best_at(values, true_values):
    """Best value after each checkpoint; with noise, the true value of the best observed."""
    out = {}
    for c in CHECK:
        if c > len(values):
            continue
        if true_values is None:
            out[str(c)] = float(min(values[:c]))
        else:
            i = int(np.argmin(values[:c]))
            out[str(c)] = float(true_values[i])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samplers", default="all")
    ap.add_argument("--problems", default="all")
    ap.add_argument("--gp-seeds", type=int, default=10,
                    help="seeds for gp (Optuna's GPSampler takes 0.1-1 s per trial), stated in the output")
    ap.add_argument("--gp-trials", type=int, default=100,
                    help="trials per run for gp (its cost grows as n^3), as gaittune's side")
    a = ap.parse_args()
    names = parse_names(a.samplers)
    known = list(continuous_problems(a.dim)) + ["mixed"] + OWN_PROBLEMS
    probs = known if a.problems == "all" else [p for p in a.problems.split(",") if p]
    unknown = [p for p in probs if p not in known]
    if unknown:
        raise SystemExit(f"unknown problem(s) {unknown}; known: {', '.join(known)}")
    # Slowest first (TPE), so the two workers finish together.
    order = sorted(names, key=lambda s: {"gp": 0, "tpe": 1}.get(s, 2))
    seeds_of = {s: min(a.seeds, a.gp_seeds) if s == "gp" else a.seeds for s in names}
    trials_of = {s: min(a.trials, a.gp_trials) if s == "gp" else a.trials for s in names}
    tasks = [(p, s, seed, a.dim, trials_of[s]) for s in order for p in probs for seed in range(seeds_of[s])]
    res = {"meta": {"side": "optuna", "command": "efficiency", "optuna": optuna.__version__,
                    "cmaes": cmaes.__version__, "numpy": np.__version__,
                    "python": sys.version.split()[0], "D": a.dim, "N": a.trials, "gp_trials": trials_of.get("gp"),
                    "seeds": list(range(a.seeds)), "seeds_by_sampler": seeds_of, "problems": probs,
                    "samplers": {n: DESCRIPTION[n] for n in names}, "direction": "minimize"},
           "runs": []}
    t_all = time.perf_counter()
    with mp.Pool(a.workers) as pool:
        for i, (p, s, seed, vals, true_vals, wall) in enumerate(pool.imap_unordered(task, tasks), 1):
            run = {"problem": p, "sampler": s, "seed": seed, "wall_s": wall,
                   "best_at": best_at(vals, true_vals), "values": [float(v) for v in vals]}
            if true_vals is not None:
                run["true_values"] = true_vals
            res["runs"].append(run)
            if i % 50 == 0 or i == len(tasks):
                print(f"optuna efficiency {i}/{len(tasks)} runs ({time.perf_counter() - t_all:.1f}s)",
                      file=sys.stderr, flush=True)
    res["runs"].sort(key=lambda r: (r["problem"], r["sampler"], r["seed"]))
    with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
