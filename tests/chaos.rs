//! `gaittune chaos`, the fault-injecting proxy, driven with the real binaries over real ptys:
//! the proxy is transparent without faults; each fault kind is injected as specified (seen
//! by a scripted host, the proxy's --log and the robot's --event-log); and the daemon
//! recovers from each kind, storing exactly what the robot ran.
//! The recovery tests run a single fault kind each (a version-1 firmware too) and check
//! that no trial failed, every record matches the robot's event log, intermediate values sit
//! on the robot's step grid, and the fault was recorded as what it was.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use firmware_protocol::{EpisodeStatus, RobotMsg, RobotState};
use serde_json::Value;

/// Every scripted exchange gives up after this long.
const LIMIT: Duration = Duration::from_secs(20);
/// A recovering daemon must finish its study within this long.
const RECOVERY_LIMIT: Duration = Duration::from_secs(90);

/// The simulated robot of the scripted tests: 2 ms per step.
const PACED: &[&str] = &["--step-delay-ms", "2", "--reset-delay-ms", "1"];

fn chaos(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("chaos")
        .args(args)
        .output()
        .expect("run gaittune chaos")
}

fn episode_ends(msgs: &[(Instant, RobotMsg)]) -> Vec<&RobotMsg> {
    msgs.iter()
        .map(|(_, m)| m)
        .filter(|m| matches!(m, RobotMsg::EpisodeEnd { .. }))
        .collect()
}

fn is_end_of(episode: u16) -> impl Fn(&RobotMsg) -> bool {
    move |m| matches!(m, RobotMsg::EpisodeEnd { episode: e, .. } if *e == episode)
}

fn without(trial: &Value, keys: &[&str]) -> Value {
    let mut t = trial.clone();
    for k in keys {
        t.as_object_mut().unwrap().remove(*k);
    }
    // What the link recovered from (a retry on a busy machine) depends on timing, not on
    // what the robot ran.
    if let Some(attrs) = t["attrs"].as_object_mut() {
        attrs.remove("link_incidents");
    }
    t
}

/// What the robot did, without the clock and boot ids.
fn robot_story(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] != "hello")
        .map(|e| without(e, &["t_ms"]))
        .collect()
}

// ------------------------------------------------------------------------- the command line

#[test]
fn bad_fault_specs_and_a_missing_robot_are_refused_with_clear_errors() {
    let out = chaos(&["--fault", "drop:p=1.5", "--", "true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fault \"drop:p=1.5\": p must be a probability between 0 and 1"),
        "{stderr}"
    );

    let out = chaos(&["--fault", "reboot:at-start=2", "--device", "/dev/null"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reboot:at-start=2") && stderr.contains("--device"),
        "{stderr}"
    );

    let out = chaos(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no robot"));

    let out = chaos(&["--", "sh", "-c", "echo hello"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected 'PTY <path>'"), "{stderr}");
}

#[test]
fn the_proxy_and_its_robot_stop_together() {
    // The robot exits: so does the proxy.
    let w = Workdir::new();
    let mut proxy = ChaosProxy::start(&w, 0, &[], &[]);
    let robot = proxy.robot_pid().expect("the proxy's robot process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(robot),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the proxy to exit", || {
        proxy.child.try_wait().unwrap().is_some()
    });

    // The proxy is stopped: so is the robot.
    let w = Workdir::new();
    let mut proxy = ChaosProxy::start(&w, 0, &[], &[]);
    let robot = proxy.robot_pid().expect("the proxy's robot process");
    terminate(&mut proxy.child, Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "the robot process to exit", || {
        !std::path::Path::new(&format!("/proc/{robot}")).exists()
            || std::fs::read_to_string(format!("/proc/{robot}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

// ------------------------------------------------------------------------------ fidelity

#[test]
fn a_study_through_the_proxy_without_faults_is_the_study_without_it() {
    // Paced so that an EStop always lands before the next step (no race to differ on).
    let sim_args = ["--step-delay-ms", "5", "--reset-delay-ms", "1"];
    let direct = Workdir::new();
    let sim = HandSim::start(
        &[
            &sim_args[..],
            &["--event-log", direct.event_log().to_str().unwrap()],
        ]
        .concat(),
    );
    direct.run_ok(&direct.hand_config(&sim.device, 6, 60));
    drop(sim);

    let proxied = Workdir::new();
    let proxy = ChaosProxy::start(&proxied, 0, &[], &sim_args);
    let run = run_within(
        &proxied,
        &proxied.hand_config(&proxy.device, 6, 60),
        &[],
        Duration::from_secs(120),
    );
    assert!(
        run.status.is_some_and(|s| s.success()),
        "through the proxy: {}",
        run.output()
    );

    let strip = |trials: Vec<Value>| -> Vec<Value> {
        trials
            .iter()
            .map(|t| without(t, &["started_at", "finished_at", "worker"]))
            .collect()
    };
    let (a, b) = (strip(direct.export("it")), strip(proxied.export("it")));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "the same study through the proxy");
    assert_eq!(
        robot_story(&direct.events()),
        robot_story(&proxied.events()),
        "the robot saw the same commands"
    );
    assert!(proxy.injected().is_empty());
    assert_study_matches_robot(&proxied.export("it"), &proxied.events());
}

#[test]
fn the_proxy_serves_an_existing_device_and_hosts_that_reconnect() {
    let w = Workdir::new();
    let log = w.event_log();
    let sim = HandSim::start(&[PACED, &["--event-log", log.to_str().unwrap()]].concat());
    let mut cmd = Command::new(bin());
    cmd.args(["chaos", "--fault", "dup:type=Ready", "--log"])
        .arg(w.path("chaos.jsonl"))
        .args(["--device", &sim.device]);
    let proxy = ChaosProxy::spawn(cmd, w.path("chaos.jsonl"));
    for round in 0..3 {
        let mut host = ScriptHost::open(&proxy.device);
        host.handshake_and_apply_defaults();
        let more = host.recv_for(Duration::from_millis(300));
        assert!(
            more.iter().any(|(_, m)| matches!(m, RobotMsg::Ready)),
            "round {round}: the duplicate Ready: {more:?}"
        );
    }
    assert_eq!(faults_of(&proxy.injected(), "dup").len(), 3);
    assert_eq!(named(&w.events(), "hello").len(), 3);
}

// ---------------------------------------------------------------- each fault is injected

#[test]
fn drop_of_one_episode_end_drops_exactly_that_frame() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["drop:type=EpisodeEnd:count=1"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(4, 0, 20);
    let first = host.recv_until(LIMIT, "Ready after episode 0", |m| {
        matches!(m, RobotMsg::Ready)
    });
    host.start(4, 1, 20);
    let second = host.recv_until(LIMIT, "episode 1's end", is_end_of(1));

    assert_eq!(steps_of(&first).len(), 20);
    assert!(episode_ends(&first).is_empty(), "{first:?}");
    assert_eq!(episode_ends(&second).len(), 1);
    assert_eq!(
        named(&w.events(), "episode_end").len(),
        2,
        "the robot sent both"
    );
    let injected = proxy.injected();
    assert_eq!(injected.len(), 1, "{injected:?}");
    let i = &injected[0];
    assert_eq!(
        (&i["fault"], &i["dir"], &i["type"]),
        (&"drop".into(), &"down".into(), &"EpisodeEnd".into())
    );
    assert_eq!(
        (&i["trial"], &i["episode"], &i["step"]),
        (&4.into(), &0.into(), &20.into())
    );
    assert!(i["t_unix_ms"].as_f64().unwrap() > 1.6e12, "{i}");
}

#[test]
fn dup_sends_the_chosen_steps_twice() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["dup:type=Step:every=5"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(2, 0, 20);
    let got = host.recv_until(LIMIT, "the episode's end", is_end_of(0));
    let mut want: Vec<(u16, u32)> = Vec::new();
    for k in 0..20 {
        want.push((0, k));
        if k % 5 == 4 {
            want.push((0, k));
        }
    }
    assert_eq!(steps_of(&got), want);
    let injected = proxy.injected();
    let steps: Vec<u64> = injected
        .iter()
        .map(|i| i["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [4, 9, 14, 19]);
    assert!(injected
        .iter()
        .all(|i| i["fault"] == "dup" && i["type"] == "Step"));
}

#[test]
fn corrupting_one_episode_end_destroys_that_frame() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["corrupt:type=EpisodeEnd:count=1"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(1, 0, 20);
    let first = host.recv_until(LIMIT, "Ready after episode 0", |m| {
        matches!(m, RobotMsg::Ready)
    });
    host.start(1, 1, 20);
    let second = host.recv_until(LIMIT, "episode 1's end", is_end_of(1));
    assert!(episode_ends(&first).is_empty(), "{first:?}");
    assert_eq!(episode_ends(&second).len(), 1);
    let injected = proxy.injected();
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(injected[0]["type"], "EpisodeEnd");
    assert!(
        injected[0]["detail"].as_str().unwrap().contains("bit"),
        "{}",
        injected[0]
    );
}

#[test]
fn byte_corruption_destroys_every_frame_it_hits() {
    let w = Workdir::new();
    // after=3000 bytes: the handshake passes clean; p per byte afterwards.
    let proxy = ChaosProxy::start(&w, 3, &["corrupt:dir=down:after=3000:p=0.002"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(1, 0, 400);
    let mut got = Vec::new();
    let start = Instant::now();
    while named(&w.events(), "episode_end").is_empty() {
        assert!(start.elapsed() < LIMIT, "the episode did not end");
        got.extend(host.recv_for(Duration::from_millis(100)));
    }
    got.extend(host.recv_for(Duration::from_millis(300)));

    let injected = proxy.injected();
    assert!(!injected.is_empty(), "about 0.2% of ~16000 bytes");
    assert!(injected
        .iter()
        .all(|i| i["fault"] == "corrupt" && i["dir"] == "down"));
    let received: std::collections::HashSet<u32> =
        steps_of(&got).into_iter().map(|(_, k)| k).collect();
    let lost: std::collections::HashSet<u32> = (0..400).filter(|k| !received.contains(k)).collect();
    let hit: std::collections::HashSet<u32> = injected
        .iter()
        .filter(|i| i["type"] == "Step")
        .map(|i| i["step"].as_u64().unwrap() as u32)
        .collect();
    assert!(!hit.is_empty(), "{injected:?}");
    assert!(hit.is_subset(&lost), "hit {hit:?}, lost {lost:?}");
    assert!(
        lost.len() <= 2 * injected.len(),
        "a flipped bit costs at most two frames: lost {lost:?}, {} flips",
        injected.len()
    );
}

#[test]
fn delay_holds_a_frame_and_everything_behind_it() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["delay:type=Ack:count=1:ms=400"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    let sent = host.start(1, 0, 20);
    let got = host.recv_until(LIMIT, "the episode's end", is_end_of(0));
    let ack = got
        .iter()
        .position(|(_, m)| matches!(m, RobotMsg::Ack { .. }))
        .expect("the Ack arrives");
    let first_step = got
        .iter()
        .position(|(_, m)| matches!(m, RobotMsg::Step(_)))
        .unwrap();
    assert!(ack < first_step, "order is kept");
    let held = Duration::from_millis(380);
    assert!(got[ack].0 - sent >= held, "{:?}", got[ack].0 - sent);
    assert!(
        got[first_step].0 - sent >= held,
        "the Steps behind it waited too"
    );
    assert_eq!(steps_of(&got).len(), 20, "nothing lost");
    let injected = proxy.injected();
    assert_eq!(injected.len(), 1);
    assert_eq!(
        (&injected[0]["fault"], &injected[0]["type"]),
        (&"delay".into(), &"Ack".into())
    );
}

#[test]
fn swap_garbles_the_chosen_frames() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["swap:type=Step:every=4"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(1, 0, 20);
    let got = host.recv_until(LIMIT, "the episode's end", is_end_of(0));
    let want: Vec<(u16, u32)> = (0..20).filter(|k| k % 4 != 3).map(|k| (0, k)).collect();
    assert_eq!(steps_of(&got), want, "the swapped frames are discarded");
    let injected = proxy.injected();
    let steps: Vec<u64> = injected
        .iter()
        .map(|i| i["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [3, 7, 11, 15, 19]);
    assert!(injected[0]["detail"].as_str().unwrap().contains("swapped"));
}

#[test]
fn reboot_at_the_second_start_reboots_the_robot_during_that_episode() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["reboot:at-start=2"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(6, 0, 20);
    host.recv_until(LIMIT, "Ready after episode 0", |m| {
        matches!(m, RobotMsg::Ready)
    });
    host.start(6, 1, 2000);
    let got = host.recv_until(LIMIT, "the rebooted robot's Idle heartbeat", |m| {
        matches!(
            m,
            RobotMsg::Heartbeat {
                state: RobotState::Idle,
                ..
            }
        )
    });
    assert!(episode_ends(&got).is_empty());
    let events = w.events();
    let reboots = named(&events, "reboot");
    assert_eq!(reboots.len(), 1, "{events:?}");
    assert_eq!(
        (&reboots[0]["trial"], &reboots[0]["episode"]),
        (&6.into(), &1.into())
    );
    let step = reboots[0]["step"].as_u64().unwrap();
    assert!((10..2000).contains(&step), "{}", reboots[0]);
    let injected = proxy.injected();
    assert_eq!(injected.len(), 1);
    let i = &injected[0];
    assert_eq!(i["fault"], "reboot");
    assert_eq!(
        (&i["type"], &i["trial"], &i["episode"], &i["step"]),
        (&"Step".into(), &6.into(), &1.into(), &9.into()),
        "set off by the episode's 10th step"
    );
}

#[test]
fn stall_holds_the_line_for_its_time() {
    let w = Workdir::new();
    let proxy = ChaosProxy::start(&w, 1, &["stall:dir=down:ms=600:after-steps=10"], PACED);
    let mut host = ScriptHost::open(&proxy.device);
    host.handshake_and_apply_defaults();
    host.start(1, 0, 30);
    let got = host.recv_until(LIMIT, "the episode's end", is_end_of(0));
    assert_eq!(steps_of(&got), (0..30).map(|k| (0, k)).collect::<Vec<_>>());
    let at = |step: u32| {
        got.iter()
            .find(|(_, m)| matches!(m, RobotMsg::Step(s) if s.step == step))
            .unwrap()
            .0
    };
    assert!(
        at(10) - at(9) >= Duration::from_millis(550),
        "{:?}",
        at(10) - at(9)
    );
    assert!(matches!(
        got.last().unwrap().1,
        RobotMsg::EpisodeEnd {
            status: EpisodeStatus::Completed,
            ..
        }
    ));
    let injected = proxy.injected();
    assert_eq!(injected.len(), 1);
    assert_eq!(
        (&injected[0]["fault"], &injected[0]["dir"]),
        (&"stall".into(), &"down".into())
    );
}

// --------------------------------------------------------------- the daemon recovers

/// Runs a 6-trial study (100-step episodes, 1 ms per step) through a proxy injecting
/// `faults` into a robot run with `sim_args`, and checks the daemon recovered: it finished
/// the study (exit 0) within [`RECOVERY_LIMIT`], and the stored study is what the robot ran.
fn assert_recovers(faults: &[&str], sim_args: &[&str]) -> Vec<Value> {
    let w = Workdir::new();
    let robot = [&["--step-delay-ms", "1", "--reset-delay-ms", "1"], sim_args].concat();
    let proxy = ChaosProxy::start(&w, 7, faults, &robot);
    let config = w.hand_config(&proxy.device, 6, 100);
    let run = run_within(&w, &config, &[], RECOVERY_LIMIT);
    let injected = proxy.injected();
    let context = || {
        format!(
            "{}\n--- faults injected\n{}\n--- the robot's last events\n{}",
            run.output(),
            injected
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            w.events()
                .iter()
                .rev()
                .take(15)
                .rev()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let Some(status) = run.status else {
        panic!(
            "the daemon hung: killed after {:?}\n{}",
            run.elapsed,
            context()
        );
    };
    assert!(
        status.success(),
        "the daemon failed ({status}):\n{}",
        context()
    );
    assert!(
        !injected.is_empty(),
        "no fault was injected:\n{}",
        context()
    );
    let export = w.export("it");
    let finished = export
        .iter()
        .filter(|t| matches!(t["state"].as_str(), Some("COMPLETE" | "PRUNED" | "FAIL")))
        .count();
    assert_eq!(finished, 6, "{export:?}");
    assert!(
        in_state(&export, "FAIL").is_empty(),
        "one fault failed a trial: {export:?}"
    );
    assert_study_matches_robot(&export, &w.events());
    // Intermediate values sit at the trial's report steps, placed by the robot's own step
    // index: never past the trial's 100 steps, never off the grid of 10.
    for t in &export {
        for pair in t["intermediate"].as_array().unwrap() {
            let step = pair[0].as_u64().unwrap();
            assert!(
                step <= 100 && step % 10 == 0,
                "trial {}: {pair}",
                t["number"]
            );
        }
    }
    export
}

/// The kinds of the link incidents recorded with the study's trials.
fn incident_kinds(export: &[Value]) -> Vec<String> {
    export
        .iter()
        .flat_map(|t| {
            t["attrs"]["link_incidents"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|i| i["kind"].as_str().map(str::to_string))
        .collect()
}

fn assert_incident(export: &[Value], kind: &str) {
    let kinds = incident_kinds(export);
    assert!(
        kinds.iter().any(|k| k == kind),
        "no {kind} incident: {kinds:?}"
    );
}

#[test]
fn recovers_from_a_dropped_episode_end() {
    let export = assert_recovers(&["drop:type=EpisodeEnd:after=2:count=1"], &[]);
    assert_incident(&export, "lost_episode_end");
}

#[test]
fn recovers_from_a_dropped_ready() {
    assert_recovers(&["drop:type=Ready:after=2:count=1"], &[]);
}

#[test]
fn recovers_from_a_corrupted_episode_end() {
    assert_recovers(&["corrupt:type=EpisodeEnd:after=2:count=1"], &[]);
}

#[test]
fn recovers_from_duplicated_steps() {
    let export = assert_recovers(&["dup:type=Step:p=0.15"], &[]);
    // Each step counted once: a complete trial's projection at its last step is its return.
    for t in in_state(&export, "COMPLETE") {
        let last = t["intermediate"].as_array().unwrap().last().unwrap();
        let (value, projected) = (t["value"].as_f64().unwrap(), last[1].as_f64().unwrap());
        assert_eq!(last[0], 100, "{t}");
        assert!(
            (value - projected).abs() <= 1e-4 * value.abs().max(1.0),
            "trial {}: projected {projected} at step 100, returned {value}",
            t["number"]
        );
    }
}

#[test]
fn recovers_from_dropped_steps() {
    let export = assert_recovers(&["drop:type=Step:p=0.05"], &[]);
    assert!(
        export.iter().any(|t| t["attrs"]["step_gaps"].is_array()),
        "lost steps are recorded as gaps: {export:?}"
    );
}

#[test]
fn recovers_from_a_dropped_ack() {
    assert_recovers(&["drop:type=Ack:after=1:count=1"], &[]);
}

#[test]
fn recovers_from_delayed_frames() {
    assert_recovers(&["delay:p=0.01:ms=300"], &[]);
}

#[test]
fn recovers_from_swapped_bytes() {
    assert_recovers(&["swap:p=0.01"], &[]);
}

#[test]
fn recovers_from_a_reboot_mid_episode() {
    let export = assert_recovers(&["reboot:at-start=3"], &[]);
    assert_incident(&export, "reboot");
}

#[test]
fn recovers_from_a_line_stall() {
    let export = assert_recovers(&["stall:ms=1500:after-steps=150"], &[]);
    assert_incident(&export, "link_lost");
}

#[test]
fn v1_firmware_recovers_from_a_dropped_episode_end() {
    let export = assert_recovers(
        &["drop:type=EpisodeEnd:after=2:count=1"],
        &["--quirk", "v1-only"],
    );
    // Version 1 cannot say how the episode ended: it ran again.
    assert_incident(&export, "lost_episode_end");
}

#[test]
fn v1_firmware_recovers_from_a_reboot_mid_episode() {
    let export = assert_recovers(&["reboot:at-start=3"], &["--quirk", "v1-only"]);
    assert_incident(&export, "reboot");
}
