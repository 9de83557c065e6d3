//! One robot, one daemon: a second daemon pointed at a robot another daemon drives is refused
//! at once, naming the first daemon's pid, and the first daemon's study goes on unaffected.

mod common;
use common::*;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts a second daemon on `device` and checks it is refused, naming `holder`.
fn assert_refused(device: &str, holder: u32) {
    let other = Workdir::new();
    let config = other.hand_config(device, 2, 50);
    let out = other.run_within(&config, &[], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon ran: {stderr}");
    assert!(
        stderr.contains(&format!("pid {holder}")) && stderr.contains("one robot, one daemon"),
        "the refusal names the first daemon (pid {holder}): {stderr}"
    );
    assert_eq!(
        stderr.matches("one robot, one daemon").count(),
        1,
        "said once: {stderr}"
    );
}

/// Every trial of the study finished, none left waiting or running.
fn assert_all_finished(w: &Workdir, trials: usize) {
    let all = w.export("it");
    let finished = in_state(&all, "COMPLETE").len() + in_state(&all, "PRUNED").len();
    assert_eq!((all.len(), finished), (trials, trials), "{all:?}");
}

#[test]
fn a_second_daemon_on_a_busy_robot_is_refused_naming_the_first() {
    let w = Workdir::new();
    let log = w.event_log();
    let sim = HandSim::start(&["--step-delay-ms", "4", "--event-log", log.to_str().unwrap()]);
    let config = w.hand_config(&sim.device, 3, 300);
    let first = w.spawn_run(&config);
    wait_for(Duration::from_secs(60), "an episode to start", || {
        !named(&w.events(), "episode_start").is_empty()
    });
    assert_refused(&sim.device, first.id());

    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first daemon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_finished(&w, 3);
    assert_eq!(
        named(&w.events(), "hello").len(),
        1,
        "only the first daemon spoke to the robot"
    );

    // Once the first daemon is gone, the robot is free.
    let next = Workdir::new();
    let out = next.run(&next.hand_config(&sim.device, 1, 50), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_robot_stays_claimed_between_every_trial_of_a_run() {
    let w = Workdir::new();
    let log = w.event_log();
    // The robot waits for an operator's go after each reset: the daemon is held there, link
    // open, while a second daemon tries its luck.
    let sim = HandSim::start(&[
        "--require-go",
        "--step-delay-ms",
        "4",
        "--event-log",
        log.to_str().unwrap(),
    ]);
    let config = w.hand_config(&sim.device, 3, 50);
    let first = w.spawn_run(&config);
    for trial in 1..=3 {
        wait_for(
            Duration::from_secs(60),
            "the robot to reset for the next trial",
            || named(&w.events(), "set_params").len() >= trial,
        );
        assert_refused(&sim.device, first.id());
        // One go per trial: none while an episode runs, or it would count for the next.
        wait_for(
            Duration::from_secs(30),
            "the trial's episode to start",
            || {
                let started = named(&w.events(), "episode_start").len() >= trial;
                if !started {
                    let _ = kill(Pid::from_raw(sim.child.id() as i32), Signal::SIGUSR1);
                }
                started
            },
        );
    }
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first daemon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_finished(&w, 3);
}
