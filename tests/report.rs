//! `gaittune report` on a study the real daemon ran against the physics quadruped, rendered
//! in headless Chromium: it draws (every chart has marks, the screenshot is not blank), the
//! page loads nothing from the network and logs no error, and the best trial's gait is
//! there. Needs Debian's `chromium` for the rendering part (skips visibly without it; fails
//! under CI=true). With env `GAITTUNE_REPORT_SCREENSHOT=path.png` its first screen is saved:
//! the README's picture is `GAITTUNE_REPORT_SCREENSHOT=$PWD/docs/report.png cargo test --test
//! report`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use common::*;

use std::process::Command;
use std::time::Duration;

/// The shipped config, made small: 24 trials of 100 steps, its own storage.
fn small_physics_config(w: &Workdir) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sim-quadruped.toml"),
    )
    .unwrap()
    .replace("trials = 60", "trials = 24")
    .replace("max_steps = 500", "max_steps = 100")
    .replace(
        "storage = \"sqlite:gaittune-sim.db\"",
        &format!("storage = \"{}\"", w.storage_url()),
    );
    w.write_config(&text)
}

#[test]
fn the_report_is_one_offline_file_that_draws_every_plot() {
    let w = Workdir::new();
    let config = small_physics_config(&w);
    w.run_ok(&config);
    let out = w.path("report.html");
    let status = Command::new(bin())
        .args([
            "report",
            "--storage",
            &w.storage_url(),
            "--study",
            "sim-quadruped",
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let html = std::fs::read_to_string(&out).unwrap();
    for remote in ["src=\"http", "href=\"http", "src=\"//", "url(http"] {
        assert!(
            !html.contains(remote),
            "the report must not load {remote}… resources"
        );
    }
    assert!(html.contains("PED-ANOVA"), "the importance method is named");

    let Some(mut browser) = browser::Browser::launch_or_skip() else {
        return;
    };
    browser.navigate(&format!("file://{}", out.display()));
    let count = |b: &mut browser::Browser, sel: &str| {
        b.eval(&format!("document.querySelectorAll({sel:?}).length"))
            .as_u64()
            .unwrap_or(0)
    };
    browser.wait_for(Duration::from_secs(10), "the history to draw", |b| {
        count(b, "#history circle, #history path.mark-unsafe") >= 10
    });
    assert!(
        count(&mut browser, "#curves path") >= 5,
        "intermediate curves"
    );
    assert!(count(&mut browser, "#parallel path, #parallel polyline") >= 5);
    assert_eq!(
        count(&mut browser, "svg.slice"),
        10,
        "a slice plot per parameter"
    );
    let complete = in_state(&w.export("sim-quadruped"), "COMPLETE").len();
    if complete >= 10 {
        assert_eq!(
            count(&mut browser, "#importances rect.bar"),
            10,
            "importances"
        );
    } else {
        let says = browser.eval("document.querySelector('#importances').textContent");
        assert!(
            says.as_str().is_some_and(|s| s.contains("at least 10")),
            "with {complete} COMPLETE trials the importances say why they are missing: {says}"
        );
    }
    assert_eq!(
        count(&mut browser, "#versus tr"),
        12,
        "header, 10 parameters, value"
    );
    assert!(
        count(&mut browser, "#gait svg") == 1,
        "the best trial's gait"
    );
    assert_eq!(
        count(&mut browser, "#trials tr"),
        25,
        "header and 24 trials"
    );
    let shot = w.path("report.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    // A blank 1400x1000 page compresses to a few kilobytes; charts and text do not.
    assert!(
        png.len() > 40_000,
        "the screenshot is blank ({} bytes)",
        png.len()
    );
    if let Some(path) = std::env::var_os("GAITTUNE_REPORT_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path));
    }
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the report logged errors: {errors:?}");
}

#[test]
fn a_stored_trial_replays_to_its_stored_return() {
    let w = Workdir::new();
    let config = small_physics_config(&w);
    w.run_ok(&config);
    let trials = w.export("sim-quadruped");
    // A complete trial and, if any, one stopped as unsafe: both ran exactly so.
    let mut chosen = vec![in_state(&trials, "COMPLETE")[0]["number"].as_u64().unwrap()];
    if let Some(t) = trials.iter().find(|t| t["prune_reason"] == "unsafe") {
        chosen.push(t["number"].as_u64().unwrap());
    }
    for number in chosen {
        let out = Command::new(bin())
            .args(["sim", "--replay", "--storage", &w.storage_url()])
            .args(["--study", "sim-quadruped", "--trial", &number.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stored = &trials.iter().find(|t| t["number"] == number).unwrap()["episodes"][0];
        assert_eq!(summary["stored"]["seed"], stored["seed"], "{summary}");
        assert_eq!(summary["episode_seed"], stored["seed"]);
        assert_eq!(
            summary["return"], stored["return"],
            "trial {number}: {summary}"
        );
        assert_eq!(summary["matches"], true);
    }
}
