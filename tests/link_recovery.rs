//! The daemon against robots and lines that misbehave the way real ones do (issue 10): each
//! test names the failure it reproduces. Every run is bounded in time, so a daemon that hangs
//! fails the test instead of hanging it.

mod common;
use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The tests that time the robot's watchdog run one at a time: a machine busy with the other
/// tests must not stall a daemon long enough to trip it.
static WATCHDOG_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The standard test config with extra `gaittune sim` arguments and `[robot]` keys.
fn config_with(
    w: &Workdir,
    trials: u64,
    steps: u32,
    delay_ms: f64,
    sim_args: &[&str],
    robot: &str,
) -> std::path::PathBuf {
    let args: Vec<String> = sim_args.iter().map(|a| format!("{a:?}")).collect();
    let text = sim_config(&w.storage_url(), &w.event_log(), trials, steps, delay_ms)
        .replace(
            "[sim]\n",
            &format!("[sim]\nextra_args = [{}]\n", args.join(", ")),
        )
        .replace("device = \"sim\"", &format!("device = \"sim\"\n{robot}"));
    w.write_config(&text)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn incidents<'a>(trials: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    trials
        .iter()
        .flat_map(|t| {
            t["attrs"]["link_incidents"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(|i| i["kind"] == kind)
        .collect()
}

/// Issue 10 item 2: a firmware reboot mid-episode is noticed; the trial runs again from its
/// parameters and no half episode is recorded. With version 2 and version 1 firmware.
#[test]
fn a_reboot_mid_episode_reruns_the_trial_and_records_no_half_episode() {
    for version in [
        &["--quirk", "reboot-at-step=40"][..],
        &["--quirk", "reboot-at-step=40", "--quirk", "v1-only"],
    ] {
        let w = Workdir::new();
        let config = config_with(&w, 4, 100, 0.0, version, "");
        let out = w.run_within(&config, &[], LIMIT);
        assert!(
            out.status.success(),
            "{version:?}\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let events = w.events();
        assert_eq!(named(&events, "reboot").len(), 1, "{version:?}");
        let trials = w.export("it");
        assert_eq!(trials.len(), 4);
        assert_study_matches_robot(&trials, &events);
        assert_eq!(
            incidents(&trials, "reboot").len(),
            1,
            "{version:?}: {trials:?}"
        );
        assert!(stdout(&out).contains("rebooted"), "{}", stdout(&out));
    }
}

/// Issue 10 item 3: after a SIGKILL the robot's watchdog trip and the episode's end sit unread
/// in the line; the next run must not book them as the re-run trial's record.
#[test]
fn stale_frames_of_a_killed_session_never_become_a_record() {
    let w = Workdir::new();
    let sim = w.hand_sim(&[
        "--step-delay-ms",
        "4",
        "--watchdog-ms",
        "300",
        "--quirk",
        "keep-output-when-closed",
    ]);
    let config = w.hand_config(&sim.device, 3, 300);
    w.kill_run_mid_episode(&config);
    wait_for(Duration::from_secs(10), "the watchdog trip", || {
        !named(&w.events(), "watchdog").is_empty()
    });
    // Let the trip's frames queue up in the line.
    std::thread::sleep(Duration::from_millis(200));
    let out = w.run_within(&config, &["--release-latch"], LIMIT);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let trials = w.export("it");
    assert!(
        trials.iter().all(|t| t["prune_reason"] != "unsafe"),
        "a stale watchdog trip was booked as unsafe: {trials:?}"
    );
    assert_study_matches_robot(&trials, &w.events());
    drop(sim);
}

/// Issue 10 item 3: a restart right after a SIGKILL finds the old episode still running on the
/// robot (its watchdog has not tripped yet); the daemon aborts it instead of failing on
/// "refused SetParams: InvalidState".
#[test]
fn an_immediate_restart_after_sigkill_aborts_the_orphaned_episode() {
    let w = Workdir::new();
    let sim = w.hand_sim(&["--step-delay-ms", "4", "--watchdog-ms", "5000"]);
    let config = w.hand_config(&sim.device, 3, 300);
    w.kill_run_mid_episode(&config);
    let out = w.run_within(&config, &[], LIMIT);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("did not start"), "{}", stdout(&out));
    assert!(!named(&w.events(), "abort").is_empty());
    assert_study_matches_robot(&w.export("it"), &w.events());
    drop(sim);
}

/// Issue 10 item 4: a firmware that clamps (its runtime limits are narrower than declared):
/// the trial's parameters and what the sampler learns are the applied values; the requested
/// ones stay in the attributes.
#[test]
fn clamped_values_are_recorded_as_the_robot_ran_them() {
    let w = Workdir::new();
    let config = config_with(&w, 8, 30, 0.0, &["--quirk", "limit=freq_hz:0.5:1.2"], "");
    let out = w.run_within(&config, &[], LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = w.export("it");
    let applied: Vec<f64> = named(&w.events(), "set_params")
        .iter()
        .map(|e| e["values"][0].as_f64().unwrap())
        .collect();
    let clamped: Vec<_> = trials
        .iter()
        .filter(|t| t["attrs"]["requested_params"].is_object())
        .collect();
    assert!(
        !clamped.is_empty(),
        "the space goes to 3 Hz: some trials ask for more than 1.2"
    );
    for t in &trials {
        let freq = t["params"]["freq_hz"].as_f64().unwrap();
        assert!(
            freq <= 1.2 + 1e-6,
            "stored {freq}, but the robot never ran above 1.2: {t}"
        );
        assert!(
            applied
                .iter()
                .any(|&a| (a - freq).abs() <= 1e-6 * freq.max(1.0)),
            "stored freq_hz {freq} was never applied by the robot ({applied:?})"
        );
    }
    for t in clamped {
        let asked = t["attrs"]["requested_params"]["requested"]["freq_hz"]
            .as_f64()
            .unwrap();
        assert!(asked > 1.2, "{t}");
        assert_eq!(t["params"]["freq_hz"].as_f64(), Some(1.2f32 as f64), "{t}");
    }
}

/// Issue 10 item 6: a robot whose Ready frames are lost (its heartbeats say Ready all along)
/// runs the study; the daemon used to give up after `ready_timeout_ms`.
#[test]
fn a_lost_ready_is_read_from_the_heartbeats() {
    let w = Workdir::new();
    let config = config_with(
        &w,
        3,
        30,
        0.0,
        &["--quirk", "no-ready"],
        "ready_timeout_ms = 3000",
    );
    let out = w.run_within(&config, &[], LIMIT);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        in_state(&w.export("it"), "COMPLETE").len() + in_state(&w.export("it"), "PRUNED").len(),
        3
    );
}

/// Issue 10 item 6: a safety trip outside an episode (during the robot's reset) stops the run
/// at once with a message naming it; the trial in flight is re-queued, not booked unsafe.
#[test]
fn a_trip_during_the_reset_stops_the_run_at_once_and_blames_no_gait() {
    let w = Workdir::new();
    let config = config_with(&w, 4, 30, 0.0, &["--quirk", "trip-in-reset=2"], "");
    let started = std::time::Instant::now();
    let out = w.run_within(&config, &[], LIMIT);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited for a timeout"
    );
    let err = stderr(&out);
    assert!(err.contains("reset") && err.contains("BodyHeight"), "{err}");
    assert!(err.contains("--release-latch"), "{err}");
    let trials = w.export("it");
    assert!(
        trials.iter().all(|t| t["prune_reason"] != "unsafe"),
        "{trials:?}"
    );
    assert_eq!(in_state(&trials, "WAITING").len(), 1, "{trials:?}");
}

/// Issue 10 item 7: a host that stalls mid-episode (here: the whole daemon stopped with
/// SIGSTOP for longer than the robot's watchdog) trips the watchdog; that is the host's fault,
/// so the episode runs again and no gait is booked unsafe.
#[test]
fn a_watchdog_trip_from_a_host_stall_reruns_the_episode() {
    let _one_at_a_time = WATCHDOG_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let w = Workdir::new();
    let config = config_with(&w, 4, 1000, 3.0, &[], "");
    let config = w.write_config(
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("[sim]\n", "[sim]\nwatchdog_ms = 800\n"),
    );
    let child = w.spawn_run(&config);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    wait_for(LIMIT, "the second episode to run", || {
        named(&w.events(), "episode_start").len() >= 2
    });
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_for(Duration::from_secs(10), "the watchdog to trip", || {
        !named(&w.events(), "watchdog").is_empty()
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let trials = w.export("it");
    assert!(
        trials.iter().all(|t| t["prune_reason"] != "unsafe"),
        "a watchdog trip was booked as an unsafe gait: {trials:?}"
    );
    // Every trip the robot logged (one from the stall, more only on a badly overloaded machine)
    // was recovered as a host fault.
    let trips = named(&w.events(), "watchdog").len();
    assert!(trips >= 1);
    assert_eq!(
        incidents(&trials, "watchdog_trip").len(),
        trips,
        "{trials:?}"
    );
    assert_study_matches_robot(&trials, &w.events());
}

/// Issue 10 item 7: storage off the heartbeat thread. Another process holds the database
/// locked for longer than the robot's watchdog while an episode runs; heartbeats go on, the
/// watchdog never trips, and the study finishes once the lock is gone.
#[test]
fn a_locked_database_does_not_stop_the_heartbeats() {
    let _one_at_a_time = WATCHDOG_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let w = Workdir::new();
    let config = config_with(&w, 3, 600, 3.0, &[], "");
    let config = w.write_config(
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("[sim]\n", "[sim]\nwatchdog_ms = 800\n"),
    );
    let child = w.spawn_run(&config);
    wait_for(LIMIT, "the second episode to run", || {
        named(&w.events(), "episode_start").len() >= 2
    });
    let db = rusqlite::Connection::open(w.path("study.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let out = output_of(child);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        named(&w.events(), "watchdog").is_empty(),
        "the host's heartbeats stopped"
    );
    let trials = w.export("it");
    assert!(
        trials.iter().all(|t| t["prune_reason"] != "unsafe"),
        "{trials:?}"
    );
    assert_study_matches_robot(&trials, &w.events());
}

fn output_of(child: std::process::Child) -> std::process::Output {
    child.wait_with_output().unwrap()
}

/// Issue 10 item 9: SIGINT that lands just after a safety stop (the verdict persisted, the
/// robot still latched) exits 130 like any interrupt, not 1.
#[test]
fn an_interrupt_right_after_a_safety_stop_exits_130() {
    let w = Workdir::new();
    // A tight envelope so that some trial is stopped as unsafe.
    let text = sim_config(&w.storage_url(), &w.event_log(), 30, 100, 0.0)
        .replace("max_roll_deg = 25.0", "max_roll_deg = 2.0");
    let config = w.write_config(&text);
    let out = w.run_env(
        &config,
        &[],
        &[("GAITTUNE_FAILPOINT", "interrupt-after-unsafe")],
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let trials = w.export("it");
    assert_eq!(
        trials
            .iter()
            .filter(|t| t["prune_reason"] == "unsafe")
            .count(),
        1
    );
    assert!(in_state(&trials, "RUNNING").is_empty());
}
