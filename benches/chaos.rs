//! The chaos benchmark: does the real daemon finish a study over a bad line with a robot that
//! reboots, what does it store, and what does that cost?
//!
//! Two runs of the same study (`[study] trials` trials of the synthetic robot, `--steps`
//! steps per episode at 1 ms per step, TPE, the same seeds), each the release `gaittune run`
//! against `gaittune sim` behind `gaittune chaos`: first without faults, then with them
//! (default `--fault corrupt:p=1e-3 --fault drop:p=0.01 --fault reboot:every-starts=20`:
//! one bit in a thousand flipped each way, one frame in a hundred lost, a robot reboot every
//! 20 trials). A run that exceeds its time bound is killed and reported as a hang. After
//! each run every stored episode is checked against the robot's event log (the check of
//! `tests/chaos.rs`). Printed and written to `--out` (JSON):
//! - faults injected by kind (the proxy's log);
//! - the study's outcome: trials complete, pruned (unsafe / poor), failed, re-queued;
//! - from the daemon's incident records (trial attribute `link_incidents`: objects `{kind,
//!   episode, recovery_ms, robot_ms_lost, detail}`; absent = none): recovery time per
//!   incident kind (p50 / max, ms) and the robot time they lost;
//! - robot time (control steps the robot ran × 20 ms, from its event log), the part of it
//!   not in the stored study, and both runs' wall time and their ratio.
//!
//! ```text
//! cargo bench --bench chaos -- [--trials 100] [--steps 200] [--seed 0] [--fault SPEC]... \
//!     [--timeout-s S] [--out bench/out/chaos.json]
//! ```
//!
//! Exits with an error when a run hangs or fails or its stored study is not what the robot
//! ran (after printing and writing everything).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

#[path = "../tests/common/robot_check.rs"]
#[allow(dead_code)]
mod robot_check;

/// Faults of the faulty run unless `--fault` is given.
const DEFAULT_FAULTS: &[&str] = &["corrupt:p=1e-3", "drop:p=0.01", "reboot:every-starts=20"];
/// The faulty run's time bound is this many times the clean run's wall time...
const HANG_FACTOR: f64 = 10.0;
/// ...and at least this long; the clean run's bound is fixed.
const MIN_BOUND: Duration = Duration::from_secs(300);
/// Control period of the simulated robot.
const STEP_S: f64 = gaittune::sim::STEP_PERIOD_US as f64 / 1e6;

struct Args {
    trials: u64,
    steps: u32,
    seed: u64,
    faults: Vec<String>,
    timeout: Option<Duration>,
    out: PathBuf,
}

const HELP: &str = "chaos [--trials 100] [--steps 200] [--seed 0] [--fault SPEC]... \
[--timeout-s S] [--out bench/out/chaos.json]\n\
A study of the simulated robot through `gaittune chaos`, without faults and then with them \
(default: corrupt:p=1e-3, drop:p=0.01, reboot:every-starts=20), run by the real daemon; \
checks what it stored against the robot's event log (see the file's docs).";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        trials: 100,
        steps: 200,
        seed: 0,
        faults: Vec::new(),
        timeout: None,
        out: PathBuf::from("bench/out/chaos.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| anyhow!("{name} needs a value (try --help)"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--trials" => a.trials = value("--trials")?.parse()?,
            "--steps" => a.steps = value("--steps")?.parse()?,
            "--seed" => a.seed = value("--seed")?.parse()?,
            "--fault" => a.faults.push(value("--fault")?),
            "--timeout-s" => {
                a.timeout = Some(Duration::from_secs_f64(value("--timeout-s")?.parse()?))
            }
            "--out" => a.out = value("--out")?.into(),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.faults.is_empty() {
        a.faults = DEFAULT_FAULTS.iter().map(|s| s.to_string()).collect();
    }
    Ok(a)
}

/// The study's config: the synthetic robot's envelope (as the tests'), a space wide enough to
/// reach its unsafe region (strides past 1.6 m/s roll it over: safety stops under faults),
/// TPE, and a median pruner after a warmup (Aborts under faults).
fn config_text(a: &Args, storage: &str, device: &str) -> String {
    format!(
        r#"[study]
name = "chaos"
storage = "{storage}"
direction = "maximize"
trials = {trials}
seed = {seed}

[sampler]
kind = "tpe"

[pruner]
kind = "median"

[pruner.median]
n_startup_trials = 5
n_warmup_steps = 50

[robot]
device = "{device}"

[episode]
max_steps = {steps}
report_every = 10

[safety]
max_roll_deg = 25.0
max_pitch_deg = 25.0
min_body_height_m = 0.15
max_joint_temp_c = 70.0

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
"#,
        trials = a.trials,
        seed = a.seed,
        steps = a.steps,
    )
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// SIGTERM, then SIGKILL after 5 s.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the proxy and its robot; returns it and the pty the daemon opens.
fn start_proxy(exe: &Path, a: &Args, faults: &[String], dir: &Path) -> Result<(Child, String)> {
    let mut cmd = Command::new(exe);
    cmd.arg("chaos")
        .args(["--seed", &a.seed.to_string(), "--exit-with-parent", "--log"])
        .arg(dir.join("chaos.jsonl"));
    for f in faults {
        cmd.args(["--fault", f]);
    }
    cmd.arg("--")
        .arg(exe)
        .args([
            "sim",
            "--seed",
            "1",
            "--step-delay-ms",
            "1",
            "--reset-delay-ms",
            "1",
        ])
        .arg("--event-log")
        .arg(dir.join("events.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("chaos.err"))?);
    let mut child = cmd.spawn().context("starting gaittune chaos")?;
    let stdout = child.stdout.take().context("chaos stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) if line.starts_with("PTY ") => {
            Ok((child, line["PTY ".len()..].trim().to_string()))
        }
        other => {
            terminate(&mut child);
            bail!("gaittune chaos did not print its pty (got {other:?})")
        }
    }
}

/// How a daemon run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Finished,
    Failed(Option<i32>),
    Hang,
}

/// One study through the proxy: runs it, checks it, returns its figures.
fn run_study(
    exe: &Path,
    a: &Args,
    label: &str,
    faults: &[String],
    bound: Duration,
) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let (mut proxy, device) = start_proxy(exe, a, faults, dir)?;
    let storage = format!("sqlite:{}", dir.join("study.db").display());
    let config = dir.join("chaos.toml");
    std::fs::write(&config, config_text(a, &storage, &device))?;
    let log_path = dir.join("run.log");
    let log = std::fs::File::create(&log_path)?;
    eprintln!(
        "chaos bench: {label} run: {} trials x {} steps, faults [{}], bound {:.0} s",
        a.trials,
        a.steps,
        faults.join(", "),
        bound.as_secs_f64()
    );
    let t0 = Instant::now();
    let mut daemon = Command::new(exe)
        .arg("run")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting gaittune run")?;
    let ending = loop {
        if let Some(status) = daemon.try_wait()? {
            break if status.success() {
                Ending::Finished
            } else {
                Ending::Failed(status.code())
            };
        }
        if t0.elapsed() > bound {
            terminate(&mut daemon);
            break Ending::Hang;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = t0.elapsed().as_secs_f64();
    let _ = daemon.wait();
    terminate(&mut proxy);
    let log_tail: Vec<String> = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .rev()
        .take(8)
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let trials: Vec<Value> = match gaittune::export::export_study(
        &storage,
        "chaos",
        gaittune::export::ExportFormat::Json,
    ) {
        Ok(text) => serde_json::from_str(&text)?,
        Err(e) => {
            eprintln!("chaos bench: no study to export ({e})");
            Vec::new()
        }
    };
    let events = read_jsonl(&dir.join("events.jsonl"));
    let injected = read_jsonl(&dir.join("chaos.jsonl"));
    let mismatches = robot_check::study_mismatches(&trials, &events);
    Ok(json!({
        "label": label,
        "faults": faults,
        "ending": match ending {
            Ending::Finished => "finished".to_string(),
            Ending::Failed(code) => format!("failed (exit {code:?})"),
            Ending::Hang => format!("hang (killed after {wall:.0} s)"),
        },
        "ok": ending == Ending::Finished && mismatches.is_empty(),
        "wall_s": wall,
        "faults_injected": count_by(&injected, "fault"),
        "outcome": outcome(&trials),
        "incidents": incidents(&trials),
        "robot": robot_time(&trials, &events),
        "mismatch_count": mismatches.len(),
        "mismatches": mismatches.iter().take(50).collect::<Vec<_>>(),
        "log_tail": log_tail,
    }))
}

fn count_by(items: &[Value], key: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for i in items {
        *counts
            .entry(i[key].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    counts
}

fn incidents_of(trial: &Value) -> Vec<Value> {
    trial["attrs"]["link_incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Trials by outcome; `requeued` counts trials re-queued during the run (still WAITING, or
/// with a `trial_rerun` incident).
fn outcome(trials: &[Value]) -> Value {
    let state = |s: &str| trials.iter().filter(|t| t["state"] == s).count();
    let pruned_unsafe = trials
        .iter()
        .filter(|t| {
            t["state"] == "PRUNED"
                && t["prune_reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("unsafe"))
        })
        .count();
    let requeued = trials
        .iter()
        .filter(|t| {
            t["state"] == "WAITING" || incidents_of(t).iter().any(|i| i["kind"] == "trial_rerun")
        })
        .count();
    json!({
        "trials": trials.len(),
        "complete": state("COMPLETE"),
        "pruned": state("PRUNED"),
        "pruned_unsafe": pruned_unsafe,
        "pruned_poor": state("PRUNED") - pruned_unsafe,
        "failed": state("FAIL"),
        "running": state("RUNNING"),
        "requeued": requeued,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The daemon's incident records by kind: count, recovery time p50 / max, robot time lost.
fn incidents(trials: &[Value]) -> Value {
    let mut by_kind: BTreeMap<String, (Vec<f64>, f64)> = BTreeMap::new();
    for i in trials.iter().flat_map(incidents_of) {
        let entry = by_kind
            .entry(i["kind"].as_str().unwrap_or("?").to_string())
            .or_default();
        entry.0.push(i["recovery_ms"].as_f64().unwrap_or(f64::NAN));
        entry.1 += i["robot_ms_lost"].as_f64().unwrap_or(0.0);
    }
    let mut out = serde_json::Map::new();
    for (kind, (mut ms, lost)) in by_kind {
        ms.sort_by(f64::total_cmp);
        out.insert(
            kind,
            json!({
                "n": ms.len(),
                "recovery_ms_p50": percentile(&ms, 0.5),
                "recovery_ms_max": ms.last().copied().unwrap_or(f64::NAN),
                "robot_s_lost": lost / 1e3,
            }),
        );
    }
    Value::Object(out)
}

/// Robot time: every control step the robot ran (its episode ends and the episodes its
/// reboots cut short), the part of it stored in the study, and the rest.
fn robot_time(trials: &[Value], events: &[Value]) -> Value {
    let steps_of = |name: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .filter_map(|e| e["step"].as_u64())
            .sum()
    };
    let ran = (steps_of("episode_end") + steps_of("reboot")) as f64 * STEP_S;
    let stored = trials
        .iter()
        .flat_map(|t| t["episodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["steps"].as_u64())
        .sum::<u64>() as f64
        * STEP_S;
    let lost_incidents: f64 = trials
        .iter()
        .flat_map(incidents_of)
        .filter_map(|i| i["robot_ms_lost"].as_f64())
        .fold(0.0, |a, b| a + b)
        / 1e3;
    json!({
        "ran_s": ran,
        "stored_s": stored,
        "not_stored_s": ran - stored,
        "lost_by_incidents_s": lost_incidents,
        "reboots": events.iter().filter(|e| e["event"] == "reboot").count(),
    })
}

fn print_run(r: &Value) {
    println!(
        "\n## {} run: {} in {:.1} s",
        r["label"].as_str().unwrap_or("?"),
        r["ending"].as_str().unwrap_or("?"),
        r["wall_s"].as_f64().unwrap_or(f64::NAN)
    );
    let injected = r["faults_injected"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if !injected.is_empty() {
        let parts: Vec<String> = injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("faults injected: {}", parts.join(", "));
    }
    let o = &r["outcome"];
    println!(
        "trials: {} complete, {} pruned ({} unsafe, {} poor), {} failed, {} requeued, {} running (of {})",
        o["complete"], o["pruned"], o["pruned_unsafe"], o["pruned_poor"], o["failed"],
        o["requeued"], o["running"], o["trials"]
    );
    let rt = &r["robot"];
    let ran = rt["ran_s"].as_f64().unwrap_or(0.0);
    let pct = |s: f64| if ran > 0.0 { 100.0 * s / ran } else { 0.0 };
    let not_stored = rt["not_stored_s"].as_f64().unwrap_or(0.0);
    let by_incidents = rt["lost_by_incidents_s"].as_f64().unwrap_or(0.0);
    println!(
        "robot time: {ran:.1} s ran ({} reboots); not in the study: {not_stored:.1} s ({:.1} %); lost by the daemon's incident records: {by_incidents:.1} s ({:.1} %)",
        rt["reboots"],
        pct(not_stored),
        pct(by_incidents)
    );
    let inc = r["incidents"].as_object().cloned().unwrap_or_default();
    if inc.is_empty() {
        println!("incidents: none recorded (no link_incidents attribute)");
    } else {
        println!(
            "| incident | n | recovery p50 ms | recovery max ms | robot s lost | % of robot time |"
        );
        println!("|---|---|---|---|---|---|");
        for (kind, v) in &inc {
            let lost = v["robot_s_lost"].as_f64().unwrap_or(0.0);
            println!(
                "| {kind} | {} | {:.1} | {:.1} | {lost:.2} | {:.2} |",
                v["n"],
                v["recovery_ms_p50"].as_f64().unwrap_or(f64::NAN),
                v["recovery_ms_max"].as_f64().unwrap_or(f64::NAN),
                pct(lost)
            );
        }
    }
    let n = r["mismatch_count"].as_u64().unwrap_or(0);
    if n == 0 {
        println!("stored study vs the robot's event log: every record matches");
    } else {
        println!("stored study vs the robot's event log: {n} MISMATCHES, e.g.:");
        for m in r["mismatches"].as_array().into_iter().flatten().take(5) {
            println!("  {}", m.as_str().unwrap_or("?"));
        }
    }
    if r["ok"] != true {
        println!("daemon log, last lines:");
        for l in r["log_tail"].as_array().into_iter().flatten() {
            println!("  {}", l.as_str().unwrap_or(""));
        }
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    // GAITTUNE_EXE: a copy of the binary to run instead (keeps a long run immune to rebuilds).
    let exe = std::env::var_os("GAITTUNE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gaittune")));
    let clean_bound = a.timeout.unwrap_or(Duration::from_secs(900));
    let clean = run_study(&exe, &a, "clean", &[], clean_bound)?;
    print_run(&clean);
    let clean_wall = clean["wall_s"].as_f64().unwrap_or(0.0);
    let bound = a
        .timeout
        .unwrap_or_else(|| Duration::from_secs_f64(clean_wall * HANG_FACTOR).max(MIN_BOUND));
    let faulty = run_study(&exe, &a, "faults", &a.faults, bound)?;
    print_run(&faulty);
    let ratio = faulty["wall_s"].as_f64().unwrap_or(f64::NAN) / clean_wall;
    println!(
        "\nwall time: {clean_wall:.1} s clean, {:.1} s with faults: {ratio:.2}x",
        faulty["wall_s"].as_f64().unwrap_or(f64::NAN)
    );
    let doc = json!({
        "meta": {
            "trials": a.trials, "steps": a.steps, "seed": a.seed, "faults": a.faults,
            "sim": "synthetic, --step-delay-ms 1 --reset-delay-ms 1", "sampler": "tpe",
            "exe": exe.display().to_string(), "bound_s": bound.as_secs_f64(),
        },
        "runs": [clean, faulty],
        "wall_ratio": ratio,
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    let failed: Vec<&str> = doc["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["ok"] != true)
        .map(|r| r["label"].as_str().unwrap_or("?"))
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "chaos bench: the {} run did not finish with a study that matches the robot (see above)",
            failed.join(" and ")
        );
        std::process::exit(1);
    }
    Ok(())
}
