"""Prints gaittune's and Optuna's figures side by side and writes every figure to one JSON file.

Reads what bench/run.sh produced in bench/out/:
  overhead_gaittune.json, overhead_optuna.json      time per trial (ask + tell)
  efficiency_gaittune.json, efficiency_optuna.json  best value after 50/100/200 trials
  sim_gaittune.json                                 studies on the synthetic quadruped
  problems_check.txt                                the Rust port vs problems.py
Missing inputs are skipped with a note. Rank tests: one-sided Mann-Whitney U (scipy), over
seeds, each gaittune sampler against the Optuna sampler of the same kind.

Usage: report.py --dir bench/out --out bench/results.json [--mode full|quick]
"""
import argparse
import datetime
import json
import math
import os
from collections import defaultdict

import numpy as np
from scipy.stats import mannwhitneyu

ALPHA = 0.05
CHECKPOINTS = (50, 100, 200)
ORDER = ["random", "qmc", "tpe", "cmaes"]
# Issue 4's speed targets: (kind, d, n) -> minimum speed-up over Optuna's counterpart.
SPEED_TARGETS = {("tpe", 8, 1000): 100.0, ("cmaes", 8, 1000): 20.0}
# Samplers whose sample efficiency has a target (the others are shown for information).
EFFICIENCY_TARGETS = ("tpe", "cmaes")


def kind_rank(s):
    return (ORDER.index(s) if s in ORDER else len(ORDER), s)


def kind_order(names):
    return sorted(names, key=kind_rank)


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        print(f"(no {name}: that part was not run)")
        return None
    with open(path) as f:
        return json.load(f)


def fnum(x, width=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        s = "—"
    elif x == 0:
        s = "0"
    elif abs(x) >= 1e5 or abs(x) < 1e-3:
        s = f"{x:.3g}"
    else:
        s = f"{x:.4g}"
    return s.rjust(width)


def fms(x):
    """Milliseconds with 3 significant digits, µs-scale values readable."""
    if x is None:
        return "—"
    return f"{x:.3g}" if x < 0.01 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


# ------------------------------------------------------------------------------- overhead

def overhead_stats(doc):
    """(sampler, d, n) -> medians over reps of the per-run checkpoint figures."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in doc["runs"]:
        for c, v in r["cp"].items():
            key = (r["sampler"], int(r["d"]), int(c))
            for k, x in v.items():
                acc[key][k].append(x)
    out = {}
    for key, v in acc.items():
        ms = v["mean_ms_last100"]
        out[key] = {"ms_per_trial": float(np.median(ms)), "ms_min": min(ms), "ms_max": max(ms),
                    "median_ms_within_last100": float(np.median(v["median_ms_last100"])),
                    "p90_ms_last100": float(np.median(v["p90_ms_last100"])),
                    "total_s": float(np.median(v["total_s"])), "reps": len(ms),
                    "per_rep_ms": ms}
    return out


def report_overhead(ours_doc, theirs_doc, R):
    ours = overhead_stats(ours_doc) if ours_doc else {}
    theirs = overhead_stats(theirs_doc) if theirs_doc else {}
    keys = set(ours) | set(theirs)
    if not keys:
        return
    reps = max([v["reps"] for v in list(ours.values()) + list(theirs.values())])
    print("\n## Time per trial: ask + tell, in-process, cheap objective")
    print(f"ms per trial = mean of the 100 trials before n trials of history; median over {reps} rep(s).")
    print("speed-up = Optuna's ms / gaittune's ms (same kind, same run, same machine).")
    if ours_doc:
        print(f"  gaittune timed: {ours_doc['meta']['timed']}")
    if theirs_doc:
        print(f"  optuna timed:   {theirs_doc['meta']['timed']}")
    rows_json = []
    for key in sorted(keys, key=lambda k: (k[1], kind_rank(k[0]), k[2])):
        o, t = ours.get(key), theirs.get(key)
        ratio = t["ms_per_trial"] / o["ms_per_trial"] if o and t and o["ms_per_trial"] > 0 else None
        rows_json.append({"sampler": key[0], "d": key[1], "n_trials": key[2], "gaittune": o,
                          "optuna": t, "speedup": ratio})
    R["overhead"] = rows_json
    ns = sorted({k[2] for k in keys})
    for d in sorted({k[1] for k in keys}):
        print(f"\n### d = {d}: gaittune ms / optuna ms (speed-up)")
        rows = []
        for s in kind_order({k[0] for k in keys if k[1] == d}):
            cells = [s]
            for n in ns:
                r = next((x for x in rows_json if x["sampler"] == s and x["d"] == d and x["n_trials"] == n), None)
                if r is None:
                    cells.append("")
                    continue
                o = r["gaittune"]["ms_per_trial"] if r["gaittune"] else None
                t = r["optuna"]["ms_per_trial"] if r["optuna"] else None
                sp = f" ({r['speedup']:.0f}x)" if r["speedup"] else ""
                cells.append(f"{fms(o)} / {fms(t)}{sp}")
            rows.append(cells)
        table(rows, ["sampler"] + [f"n={n}" for n in ns])


# ----------------------------------------------------------------------------- efficiency

def summary(vals):
    a = np.asarray(vals, dtype=float)
    return {"median": float(np.median(a)), "q25": float(np.percentile(a, 25)),
            "q75": float(np.percentile(a, 75)), "n": int(a.size)}


def rank_test(ours, theirs, direction):
    """One-sided Mann-Whitney U both ways; p_better tests 'gaittune's values are better'."""
    better_alt = "less" if direction == "minimize" else "greater"
    worse_alt = "greater" if direction == "minimize" else "less"
    if len(ours) < 2 or len(theirs) < 2:
        return None, None, "too few seeds"
    if len(set(ours) | set(theirs)) == 1:
        return 1.0, 1.0, "n.s. (all equal)"
    pb = float(mannwhitneyu(ours, theirs, alternative=better_alt).pvalue)
    pw = float(mannwhitneyu(ours, theirs, alternative=worse_alt).pvalue)
    verdict = "BETTER" if pb < ALPHA else "WORSE" if pw < ALPHA else "n.s."
    return pb, pw, verdict


def report_efficiency(ours_doc, theirs_doc, R):
    runs = defaultdict(dict)  # (side, problem, sampler) -> seed -> best_at
    metas = {}
    for side, doc in (("gaittune", ours_doc), ("optuna", theirs_doc)):
        if not doc:
            continue
        metas[side] = doc["meta"]
        for r in doc["runs"]:
            runs[(side, r["problem"], r["sampler"])][r["seed"]] = r["best_at"]
    if not runs:
        return
    problems = []
    for doc in (ours_doc, theirs_doc):
        for p in (doc or {}).get("meta", {}).get("problems", []):
            if p not in problems:
                problems.append(p)
    kinds = kind_order({k[2] for k in runs})
    d = (ours_doc or theirs_doc)["meta"]["D"]
    seeds = {side: len(m["seeds"]) for side, m in metas.items()}
    print(f"\n## Sample efficiency: best value after 50/100/200 trials ({d}-D, minimise)")
    print(f"median [q25, q75] over seeds (gaittune {seeds.get('gaittune', 0)}, optuna "
          f"{seeds.get('optuna', 0)}); test = one-sided Mann-Whitney U of gaittune's "
          f"sampler vs Optuna's of the same kind, α = {ALPHA}:")
    print("  p< = P-value for 'gaittune better', p> = for 'gaittune worse'; "
          "BETTER / WORSE when significant, n.s. otherwise.")
    rows_json = []
    for p in problems:
        print(f"\n### {p}")
        rows = []
        for s in kinds:
            ours = runs.get(("gaittune", p, s), {})
            theirs = runs.get(("optuna", p, s), {})
            if not ours and not theirs:
                continue
            cells = {side: [s if side == "gaittune" or not ours else "", side] for side in ("gaittune", "optuna")}
            test_cells = ["", "test"]
            for c in CHECKPOINTS:
                key = str(c)
                ov = [v[key] for _, v in sorted(ours.items()) if key in v]
                tv = [v[key] for _, v in sorted(theirs.items()) if key in v]
                row = {"problem": p, "sampler": s, "checkpoint": c,
                       "gaittune": dict(summary(ov), values=ov) if ov else None,
                       "optuna": dict(summary(tv), values=tv) if tv else None,
                       "p_better": None, "p_worse": None, "verdict": None}
                for side, vals in (("gaittune", ov), ("optuna", tv)):
                    if vals:
                        st = summary(vals)
                        cells[side].append(f"{fnum(st['median'])} [{fnum(st['q25'])}, {fnum(st['q75'])}]")
                    else:
                        cells[side].append("—")
                if ov and tv:
                    pb, pw, verdict = rank_test(ov, tv, "minimize")
                    row.update(p_better=pb, p_worse=pw, verdict=verdict)
                    test_cells.append(f"p<{fnum(pb)} p>{fnum(pw)} {verdict}")
                else:
                    test_cells.append("")
                rows_json.append(row)
            rows.append(cells["gaittune"] if ours else [s, "gaittune"] + ["(kind not in this build)"] + [""] * (len(CHECKPOINTS) - 1))
            if theirs:
                rows.append(cells["optuna"])
            if ours and theirs:
                rows.append(test_cells)
        table(rows, ["sampler", "side"] + [f"@{c}" for c in CHECKPOINTS])
    R["efficiency"] = rows_json


# ------------------------------------------------------------------------------------ sim

def report_sim(doc, R):
    if not doc:
        return
    m = doc["meta"]
    direction = m["direction"]
    by = defaultdict(list)
    for r in doc["runs"]:
        by[r["sampler"]].append(r)
    print(f"\n## Simulated robot: {m['trials']} trials x {len(m['seeds'])} seeds per sampler "
          f"({m['config']}, {direction})")
    print(f"  {m['measures']}")
    rows, rows_json = [], []
    base = [r["best_value"] for r in by.get("random", []) if r["best_value"] is not None]
    for s in kind_order(by):
        rs = by[s]
        best = [r["best_value"] for r in rs if r["best_value"] is not None]
        true = [r["best_true_value"] for r in rs if r["best_true_value"] is not None]
        uns = [r["unsafe"] for r in rs]
        pb = verdict = None
        if s != "random" and base and best:
            pb, _, verdict = rank_test(best, base, direction)
        row = {"sampler": s, "seeds": len(rs), "best_value": summary(best) if best else None,
               "best_true_value": summary(true) if true else None,
               "unsafe_trials": summary(uns), "p_better_than_random": pb, "verdict_vs_random": verdict,
               "per_seed": [{k: r[k] for k in ("seed", "best_value", "best_true_value", "best_trial", "complete", "unsafe")} for r in rs]}
        rows_json.append(row)
        st, tt, us = row["best_value"], row["best_true_value"], row["unsafe_trials"]
        rows.append([s,
                     f"{fnum(st['median'])} [{fnum(st['q25'])}, {fnum(st['q75'])}]" if st else "—",
                     f"{fnum(tt['median'])} [{fnum(tt['q25'])}, {fnum(tt['q75'])}]" if tt else "—",
                     f"{us['median']:g}",
                     "" if pb is None else f"p<{fnum(pb)} {verdict}"])
    table(rows, ["sampler", "best episode return", "true value of that trial (max 1.0)",
                 "unsafe trials", "vs random"])
    R["sim"] = {"meta": m, "rows": rows_json}


# -------------------------------------------------------------------------------- targets

def report_targets(R):
    lines, out = [], []
    for (s, d, n), need in SPEED_TARGETS.items():
        r = next((x for x in R.get("overhead", []) if (x["sampler"], x["d"], x["n_trials"]) == (s, d, n)), None)
        if r is None or r["gaittune"] is None:
            status, text = "NOT RUN", f"no '{s}' kind in this build (or n={n} not measured)"
        elif r["optuna"] is None:
            status, text = "NOT RUN", "Optuna side not measured"
        else:
            status = "MET" if r["speedup"] >= need else "MISSED"
            text = (f"{r['speedup']:.0f}x ({fms(r['gaittune']['ms_per_trial'])} ms vs "
                    f"{fms(r['optuna']['ms_per_trial'])} ms)")
        out.append({"target": f"{s} >= {need:g}x faster per trial than Optuna at n={n}, d={d}",
                    "status": status, "detail": text})
    eff = R.get("efficiency", [])
    for s in EFFICIENCY_TARGETS:
        rows = [x for x in eff if x["sampler"] == s and x["checkpoint"] == max(CHECKPOINTS) and x["verdict"]]
        probs = sorted({x["problem"] for x in eff})
        if not rows:
            status, text = "NOT RUN", f"no '{s}' kind in this build (or no Optuna side)"
        else:
            worse = [x["problem"] for x in rows if x["verdict"] == "WORSE"]
            better = [x["problem"] for x in rows if x["verdict"] == "BETTER"]
            ok = not worse and len(better) * 2 >= len(probs) and len(rows) == len(probs)
            status = "MET" if ok else "MISSED"
            text = (f"@{max(CHECKPOINTS)}: better on {len(better)}/{len(rows)}"
                    f"{' (' + ', '.join(better) + ')' if better else ''}; worse on {len(worse)}"
                    f"{' (' + ', '.join(worse) + ')' if worse else ''}")
        out.append({"target": f"{s}: not significantly worse than Optuna's on every problem, "
                              f"significantly better on at least half", "status": status, "detail": text})
    print("\n## Issue 4 targets")
    for t in out:
        print(f"  [{t['status']}] {t['target']}: {t['detail']}")
    R["targets"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    a = ap.parse_args()
    R = {"meta": {"mode": a.mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "alpha": ALPHA, "test": "one-sided Mann-Whitney U (scipy.stats.mannwhitneyu), "
                  "gaittune sampler vs the Optuna sampler of the same kind, over seeds"}}
    check = os.path.join(a.dir, "problems_check.txt")
    if os.path.exists(check):
        R["problems_check"] = open(check).read().strip()
        print(R["problems_check"])
    docs = {n: load(a.dir, f"{n}.json") for n in ("overhead_gaittune", "overhead_optuna", "efficiency_gaittune",
                                                   "efficiency_optuna", "sim_gaittune")}
    R["meta"]["sides"] = {n: d["meta"] for n, d in docs.items() if d}
    report_overhead(docs["overhead_gaittune"], docs["overhead_optuna"], R)
    report_efficiency(docs["efficiency_gaittune"], docs["efficiency_optuna"], R)
    report_sim(docs["sim_gaittune"], R)
    report_targets(R)
    with open(a.out, "w") as f:
        json.dump(R, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
