//! Benchmark of gaittune's samplers: the Rust side of `bench/run.sh`, which runs Optuna 5.0
//! on the same problems in the same run and prints both side by side (see bench/README.md).
//! Not a test: it measures, prints and writes JSON; it asserts nothing about speed.
//!
//!     cargo bench --bench samplers -- <command> [options]
//!
//! Commands (every one writes its figures as JSON to `--out`):
//! - `overhead`: time per trial (ask + tell, in-process, cheap objective) with 100/500/1000/
//!   2000 trials of history, 8-D and 20-D (`gp` up to `--gp-n-max`, 200; every run also
//!   reports the mean of the 10 trials before n = 50/100/200 as `at_ms`). What is timed: `Sampler::sample` over an in-memory
//!   `Vec<FrozenTrial>` history, the objective (sum of squares), building the COMPLETE
//!   `FrozenTrial`, `Sampler::tell` and the push onto the history. No storage: that is what
//!   "ask + tell in-process" means for gaittune (Optuna's side times `study.ask()`, d ×
//!   `suggest_float`, `study.tell()` over its `InMemoryStorage`).
//! - `efficiency`: best value after 25/50/100/200 trials (`gp`: 100 trials) (all values kept) on the shared problem
//!   suite of ../shared/reference/optuna-5.0/problems.py, ported bit for bit below.
//! - `problems`: the suite's values at fixed points, for the bit-for-bit check against
//!   problems.py (`bench/optuna/check_problems.py`).
//! - `kinds`: the sampler kinds this build knows, one per line.
//!
//! The harness uses only `gaittune::sampler::{build, KINDS, Sampler}`: every kind that is
//! registered when it runs is benchmarked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use gaittune::sampler::{self, SampleRequest, Sampler};
use gaittune::space::{Choice, Distribution, Params, SearchSpace};
use gaittune::trial::{Direction, FrozenTrial, TrialState};

/// The problem suite of problems.py, ported bit for bit.
///
/// Python's `a ** b` on floats calls C `pow`, so it is `powf` here (not `powi`, whose
/// repeated multiplication can differ in the last bit); `sum()` of floats is a plain
/// left-to-right sum up to Python 3.11 (3.12 made it compensated; the cross-check allows a
/// few ulps there and says so).
#[path = "common/spec.rs"]
mod spec;
use spec::{build_sampler, split_spec};

mod problems {
    use std::f64::consts::PI;

    /// Shift of the `_shift` variants, tiled for d > 8.
    pub const SHIFT8: [f64; 8] = [1.5, -2.0, 0.5, 2.5, -1.0, -2.5, 1.0, -0.5];
    /// Per-coordinate minimiser of Styblinski–Tang.
    pub const ST_XSTAR: f64 = -2.903534027771178;
    /// Optimum of the mixed problem's four floats.
    pub const MIXED_O: [f64; 4] = [1.5, -2.0, 0.5, 2.5];
    /// The mixed problem's categorical `c`: choices `a, b, c, d` and their values.
    pub const MIXED_CAT: [(&str, f64); 4] = [("a", 0.0), ("b", 1.0), ("c", 2.5), ("d", 4.0)];

    /// Python's `float ** float`.
    fn pw(x: f64, e: f64) -> f64 {
        x.powf(e)
    }

    /// Python's `sum()` of floats (≤ 3.11): left to right from 0.
    fn py_sum(it: impl Iterator<Item = f64>) -> f64 {
        it.fold(0.0, |a, b| a + b)
    }

    /// `shift(d)`.
    pub fn shift(d: usize) -> Vec<f64> {
        (0..d).map(|i| SHIFT8[i % 8]).collect()
    }

    fn centred(x: &[f64], o: Option<&[f64]>) -> Vec<f64> {
        match o {
            None => x.to_vec(),
            Some(o) => x.iter().zip(o).map(|(v, s)| v - s).collect(),
        }
    }

    /// `sphere(x, o)`.
    pub fn sphere(x: &[f64], o: Option<&[f64]>) -> f64 {
        match o {
            None => py_sum(x.iter().map(|&v| v * v)),
            Some(o) => py_sum(x.iter().zip(o).map(|(v, s)| pw(v - s, 2.0))),
        }
    }

    /// `ellipsoid(x, o)`: condition number 1e6.
    pub fn ellipsoid(x: &[f64], o: Option<&[f64]>) -> f64 {
        let d = x.len();
        let z = centred(x, o);
        py_sum((0..d).map(|i| pw(10.0, 6.0 * i as f64 / (d - 1) as f64) * pw(z[i], 2.0)))
    }

    /// `rastrigin(x, o)`.
    pub fn rastrigin(x: &[f64], o: Option<&[f64]>) -> f64 {
        let z = centred(x, o);
        10.0 * z.len() as f64 + py_sum(z.iter().map(|&v| v * v - 10.0 * (2.0 * PI * v).cos()))
    }

    /// `rosenbrock(x)`.
    pub fn rosenbrock(x: &[f64]) -> f64 {
        py_sum(
            (0..x.len() - 1)
                .map(|i| 100.0 * pw(x[i + 1] - pw(x[i], 2.0), 2.0) + pw(1.0 - x[i], 2.0)),
        )
    }

    /// `styblinski_tang(x)`.
    pub fn styblinski_tang(x: &[f64]) -> f64 {
        0.5 * py_sum(x.iter().map(|&v| pw(v, 4.0) - 16.0 * pw(v, 2.0) + 5.0 * v))
    }

    /// `ST_FSTAR_PER_DIM`.
    pub fn st_fstar_per_dim() -> f64 {
        0.5 * (pw(ST_XSTAR, 4.0) - 16.0 * pw(ST_XSTAR, 2.0) + 5.0 * ST_XSTAR)
    }

    /// One problem of `continuous_problems(d)`.
    #[derive(Debug, Clone)]
    pub struct Continuous {
        /// Its name in problems.py.
        pub name: &'static str,
        /// Box lower bound (every coordinate).
        pub low: f64,
        /// Box upper bound.
        pub high: f64,
        /// Known minimum.
        pub f_star: f64,
        shift: Option<Vec<f64>>,
        f: fn(&[f64], Option<&[f64]>) -> f64,
    }

    impl Continuous {
        /// The objective at `x`.
        pub fn eval(&self, x: &[f64]) -> f64 {
            (self.f)(x, self.shift.as_deref())
        }
    }

    /// `continuous_problems(d)`, in the same order.
    pub fn continuous(d: usize) -> Vec<Continuous> {
        let o = Some(shift(d));
        let p = |name, low, high, f_star, shift: Option<Vec<f64>>, f| Continuous {
            name,
            low,
            high,
            f_star,
            shift,
            f,
        };
        vec![
            p("sphere", -5.0, 5.0, 0.0, None, sphere),
            p("sphere_shift", -5.0, 5.0, 0.0, o.clone(), sphere),
            p("ellipsoid", -5.0, 5.0, 0.0, None, ellipsoid),
            p("ellipsoid_shift", -5.0, 5.0, 0.0, o.clone(), ellipsoid),
            p("rastrigin", -5.0, 5.0, 0.0, None, rastrigin),
            p("rastrigin_shift", -5.0, 5.0, 0.0, o, rastrigin),
            p("rosenbrock", -2.0, 2.0, 0.0, None, |x, _| rosenbrock(x)),
            p(
                "styblinski_tang",
                -5.0,
                5.0,
                d as f64 * st_fstar_per_dim(),
                None,
                |x, _| styblinski_tang(x),
            ),
        ]
    }

    /// `GAIT_CAT`: the gait-like problem's categorical `gait` and its values.
    pub const GAIT_CAT: [(&str, f64); 4] =
        [("walk", 0.6), ("trot", 0.0), ("pace", 0.9), ("bound", 1.5)];
    /// `NOISY_SD`: the noise on `noisy_sphere`'s observed values.
    pub const NOISY_SD: f64 = 1.0;

    /// `gait_unsafe(freq, amp)`.
    pub fn gait_unsafe(freq: f64, amp: f64) -> bool {
        amp + 0.4 * freq > 1.5
    }

    /// `gait_objective(freq, amp, duty, gain, lag, gait)` with `gait` the index of the choice.
    pub fn gait_objective(freq: f64, amp: f64, duty: f64, gain: f64, lag: i64, gait: usize) -> f64 {
        let u = gain.log10() - 0.5;
        let c = GAIT_CAT[gait].1;
        let f = 4.0 * pw(freq - 2.0, 2.0)
            + 10.0 * pw(amp - 0.65, 2.0)
            + 8.0 * pw(duty - 0.55, 2.0)
            + pw(u, 2.0) * (1.0 + 0.5 * (freq - 2.0).abs())
            + 0.2 * (lag - 3).abs() as f64 * (1.0 + c)
            + 0.1 * (lag - 3).pow(2) as f64 * freq
            + c;
        if gait_unsafe(freq, amp) {
            10.0 + 2.0 * f
        } else {
            f
        }
    }

    /// `mixed_objective(x, lr, k1, k2, c)` with `c` the index of the choice.
    pub fn mixed_objective(x: &[f64; 4], lr: f64, k1: i64, k2: i64, c: usize) -> f64 {
        let cat = MIXED_CAT[c].1;
        let g = py_sum(x.iter().zip(MIXED_O).map(|(v, s)| pw(v - s, 2.0)));
        let u = lr.log10();
        let scale = 1.0 + 0.5 * cat;
        scale * g
            + pw(u + 3.0, 2.0) * (1.0 + 0.1 * (k1 - 7).abs() as f64)
            + 0.5 * (k1 - 7).pow(2) as f64
            + 0.3 * (k2 + 3).abs() as f64
            + cat
    }
}

/// A problem as the samplers see it: a search space and an objective over its internal
/// parameter values (minimised).
struct Problem {
    name: String,
    space: SearchSpace,
    eval: Box<dyn Fn(&Params) -> f64 + Send + Sync>,
    /// Std of the Gaussian noise a study observes on top of `eval` (0: none). A noisy
    /// problem's figure is the true value of the best observed trial.
    noise_sd: f64,
}

fn float(low: f64, high: f64, log: bool) -> Distribution {
    Distribution::Float {
        low,
        high,
        log,
        step: None,
    }
}

/// `x0 … x{d-1}` in `[low, high]`.
fn box_space(d: usize, low: f64, high: f64) -> SearchSpace {
    SearchSpace::new((0..d).map(|i| (format!("x{i}"), float(low, high, false))))
        .expect("a box is a valid space")
}

/// Reads `x0 … x{d-1}` in index order (the space itself is ordered by name).
fn coords(params: &Params, names: &[String]) -> Vec<f64> {
    names.iter().map(|n| params[n.as_str()]).collect()
}

fn x_names(d: usize) -> Vec<String> {
    (0..d).map(|i| format!("x{i}")).collect()
}

/// The mixed space of problems.py: 4 floats in [-5, 5], `lr` log-float in [1e-5, 1], ints
/// `k1` in [1, 10] and `k2` in [-10, 10], categorical `c` in {a, b, c, d}.
fn mixed_space() -> SearchSpace {
    let mut p: Vec<(String, Distribution)> = (0..4)
        .map(|i| (format!("x{i}"), float(-5.0, 5.0, false)))
        .collect();
    p.push(("lr".into(), float(1e-5, 1.0, true)));
    let int = |low, high| Distribution::Int {
        low,
        high,
        step: 1,
        log: false,
    };
    p.push(("k1".into(), int(1, 10)));
    p.push(("k2".into(), int(-10, 10)));
    p.push((
        "c".into(),
        Distribution::Categorical {
            choices: problems::MIXED_CAT
                .iter()
                .map(|(n, _)| Choice::Text(n.to_string()))
                .collect(),
        },
    ));
    SearchSpace::new(p).expect("the mixed space is valid")
}

fn mixed_eval(p: &Params) -> f64 {
    let x = [p["x0"], p["x1"], p["x2"], p["x3"]];
    problems::mixed_objective(&x, p["lr"], p["k1"] as i64, p["k2"] as i64, p["c"] as usize)
}

/// The efficiency suite: the eight continuous problems in `d` dimensions, then `mixed`.
fn suite(d: usize) -> Vec<Problem> {
    let mut out: Vec<Problem> = problems::continuous(d)
        .into_iter()
        .map(|c| {
            let names = x_names(d);
            Problem {
                name: c.name.to_string(),
                space: box_space(d, c.low, c.high),
                eval: Box::new(move |p| c.eval(&coords(p, &names))),
                noise_sd: 0.0,
            }
        })
        .collect();
    out.push(Problem {
        name: "mixed".into(),
        space: mixed_space(),
        eval: Box::new(mixed_eval),
        noise_sd: 0.0,
    });
    let names = x_names(8);
    let o = problems::shift(8);
    out.push(Problem {
        name: "noisy_sphere".into(),
        space: box_space(8, -5.0, 5.0),
        eval: Box::new(move |p| problems::sphere(&coords(p, &names), Some(&o))),
        noise_sd: problems::NOISY_SD,
    });
    out.push(Problem {
        name: "gait_mixed".into(),
        space: gait_space(),
        eval: Box::new(gait_eval),
        noise_sd: 0.0,
    });
    out
}

/// The gait-like space of common.py: `freq` in [0.5, 3], `amp` in [0, 1], `duty` in
/// [0.3, 0.8], log-float `gain` in [0.01, 100], int `lag` in [0, 8], categorical `gait`.
fn gait_space() -> SearchSpace {
    let p = vec![
        ("freq".to_string(), float(0.5, 3.0, false)),
        ("amp".into(), float(0.0, 1.0, false)),
        ("duty".into(), float(0.3, 0.8, false)),
        ("gain".into(), float(0.01, 100.0, true)),
        (
            "lag".into(),
            Distribution::Int {
                low: 0,
                high: 8,
                step: 1,
                log: false,
            },
        ),
        (
            "gait".into(),
            Distribution::Categorical {
                choices: problems::GAIT_CAT
                    .iter()
                    .map(|(n, _)| Choice::Text(n.to_string()))
                    .collect(),
            },
        ),
    ];
    SearchSpace::new(p).expect("the gait space is valid")
}

fn gait_eval(p: &Params) -> f64 {
    problems::gait_objective(
        p["freq"],
        p["amp"],
        p["duty"],
        p["gain"],
        p["lag"] as i64,
        p["gait"] as usize,
    )
}

/// A finished trial as the daemon would store it.
fn frozen(
    number: u64,
    state: TrialState,
    params: Params,
    value: Option<f64>,
    prune_reason: Option<&str>,
) -> FrozenTrial {
    FrozenTrial {
        prune_reason: prune_reason.map(str::to_string),
        ..FrozenTrial::new(number, state, params, value)
    }
}

/// Asks `sampler` for trial `number` and checks the answer against the space.
fn ask(
    sampler: &mut dyn Sampler,
    space: &SearchSpace,
    history: &[FrozenTrial],
    direction: Direction,
    number: u64,
) -> Result<Params> {
    let params = sampler.sample(&SampleRequest {
        space,
        history,
        direction,
        trial_number: number,
    });
    space.check_params(&params).map_err(|e| {
        anyhow!(
            "sampler {} proposed invalid parameters for trial {number}: {e} (a sampler bug)",
            sampler.name()
        )
    })?;
    Ok(params)
}

fn rfc3339_now() -> String {
    gaittune::trial::now_utc()
}

fn meta(command: &str, extra: Value) -> Value {
    let mut m = json!({
        "side": "gaittune",
        "command": command,
        "gaittune": env!("CARGO_PKG_VERSION"),
        "kinds_available": sampler::KINDS,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "date": rfc3339_now(),
    });
    if let (Some(m), Value::Object(e)) = (m.as_object_mut(), extra) {
        m.extend(e);
    }
    m
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim().parse().map_err(|_| {
                anyhow!("--{what}: {p:?} is not a valid value (comma-separated list expected)")
            })
        })
        .collect()
}

/// `all` = every registered kind; otherwise a comma-separated list checked against
/// [`sampler::KINDS`].
fn parse_kinds(s: &str) -> Result<Vec<String>> {
    if s == "all" {
        return Ok(sampler::KINDS.iter().map(|k| k.to_string()).collect());
    }
    let kinds: Vec<String> = parse_list(s, "kinds")?;
    for k in &kinds {
        if !sampler::KINDS.contains(&split_spec(k)?.0) {
            bail!(
                "--kinds: unknown sampler kind {k:?}; this build has: {}",
                sampler::KINDS.join(", ")
            );
        }
    }
    Ok(kinds)
}

// ------------------------------------------------------------------------------- overhead

/// Milliseconds of trials `from..to` (as in bench_overhead.py's checkpoints).
fn checkpoint(ms: &[f64], c: usize) -> Value {
    let mut last = ms[c - 100..c].to_vec();
    last.sort_by(f64::total_cmp);
    json!({
        "total_s": ms[..c].iter().sum::<f64>() / 1e3,
        "mean_ms_last100": last.iter().sum::<f64>() / last.len() as f64,
        "median_ms_last100": quantile_sorted(&last, 0.5),
        "p90_ms_last100": quantile_sorted(&last, 0.9),
    })
}

/// numpy's default (linear) quantile of sorted data.
fn quantile_sorted(xs: &[f64], q: f64) -> f64 {
    let h = (xs.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    xs[lo] + (h - lo as f64) * (xs[hi] - xs[lo])
}

/// One timed run: `n_max` trials of `kind` in `d` dimensions; per-trial milliseconds and the
/// best value.
fn overhead_run(kind: &str, d: usize, n_max: usize, seed: u64) -> Result<(Vec<f64>, f64)> {
    let space = box_space(d, -5.0, 5.0);
    let mut sampler = build_sampler(kind, seed)?;
    let mut history: Vec<FrozenTrial> = Vec::with_capacity(n_max);
    let mut ms = Vec::with_capacity(n_max);
    let mut best = f64::INFINITY;
    for i in 0..n_max as u64 {
        let t0 = Instant::now();
        // ---- timed: ask, objective, tell
        let params = sampler.sample(&SampleRequest {
            space: &space,
            history: &history,
            direction: Direction::Minimize,
            trial_number: i,
        });
        let v: f64 = params.values().map(|x| x * x).sum();
        let trial = frozen(i, TrialState::Complete, params, Some(v), None);
        sampler.tell(&trial);
        history.push(trial);
        // ---- end of the timed region
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        space
            .check_params(&history[i as usize].params)
            .map_err(|e| anyhow!("sampler {kind} proposed invalid parameters: {e}"))?;
        best = best.min(v);
    }
    Ok((ms, best))
}

fn cmd_overhead(a: &OverheadArgs) -> Result<()> {
    let kinds = parse_kinds(&a.kinds)?;
    let dims: Vec<usize> = parse_list(&a.dims, "dims")?;
    if a.n_max < 100 {
        bail!("--n-max must be at least 100 (the first checkpoint)");
    }
    let checkpoints: Vec<usize> = [100, 500, 1000, 2000]
        .into_iter()
        .filter(|&c| c <= a.n_max)
        .collect();
    let mut runs = Vec::new();
    for kind in &kinds {
        // A GP's cost grows as n³: its runs stop at --gp-n-max trials of history.
        let n_max = if split_spec(kind)?.0 == "gp" {
            a.n_max.min(a.gp_n_max)
        } else {
            a.n_max
        };
        for &d in &dims {
            for rep in 0..a.reps {
                let t0 = Instant::now();
                let (ms, best) = overhead_run(kind, d, n_max, rep)?;
                let wall = t0.elapsed().as_secs_f64();
                let cp: serde_json::Map<String, Value> = checkpoints
                    .iter()
                    .filter(|&&c| c <= n_max)
                    .map(|&c| (c.to_string(), checkpoint(&ms, c)))
                    .collect();
                // Time per trial at n = 50/100/200: the mean of the 10 trials before n.
                let at: serde_json::Map<String, Value> = [50usize, 100, 200]
                    .into_iter()
                    .filter(|&c| c <= n_max)
                    .map(|c| {
                        (
                            c.to_string(),
                            json!(ms[c - 10..c].iter().sum::<f64>() / 10.0),
                        )
                    })
                    .collect();
                let show: Vec<String> = checkpoints
                    .iter()
                    .filter(|&&c| c <= n_max)
                    .map(|&c| {
                        let ms = cp[&c.to_string()]["mean_ms_last100"].as_f64();
                        format!("{c}: {:.5}", ms.unwrap_or(f64::NAN))
                    })
                    .collect();
                let show_at: Vec<String> = at
                    .iter()
                    .map(|(c, ms)| format!("{c}: {:.4}", ms.as_f64().unwrap_or(f64::NAN)))
                    .collect();
                eprintln!(
                    "gaittune overhead {kind} d={d} rep={rep} wall={wall:.2}s ms/trial {{{}}} at n {{{}}}",
                    show.join(", "),
                    show_at.join(", ")
                );
                runs.push(json!({
                    "sampler": kind, "d": d, "seed": rep, "wall_s": wall, "best": best, "cp": cp,
                    "n_max": n_max, "at_ms": at,
                }));
            }
        }
    }
    let out = json!({
        "meta": meta("overhead", json!({
            "n_max": a.n_max, "reps": a.reps, "dims": dims, "kinds": kinds,
            "timed": "Sampler::sample over an in-memory Vec<FrozenTrial> history + objective \
                      (sum of squares) + building the COMPLETE FrozenTrial + Sampler::tell + \
                      push onto the history; no storage",
        })),
        "runs": runs,
    });
    write_json(&a.out, &out)
}

// ----------------------------------------------------------------------------- efficiency

const CHECK: [usize; 4] = [25, 50, 100, 200];

/// One optimisation run: every trial's observed value in order, and, on a noisy problem,
/// the true values too.
fn efficiency_run(
    problem: &Problem,
    kind: &str,
    seed: u64,
    trials: usize,
) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    let mut sampler = build_sampler(kind, seed)?;
    let mut history: Vec<FrozenTrial> = Vec::with_capacity(trials);
    let mut values = Vec::with_capacity(trials);
    let mut true_values = Vec::with_capacity(trials);
    // Its own stream: the noise must not depend on the sampler's draws.
    let mut noise = sampler::TrialRng::for_trial(seed, u64::MAX, 7);
    for i in 0..trials as u64 {
        let params = ask(
            sampler.as_mut(),
            &problem.space,
            &history,
            Direction::Minimize,
            i,
        )?;
        let truth = (problem.eval)(&params);
        let v = truth + problem.noise_sd * noise.normal();
        let trial = frozen(i, TrialState::Complete, params, Some(v), None);
        sampler.tell(&trial);
        history.push(trial);
        values.push(v);
        true_values.push(truth);
    }
    Ok((values, (problem.noise_sd > 0.0).then_some(true_values)))
}

/// The figure at each checkpoint: the best value so far or, with noise, the true value of
/// the best observed trial so far.
fn best_at(values: &[f64], true_values: Option<&[f64]>) -> serde_json::Map<String, Value> {
    CHECK
        .iter()
        .filter(|&&c| c <= values.len())
        .map(|&c| {
            let best = (0..c)
                .min_by(|&a, &b| values[a].total_cmp(&values[b]))
                .expect("c ≥ 1");
            let figure = true_values.map_or(values[best], |t| t[best]);
            (c.to_string(), json!(figure))
        })
        .collect()
}

/// Runs `tasks` on `jobs` threads; results in task order.
fn parallel<T: Sync, R: Send>(
    tasks: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks.len() {
                    break;
                }
                let r = f(&tasks[i]);
                let failed = r.is_err();
                results.lock().expect("no worker panicked")[i] = Some(r);
                if failed {
                    next.store(tasks.len(), Ordering::Relaxed);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .flatten()
        .collect()
}

fn cmd_efficiency(a: &EfficiencyArgs) -> Result<()> {
    let kinds = parse_kinds(&a.kinds)?;
    if a.trials < 1 {
        bail!("--trials must be at least 1");
    }
    let all = suite(a.dim);
    let problems: Vec<&Problem> = if a.problems == "all" {
        all.iter().collect()
    } else {
        let wanted: Vec<String> = parse_list(&a.problems, "problems")?;
        wanted
            .iter()
            .map(|w| {
                all.iter().find(|p| &p.name == w).ok_or_else(|| {
                    anyhow!(
                        "--problems: unknown problem {w:?}; known: {}",
                        all.iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let mut tasks = Vec::new();
    for p in &problems {
        for k in &kinds {
            for seed in 0..a.seeds {
                tasks.push((*p, k.as_str(), seed));
            }
        }
    }
    let t_all = Instant::now();
    let done = AtomicUsize::new(0);
    let results = parallel(&tasks, a.jobs, |&(p, kind, seed)| {
        let t0 = Instant::now();
        let trials = if kind.split('@').next() == Some("gp") {
            a.trials.min(a.gp_trials)
        } else {
            a.trials
        };
        let (values, true_values) = efficiency_run(p, kind, seed, trials)?;
        let wall = t0.elapsed().as_secs_f64();
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 50 == 0 || n == tasks.len() {
            eprintln!(
                "gaittune efficiency {n}/{} runs ({:.1}s)",
                tasks.len(),
                t_all.elapsed().as_secs_f64()
            );
        }
        let mut run = json!({
            "problem": p.name, "sampler": kind, "seed": seed, "wall_s": wall,
            "best_at": best_at(&values, true_values.as_deref()), "values": values,
        });
        if let Some(t) = true_values {
            run["true_values"] = json!(t);
        }
        Ok(run)
    })?;
    let out = json!({
        "meta": meta("efficiency", json!({
            "D": a.dim, "N": a.trials, "gp_trials": a.trials.min(a.gp_trials), "seeds": (0..a.seeds).collect::<Vec<_>>(), "kinds": kinds,
            "problems": problems.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            "direction": "minimize",
        })),
        "runs": results,
    });
    write_json(&a.out, &out)
}

// ------------------------------------------------------------------------------- problems

/// Fixed evaluation points: corners, centre, optima and seeded uniform points.
fn cmd_problems(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for d in [8usize, 20] {
        for c in problems::continuous(d) {
            let mut rng = sampler::TrialRng::from_seed(d as u64);
            let mut points = vec![
                vec![c.low; d],
                vec![c.high; d],
                vec![(c.low + c.high) / 2.0; d],
                problems::shift(d),
                vec![problems::ST_XSTAR; d],
            ];
            points.extend((0..20).map(|_| (0..d).map(|_| rng.uniform(c.low, c.high)).collect()));
            for x in points {
                rows.push(json!({"problem": c.name, "d": d, "x": x, "value": c.eval(&x)}));
            }
            rows.push(json!({"problem": c.name, "d": d, "f_star": c.f_star}));
        }
    }
    let mut rng = sampler::TrialRng::from_seed(99);
    let space = mixed_space();
    let mut mixed = Vec::new();
    let mut optimum = Params::new();
    for (i, &o) in problems::MIXED_O.iter().enumerate() {
        optimum.insert(format!("x{i}"), o);
    }
    optimum.insert("lr".into(), 1e-3);
    optimum.insert("k1".into(), 7.0);
    optimum.insert("k2".into(), -3.0);
    optimum.insert("c".into(), 0.0);
    mixed.push(optimum);
    for _ in 0..40 {
        let mut p = Params::new();
        for i in 0..4 {
            p.insert(format!("x{i}"), rng.uniform(-5.0, 5.0));
        }
        p.insert("lr".into(), 10f64.powf(rng.uniform(-5.0, 0.0)));
        p.insert("k1".into(), 1.0 + rng.below(10) as f64);
        p.insert("k2".into(), -10.0 + rng.below(21) as f64);
        p.insert("c".into(), rng.below(4) as f64);
        space
            .check_params(&p)
            .map_err(|e| anyhow!("mixed check point outside its space: {e}"))?;
        mixed.push(p);
    }
    for p in mixed {
        rows.push(json!({
            "problem": "mixed",
            "x": [p["x0"], p["x1"], p["x2"], p["x3"]],
            "lr": p["lr"], "k1": p["k1"] as i64, "k2": p["k2"] as i64,
            "c": problems::MIXED_CAT[p["c"] as usize].0,
            "value": mixed_eval(&p),
        }));
    }
    let mut rng = sampler::TrialRng::from_seed(98);
    let mut gait = vec![gait_optimum()];
    for _ in 0..60 {
        let mut p = Params::new();
        p.insert("freq".into(), rng.uniform(0.5, 3.0));
        p.insert("amp".into(), rng.uniform(0.0, 1.0));
        p.insert("duty".into(), rng.uniform(0.3, 0.8));
        p.insert("gain".into(), 10f64.powf(rng.uniform(-2.0, 2.0)));
        p.insert("lag".into(), rng.below(9) as f64);
        p.insert("gait".into(), rng.below(4) as f64);
        gait_space()
            .check_params(&p)
            .map_err(|e| anyhow!("gait check point outside its space: {e}"))?;
        gait.push(p);
    }
    for p in gait {
        rows.push(json!({
            "problem": "gait_mixed",
            "freq": p["freq"], "amp": p["amp"], "duty": p["duty"], "gain": p["gain"],
            "lag": p["lag"] as i64, "gait": problems::GAIT_CAT[p["gait"] as usize].0,
            "value": gait_eval(&p),
        }));
    }
    write_json(
        out,
        &json!({"meta": meta("problems", json!({})), "rows": rows}),
    )
}

/// `gait_mixed`'s optimum (value 0).
fn gait_optimum() -> Params {
    let mut p = Params::new();
    for (k, v) in [
        ("freq", 2.0),
        ("amp", 0.65),
        ("duty", 0.55),
        ("gain", 10f64.powf(0.5)),
        ("lag", 3.0),
        ("gait", 1.0),
    ] {
        p.insert(k.into(), v);
    }
    p
}

// ----------------------------------------------------------------------------- self-check

/// Checks the port's known optima and that every registered kind proposes valid parameters
/// on every problem (no timing): a fast guard for `cargo test --all-targets` and CI.
fn self_check() -> Result<()> {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
    for d in [8usize, 20] {
        let o = problems::shift(d);
        for c in problems::continuous(d) {
            let at = match c.name {
                "sphere" | "ellipsoid" | "rastrigin" => vec![0.0; d],
                "rosenbrock" => vec![1.0; d],
                "styblinski_tang" => vec![problems::ST_XSTAR; d],
                _ => o.clone(),
            };
            let v = c.eval(&at);
            if !close(v, c.f_star) {
                bail!(
                    "{} (d={d}) is {v} at its optimum, expected {}",
                    c.name,
                    c.f_star
                );
            }
        }
    }
    // Known values: the sphere at a corner; the ellipsoid's weights 1 … 1e6.
    let c8 = problems::continuous(8);
    if c8[0].eval(&[5.0; 8]) != 200.0 || c8[2].eval(&[0., 0., 0., 0., 0., 0., 0., 1.]) != 1e6 {
        bail!("sphere or ellipsoid lost its known values");
    }
    let mut opt = Params::new();
    for (i, &x) in problems::MIXED_O.iter().enumerate() {
        opt.insert(format!("x{i}"), x);
    }
    for (k, v) in [("lr", 1e-3), ("k1", 7.0), ("k2", -3.0), ("c", 0.0)] {
        opt.insert(k.into(), v);
    }
    mixed_space().check_params(&opt)?;
    if !close(mixed_eval(&opt), 0.0) {
        bail!("mixed is {} at its optimum, expected 0", mixed_eval(&opt));
    }
    let opt = gait_optimum();
    gait_space().check_params(&opt)?;
    if !close(gait_eval(&opt), 0.0) {
        bail!(
            "gait_mixed is {} at its optimum, expected 0",
            gait_eval(&opt)
        );
    }
    for p in suite(8) {
        for kind in sampler::KINDS {
            let (values, _) = efficiency_run(&p, kind, 1, 30)?;
            if values.iter().any(|v| !v.is_finite()) {
                bail!("{kind} on {}: a non-finite objective value", p.name);
            }
        }
    }
    println!(
        "samplers bench self-check OK (kinds: {}); the benchmark itself is bench/run.sh",
        sampler::KINDS.join(", ")
    );
    Ok(())
}

// ------------------------------------------------------------------------------------ CLI

#[derive(Parser)]
#[command(about = "gaittune's side of the sampler benchmark (driven by bench/run.sh)")]
struct Cli {
    /// Without a command: a quick self-check (also what `cargo test --all-targets` runs).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Time per trial (ask + tell in-process) at 100/500/1000/2000 trials of history.
    Overhead(OverheadArgs),
    /// Best value after 25/50/100/200 trials on the shared problem suite.
    Efficiency(EfficiencyArgs),
    /// The problem suite's values at fixed points (for the check against problems.py).
    Problems {
        /// Output JSON file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the sampler kinds this build knows.
    Kinds,
}

#[derive(Args)]
struct OverheadArgs {
    /// Output JSON file.
    #[arg(long)]
    out: PathBuf,
    /// Trials per run (checkpoints at 100/500/1000/2000 up to this).
    #[arg(long, default_value_t = 2000)]
    n_max: usize,
    /// Repetitions (seeds 0..reps) per sampler and dimension.
    #[arg(long, default_value_t = 3)]
    reps: u64,
    /// Dimensions, comma-separated.
    #[arg(long, default_value = "8,20")]
    dims: String,
    /// Sampler kinds, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    kinds: String,
    /// Trials per run for `gp` (its cost grows as n³; Optuna's GPSampler is timed to the
    /// same length).
    #[arg(long, default_value_t = 200)]
    gp_n_max: usize,
}

#[derive(Args)]
struct EfficiencyArgs {
    /// Output JSON file.
    #[arg(long)]
    out: PathBuf,
    /// Seeds 0..seeds per sampler and problem.
    #[arg(long, default_value_t = 30)]
    seeds: u64,
    /// Trials per run.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Trials per run for `gp` (a short-study sampler whose cost grows as n³; as Optuna's side).
    #[arg(long, default_value_t = 100)]
    gp_trials: usize,
    /// Dimension of the continuous problems.
    #[arg(long, default_value_t = 8)]
    dim: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Sampler kinds, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    kinds: String,
    /// Problems, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    problems: String,
}

fn main() {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let r = match &cli.command {
        None => self_check(),
        Some(Command::Overhead(a)) => cmd_overhead(a),
        Some(Command::Efficiency(a)) => cmd_efficiency(a),
        Some(Command::Problems { out }) => cmd_problems(out),
        Some(Command::Kinds) => {
            for k in sampler::KINDS {
                println!("{k}");
            }
            Ok(())
        }
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
