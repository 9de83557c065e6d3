//! Stop signals other than Ctrl-C: SIGTERM, SIGHUP and SIGQUIT stop the robot, re-queue the
//! trial in flight and exit with 128 + the signal's number; a second signal exits at once;
//! the simulated robot started by the daemon still answers to signals.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn send(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

/// Runs a study, sends `signal` while the second trial's episode runs, and returns what the
/// daemon did, the robot's events and the study's trials.
fn signal_mid_episode(signal: Signal) -> (Output, Vec<Value>, Vec<Value>) {
    let w = Workdir::new();
    // 300 steps x 4 ms: episodes long enough to stop in the middle of one.
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 4, 300, 4.0));
    let child = w.spawn_run(&config);
    wait_for(
        Duration::from_secs(60),
        "the second episode to start",
        || named(&w.events(), "episode_start").len() >= 2,
    );
    send(child.id(), signal);
    let out = child.wait_with_output().unwrap();
    let events = w.events();
    (out, events, w.export("it"))
}

/// The checks every stop signal shares: EStop reached the robot during the episode, the
/// status is 128 + the signal, the trial in flight waits for the next run.
fn assert_stopped_properly(signal: Signal) -> String {
    let (out, events, trials) = signal_mid_episode(signal);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(128 + signal as i32),
        "{signal}: {}; stderr: {stderr}",
        out.status
    );
    let estops = named(&events, "estop");
    assert!(!estops.is_empty(), "the robot never saw EStop: {events:?}");
    assert!(
        estops[0]["step"].is_u64(),
        "EStop arrived during the episode: {:?}",
        estops[0]
    );
    assert_eq!(
        in_state(&trials, "WAITING").len(),
        1,
        "the trial in flight is WAITING: {trials:?}"
    );
    assert!(in_state(&trials, "RUNNING").is_empty(), "{trials:?}");
    assert!(!in_state(&trials, "COMPLETE").is_empty(), "{trials:?}");
    stderr
}

#[test]
fn sigterm_estops_requeues_and_exits_143() {
    let stderr = assert_stopped_properly(Signal::SIGTERM);
    assert!(
        stderr.contains("SIGTERM — EStop sent to the robot"),
        "{stderr}"
    );
    assert!(!stderr.contains("Ctrl-C again"), "{stderr}");
}

#[test]
fn sighup_estops_requeues_and_exits_129() {
    let stderr = assert_stopped_properly(Signal::SIGHUP);
    assert!(
        stderr.contains("SIGHUP — EStop sent to the robot"),
        "{stderr}"
    );
}

#[test]
fn sigquit_estops_requeues_and_exits_131() {
    let stderr = assert_stopped_properly(Signal::SIGQUIT);
    assert!(
        stderr.contains("SIGQUIT — EStop sent to the robot"),
        "{stderr}"
    );
}

/// Collects a child's stderr lines as they come.
fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

#[test]
fn a_second_signal_exits_at_once_with_the_first_signals_status() {
    let w = Workdir::new();
    let log = w.event_log();
    let sim = HandSim::start(&["--step-delay-ms", "4", "--event-log", log.to_str().unwrap()]);
    let config = w.hand_config(&sim.device, 4, 300);
    let mut child = w.spawn_run(&config);
    let stderr = collect_lines(child.stderr.take().unwrap());
    wait_for(Duration::from_secs(60), "an episode to start", || {
        !named(&w.events(), "episode_start").is_empty()
    });
    // A frozen robot never acknowledges the EStop: the daemon stays in its orderly stop (up
    // to 2 s) while the second signal arrives.
    send(sim.child.id(), Signal::SIGSTOP);
    send(child.id(), Signal::SIGTERM);
    wait_for(Duration::from_secs(10), "the first signal's notice", || {
        stderr.lock().unwrap().contains("SIGTERM")
    });
    send(child.id(), Signal::SIGINT);
    let status = child.wait().unwrap();
    send(sim.child.id(), Signal::SIGCONT);
    let stderr = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(143), "{status}; stderr: {stderr}");
    assert!(stderr.contains("exiting now"), "{stderr}");
    wait_for(
        Duration::from_secs(10),
        "the robot to receive both EStops",
        || named(&w.events(), "estop").len() >= 2,
    );
}

/// The child processes of `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so count from its ')'.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .collect()
}

/// Whether `pid` has ended (gone, or a zombie waiting for its parent).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The signals blocked in process `pid` (its main thread), from /proc.
fn blocked_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as u64 - 1)
}

const STOP: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Starts a daemon on its own simulated robot and returns both once an episode runs.
fn daemon_with_sim(w: &Workdir) -> (std::process::Child, u32) {
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 4, 300, 4.0));
    let child = w.spawn_run(&config);
    wait_for(Duration::from_secs(60), "an episode to start", || {
        !named(&w.events(), "episode_start").is_empty()
    });
    let sims = children_of(child.id());
    assert_eq!(sims.len(), 1, "the daemon's children: {sims:?}");
    (child, sims[0])
}

#[test]
fn the_daemons_simulated_robot_answers_sigterm_and_ends_with_the_daemon() {
    // The daemon blocks the stop signals; the robot it starts must not inherit that.
    let w = Workdir::new();
    let (daemon, sim) = daemon_with_sim(&w);
    let blocked = blocked_signals(sim);
    for s in STOP {
        assert_eq!(blocked & bit(s), 0, "the simulated robot blocks {s}");
    }
    send(sim, Signal::SIGTERM);
    wait_for(
        Duration::from_secs(10),
        "the simulated robot to die",
        || ended(sim),
    );
    let out = daemon.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("lost the robot"), "{stderr}");

    // And a robot outlives no daemon that stops on a signal.
    let w = Workdir::new();
    let (daemon, sim) = daemon_with_sim(&w);
    send(daemon.id(), Signal::SIGTERM);
    let out = daemon.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    wait_for(
        Duration::from_secs(10),
        "the simulated robot to end",
        || ended(sim),
    );
}

#[test]
fn a_sim_started_with_stop_signals_blocked_still_dies_on_sigterm() {
    let mut cmd = Command::new(bin());
    cmd.arg("sim")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: building a sigset in place
    // and sigprocmask.
    unsafe {
        cmd.pre_exec(|| {
            let blocked: SigSet = STOP.into_iter().collect();
            blocked.thread_block().map_err(std::io::Error::from)
        });
    }
    let mut sim = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("PTY "), "{line}");
    send(sim.id(), Signal::SIGTERM);
    let mut status = None;
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            Duration::from_secs(10),
            "the simulated robot to die",
            || {
                status = sim.try_wait().unwrap();
                status.is_some()
            },
        )
    }));
    if waited.is_err() {
        let _ = sim.kill();
        let _ = sim.wait();
        panic!("the simulated robot ignored SIGTERM (it kept its parent's blocked signals)");
    }
    assert_eq!(status.unwrap().signal(), Some(Signal::SIGTERM as i32));
}
