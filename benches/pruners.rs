//! gaittune's pruners on the learning-curve problem of the reference
//! (`../shared/reference/optuna-5.0/scripts/bench_pruners.py`, same protocol): 100 trials
//! per study, 100 steps per trial, seeds 0–9, samplers `random` and `tpe` (ours, seeded
//! with the seed), minimise; a trial reports its value at every step and the pruner is
//! asked after each report; the objective is the step-100 value. The noise added to the
//! reported values is the reference's own (`lc_replay.json`, by seed and trial number), so
//! our studies see the same noise as Optuna's.
//!
//! Per study: total steps consumed, trials pruned, best value (noisy, COMPLETE trials), the
//! noise-free step-100 value of that best trial, the best noise-free value among all
//! sampled configurations (the oracle), wall time and the pruner's time per step.
//! `bench/optuna/pruners.py` measures Optuna 5.0 the same way in the same run
//! (`bench/run.sh`), and `bench/report.py` prints both side by side.
//!
//!     cargo bench --bench pruners -- [--out bench/out/pruners_gaittune.json] [--seeds 10] \
//!         [--samplers random,tpe]

use std::time::Instant;

use anyhow::{anyhow, Result};
use gaittune::pruner::{self, PruneRequest};
use gaittune::sampler::SampleRequest;
use gaittune::space::{Distribution, SearchSpace};
use gaittune::trial::{Direction, FrozenTrial, TrialState};
use serde_json::json;

#[path = "common/lc.rs"]
mod lc;
#[path = "common/spec.rs"]
mod spec;

const N_TRIALS: u64 = 100;
const PRUNERS: &[&str] = &[
    "none",
    "median_w10",
    "median_w30",
    "sha",
    "hyperband",
    "wilcoxon",
];
/// The sampler specs run by default (see `common/spec.rs`); `--samplers` picks others.
const SAMPLERS: &[&str] = &["random", "tpe"];

fn lc_space() -> SearchSpace {
    let float = |low, high, log| Distribution::Float {
        low,
        high,
        log,
        step: None,
    };
    let mut dims: Vec<(String, Distribution)> = (0..4)
        .map(|i| (format!("x{i}"), float(-5.0, 5.0, false)))
        .collect();
    dims.push(("lr".into(), float(1e-4, 1.0, true)));
    SearchSpace::new(dims).expect("valid space")
}

/// One study; returns its JSON record.
fn study(
    sampler_kind: &str,
    pruner_name: &str,
    seed: u64,
    noise: &[Vec<f64>],
) -> Result<serde_json::Value> {
    let space = lc_space();
    let mut sampler = spec::build_sampler(sampler_kind, seed)?;
    let (kind, options) = lc::pruner_config(pruner_name)
        .ok_or_else(|| anyhow!("unknown pruner configuration {pruner_name}"))?;
    let table: toml::Table = toml::from_str(options)?;
    let pruner = pruner::build(kind, Some(&table)).map_err(|e| anyhow!(e))?;
    let study_name = format!("lc_s{seed}");
    let mut history: Vec<FrozenTrial> = Vec::with_capacity(N_TRIALS as usize);
    let mut true_final = Vec::with_capacity(N_TRIALS as usize);
    let (mut total_steps, mut prune_time) = (0u64, 0.0f64);
    let t0 = Instant::now();
    for number in 0..N_TRIALS {
        let params = sampler.sample(&SampleRequest {
            space: &space,
            history: &history,
            direction: Direction::Minimize,
            trial_number: number,
        });
        let x = [params["x0"], params["x1"], params["x2"], params["x3"]];
        let (floor, rate) = lc::lc_floor_rate(&x, params["lr"]);
        true_final.push(lc::lc_value(floor, rate, lc::STEPS));
        history.push(FrozenTrial::new(number, TrialState::Running, params, None));
        let n = number as usize;
        let mut pruned = false;
        for step in 1..=lc::STEPS {
            let y = lc::lc_value(floor, rate, step) + noise[n][step as usize - 1];
            history[n].intermediate.insert(step, y);
            total_steps += 1;
            let tp = Instant::now();
            pruned = pruner.as_ref().is_some_and(|p| {
                p.prune(&PruneRequest {
                    study_name: &study_name,
                    direction: Direction::Minimize,
                    history: &history,
                    trial: &history[n],
                    step,
                })
            });
            prune_time += tp.elapsed().as_secs_f64();
            if pruned {
                break;
            }
        }
        let me = &mut history[n];
        me.value = me.last_intermediate().map(|(_, v)| v);
        if pruned {
            me.state = TrialState::Pruned;
            me.prune_reason = Some("poor".into());
        } else {
            me.state = TrialState::Complete;
        }
        sampler.tell(&history[n]);
    }
    let wall = t0.elapsed().as_secs_f64();
    let best = history
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .min_by(|a, b| a.value.unwrap().total_cmp(&b.value.unwrap()))
        .ok_or_else(|| anyhow!("no complete trial"))?;
    Ok(json!({
        "sampler": sampler_kind,
        "pruner": pruner_name,
        "seed": seed,
        "total_steps": total_steps,
        "n_pruned": history.iter().filter(|t| t.state == TrialState::Pruned).count(),
        "best_value": best.value,
        "best_true_final": true_final[best.number as usize],
        "oracle_true_final_sampled": true_final.iter().copied().fold(f64::INFINITY, f64::min),
        "wall_s": wall,
        "report_prune_ms_per_step": 1e3 * prune_time / total_steps as f64,
    }))
}

fn main() -> Result<()> {
    let mut out = std::path::PathBuf::from("bench/out/pruners_gaittune.json");
    let mut seeds = 10u64;
    let mut samplers: Vec<String> = SAMPLERS.iter().map(|s| s.to_string()).collect();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "pruners [--out FILE] [--seeds N (at most 10: the recorded noise)] [--samplers SPEC,...]\n\
                     gaittune's pruners on the reference learning-curve problem (see the file's docs)."
                );
                return Ok(());
            }
            "--out" => {
                out = args
                    .next()
                    .ok_or_else(|| anyhow!("--out needs a path"))?
                    .into()
            }
            "--seeds" => {
                seeds = args
                    .next()
                    .ok_or_else(|| anyhow!("--seeds needs a number"))?
                    .parse()?
            }
            "--samplers" => {
                samplers = args
                    .next()
                    .ok_or_else(|| anyhow!("--samplers needs a list"))?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            other => {
                return Err(anyhow!(
                    "unknown argument {other:?}; use --out FILE, --seeds N, --samplers SPEC,..."
                ))
            }
        }
    }
    let lc_replay = lc::load("lc_replay.json");
    let mut runs = Vec::new();
    let t0 = Instant::now();
    for seed in 0..seeds {
        let noise = lc::noise_of_seed(&lc_replay, seed);
        for s in &samplers {
            for p in PRUNERS {
                runs.push(study(s, p, seed, &noise)?);
            }
        }
    }
    eprintln!(
        "gaittune pruners: {} studies ({} samplers x {} pruners x {seeds} seeds) in {:.1} s",
        runs.len(),
        samplers.len(),
        PRUNERS.len(),
        t0.elapsed().as_secs_f64()
    );
    let doc = json!({
        "meta": {
            "side": "gaittune", "n_trials": N_TRIALS, "steps": lc::STEPS,
            "seeds": (0..seeds).collect::<Vec<_>>(), "samplers": samplers, "pruners": PRUNERS,
            "noise": "lc_replay.json (the reference's recorded noise, by seed and trial number)",
        },
        "runs": runs,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
