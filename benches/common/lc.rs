//! The synthetic learning-curve problem of `../shared/reference/optuna-5.0/problems.py`
//! (`lc_*`), ported operation for operation so that values match the recorded runs bit for
//! bit: config `(x0..x3 ∈ [-5, 5], lr ∈ [1e-4, 1] log)`, reported value at step `t`
//! (1..=100) `floor + 10·exp(−rate·t)` plus the recorded noise of `lc_replay.json`.
//! Shared by `tests/pruner_replay.rs` and `benches/pruners.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Steps per trial.
pub const STEPS: u64 = 100;
/// Optimum of the asymptote in x.
pub const LC_O: [f64; 4] = [1.5, -2.0, 0.5, 2.5];
/// Initial excess loss.
pub const LC_A: f64 = 10.0;

/// `tests/data/optuna-5.0`: the copies of the reference data the repository carries.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/optuna-5.0")
}

/// Reads a JSON file of [`data_dir`]; when the shared reference folder is beside the
/// repository, the copy must still equal it.
pub fn load(name: &str) -> Value {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
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

/// The recorded noise of one seed, `noise[trial][step - 1]`.
pub fn noise_of_seed(lc_replay: &Value, seed: u64) -> Vec<Vec<f64>> {
    lc_replay["noise[seed][trial][step-1]"][seed.to_string()]
        .as_array()
        .unwrap_or_else(|| panic!("lc_replay.json has no noise for seed {seed}"))
        .iter()
        .map(|t| {
            t.as_array()
                .expect("noise of a trial")
                .iter()
                .map(|v| v.as_f64().expect("noise value"))
                .collect()
        })
        .collect()
}

/// Python's `a ** b` on floats: C `pow`. It is not always `a * a` for `b = 2` (glibc's pow
/// differs from the correctly rounded product by one ulp on some inputs), so call `powf`
/// with an opaque exponent to keep LLVM from rewriting it into a multiplication (or
/// `pow(10, y)` into `exp10(y)`).
pub fn py_pow(a: f64, b: f64) -> f64 {
    std::hint::black_box(a).powf(std::hint::black_box(b))
}

/// `problems.lc_floor_rate`, operation for operation (plain left-to-right sum, as the
/// recording's Python did: the recorded `true_final` values check it).
pub fn lc_floor_rate(x: &[f64; 4], lr: f64) -> (f64, f64) {
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
pub fn lc_value(floor: f64, rate: f64, t: u64) -> f64 {
    floor + LC_A * (-rate * t as f64).exp()
}

/// The pruner configurations of the reference's `bench_pruners.py`, by its names, as
/// gaittune `(kind, options)`; plus gaittune-only ones (`wilcoxon`, `patient_median`).
pub fn pruner_config(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "none" => ("none", ""),
        "median_w10" => ("median", "n_startup_trials = 5\nn_warmup_steps = 10"),
        "median_w30" => ("median", "n_startup_trials = 5\nn_warmup_steps = 30"),
        "sha" => ("successive_halving", ""),
        "hyperband" => (
            "hyperband",
            "min_resource = 1\nmax_resource = 100\nreduction_factor = 3",
        ),
        "wilcoxon" => ("wilcoxon", ""),
        _ => return None,
    })
}
