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

/// The standard test config with `[sim]`'s `event_log` line followed by `line`.
fn with_sim_line(w: &Workdir, line: &str) -> String {
    sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        .replace("event_log = ", &format!("{line}\nevent_log = "))
}

#[test]
fn a_type_error_names_the_key_and_line() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0)
        .replace("low = 0.5\nhigh = 3.0", "low = \"text\"\nhigh = 3.0");
    let line = text.lines().position(|l| l == "low = \"text\"").unwrap() + 1;
    fails_with(
        &w,
        &text,
        &[
            &format!("space.freq_hz.low (line {line})"),
            "expected a number",
        ],
    );
    let stderr = String::from_utf8_lossy(&w.run(&w.path("config.toml"), &[]).stderr).into_owned();
    assert!(!stderr.contains("untagged enum"), "{stderr}");
}

#[test]
fn invalid_utf8_names_its_byte_offset() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0);
    let mut bytes = text.clone().into_bytes();
    let at = text.find("\"it\"").unwrap() + 1;
    bytes[at] = 0xC3; // a lead byte without its continuation
    let config = w.path("config.toml");
    std::fs::write(&config, &bytes).unwrap();
    let out = w.run(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("byte offset {at}")) && stderr.contains("UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("Check the path"), "{stderr}");
}

#[test]
fn bad_sim_values_are_named_before_anything_is_created() {
    for (line, key) in [
        ("noise = -1.0", "sim.noise"),
        ("model = \"fizz\"", "sim.model"),
        ("watchdog_ms = 0", "sim.watchdog_ms"),
        ("step_delay_ms = -1.0", "sim.step_delay_ms"),
        ("extra_args = [\"--no-such-flag\"]", "sim.extra_args"),
    ] {
        let w = Workdir::new();
        let text = with_sim_line(&w, line);
        let n = text.lines().position(|l| l == line).unwrap() + 1;
        fails_with(&w, &text, &[&format!("{key} (line {n})")]);
        assert!(
            !w.path("study.db").exists(),
            "{line}: the storage was created"
        );
        assert!(
            !w.event_log().exists(),
            "{line}: the simulated robot was started"
        );
    }
}

#[test]
fn reevaluate_on_a_missing_study_is_an_error_and_creates_nothing() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0));
    let out = std::process::Command::new(bin())
        .arg("reevaluate")
        .arg(&config)
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("'it'") && stderr.contains("gaittune run"),
        "{stderr}"
    );
    assert!(!w.path("study.db").exists(), "a storage was created");
    assert!(!w.event_log().exists(), "the robot was started");
    // With the study there, another name is still refused.
    assert!(w.run(&config, &[]).status.success());
    let out = std::process::Command::new(bin())
        .arg("reevaluate")
        .arg(&config)
        .args(["--study", "other"])
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no study 'other'"),
        "{stderr}"
    );
    let listed = std::process::Command::new(bin())
        .args(["studies", "--storage", &w.storage_url()])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("other"));
}

#[test]
fn replay_steps_are_bounded() {
    let out = std::process::Command::new(bin())
        .args(["sim", "--model", "physics", "--replay", "params.json"])
        .args(["--replay-steps", "4000000000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--replay-steps") && stderr.contains("1..=1000000"),
        "{stderr}"
    );
}

#[test]
fn internal_flags_are_hidden_from_help() {
    for (cmd, hidden, shown) in [
        ("sim", "--exit-with-parent", "--replay-steps"),
        ("run", "--worker-index", "--workers"),
    ] {
        let out = std::process::Command::new(bin())
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(shown) && !help.contains(hidden), "{help}");
    }
}

#[test]
fn rust_log_is_honoured_and_gaittune_log_wins() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 1, 20, 0.0));
    let n = std::cell::Cell::new(0);
    let run = |env: &[(&str, &str)]| {
        n.set(n.get() + 1);
        let storage = format!("sqlite:{}", w.path(&format!("s{}.db", n.get())).display());
        let out = std::process::Command::new(bin())
            .arg("run")
            .arg(&config)
            .args(["--storage", &storage])
            .env_remove("GAITTUNE_LOG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .current_dir(w.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[("RUST_LOG", "debug")]).contains("DEBUG"));
    assert!(run(&[("GAITTUNE_LOG", "debug")]).contains("DEBUG"));
    assert!(!run(&[("RUST_LOG", "debug"), ("GAITTUNE_LOG", "warn")]).contains("DEBUG"));
    assert!(!run(&[]).contains("DEBUG"));
}
