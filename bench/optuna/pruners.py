"""Optuna 5.0's pruners on the learning-curve problem, measured as the reference measured
them (../shared/reference/optuna-5.0/scripts/bench_pruners.py: same problem, samplers,
pruner settings, seeds and noise streams), emitting the JSON bench/report.py reads next to
benches/pruners.rs's. Adds WilcoxonPruner() (defaults), which gaittune also has.

100 trials per study, 100 steps per trial, seeds 0..S-1, samplers random and tpe
(TPESampler(seed=s), 5.0 defaults); value at step t = floor + 10 exp(-rate t) + noise,
noise of trial k in seed s = numpy default_rng([s, k]).normal(0, 0.1, 100) (exactly the
reference's lc_replay.json); objective = the step-100 value; study_name = f"lc_s{seed}"
(Hyperband's brackets hash it).

Usage: pruners.py --out OUT.json [--seeds 10] [--workers 2]
"""
import argparse
import json
import multiprocessing as mp
import time

import numpy as np
import optuna

from common import LC_NOISE, LC_STEPS, lc_floor_rate, lc_params, lc_value

optuna.logging.set_verbosity(optuna.logging.ERROR)

N_TRIALS = 100
PRUNERS = {
    "none": lambda: optuna.pruners.NopPruner(),
    "median_w10": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
    "median_w30": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=30),
    "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=LC_STEPS,
                                                        reduction_factor=3),
    "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(),
}
SAMPLERS = {
    "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    "tpe": lambda s: optuna.samplers.TPESampler(seed=s),
}


def task(args):
    sname, pname, seed = args
    steps = {}
    true_final = {}
    t_prune = [0.0]

    def obj(trial):
        x, lr = lc_params(trial)
        floor, rate = lc_floor_rate(x, lr)
        true_final[trial.number] = lc_value(floor, rate, LC_STEPS)
        noise = np.random.default_rng([seed, trial.number]).normal(0.0, LC_NOISE, LC_STEPS)
        y = None
        for t in range(1, LC_STEPS + 1):
            y = lc_value(floor, rate, t) + float(noise[t - 1])
            t0 = time.perf_counter()
            trial.report(y, t)
            pruned = trial.should_prune()
            t_prune[0] += time.perf_counter() - t0
            steps[trial.number] = t
            if pruned:
                raise optuna.TrialPruned()
        return y

    t0 = time.perf_counter()
    study = optuna.create_study(study_name=f"lc_s{seed}", sampler=SAMPLERS[sname](seed),
                                pruner=PRUNERS[pname](), direction="minimize")
    study.optimize(obj, n_trials=N_TRIALS)
    wall = time.perf_counter() - t0
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    total_steps = sum(steps.values())
    return {"sampler": sname, "pruner": pname, "seed": seed, "total_steps": total_steps,
            "n_pruned": N_TRIALS - len(complete), "best_value": best.value,
            "best_true_final": true_final[best.number],
            "oracle_true_final_sampled": min(true_final.values()),
            "wall_s": wall, "report_prune_ms_per_step": 1e3 * t_prune[0] / total_steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    tasks = [(s, p, seed) for s in SAMPLERS for p in PRUNERS for seed in range(a.seeds)]
    res = {"meta": {"side": "optuna", "optuna": optuna.__version__, "n_trials": N_TRIALS,
                    "steps": LC_STEPS, "seeds": list(range(a.seeds)), "samplers": list(SAMPLERS),
                    "pruners": list(PRUNERS)}, "runs": []}
    t0 = time.perf_counter()
    with mp.Pool(a.workers) as pool:
        for i, r in enumerate(pool.imap_unordered(task, tasks)):
            res["runs"].append(r)
            if (i + 1) % 20 == 0 or i + 1 == len(tasks):
                print(f"optuna pruners {i + 1}/{len(tasks)} studies ({time.perf_counter() - t0:.1f}s)",
                      flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
