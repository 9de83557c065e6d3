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
use std::path::{Path, PathBuf};

use gaittune::pruner::{self, PruneRequest, Pruner};
use gaittune::trial::{Direction, FrozenTrial, TrialState};
use serde_json::Value;

const STEPS: u64 = 100;
const LC_O: [f64; 4] = [1.5, -2.0, 0.5, 2.5];
const LC_A: f64 = 10.0;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/optuna-5.0")
}

fn load(name: &str) -> Value {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // When the shared reference folder is beside the repository (CI, developers), the
    // copies must still equal it.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/optuna-5.0")
        .join(name);
    if let Ok(original) = std::fs::read_to_string(&shared) {
        assert!(
            original == text,
            "{} differs from {}: refresh the copy in tests/data/optuna-5.0",
            path.display(),
            shared.display()
        );
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Python's `a ** b` on floats: C `pow`. It is not always `a * a` for `b = 2` (glibc's pow
/// differs from the correctly rounded product by one ulp on some inputs), so call `powf`
/// with an opaque exponent to keep LLVM from rewriting it into a multiplication (or
/// `pow(10, y)` into `exp10(y)`).
fn py_pow(a: f64, b: f64) -> f64 {
    std::hint::black_box(a).powf(std::hint::black_box(b))
}

/// `problems.lc_floor_rate`, operation for operation (plain left-to-right sum, as the
/// recording's Python did: the recorded `true_final` values check it).
fn lc_floor_rate(x: &[f64; 4], lr: f64) -> (f64, f64) {
    let u = lr.log10();
    let sq: f64 = x
        .iter()
        .zip(LC_O)
        .fold(0.0, |acc, (v, s)| acc + py_pow(v - s, 2.0));
    let floor = sq / 4.0 + 0.5 * py_pow(u + 3.0, 2.0);
    let rate = 0.3 * py_pow(10.0, (u + 1.0) / 2.0);
    (floor, rate)
}

/// `problems.lc_value`: the noise-free loss at step `t` (1-based).
fn lc_value(floor: f64, rate: f64, t: u64) -> f64 {
    floor + LC_A * (-rate * t as f64).exp()
}

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

/// The pruner configurations of `bench_pruners.py`, as gaittune config tables.
fn our_pruner(name: &str) -> Option<Box<dyn Pruner>> {
    let (kind, options) = match name {
        "none" => ("none", ""),
        "median_w10" => ("median", "n_startup_trials = 5\nn_warmup_steps = 10"),
        "median_w30" => ("median", "n_startup_trials = 5\nn_warmup_steps = 30"),
        "sha" => ("successive_halving", ""),
        "hyperband" => (
            "hyperband",
            "min_resource = 1\nmax_resource = 100\nreduction_factor = 3",
        ),
        other => panic!("unexpected pruner {other} in pruners.json"),
    };
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
        history.push(FrozenTrial {
            number: number as u64,
            state: TrialState::Running,
            params: Default::default(),
            value: None,
            intermediate: BTreeMap::new(),
            prune_reason: None,
            episodes: vec![],
            started_at: None,
            finished_at: None,
            attrs: Default::default(),
        });
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
    let noise_by_seed = &lc["noise[seed][trial][step-1]"];

    let mut mismatches = Vec::new();
    // (sampler, pruner) -> (trials, pruned, steps ours, steps recorded)
    let mut summary: BTreeMap<(String, String), (usize, usize, u64, u64)> = BTreeMap::new();
    let mut checked_random = 0usize;
    for run in runs["runs"].as_array().expect("runs") {
        let sampler = run["sampler"].as_str().expect("sampler").to_string();
        let name = run["pruner"].as_str().expect("pruner").to_string();
        let seed = run["seed"].as_u64().expect("seed");
        let noise: Vec<Vec<f64>> = noise_by_seed[seed.to_string()]
            .as_array()
            .expect("noise of the seed")
            .iter()
            .map(|t| {
                t.as_array()
                    .expect("noise of a trial")
                    .iter()
                    .map(|v| v.as_f64().expect("noise value"))
                    .collect()
            })
            .collect();
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
