//! Replay equivalence with Optuna 5.0: the recorded learning-curve runs (same parameters,
//! same noise) are fed step by step through our pruners, with the same history evolution as
//! Optuna's sequential run (trial `t` sees trials `< t` finished with the states our pruner
//! gave them), and every trial's decision (pruned or not, and at which step) must equal the
//! recorded one.
//!
//! Data: `tests/data/optuna-5.0/` (copies of `shared/reference/optuna-5.0/`, see the README
//! there). The problem is `problems.py`'s learning curve: the value reported at step `t`
//! (1..=100) is `floor + 10 exp(-rate t) + noise[seed][trial][t - 1]`.

use std::collections::BTreeMap;

use gaittune::pruner::{self, PruneRequest, Pruner};
use gaittune::trial::{Direction, FrozenTrial, TrialState};
use serde_json::Value;

#[path = "../benches/common/lc.rs"]
mod lc;
use lc::{lc_floor_rate, lc_value, load, STEPS};

/// One recorded trial.
struct Recorded {
    x: [f64; 4],
    lr: f64,
    state: TrialState,
    last_step: u64,
    true_final: f64,
}

fn recorded_trials(run: &Value) -> Vec<Recorded> {
    let trials = run["trials"].as_array().expect("trials");
    trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            assert_eq!(t["n"].as_u64(), Some(i as u64), "trials in number order");
            let p = &t["params"];
            let f = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("param {k}"));
            Recorded {
                x: [f("x0"), f("x1"), f("x2"), f("x3")],
                lr: f("lr"),
                state: t["state"]
                    .as_str()
                    .and_then(TrialState::parse)
                    .expect("state"),
                last_step: t["last_step"].as_u64().expect("last_step"),
                true_final: t["true_final"].as_f64().expect("true_final"),
            }
        })
        .collect()
}

/// The pruner configurations of `bench_pruners.py`, as gaittune pruners.
fn our_pruner(name: &str) -> Option<Box<dyn Pruner>> {
    let (kind, options) = lc::pruner_config(name)
        .unwrap_or_else(|| panic!("unexpected pruner {name} in pruners.json"));
    let table: toml::Table = toml::from_str(options).unwrap();
    pruner::build(kind, Some(&table)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Replays one run; returns (our decision, recorded decision) per trial, a decision being
/// `(pruned, step)`.
fn replay(
    seed: u64,
    pruner: Option<&dyn Pruner>,
    recorded: &[Recorded],
    noise: &[Vec<f64>],
) -> Vec<((bool, u64), (bool, u64))> {
    let study_name = format!("lc_s{seed}");
    let mut history: Vec<FrozenTrial> = Vec::with_capacity(recorded.len());
    let mut out = Vec::with_capacity(recorded.len());
    for (number, rec) in recorded.iter().enumerate() {
        let (floor, rate) = lc_floor_rate(&rec.x, rec.lr);
        assert_eq!(
            lc_value(floor, rate, STEPS),
            rec.true_final,
            "seed {seed} trial {number}: the curve port differs from problems.py"
        );
        // The current trial is in the history, RUNNING, as the daemon's study view has it.
        history.push(FrozenTrial::new(
            number as u64,
            TrialState::Running,
            Default::default(),
            None,
        ));
        let mut ours = (false, STEPS);
        for step in 1..=STEPS {
            let y = lc_value(floor, rate, step) + noise[number][step as usize - 1];
            history[number].intermediate.insert(step, y);
            let pruned = pruner.is_some_and(|p| {
                p.prune(&PruneRequest {
                    study_name: &study_name,
                    direction: Direction::Minimize,
                    history: &history,
                    trial: &history[number],
                    step,
                })
            });
            if pruned {
                ours = (true, step);
                break;
            }
        }
        let me = &mut history[number];
        if ours.0 {
            me.state = TrialState::Pruned;
            me.prune_reason = Some("poor".into());
        } else {
            me.state = TrialState::Complete;
            me.value = me.last_intermediate().map(|(_, v)| v);
        }
        let theirs = (rec.state == TrialState::Pruned, rec.last_step);
        assert!(
            matches!(rec.state, TrialState::Pruned | TrialState::Complete),
            "recorded state {:?}",
            rec.state
        );
        out.push((ours, theirs));
    }
    out
}

#[test]
fn pruner_decisions_equal_optuna_5_0_on_every_recorded_trial() {
    let runs = load("pruners.json");
    let lc = load("lc_replay.json");
    assert_eq!(runs["meta"]["optuna"].as_str(), Some("5.0.0"));

    let mut mismatches = Vec::new();
    // (sampler, pruner) -> (trials, pruned, steps ours, steps recorded)
    let mut summary: BTreeMap<(String, String), (usize, usize, u64, u64)> = BTreeMap::new();
    let mut checked_random = 0usize;
    for run in runs["runs"].as_array().expect("runs") {
        let sampler = run["sampler"].as_str().expect("sampler").to_string();
        let name = run["pruner"].as_str().expect("pruner").to_string();
        let seed = run["seed"].as_u64().expect("seed");
        let noise = lc::noise_of_seed(&lc, seed);
        let recorded = recorded_trials(run);
        let p = our_pruner(&name);
        let decisions = replay(seed, p.as_deref(), &recorded, &noise);
        let entry = summary.entry((sampler.clone(), name.clone())).or_default();
        for (number, (ours, theirs)) in decisions.iter().enumerate() {
            entry.0 += 1;
            entry.1 += usize::from(ours.0);
            entry.2 += ours.1;
            entry.3 += theirs.1;
            if ours != theirs {
                mismatches.push(format!(
                    "{sampler}/{name} seed {seed} trial {number}: ours {} at {}, Optuna {} at {}",
                    if ours.0 { "PRUNED" } else { "COMPLETE" },
                    ours.1,
                    if theirs.0 { "PRUNED" } else { "COMPLETE" },
                    theirs.1
                ));
            }
        }
        assert_eq!(
            run["total_steps"].as_u64(),
            Some(decisions.iter().map(|(_, t)| t.1).sum::<u64>()),
            "recorded total_steps"
        );
        if sampler == "random" {
            checked_random += decisions.len();
        }
    }

    println!("sampler      pruner       trials  pruned  steps(ours)  steps(Optuna)");
    for ((sampler, name), (n, pruned, ours, theirs)) in &summary {
        println!("{sampler:<12} {name:<12} {n:>6}  {pruned:>6}  {ours:>11}  {theirs:>13}");
    }
    let total: usize = summary.values().map(|v| v.0).sum();
    println!(
        "{} of {total} trial decisions equal Optuna 5.0's ({checked_random} from Random-sampler runs)",
        total - mismatches.len()
    );
    // Every pruner configuration and seed of the Random sampler was replayed.
    for name in ["none", "median_w10", "median_w30", "sha", "hyperband"] {
        let key = ("random".to_string(), name.to_string());
        assert_eq!(summary.get(&key).map(|v| v.0), Some(1000), "{name}");
    }
    assert!(
        mismatches.is_empty(),
        "{} decisions differ from Optuna 5.0:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
