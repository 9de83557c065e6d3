//! Many robots, one study (issue 12): workers share a study through its storage and the
//! trial leases only. No trial is lost, doubled, mixed between robots or run by two workers;
//! a killed worker's trial waits out its lease before another takes it.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// The robots (event logs) that started each trial: trial number → set of logs.
fn robots_per_trial(logs: &[PathBuf]) -> BTreeMap<u64, BTreeSet<usize>> {
    let mut by_trial: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for (i, log) in logs.iter().enumerate() {
        for e in named(&read_events(log), "episode_start") {
            by_trial
                .entry(e["trial"].as_u64().unwrap())
                .or_default()
                .insert(i);
        }
    }
    by_trial
}

/// Every finished trial's episodes are what exactly one robot ran: all of them in that
/// robot's log, and the trial was started by that robot alone.
fn assert_each_trial_ran_on_one_robot(trials: &[Value], logs: &[PathBuf]) {
    let starts = robots_per_trial(logs);
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        let robots = starts.get(&n).cloned().unwrap_or_default();
        assert_eq!(
            robots.len(),
            1,
            "trial {n} was started by robots {robots:?}: {t}"
        );
        let robot = *robots.iter().next().unwrap();
        assert_study_matches_robot(std::slice::from_ref(t), &read_events(&logs[robot]));
    }
}

fn worker_logs(w: &Workdir, n: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| w.path(&format!("events.w{i}.jsonl")))
        .collect()
}

#[test]
fn three_workers_share_one_study_without_losing_doubling_or_mixing_a_trial() {
    let w = Workdir::new();
    let url = w.storage_url();
    three_workers_on(&w, &url, "it");
}

#[test]
fn three_workers_share_one_study_on_postgresql() {
    let Some(url) = postgres_server() else {
        return;
    };
    let w = Workdir::new();
    let name = format!("fleet-{}", std::process::id());
    let _clean = DropStudy {
        url: &url,
        name: &name,
    };
    three_workers_on(&w, &url, &name);
}

fn export_from(w: &Workdir, url: &str, name: &str) -> Vec<Value> {
    let out = std::process::Command::new(bin())
        .args(["export", "--storage", url, "--study", name])
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn three_workers_on(w: &Workdir, url: &str, name: &str) {
    let config = w.write_config(
        &sim_config(url, &w.event_log(), 12, 60, 1.0)
            .replace("[study]\n", "[study]\nepisodes_per_trial = 2\n")
            .replace("name = \"it\"", &format!("name = \"{name}\"")),
    );
    let out = w.run_within(&config, &["--workers", "3"], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert!(stdout.contains(&format!("[w{i}] ")), "{stdout}");
    }
    let trials = export_from(w, url, name);
    let numbers: Vec<u64> = trials
        .iter()
        .map(|t| t["number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..12).collect::<Vec<_>>(),
        "exactly 12, numbered 0..12"
    );
    assert!(trials
        .iter()
        .all(|t| matches!(t["state"].as_str(), Some("COMPLETE" | "PRUNED"))));
    let workers: BTreeSet<&str> = trials.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert_eq!(workers.len(), 3, "every worker ran trials: {workers:?}");
    assert_eq!(
        trials
            .iter()
            .filter(|t| t["attrs"]["baseline"] == true)
            .count(),
        1,
        "one baseline, not one per worker"
    );
    assert_each_trial_ran_on_one_robot(&trials, &worker_logs(w, 3));
}

/// A config for a daemon of its own on the shared study: its own simulated robot (`seed`)
/// and event log, a short lease.
fn own_daemon_config(w: &Workdir, name: &str, seed: u64, lease_ms: u64, steps: u32) -> PathBuf {
    own_daemon_config_on(w, &w.storage_url(), "it", name, seed, lease_ms, steps)
}

/// [`own_daemon_config`] on the storage at `url`, study `study`.
fn own_daemon_config_on(
    w: &Workdir,
    url: &str,
    study: &str,
    name: &str,
    seed: u64,
    lease_ms: u64,
    steps: u32,
) -> PathBuf {
    let log = w.path(&format!("{name}.jsonl"));
    let text = sim_config(url, &log, 6, steps, 4.0)
        .replace("name = \"it\"", &format!("name = \"{study}\""))
        .replace("[sim]\nseed = 1", &format!("[sim]\nseed = {seed}"))
        .replace("[study]\n", &format!("[study]\nlease_ms = {lease_ms}\n"));
    let path = w.path(&format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(w: &Workdir, config: &Path) -> std::process::Child {
    w.spawn_run(config)
}

fn started(log: &Path) -> Vec<u64> {
    named(&read_events(log), "episode_start")
        .iter()
        .map(|e| e["trial"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_second_daemon_never_requeues_or_runs_the_trial_the_first_is_running() {
    let w = Workdir::new();
    let a = own_daemon_config(&w, "a", 1, 30_000, 300);
    let b = own_daemon_config(&w, "b", 2, 30_000, 300);
    let first = spawn(&w, &a);
    wait_for(LIMIT, "the first daemon's episode", || {
        !started(&w.path("a.jsonl")).is_empty()
    });
    let running = started(&w.path("a.jsonl"))[0];
    let second = w.run_within(&b, &[], LIMIT);
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout_b = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout_b}");
    assert!(
        !stdout_b.contains("was left RUNNING"),
        "the second daemon re-queued a live trial: {stdout_b}"
    );
    assert!(
        !started(&w.path("b.jsonl")).contains(&running),
        "the second daemon ran the first one's trial {running}"
    );
    let trials = w.export("it");
    assert_eq!(trials.len(), 6);
    let logs = [w.path("a.jsonl"), w.path("b.jsonl")];
    assert_each_trial_ran_on_one_robot(&trials, &logs);
}

#[test]
fn a_killed_workers_trial_waits_out_its_lease_then_another_runs_it() {
    let w = Workdir::new();
    let url = w.storage_url();
    killed_worker_on(&w, &url, "it");
}

#[test]
fn a_killed_workers_trial_waits_out_its_lease_on_postgresql() {
    let Some(url) = postgres_server() else {
        return;
    };
    let w = Workdir::new();
    let name = format!("fleet-kill-{}", std::process::id());
    let _clean = DropStudy {
        url: &url,
        name: &name,
    };
    killed_worker_on(&w, &url, &name);
}

fn killed_worker_on(w: &Workdir, url: &str, study: &str) {
    let lease_ms = 2_000;
    let a = own_daemon_config_on(w, url, study, "a", 1, lease_ms, 400);
    let b = own_daemon_config_on(w, url, study, "b", 2, lease_ms, 60);
    let mut first = spawn(w, &a);
    wait_for(LIMIT, "the first daemon's second trial", || {
        started(&w.path("a.jsonl")).len() >= 2
    });
    let orphan = *started(&w.path("a.jsonl")).last().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    let second = spawn(w, &b);
    // The other worker finishes what it can, then waits for the orphan's lease.
    wait_for(LIMIT, "the orphaned trial to run again", || {
        started(&w.path("b.jsonl")).contains(&orphan)
    });
    let waited = killed.elapsed();
    // The lease was renewed at most a third of it before the kill.
    assert!(
        waited >= Duration::from_millis(lease_ms * 2 / 3 - 100),
        "trial {orphan} ran again {waited:?} after its worker died, before its lease ran out"
    );
    let out = second.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trials = export_from(w, url, study);
    assert_eq!(trials.len(), 6);
    let t = &trials[orphan as usize];
    assert!(t["worker"].as_str().unwrap().ends_with("sim-seed-2"), "{t}");
    assert_study_matches_robot(std::slice::from_ref(t), &read_events(&w.path("b.jsonl")));
    for t in &trials {
        assert!(
            matches!(t["state"].as_str(), Some("COMPLETE" | "PRUNED")),
            "{t}"
        );
    }
}

#[test]
fn a_config_refused_at_the_firmware_check_creates_no_study() {
    let w = Workdir::new();
    // freq_hz reaches 9 Hz; the simulated robot declares at most 4.
    let text = sim_config(&w.storage_url(), &w.event_log(), 3, 30, 0.0)
        .replace("low = 0.5\nhigh = 3.0", "low = 0.5\nhigh = 9.0");
    let config = w.write_config(&text);
    let out = w.run(&config, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("freq_hz") && err.contains("declared limits"),
        "{err}"
    );
    // The corrected config is not refused as "created with a different search space".
    let fixed = w.write_config(&text.replace("high = 9.0", "high = 3.0"));
    let out = w.run(&fixed, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
