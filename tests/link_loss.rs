//! Losing either side: a dead robot is a clear error and a re-queued trial; a dead daemon
//! trips the robot's watchdog, and the next run re-queues the trial that was in flight.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_robot_that_dies_mid_episode_is_a_clear_error_and_the_trial_is_requeued() {
    let w = Workdir::new();
    let log = w.event_log();
    let sim = HandSim::start(&["--step-delay-ms", "4", "--event-log", log.to_str().unwrap()]);
    let config = w.hand_config(&sim.device, 5, 300);
    let child = w.spawn_run(&config);
    wait_for(
        Duration::from_secs(60),
        "the second episode to start",
        || named(&w.events(), "episode_start").len() >= 2,
    );
    drop(sim); // kills the simulated robot
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("lost the robot"), "{stderr}");
    let trials = w.export("it");
    assert_eq!(in_state(&trials, "WAITING").len(), 1, "{trials:?}");
    assert!(in_state(&trials, "RUNNING").is_empty());
}

#[test]
fn a_daemon_killed_mid_episode_trips_the_robots_watchdog() {
    let w = Workdir::new();
    let sim = w.hand_sim(&["--step-delay-ms", "4", "--watchdog-ms", "300"]);
    let config = w.hand_config(&sim.device, 5, 1000);
    w.kill_run_mid_episode(&config);
    wait_for(
        Duration::from_secs(10),
        "the robot's watchdog to stop the motors",
        || !named(&w.events(), "watchdog").is_empty(),
    );

    // The robot stays latched: a new run refuses to move it without the operator's word.
    let config = w.hand_config(&sim.device, 2, 50);
    let out = w.run(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("latched") && stderr.contains("--release-latch"),
        "{stderr}"
    );
    let out = w.run(&config, &["--release-latch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trials = w.export("it");
    assert!(
        in_state(&trials, "RUNNING").is_empty() && in_state(&trials, "WAITING").is_empty(),
        "{trials:?}"
    );
    drop(sim);
}

#[test]
fn a_panic_mid_episode_sends_estop() {
    let w = Workdir::new();
    let log = w.event_log();
    let sim = HandSim::start(&["--step-delay-ms", "2", "--event-log", log.to_str().unwrap()]);
    let config = w.hand_config(&sim.device, 3, 200);
    let out = w.run_env(&config, &[], &[("GAITTUNE_FAILPOINT", "panic-at-step:50")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"));
    wait_for(Duration::from_secs(5), "the robot to receive EStop", || {
        !named(&w.events(), "estop").is_empty()
    });
    let events = w.events();
    let estop = named(&events, "estop")[0];
    assert!(estop["step"].as_u64().unwrap() >= 50, "{estop}");
    drop(sim);
}

#[test]
fn a_daemon_killed_mid_episode_loses_only_that_episode() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 4, 300, 4.0));
    let mut child = w.spawn_run(&config);
    wait_for(
        Duration::from_secs(60),
        "the second episode to start",
        || named(&w.events(), "episode_start").len() >= 2,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = w.export("it");
    let running = in_state(&before, "RUNNING");
    assert_eq!(
        running.len(),
        1,
        "the killed trial is still RUNNING in storage: {before:?}"
    );
    let number = running[0]["number"].as_u64().unwrap() as usize;

    let stdout = w.run_ok(&config);
    assert!(
        stdout.contains(&format!("trial {number} was left RUNNING")),
        "{stdout}"
    );
    let after = w.export("it");
    assert_eq!(after.len(), 4);
    assert_ne!(after[number]["state"], "RUNNING");
    assert_eq!(after[number]["params"], running[0]["params"]);
}
