//! The live dashboard of a real `gaittune run` against the simulated robot, in headless
//! Chromium: live telemetry arrives, a real click on STOP reaches the robot as EStop (seen in
//! the robot's own event log) and the trial in flight is re-queued with the dashboard named as
//! who stopped it; a click on release lets the study go on to its end. Needs Debian's
//! `chromium` (skips visibly without it; fails under CI=true).
//!
//! With env `GAITTUNE_SCREENSHOT=path.png` the page is saved while telemetry streams (the
//! README's screenshot: `GAITTUNE_SCREENSHOT=$PWD/docs/dashboard.png cargo test --test
//! dashboard`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn stop_and_release_from_the_browser_reach_the_robot() {
    let Some(mut browser) = browser::Browser::launch_or_skip() else {
        return;
    };
    let w = Workdir::new();
    let screenshot = std::env::var_os("GAITTUNE_SCREENSHOT");
    // The screenshot shows a longer history.
    let (trials, finished_in_shot) = if screenshot.is_some() {
        (12, 8)
    } else {
        (4, 0)
    };
    // Episodes of 300 steps at 5 ms: long enough to watch and to stop in the middle of one.
    let config = w.write_config(&sim_config(
        &w.storage_url(),
        &w.event_log(),
        trials,
        300,
        5.0,
    ));
    let mut child = Command::new(bin())
        .arg("run")
        .arg(&config)
        .args(["--dashboard", "127.0.0.1:0", "--control"])
        .arg(w.path("ctl.sock"))
        .current_dir(w.dir.path())
        .env("GAITTUNE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gaittune run");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let url = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the run prints its dashboard's URL");
        if let Some(url) = line.strip_prefix("dashboard: ") {
            break url.to_string();
        }
    };
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("?token="),
        "{url}"
    );

    browser.navigate(&url);
    browser.wait_for(Duration::from_secs(60), "live telemetry", |b| {
        b.eval("Number(document.querySelector('#live-step').textContent) || 0")
            .as_f64()
            .is_some_and(|s| s > 30.0)
    });
    if let Some(path) = screenshot {
        // Let a trial or two finish, so the history has points.
        browser.wait_for(Duration::from_secs(60), "finished trials", |b| {
            b.eval("[...document.querySelectorAll('#trials-body tr')].filter(r => r.textContent.includes('COMPLETE')).length")
                .as_u64()
                .is_some_and(|n| n >= finished_in_shot)
        });
        browser.wait_for(Duration::from_secs(60), "the next trial's telemetry", |b| {
            b.eval("Number(document.querySelector('#live-step').textContent) || 0")
                .as_f64()
                .is_some_and(|s| s > 150.0)
        });
        browser.screenshot(std::path::Path::new(&path));
    }
    let starts_before = named(&w.events(), "episode_start").len();
    browser.click("#stop");
    wait_for(Duration::from_secs(10), "EStop at the robot", || {
        !named(&w.events(), "estop").is_empty()
    });
    browser.wait_for(Duration::from_secs(10), "the answer on the page", |b| {
        b.eval("document.querySelector('#message').textContent")
            .as_str()
            .is_some_and(|m| m.contains("EStop sent"))
    });
    wait_for(Duration::from_secs(10), "the trial re-queued", || {
        w.export("it").iter().any(|t| {
            t["state"] == "WAITING"
                && t["attrs"]["operator"][0]["by"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("dashboard (127.0.0.1:"))
        })
    });
    // Held: nothing starts and nothing releases the robot while the operator looks.
    std::thread::sleep(Duration::from_millis(500));
    let events = w.events();
    assert!(named(&events, "clear_estop").is_empty());
    assert!(named(&events, "episode_start").len() <= starts_before + 1);

    browser.click("#release");
    wait_for(Duration::from_secs(10), "ClearEStop at the robot", || {
        !named(&w.events(), "clear_estop").is_empty()
    });
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    assert!(status.success(), "the run failed: {stdout}");
    assert!(stdout.contains("stop by dashboard"), "{stdout}");
    let size = trials;
    let trials = w.export("it");
    assert_eq!(
        in_state(&trials, "COMPLETE").len(),
        size as usize,
        "{trials:?}"
    );
    assert_eq!(
        trials.len(),
        size as usize,
        "the stopped trial ran again, no extra trial"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
}
