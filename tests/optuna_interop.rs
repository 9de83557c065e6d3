//! Optuna interop: a study run against the simulated robot, exported with `gaittune export
//! --format optuna-journal`, is loaded by the real `optuna` package
//! (`JournalStorage(JournalFileBackend(path))`) and every trial's state, value, parameters,
//! distributions, times, intermediate values and user attributes checked against gaittune's
//! JSON export.
//!
//! The Python interpreter comes from `GAITTUNE_TEST_PYTHON` (`.ci/run` sets it to a venv
//! with optuna 5.0.0). Without it the test prints `SKIPPED: …` and passes, except with
//! `CI=true`, where it fails.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The checks run inside Python: argv = journal, JSON export, study name.
const CHECK: &str = r#"
import json, sys
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

journal, export_path, name = sys.argv[1:4]
storage = JournalStorage(JournalFileBackend(journal))
study = optuna.load_study(study_name=name, storage=storage)
expected = json.load(open(export_path))
trials = study.get_trials(deepcopy=False)
problems = []
def check(cond, what):
    if not cond:
        problems.append(what)
check(study.direction == optuna.study.StudyDirection.MAXIMIZE, f"direction {study.direction}")
check(len(trials) == len(expected), f"{len(trials)} trials, gaittune has {len(expected)}")
for t, e in zip(trials, expected):
    n = e["number"]
    check(t.number == n, f"trial {n}: number {t.number}")
    check(t.state.name == e["state"], f"trial {n}: state {t.state.name} != {e['state']}")
    check(t.value == e["value"], f"trial {n}: value {t.value!r} != {e['value']!r}")
    check(t.params == e["params"], f"trial {n}: params {t.params} != {e['params']}")
    for p, v in t.params.items():
        check(t.distributions[p]._contains(t.distributions[p].to_internal_repr(v)),
              f"trial {n}: {p}={v!r} outside {t.distributions[p]}")
    iv = {int(s): v for s, v in e["intermediate"]}
    check(t.intermediate_values == iv, f"trial {n}: intermediate {t.intermediate_values} != {iv}")
    if e["last_intermediate"] is not None:
        s, v = e["last_intermediate"]
        check(t.last_step == s and t.intermediate_values[s] == v,
              f"trial {n}: last step {t.last_step} != {s}")
    check(t.user_attrs.get("prune_reason") == e["prune_reason"], f"trial {n}: prune reason")
    check(t.user_attrs.get("episodes") == e["episodes"], f"trial {n}: episodes")
    for k, v in e["attrs"].items():
        check(t.user_attrs.get(k) == v, f"trial {n}: user attr {k}")
    finished = e["state"] in ("COMPLETE", "PRUNED", "FAIL")
    check((t.datetime_complete is not None) == finished, f"trial {n}: datetime_complete")
    check((t.datetime_start is not None) == (e["state"] != "WAITING"), f"trial {n}: datetime_start")
    if finished:
        check(t.duration is not None and t.duration.total_seconds() >= 0, f"trial {n}: duration")
complete = [e for e in expected if e["state"] == "COMPLETE"]
if complete:
    best = max(complete, key=lambda e: e["value"])
    check(study.best_trial.number == best["number"],
          f"best trial {study.best_trial.number} != {best['number']}")
# Optuna samples a next trial from the loaded history with the exported distributions (this
# appends to the journal, after the checks above).
nxt = study.ask(fixed_distributions=trials[0].distributions)
check(set(nxt.params) == set(trials[0].distributions), f"sampled {nxt.params}")
states = {}
for t in trials:
    states[t.state.name] = states.get(t.state.name, 0) + 1
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("OK", len(trials), "trials", json.dumps(states, sort_keys=True))
"#;

/// The interpreter with optuna, or None after printing SKIPPED (a panic with CI=true).
fn python_with_optuna() -> Option<String> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let skip = |why: String| -> Option<String> {
        if ci {
            panic!("{why} and CI=true: .ci/run sets GAITTUNE_TEST_PYTHON to a venv with optuna");
        }
        // Straight to stderr: the test harness would swallow eprintln! of a pass.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("SKIPPED: {why} (run .ci/run, or set GAITTUNE_TEST_PYTHON to a python with optuna==5.0.0)\n"),
        );
        None
    };
    let Ok(python) = std::env::var("GAITTUNE_TEST_PYTHON") else {
        return skip("GAITTUNE_TEST_PYTHON is not set".into());
    };
    match Command::new(&python)
        .args(["-c", "import optuna; print(optuna.__version__)"])
        .output()
    {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => skip(format!(
            "{python} cannot import optuna: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => skip(format!("cannot run {python}: {e}")),
    }
}

fn export(w: &Workdir, format: &str, to: &Path) {
    let out = Command::new(bin())
        .args(["export", "--storage", &w.storage_url(), "--study", "it"])
        .args(["--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export --format {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(to, &out.stdout).unwrap();
}

#[test]
fn optuna_loads_the_exported_journal_trial_for_trial() {
    let Some(python) = python_with_optuna() else {
        return;
    };
    let w = Workdir::new();
    // An int parameter too.
    let text = sim_config(&w.storage_url(), &w.event_log(), 16, 40, 0.0)
        .replace(
            "[space.kp]\ntype = \"float\"\nlow = 10.0\nhigh = 60.0\nlog = true",
            "[space.kp]\ntype = \"int\"\nlow = 10\nhigh = 60\nstep = 5",
        )
        // Fast, large strides reach the unsafe region; a median pruner stops poor trials.
        .replace("low = 0.5\nhigh = 3.0", "low = 0.5\nhigh = 4.0")
        .replace("low = 0.05\nhigh = 0.5", "low = 0.05\nhigh = 0.8")
        .replace(
            "[robot]",
            "[pruner]\nkind = \"median\"\n[pruner.median]\nn_startup_trials = 3\nn_warmup_steps = 10\n\n[robot]",
        );
    assert!(text.contains("type = \"int\""));
    let config = w.write_config(&text);
    w.run_ok(&config);
    let trials = w.export("it");
    let complete = in_state(&trials, "COMPLETE").len();
    let pruned = in_state(&trials, "PRUNED").len();
    assert!(
        complete > 0 && pruned > 0,
        "the study should have complete and pruned trials: {complete} complete, {pruned} pruned"
    );
    let journal = w.path("study.log");
    let json = w.path("study.json");
    export(&w, "optuna-journal", &journal);
    export(&w, "json", &json);
    let out = Command::new(&python)
        .args(["-c", CHECK])
        .arg(&journal)
        .arg(&json)
        .arg("it")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "optuna disagrees with gaittune's export:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("OK {} trials", trials.len())),
        "{stdout}"
    );
    assert!(stdout.contains("\"PRUNED\""), "{stdout}");
}

/// Kills a child process when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:port; the body, if the server answered 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

#[test]
fn optuna_dashboard_serves_the_exported_study() {
    let Some(python) = python_with_optuna() else {
        return;
    };
    let dashboard = Path::new(&python).with_file_name("optuna-dashboard");
    if !dashboard.exists() {
        let why = format!("no optuna-dashboard beside {python}");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why} and CI=true: .ci/run installs it in its venv");
        }
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("SKIPPED: {why} (pip install optuna-dashboard)\n"),
        );
        return;
    }
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 8, 40, 0.0));
    w.run_ok(&config);
    let trials = w.export("it");
    let journal = w.path("study.log");
    export(&w, "optuna-journal", &journal);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(&dashboard)
            .arg(&journal)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start optuna-dashboard"),
    );
    let mut studies = None;
    wait_for(Duration::from_secs(60), "optuna-dashboard to serve", || {
        studies = http_get(port, "/api/studies");
        studies.is_some()
    });
    let studies: serde_json::Value = serde_json::from_str(&studies.unwrap()).unwrap();
    let summary = &studies["study_summaries"][0];
    assert_eq!(summary["study_name"], "it", "{studies}");
    let id = summary["study_id"].as_u64().unwrap();
    let study: serde_json::Value =
        serde_json::from_str(&http_get(port, &format!("/api/studies/{id}")).unwrap()).unwrap();
    let served = study["trials"].as_array().unwrap();
    assert_eq!(served.len(), trials.len(), "every trial is served");
    for (ours, theirs) in trials.iter().zip(served) {
        assert_eq!(ours["number"], theirs["number"]);
        let state = theirs["state"].as_str().unwrap().to_uppercase();
        assert_eq!(ours["state"].as_str().unwrap(), state, "{theirs}");
        let steps: Vec<u64> = theirs["intermediate_values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        let ours_steps: Vec<u64> = ours["intermediate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, ours_steps, "trial {}", ours["number"]);
    }
}

/// `gaittune import FILE --storage URL --study NAME [--as MODE]`, which must succeed.
fn import(w: &Workdir, file: &Path, study: &str, mode: &str) -> String {
    let out = Command::new(bin())
        .arg("import")
        .arg(file)
        .args([
            "--storage",
            &w.storage_url(),
            "--study",
            study,
            "--as",
            mode,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fields an import keeps.
fn kept(t: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "number": t["number"], "state": t["state"], "value": t["value"], "params": t["params"],
        "intermediate": t["intermediate"], "prune_reason": t["prune_reason"],
        "unsafe": t["attrs"]["unsafe"],
    })
}

#[test]
fn a_study_exported_to_a_journal_imports_back_the_same() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 10, 40, 0.0));
    w.run_ok(&config);
    let journal = w.path("study.log");
    export(&w, "optuna-journal", &journal);
    let said = import(&w, &journal, "back", "finished");
    assert!(said.contains("imported 10 trials"), "{said}");
    let (a, b) = (w.export("it"), w.export("back"));
    assert_eq!(
        a.iter().map(kept).collect::<Vec<_>>(),
        b.iter().map(kept).collect::<Vec<_>>()
    );
    // Enqueued: the same parameter sets, waiting to run.
    import(&w, &journal, "again", "enqueued");
    let c = w.export("again");
    assert!(c.iter().all(|t| t["state"] == "WAITING"));
    assert_eq!(
        a.iter().map(|t| &t["params"]).collect::<Vec<_>>(),
        c.iter().map(|t| &t["params"]).collect::<Vec<_>>()
    );
}

/// Writes an Optuna study with Optuna itself: mixed parameters, reports, pruned trials.
const MAKE_OPTUNA_STUDY: &str = r#"
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
kind, path = sys.argv[1], sys.argv[2]
if kind == "journal":
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
else:
    storage = "sqlite:///" + path
study = optuna.create_study(study_name="from-optuna", storage=storage, direction="minimize",
                            sampler=optuna.samplers.TPESampler(seed=1),
                            pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
def objective(t):
    x = t.suggest_float("x", -5, 5)
    lr = t.suggest_float("lr", 1e-4, 1.0, log=True)
    k = t.suggest_int("k", 1, 9, step=2)
    c = t.suggest_categorical("c", ["walk", "trot", "bound"])
    t.set_user_attr("note", "made by optuna")
    v = (x - 1) ** 2 + (k - 5) ** 2 + (0 if c == "trot" else 3) + abs(lr - 0.01)
    for step in range(1, 6):
        t.report(v + 5 - step, step)
        if t.should_prune():
            raise optuna.TrialPruned()
    return v
study.optimize(objective, n_trials=20)
"#;

#[test]
fn studies_written_by_optuna_import_trial_for_trial() {
    let Some(python) = python_with_optuna() else {
        return;
    };
    let w = Workdir::new();
    for kind in ["journal", "rdb"] {
        let file = w.path(&format!("optuna-{kind}.db"));
        let out = Command::new(&python)
            .args(["-c", MAKE_OPTUNA_STUDY, kind])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = format!("imported-{kind}");
        let said = import(&w, &file, &name, "finished");
        assert!(said.contains("imported 20 trials"), "{said}");
        let trials = w.export(&name);
        assert_eq!(trials.len(), 20);
        // Optuna's own view of the same file, trial by trial.
        let check = r#"
import sys, json, optuna
kind, path = sys.argv[1], sys.argv[2]
storage = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
           if kind == "journal" else "sqlite:///" + path)
s = optuna.load_study(study_name="from-optuna", storage=storage)
print(json.dumps([{"state": t.state.name, "value": t.value, "params": t.params,
                   "intermediate": sorted([k, v] for k, v in t.intermediate_values.items()),
                   "note": t.user_attrs.get("note")} for t in s.trials]))
"#;
        let out = Command::new(&python)
            .args(["-c", check, kind])
            .arg(&file)
            .output()
            .unwrap();
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut pruned = 0;
        for (ours, theirs) in trials.iter().zip(&theirs) {
            assert_eq!(ours["state"], theirs["state"], "{ours} {theirs}");
            if theirs["state"] == "COMPLETE" {
                assert_eq!(ours["value"], theirs["value"]);
            } else {
                pruned += 1;
                assert_eq!(ours["prune_reason"], "optuna");
            }
            assert_eq!(ours["params"], theirs["params"], "{kind}");
            let steps: Vec<serde_json::Value> = ours["intermediate"].as_array().unwrap().clone();
            assert_eq!(serde_json::Value::Array(steps), theirs["intermediate"]);
            assert_eq!(ours["attrs"]["note"], theirs["note"]);
        }
        assert!(pruned > 0, "the study has pruned trials to bring in");
    }
}
