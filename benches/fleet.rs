//! Many robots, one study: what more workers buy, on each storage.
//!
//! Part 1, `throughput`: the same study (the synthetic robot paced at `--step-ms` per control
//! step, so that the robot's time dominates as on hardware; TPE; `--trials` trials) run by
//! `gaittune run --workers N` (the real release daemon, N simulated robots) for N in
//! `--workers` on each storage (`sqlite:` in a temporary directory, and PostgreSQL at
//! `--postgres URL` when it answers), `--seeds` seeds each: finished trials per minute of
//! wall time, and the best value after the study's trials, with its ratio to one worker.
//!
//! Part 2, `storage`: the cost of the storage per trial, in-process through the library
//! (`Study` on each storage, TPE, `--cost-trials` trials): ask + the intermediate values of a
//! 200-step episode reported every 10 steps in one batch + an episode record + tell, against
//! the sampler's own time per ask on the same history (measured on `memory:` when the
//! build has it, else by timing `Sampler::sample` directly).
//!
//! ```text
//! cargo bench --bench fleet -- [throughput] [storage] [--workers 1,2,4] [--seeds 3] \
//!     [--trials 40] [--step-ms 5] [--postgres postgresql://postgres@127.0.0.1:5432/test] \
//!     [--cost-trials 200] [--out bench/out/fleet.json]
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gaittune::sampler::{SampleRequest, Sampler};
use gaittune::space::SearchSpace;
use gaittune::study::Study;
use gaittune::trial::{Direction, EpisodeRecord};
use serde_json::{json, Value};

struct Args {
    parts: Vec<String>,
    workers: Vec<u32>,
    seeds: u64,
    trials: u64,
    step_ms: f64,
    postgres: String,
    cost_trials: u64,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        parts: Vec::new(),
        workers: vec![1, 2, 4],
        seeds: 3,
        trials: 40,
        step_ms: 5.0,
        postgres: std::env::var("GAITTUNE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into()),
        cost_trials: 200,
        out: PathBuf::from("bench/out/fleet.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("an option needs a value (try --help)");
        match arg.as_str() {
            "--bench" => {}
            "--help" | "-h" => {
                println!("fleet [throughput] [storage] [--workers 1,2,4] [--seeds 3] [--trials 40] [--step-ms 5] [--postgres URL] [--cost-trials 200] [--out bench/out/fleet.json]");
                std::process::exit(0);
            }
            "throughput" | "storage" => a.parts.push(arg),
            "--workers" => {
                a.workers = value()?
                    .split(',')
                    .map(|w| w.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--workers takes a list such as 1,2,4")?
            }
            "--seeds" => a.seeds = value()?.parse()?,
            "--trials" => a.trials = value()?.parse()?,
            "--step-ms" => a.step_ms = value()?.parse()?,
            "--postgres" => a.postgres = value()?,
            "--cost-trials" => a.cost_trials = value()?.parse()?,
            "--out" => a.out = value()?.into(),
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.parts.is_empty() {
        a.parts = vec!["throughput".into(), "storage".into()];
    }
    Ok(a)
}

/// Whether a storage URL answers (a PostgreSQL server may be missing).
fn reachable(url: &str) -> bool {
    gaittune::storage::open(url).is_ok()
}

const SPACE: &str = r#"
[space.freq_hz]
type = "float"
low = 0.5
high = 3.0

[space.stride_amp]
type = "float"
low = 0.05
high = 0.8

[space.duty_factor]
type = "float"
low = 0.4
high = 0.8

[space.kp]
type = "float"
low = 10.0
high = 60.0
log = true

[space.gait]
type = "categorical"
choices = [0, 1, 2]
"#;

fn study_config(storage: &str, name: &str, trials: u64, seed: u64, step_ms: f64) -> String {
    format!(
        r#"[study]
name = "{name}"
storage = "{storage}"
direction = "maximize"
trials = {trials}
seed = {seed}

[sampler]
kind = "tpe"

[robot]
device = "sim"

[sim]
seed = {seed}
step_delay_ms = {step_ms}
reset_delay_ms = 5.0

[episode]
max_steps = 100
report_every = 10

[safety]
max_roll_deg = 25.0
max_pitch_deg = 25.0
min_body_height_m = 0.15
max_joint_temp_c = 70.0
{SPACE}"#
    )
}

/// One `gaittune run --workers N`: (finished trials, wall seconds, best value).
fn run_once(
    exe: &PathBuf,
    dir: &std::path::Path,
    storage: &str,
    name: &str,
    workers: u32,
    a: &Args,
    seed: u64,
) -> Result<(u64, f64, Option<f64>)> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        study_config(storage, name, a.trials, seed, a.step_ms),
    )?;
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("run")
        .arg(&config)
        .args(["--workers", &workers.to_string()])
        .current_dir(dir)
        .output()
        .context("running gaittune")?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "gaittune run --workers {workers} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = gaittune::export::export_study(storage, name, gaittune::export::ExportFormat::Json)?;
    let trials: Vec<Value> = serde_json::from_str(&text)?;
    let finished = trials
        .iter()
        .filter(|t| matches!(t["state"].as_str(), Some("COMPLETE" | "PRUNED" | "FAIL")))
        .count() as u64;
    let best = trials
        .iter()
        .filter(|t| t["state"] == "COMPLETE")
        .filter_map(|t| t["value"].as_f64())
        .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))));
    Ok((finished, wall, best))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn throughput(a: &Args, exe: &PathBuf, storages: &[(String, String)]) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let run_id = std::process::id();
    let mut rows = Vec::new();
    println!(
        "\n## throughput: {} trials, robot paced at {} ms per step, {} seeds",
        a.trials, a.step_ms, a.seeds
    );
    println!("| storage | workers | trials/min (median) | x one worker | best value (median) |");
    println!("|---|---|---|---|---|");
    for (label, url) in storages {
        let mut one = None;
        for &w in &a.workers {
            let mut rates = Vec::new();
            let mut bests = Vec::new();
            for seed in 0..a.seeds {
                let url = if url == "sqlite" {
                    format!(
                        "sqlite:{}",
                        dir.path().join(format!("w{w}s{seed}.db")).display()
                    )
                } else {
                    url.clone()
                };
                let name = format!("fleet-{run_id}-w{w}-s{seed}");
                eprintln!("fleet bench: {label}, {w} workers, seed {seed}");
                let (n, wall, best) = run_once(exe, dir.path(), &url, &name, w, a, seed)?;
                if n != a.trials {
                    bail!(
                        "{label}, {w} workers: {n} trials finished, not {}",
                        a.trials
                    );
                }
                rates.push(n as f64 / wall * 60.0);
                bests.extend(best);
                if url.starts_with("postgres") {
                    let _ = gaittune::admin::delete(&url, &name);
                }
            }
            let rate = median(rates.clone());
            let one_rate = *one.get_or_insert(rate);
            let best = median(bests.clone());
            println!(
                "| {label} | {w} | {rate:.1} | {:.2} | {best:.2} |",
                rate / one_rate
            );
            rows.push(json!({"storage": label, "workers": w, "trials_per_min": rates, "best": bests,
                             "median_trials_per_min": rate, "speedup": rate / one_rate, "median_best": best}));
        }
    }
    Ok(Value::Array(rows))
}

fn space() -> Result<SearchSpace> {
    let table: toml::Table = SPACE.parse()?;
    Ok(SearchSpace::from_toml(
        table["space"].as_table().context("space")?,
    )?)
}

/// Mean ms per trial of ask + one batch of 20 intermediate values + an episode + tell.
fn storage_cost(url: &str, name: &str, trials: u64) -> Result<f64> {
    let mut study = Study::create_or_load(
        gaittune::storage::open(url)?,
        name,
        Direction::Maximize,
        space()?,
        gaittune::sampler::build("tpe", 1, None).map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    let started = Instant::now();
    for _ in 0..trials {
        let t = study.ask()?;
        let values: Vec<(u64, f64)> = (1..=20)
            .map(|k| (k * 10, t.params["kp"] * k as f64))
            .collect();
        study.report_many(t.number, &values)?;
        study.add_episode(
            t.number,
            EpisodeRecord {
                episode: 0,
                episode_return: t.params["kp"],
                steps: 200,
                status: "Completed".into(),
                seed: None,
            },
        )?;
        study.tell(t.number, t.params["kp"])?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e3 / trials as f64)
}

/// Mean ms per ask of the sampler alone on the same growing history.
fn sampler_cost(trials: u64) -> Result<f64> {
    let space = space()?;
    let mut sampler: Box<dyn Sampler> =
        gaittune::sampler::build("tpe", 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut history = Vec::new();
    let mut spent = Duration::ZERO;
    for n in 0..trials {
        let t0 = Instant::now();
        let params = sampler.sample(&SampleRequest {
            space: &space,
            history: &history,
            direction: Direction::Maximize,
            trial_number: n,
        });
        spent += t0.elapsed();
        let value = params["kp"];
        let t = gaittune::trial::FrozenTrial::new(
            n,
            gaittune::trial::TrialState::Complete,
            params,
            Some(value),
        );
        sampler.tell(&t);
        history.push(t);
    }
    Ok(spent.as_secs_f64() * 1e3 / trials as f64)
}

fn storage_part(a: &Args, storages: &[(String, String)]) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let sampler = sampler_cost(a.cost_trials)?;
    println!("\n## storage cost per trial ({} trials of TPE; ask + 20 intermediate values in one batch + an episode + tell)", a.cost_trials);
    println!("| storage | ms per trial | sampler's own ms per ask | storage's share |");
    println!("|---|---|---|---|");
    let mut rows = Vec::new();
    let mut all: Vec<(String, String)> = storages.to_vec();
    if reachable("memory:") {
        all.insert(0, ("memory".into(), "memory:".into()));
    }
    for (label, url) in &all {
        let url = if url == "sqlite" {
            format!("sqlite:{}", dir.path().join("cost.db").display())
        } else {
            url.clone()
        };
        let name = format!("cost-{}", std::process::id());
        let ms = storage_cost(&url, &name, a.cost_trials)?;
        if url.starts_with("postgres") {
            let _ = gaittune::admin::delete(&url, &name);
        }
        println!(
            "| {label} | {ms:.3} | {sampler:.3} | {:.0} % |",
            (ms - sampler).max(0.0) / ms * 100.0
        );
        rows.push(json!({"storage": label, "ms_per_trial": ms, "sampler_ms_per_ask": sampler}));
    }
    Ok(Value::Array(rows))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let exe = std::env::var_os("GAITTUNE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gaittune")));
    let mut storages = vec![("sqlite".to_string(), "sqlite".to_string())];
    if reachable(&a.postgres) {
        storages.push(("postgresql".into(), a.postgres.clone()));
    } else {
        println!(
            "PostgreSQL at {} does not answer: its rows are skipped",
            a.postgres
        );
    }
    let mut out = json!({});
    if a.parts.iter().any(|p| p == "throughput") {
        out["throughput"] = throughput(&a, &exe, &storages)?;
    }
    if a.parts.iter().any(|p| p == "storage") {
        out["storage"] = storage_part(&a, &storages)?;
    }
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&out)?)?;
    println!("\nwrote {}", a.out.display());
    Ok(())
}
