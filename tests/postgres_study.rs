//! A study stored in PostgreSQL, through the real binary: `gaittune run` against the
//! simulated robot, then `gaittune export`. The server is `GAITTUNE_TEST_POSTGRES` (default
//! below); without one the test prints SKIPPED and passes, unless `CI=true`.

mod common;
use common::*;

use std::process::Command;

fn export(url: &str, study: &str, format: &str) -> String {
    let out = Command::new(bin())
        .args([
            "export",
            "--storage",
            url,
            "--study",
            study,
            "--format",
            format,
        ])
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_study_runs_and_exports_through_postgres() {
    let Some(url) = postgres_server() else {
        return;
    };
    let name = format!("pg-it-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let _cleanup = DropStudy {
        url: &url,
        name: &name,
    };
    let w = Workdir::new();
    let config = w.write_config(
        &sim_config(&url, &w.event_log(), 4, 40, 0.0)
            .replace("name = \"it\"", &format!("name = {name:?}")),
    );
    let stdout = w.run_ok(&config);
    assert!(stdout.contains("best trial"), "{stdout}");
    assert!(
        !w.path("gaittune.db").exists(),
        "nothing went to the default SQLite file"
    );

    let parse = |text: &str| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(text)
            .expect("export prints JSON")
            .as_array()
            .expect("an array of trials")
            .clone()
    };
    let trials = parse(&export(&url, &name, "json"));
    assert_eq!(trials.len(), 4);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["number"], i as u64, "{t}");
        let state = t["state"].as_str().unwrap();
        assert!(state == "COMPLETE" || state == "PRUNED", "{t}");
        assert_eq!(t["params"].as_object().unwrap().len(), 5, "{t}");
        assert!(
            t["started_at"].is_string() && t["finished_at"].is_string(),
            "{t}"
        );
        if state == "COMPLETE" {
            assert_eq!(t["episodes"].as_array().unwrap().len(), 1, "{t}");
            assert_eq!(
                t["intermediate"].as_array().unwrap().len(),
                4,
                "one value every 10 of 40 steps: {t}"
            );
        }
    }
    assert_eq!(trials[0]["attrs"]["baseline"], true, "{}", trials[0]);
    assert_eq!(named(&w.events(), "episode_start").len(), 4);
    let csv = export(&url, &name, "csv");
    assert_eq!(csv.lines().count(), 5, "{csv}");

    // A second run continues the study stored in the server.
    let out = w.run(&config, &["--trials", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = parse(&export(&url, &name, "json"));
    assert_eq!(again.len(), 5);
    assert_eq!(again[..4], trials[..], "an earlier trial changed on resume");
}
