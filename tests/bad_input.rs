//! Bad input gets a clear error naming the problem, and a non-zero exit.

mod common;
use common::*;

fn fails_with(w: &Workdir, text: &str, needles: &[&str]) {
    let config = w.write_config(text);
    let out = w.run(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {text}");
    for n in needles {
        assert!(stderr.contains(n), "error should mention {n:?}:\n{stderr}");
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        .replace("seed = 3", "seed = 3\nepisodes = 4");
    fails_with(&w, &text, &["episodes", "line", "config.toml"]);
}

#[test]
fn low_above_high_is_named() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        .replace("low = 10.0\nhigh = 60.0", "low = 60.0\nhigh = 10.0");
    fails_with(&w, &text, &["kp", "low"]);
}

#[test]
fn missing_config_file_is_named() {
    let w = Workdir::new();
    let out = w.run(&w.path("nope.toml"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn space_outside_firmware_limits_is_refused_naming_the_parameter() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        .replace("low = 0.5\nhigh = 3.0", "low = 0.5\nhigh = 9.0");
    fails_with(&w, &text, &["freq_hz", "9", "4"]);
    // Nothing ran on the robot.
    assert!(named(&w.events(), "episode_start").is_empty());
}

#[test]
fn unknown_firmware_parameter_is_refused() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        + "\n[space.tail_wag]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n";
    fails_with(&w, &text, &["tail_wag", "declares"]);
}
