//! Tuning studies on the simulated robot, run by the real daemon: `gaittune run` with a
//! config derived from `configs/sim-quadruped.toml`, the simulated robot on its own
//! pseudo-terminal, SQLite storage, the trial loop, safety envelope and pruner exactly as a
//! user runs them. Nothing here re-implements the trial loop; results are read back with
//! `gaittune::export`.
//!
//! Three groups of studies, every one `--trials` trials × `--seeds` seeds (study, sampler
//! and episode seeds = the seed; the robot is the config's):
//! - `samplers`: every sampler kind, constraints on, no pruner — best value per sampler;
//! - `constraints`: TPE and CMA-ES with `[sampler] constraints = false` — compared with the
//!   `samplers` runs of the same kind: unsafe trials and best value, with and without
//!   feeding unsafe trials back as constraint violations;
//! - `pruners`: the default sampler with each pruner — robot time (episode-seconds: control
//!   steps × 20 ms) and best value, compared with the same sampler without a pruner;
//! - `warmstart` (not in the default set): sim-to-real with the `gp` sampler. "The
//!   simulator" is the config's robot; "the real robot" is the same physics with another
//!   robot seed and more noise ([`REAL_ROBOT`]). Per seed: a simulator study
//!   (`--sim-trials`, default `--trials`; simulator trials are cheap), then on the
//!   real robot a cold study and one warm started from the simulator study
//!   (`[sampler.gp] prior`). Figure: the trials the warm study needs to reach the cold
//!   study's final best.
//!
//! For every study it also replays, offline in the same physics, the best trial's and the
//! baseline's parameters (3 episode seeds each) and records their mean forward speed.
//!
//!     cargo bench --bench robot_studies -- [samplers] [constraints] [pruners] [warmstart] \
//!         [--seeds 10] [--trials 100] [--jobs 2] [--config configs/sim-quadruped.toml] \
//!         [--sampler tpe] [--kinds SPEC,...] [--off-kinds SPEC,...] [--sim-trials N] \
//!         [--out bench/out/robot.json]
//!
//! No group named = the first three. `bench/report.py` prints the tables and rank tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use gaittune::config::Config;
use gaittune::sim::physics::{self, PhysicsQuadruped, CONTROL_DT};
use serde_json::{json, Value};

#[path = "common/spec.rs"]
mod spec;
use spec::split_spec;

/// Pruners of the `pruners` group, as `kind@options` specs (see `common/spec.rs`).
const PRUNERS: &[&str] = &[
    "median@n_warmup_steps=100",
    "successive_halving",
    "hyperband",
    "wilcoxon",
];
/// Samplers of the `constraints` group.
const CONSTRAINED: &[&str] = &["tpe", "cmaes"];
/// "The real robot" of the `warmstart` group: `[sim] seed` and `noise`.
const REAL_ROBOT: (i64, f64) = (2, 1.5);
/// Episode seeds of the offline forward-speed replays.
const REPLAY_SEEDS: [u64; 3] = [101, 102, 103];

/// One study to run.
#[derive(Debug, Clone)]
struct Task {
    group: &'static str,
    sampler: String,
    constraints: bool,
    pruner: String,
    seed: u64,
    /// The robot, if not the config's: `[sim] seed` and `noise`.
    robot: Option<(i64, f64)>,
    /// `[sampler.gp] prior`: the study (in the same folder) to warm start from.
    prior: Option<String>,
    /// Its storage is kept (a later study's prior).
    keep: bool,
    /// Its trials, if not `--trials` (the warm start's simulator study: `--sim-trials`).
    trials: Option<u64>,
}

impl Task {
    /// A study on the config's robot.
    fn new(group: &'static str, sampler: &str, constraints: bool, pruner: &str, seed: u64) -> Self {
        Task {
            group,
            sampler: sampler.to_string(),
            constraints,
            pruner: pruner.to_string(),
            seed,
            robot: None,
            prior: None,
            keep: false,
            trials: None,
        }
    }

    fn label(&self) -> String {
        if self.group == "warmstart" {
            let role = match (&self.robot, &self.prior) {
                (None, _) => "sim",
                (Some(_), None) => "cold",
                (Some(_), Some(_)) => "warm",
            };
            return format!("{}-{role}", self.sampler);
        }
        let mut s = self.sampler.clone();
        if !self.constraints {
            s.push_str("-noconstraints");
        }
        if self.pruner != "none" {
            s.push_str(&format!("+{}", self.pruner));
        }
        s
    }

    fn study_name(&self) -> String {
        let clean: String = self
            .label()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{clean}-s{}", self.seed)
    }
}

struct Args {
    groups: Vec<String>,
    seeds: u64,
    trials: u64,
    jobs: usize,
    config: PathBuf,
    sampler: Option<String>,
    kinds: Option<Vec<String>>,
    off_kinds: Option<Vec<String>>,
    sim_trials: Option<u64>,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        groups: Vec::new(),
        seeds: 10,
        trials: 100,
        jobs: 2,
        config: PathBuf::from("configs/sim-quadruped.toml"),
        sampler: None,
        kinds: None,
        off_kinds: None,
        sim_trials: None,
        out: PathBuf::from("bench/out/robot.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| anyhow!("{name} needs a value (try --help)"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--seeds" => a.seeds = value("--seeds")?.parse()?,
            "--trials" => a.trials = value("--trials")?.parse()?,
            "--sim-trials" => a.sim_trials = Some(value("--sim-trials")?.parse()?),
            "--jobs" => a.jobs = value("--jobs")?.parse::<usize>()?.max(1),
            "--config" => a.config = value("--config")?.into(),
            "--sampler" => a.sampler = Some(value("--sampler")?),
            "--kinds" => a.kinds = Some(value("--kinds")?.split(',').map(str::to_string).collect()),
            "--off-kinds" => {
                a.off_kinds = Some(
                    value("--off-kinds")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--out" => a.out = value("--out")?.into(),
            "-h" | "--help" => {
                println!("{}", HELP);
                std::process::exit(0);
            }
            g @ ("samplers" | "constraints" | "pruners" | "warmstart") => {
                a.groups.push(g.to_string())
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.groups.is_empty() {
        a.groups = vec!["samplers".into(), "constraints".into(), "pruners".into()];
    }
    Ok(a)
}

const HELP: &str =
    "robot_studies [samplers] [constraints] [pruners] [warmstart] [--seeds N] [--trials N] \
[--jobs N] [--config FILE] [--sampler SPEC] [--kinds SPEC,...] [--off-kinds SPEC,...] [--sim-trials N] [--out FILE]\n\
--sim-trials: the warmstart group's simulator studies' trials (default: --trials).\n\
--sampler: the pruners group's sampler (default: the config's); --kinds: the samplers and \
constraints groups' samplers (default: every kind; constraints: tpe, cmaes); --off-kinds: the \
constraints group's samplers, if not --kinds.\n\
Runs tuning studies on the simulated robot through the real daemon (see the file's docs).";

/// The config's sampler as a spec (`common/spec.rs`): its kind with the options of its
/// `[sampler.<kind>]` table, e.g. `gp@safe_exploration=true`.
fn config_sampler_spec(base: &toml::Table, kind: &str) -> String {
    let options = base
        .get("sampler")
        .and_then(|s| s.get(kind))
        .and_then(|o| o.as_table())
        .filter(|o| !o.is_empty());
    match options {
        None => kind.to_string(),
        Some(o) => {
            let pairs: Vec<String> = o.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{kind}@{}", pairs.join(":"))
        }
    }
}

/// The `constraints` group's samplers: `--off-kinds`, else `--kinds`, else [`CONSTRAINED`].
fn constraint_kinds<'a>(a: &'a Args, constrained: &'a [String]) -> &'a [String] {
    a.off_kinds
        .as_deref()
        .or(a.kinds.as_deref())
        .unwrap_or(constrained)
}

/// The base config with this task's study, sampler and pruner.
fn task_config(base: &toml::Table, task: &Task, trials: u64, dir: &Path) -> Result<toml::Table> {
    let mut cfg = base.clone();
    let study = cfg
        .get_mut("study")
        .and_then(|v| v.as_table_mut())
        .ok_or_else(|| anyhow!("the config has no [study] table"))?;
    let db = dir.join(format!("{}.db", task.study_name()));
    study.insert("name".into(), task.study_name().into());
    study.insert("storage".into(), format!("sqlite:{}", db.display()).into());
    study.insert("trials".into(), (trials as i64).into());
    study.insert("seed".into(), (task.seed as i64).into());
    let (kind, options) = split_spec(&task.sampler)?;
    let mut sampler = toml::Table::new();
    sampler.insert("kind".into(), kind.into());
    sampler.insert("seed".into(), (task.seed as i64).into());
    sampler.insert("constraints".into(), task.constraints.into());
    if let Some(o) = options {
        sampler.insert(kind.to_string(), o.into());
    }
    if let Some(source) = &task.prior {
        let mut prior = toml::Table::new();
        let db = dir.join(format!("{source}.db"));
        prior.insert("storage".into(), format!("sqlite:{}", db.display()).into());
        prior.insert("study".into(), source.clone().into());
        let options = sampler
            .entry(kind)
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .ok_or_else(|| anyhow!("[sampler.{kind}] is not a table"))?;
        options.insert("prior".into(), prior.into());
    }
    cfg.insert("sampler".into(), sampler.into());
    if let Some((seed, noise)) = task.robot {
        let sim = cfg
            .get_mut("sim")
            .and_then(|v| v.as_table_mut())
            .ok_or_else(|| anyhow!("the config has no [sim] table"))?;
        sim.insert("seed".into(), seed.into());
        sim.insert("noise".into(), noise.into());
    }
    let (kind, options) = split_spec(&task.pruner)?;
    let mut pruner = toml::Table::new();
    pruner.insert("kind".into(), kind.into());
    if let Some(o) = options {
        pruner.insert(kind.to_string(), o.into());
    }
    cfg.insert("pruner".into(), pruner.into());
    Ok(cfg)
}

/// Mean forward speed (m/s) of a parameter set over the replay seeds, offline.
fn forward_speed(model: &PhysicsQuadruped, params: &Value, steps: u32) -> Result<f64> {
    let map = params
        .as_object()
        .ok_or_else(|| anyhow!("params are not an object"))?;
    let values = physics::values_from_map(&physics::PARAMS, map)?;
    let speeds: Vec<f64> = REPLAY_SEEDS
        .iter()
        .map(|&seed| physics::replay(model, &values, seed, steps).mean_forward_speed() as f64)
        .collect();
    Ok(speeds.iter().sum::<f64>() / speeds.len() as f64)
}

fn run_task(
    exe: &Path,
    base: &toml::Table,
    config: &Config,
    task: &Task,
    trials: u64,
    dir: &Path,
) -> Result<Value> {
    let cfg = task_config(base, task, trials, dir)?;
    let cfg_path = dir.join(format!("{}.toml", task.study_name()));
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let log_path = dir.join(format!("{}.log", task.study_name()));
    let log = std::fs::File::create(&log_path)?;
    let t0 = Instant::now();
    let status = Command::new(exe)
        .arg("run")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        bail!(
            "study {} failed ({status}); last lines of its log:\n{}",
            task.study_name(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let db = cfg["study"]["storage"]
        .as_str()
        .expect("set above")
        .to_string();
    let export = gaittune::export::export_study(
        &db,
        &task.study_name(),
        gaittune::export::ExportFormat::Json,
    )?;
    let trials_json: Vec<Value> = serde_json::from_str(&export)?;
    let maximize = config.study.direction == gaittune::trial::Direction::Maximize;
    let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
    let mut best: Option<&Value> = None;
    let (mut unsafe_n, mut poor_n, mut complete_n, mut steps) = (0u64, 0u64, 0u64, 0u64);
    let mut values = Vec::new();
    for t in &trials_json {
        for e in t["episodes"].as_array().into_iter().flatten() {
            steps += e["steps"].as_u64().unwrap_or(0);
        }
        match (t["state"].as_str(), t["prune_reason"].as_str()) {
            (Some("COMPLETE"), _) => {
                complete_n += 1;
                let v = t["value"].as_f64().unwrap_or(f64::NAN);
                values.push(json!(v));
                if best.map_or(true, |b| better(v, b["value"].as_f64().unwrap_or(f64::NAN))) {
                    best = Some(t);
                }
            }
            (Some("PRUNED"), Some(r)) if r.starts_with("unsafe") => {
                unsafe_n += 1;
                values.push(Value::Null);
            }
            (Some("PRUNED"), _) => {
                poor_n += 1;
                values.push(Value::Null);
            }
            _ => values.push(Value::Null),
        }
    }
    let baseline = trials_json
        .iter()
        .find(|t| t["attrs"]["baseline"].as_bool() == Some(true));
    let (best_speed, baseline_speed) = if config.sim.model == "physics" {
        let (robot_seed, noise) = task
            .robot
            .map_or((config.sim.seed, config.sim.noise), |(s, n)| (s as u64, n));
        let model = PhysicsQuadruped::new(robot_seed, noise, false);
        let steps = config.episode.max_steps;
        (
            best.map(|b| forward_speed(&model, &b["params"], steps))
                .transpose()?,
            baseline
                .map(|b| forward_speed(&model, &b["params"], steps))
                .transpose()?,
        )
    } else {
        (None, None)
    };
    if !task.keep {
        let _ = std::fs::remove_file(dir.join(format!("{}.db", task.study_name())));
    }
    Ok(json!({
        "group": task.group,
        "label": task.label(),
        "sampler": task.sampler,
        "constraints": task.constraints,
        "pruner": task.pruner,
        "seed": task.seed,
        "robot": task.robot.map(|(seed, noise)| json!({"sim_seed": seed, "noise": noise})),
        "prior": task.prior,
        "trials": trials_json.len(),
        "complete": complete_n,
        "unsafe": unsafe_n,
        "pruned_poor": poor_n,
        "episode_steps": steps,
        "episode_seconds": steps as f64 * CONTROL_DT as f64,
        "best_value": best.map(|b| b["value"].clone()),
        "best_trial": best.map(|b| b["number"].clone()),
        "best_params": best.map(|b| b["params"].clone()),
        "best_forward_speed": best_speed,
        "baseline_value": baseline.map(|b| b["value"].clone()),
        "baseline_forward_speed": baseline_speed,
        "values": values,
        "wall_s": wall,
    }))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    // GAITTUNE_EXE: a copy of the binary to run instead (keeps a long run immune to rebuilds).
    let exe = std::env::var_os("GAITTUNE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gaittune")));
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let base: toml::Table = text.parse()?;
    let config = Config::parse(&text, &a.config)?;
    let default_sampler = a
        .sampler
        .clone()
        .unwrap_or_else(|| config_sampler_spec(&base, &config.sampler.kind));
    let all_kinds: Vec<String> = gaittune::sampler::KINDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    let constrained: Vec<String> = CONSTRAINED.iter().map(|k| k.to_string()).collect();
    let mut tasks = Vec::new();
    for seed in 0..a.seeds {
        for g in &a.groups {
            let mut add = |group, sampler: &str, constraints, pruner: &str| {
                tasks.push(Task::new(group, sampler, constraints, pruner, seed))
            };
            match g.as_str() {
                "samplers" => {
                    for k in a.kinds.as_deref().unwrap_or(&all_kinds) {
                        add("samplers", k, true, "none");
                    }
                }
                "constraints" => {
                    for k in constraint_kinds(&a, &constrained) {
                        add("constraints", k, false, "none");
                    }
                }
                "pruners" => {
                    for p in PRUNERS {
                        add("pruners", &default_sampler, true, p);
                    }
                }
                "warmstart" => {
                    let sim = Task {
                        keep: true,
                        trials: a.sim_trials,
                        ..Task::new("warmstart", "gp", true, "none", seed)
                    };
                    let cold = Task {
                        robot: Some(REAL_ROBOT),
                        ..Task::new("warmstart", "gp", true, "none", seed)
                    };
                    let warm = Task {
                        prior: Some(sim.study_name()),
                        ..cold.clone()
                    };
                    tasks.extend([sim, cold, warm]);
                }
                _ => unreachable!("checked in parse_args"),
            }
        }
    }
    // The comparison runs the other groups need, if their own group is not running.
    let has = |tasks: &[Task], s: &str, p: &str, seed| {
        tasks.iter().any(|t| {
            // A warm-start study runs on another robot (or keeps its storage): no baseline.
            t.group != "warmstart"
                && t.sampler == s
                && t.constraints
                && t.pruner == p
                && t.seed == seed
        })
    };
    for seed in 0..a.seeds {
        let mut needed: Vec<String> = Vec::new();
        if a.groups.iter().any(|g| g == "constraints") {
            needed.extend(constraint_kinds(&a, &constrained).iter().cloned());
        }
        if a.groups.iter().any(|g| g == "pruners") {
            needed.push(default_sampler.clone());
        }
        for s in needed {
            if !has(&tasks, &s, "none", seed) {
                tasks.push(Task::new("samplers", &s, true, "none", seed));
            }
        }
    }
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    eprintln!(
        "robot studies: {} studies of {} trials ({} seeds; groups {}), {} at a time, {}",
        tasks.len(),
        a.trials,
        a.seeds,
        a.groups.join(", "),
        a.jobs,
        a.config.display()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let finished: Mutex<std::collections::HashSet<String>> = Mutex::default();
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..a.jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= tasks.len() || failure.lock().unwrap().is_some() {
                    return;
                }
                let task = &tasks[i];
                // A warm start waits for its source study (listed, so taken, before it).
                while let Some(source) = &task.prior {
                    if finished.lock().unwrap().contains(source) {
                        break;
                    }
                    if failure.lock().unwrap().is_some() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                let trials = task.trials.unwrap_or(a.trials);
                match run_task(&exe, &base, &config, task, trials, dir.path()) {
                    Ok(r) => {
                        finished.lock().unwrap().insert(task.study_name());
                        let mut all = results.lock().unwrap();
                        all.push(r.clone());
                        eprintln!(
                            "[{:>3}/{}] {:<40} best {:>9.3} unsafe {:>3} poor {:>3} robot {:>6.0} s  ({:.1} s, {:.0} s total)",
                            all.len(),
                            tasks.len(),
                            task.study_name(),
                            r["best_value"].as_f64().unwrap_or(f64::NAN),
                            r["unsafe"],
                            r["pruned_poor"],
                            r["episode_seconds"].as_f64().unwrap_or(0.0),
                            r["wall_s"].as_f64().unwrap_or(0.0),
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        *failure.lock().unwrap() = Some(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let out = json!({
        "meta": {
            "config": a.config.display().to_string(),
            "sim_model": config.sim.model,
            "sim_seed": config.sim.seed,
            "noise": config.sim.noise,
            "trials": a.trials,
            "seeds": (0..a.seeds).collect::<Vec<_>>(),
            "groups": a.groups,
            "default_sampler": default_sampler,
            "direction": config.study.direction,
            "episodes_per_trial": config.study.episodes_per_trial,
            "max_steps": config.episode.max_steps,
            "control_dt_s": CONTROL_DT,
            "replay_seeds": REPLAY_SEEDS,
            "measures": "each study is `gaittune run` (the real daemon, simulated robot over a \
                         pty, SQLite) on a config derived from the base config; values read back \
                         with `gaittune export`; episode_seconds = control steps run × 20 ms; \
                         forward speeds are offline replays (3 seeds) of the best and the \
                         baseline trial's parameters in the same physics",
        },
        "runs": results.into_inner().unwrap(),
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&out)?)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
