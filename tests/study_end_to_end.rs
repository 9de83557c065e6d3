//! A whole study against the simulated robot over a pty, through the real binary.

mod common;
use common::*;

#[test]
fn a_whole_study_completes_and_is_exported() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 6, 60, 0.0));
    let out = w.run(&config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("best trial"), "{stdout}");
    assert!(w.path("study.db").exists());

    let trials = w.export("it");
    assert_eq!(trials.len(), 6);
    // Trial 0 is the baseline: the firmware's default gait.
    assert_eq!(trials[0]["attrs"]["baseline"], true, "{}", trials[0]);
    assert!((trials[0]["params"]["freq_hz"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(trials[0]["params"]["gait"], 0.0);
    for t in &trials {
        let state = t["state"].as_str().unwrap();
        assert!(state == "COMPLETE" || state == "PRUNED", "{t}");
        assert_eq!(t["params"].as_object().unwrap().len(), 5, "{t}");
        if state == "COMPLETE" {
            assert!(t["value"].is_f64(), "{t}");
            let steps: Vec<u64> = t["intermediate"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_u64().unwrap())
                .collect();
            assert_eq!(
                steps,
                (1..=6).map(|k| k * 10).collect::<Vec<_>>(),
                "intermediate steps line up: {t}"
            );
            assert_eq!(t["episodes"].as_array().unwrap().len(), 1);
            let ep_return = t["episodes"][0]["return"].as_f64().unwrap();
            assert!(
                (ep_return - t["value"].as_f64().unwrap()).abs() < 1e-6 * ep_return.abs().max(1.0)
            );
        }
    }
    // The robot saw exactly one episode start per trial.
    let events = w.events();
    let starts = named(&events, "episode_start");
    assert_eq!(starts.len(), 6);
    // Each stored episode carries the seed the robot was given (what a replay needs).
    for t in &trials {
        for e in t["episodes"].as_array().unwrap() {
            let seed = e["seed"].as_u64().unwrap_or_else(|| panic!("no seed: {t}"));
            assert!(
                starts.iter().any(|s| s["trial"] == t["number"]
                    && s["episode"] == e["episode"]
                    && s["seed"].as_u64() == Some(seed)),
                "seed {seed} of trial {} episode {} is not the one the robot got",
                t["number"],
                e["episode"]
            );
        }
        // Only a complete trial has a value; a pruned one's last report is its own field.
        if t["state"] == "PRUNED" {
            assert!(t["value"].is_null(), "{t}");
        }
        let last = t["intermediate"].as_array().unwrap().last().cloned();
        assert_eq!(t["last_intermediate"], last.unwrap_or_default(), "{t}");
    }

    // Running again with a larger size continues the same study.
    let out = w.run(&config, &["--trials", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = w.export("it");
    assert_eq!(again.len(), 8);
    for (before, after) in trials.iter().zip(&again) {
        assert_eq!(before, after, "an earlier trial changed on resume");
    }
    // And once the study has its size, a rerun does nothing new.
    let out = w.run(&config, &["--trials", "8"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already has 8 finished trials"));
    assert_eq!(w.export("it").len(), 8);
}

#[test]
fn csv_export_has_a_row_per_trial() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 3, 20, 0.0));
    assert!(w.run(&config, &[]).status.success());
    let out = std::process::Command::new(bin())
        .args([
            "export",
            "--storage",
            &w.storage_url(),
            "--study",
            "it",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(
            "number,value,datetime_start,datetime_complete,duration,params_duty_factor,"
        ) && lines[0].contains(",state,prune_reason,last_intermediate,"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 4, "{text}");
    // Finished trials have a duration in seconds.
    let duration = lines[0].split(',').position(|c| c == "duration").unwrap();
    for row in &lines[1..] {
        let cell = row.split(',').nth(duration).unwrap();
        assert!(cell.parse::<f64>().is_ok_and(|d| d >= 0.0), "{row}");
    }
}

#[test]
fn top_trials_are_reevaluated_and_the_likely_best_is_reported() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 6, 40, 0.0).replace(
        "seed = 3\n",
        "seed = 3\nreevaluate_top = 2\nreevaluate_episodes = 2\n",
    );
    let config = w.write_config(&text);
    let stdout = w.run_ok(&config);
    assert!(
        stdout.contains("likely best (mean over 3 episodes)"),
        "{stdout}"
    );
    let trials = w.export("it");
    let reevaluated: Vec<&serde_json::Value> = trials
        .iter()
        .filter(|t| !t["attrs"]["reeval"].is_null())
        .collect();
    assert_eq!(reevaluated.len(), 2, "{trials:?}");
    for t in &reevaluated {
        assert_eq!(
            t["attrs"]["reeval"]["returns"].as_array().unwrap().len(),
            2,
            "{t}"
        );
        assert_eq!(t["returns"]["n"], 3, "{t}");
        assert!(
            t["returns"]["sd"].as_f64().unwrap() > 0.0,
            "noisy episodes differ: {t}"
        );
    }
    // The robot ran 6 trial episodes and 4 re-evaluation episodes, no more.
    assert_eq!(named(&w.events(), "episode_start").len(), 10);

    // On command: one more trial re-evaluated, the others untouched.
    let out = std::process::Command::new(bin())
        .args(["reevaluate"])
        .arg(&config)
        .args(["--top", "3", "--episodes", "2"])
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = w.export("it");
    let count = after
        .iter()
        .filter(|t| !t["attrs"]["reeval"].is_null())
        .count();
    let complete = in_state(&after, "COMPLETE").len();
    assert_eq!(count, complete.min(3));
    assert_eq!(
        named(&w.events(), "episode_start").len(),
        10 + 2 * (count - 2)
    );
}

#[test]
fn a_gp_study_names_its_likely_best_by_the_posterior_mean() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 14, 40, 0.0)
        .replace("[robot]", "[sampler]\nkind = \"gp\"\n\n[robot]");
    let config = w.write_config(&text);
    let stdout = w.run_ok(&config);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("likely best by the GP's posterior mean"))
        .unwrap_or_else(|| panic!("no posterior-mean line in:\n{stdout}"));
    let trial: u64 = line
        .split("trial ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no trial number in {line}"));
    let trials = w.export("it");
    let named = trials.iter().find(|t| t["number"] == trial).unwrap();
    assert_eq!(named["state"], "COMPLETE", "{line}");
}
