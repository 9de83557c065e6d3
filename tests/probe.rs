//! `gaittune probe` against `gaittune sim` over a real pseudo-terminal: a conforming
//! firmware passes every check, and a firmware that breaks one rule (a `--quirk`) fails
//! exactly the check that owns that rule. The probe always leaves the robot latched stopped.

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

/// Wall time per control step of the sims, ms: with a 300 ms watchdog a probe run takes
/// about 2 s.
const STEP_DELAY_MS: &str = "2";

/// The checks, in report order.
const CHECKS: [&str; 12] = [
    "version",
    "declarations",
    "heartbeats",
    "set-params-echo",
    "episode",
    "retry-idempotence",
    "abort",
    "estop-stop",
    "estop-latch",
    "watchdog",
    "lost-frame-recovery",
    "status",
];

/// A sim with a 300 ms watchdog, `step_delay_ms` per step, 1 ms resets, then `extra`.
fn sim_paced(step_delay_ms: &str, extra: &[&str], event_log: Option<&std::path::Path>) -> HandSim {
    let log = event_log.map(|p| p.display().to_string());
    let mut args = vec![
        "--watchdog-ms",
        "300",
        "--step-delay-ms",
        step_delay_ms,
        "--reset-delay-ms",
        "1",
    ];
    args.extend(extra);
    if let Some(log) = &log {
        args.extend(["--event-log", log.as_str()]);
    }
    HandSim::start(&args)
}

/// A sim at the usual pace (see [`sim_paced`]).
fn sim(extra: &[&str], event_log: Option<&std::path::Path>) -> HandSim {
    sim_paced(STEP_DELAY_MS, extra, event_log)
}

/// `gaittune probe DEVICE --estop-samples 5 --json [extra]`: exit status and report.
fn probe_json(device: &str, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(bin())
        .args(["probe", device, "--estop-samples", "5", "--json"])
        .args(extra)
        .output()
        .expect("run gaittune probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "probe printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exited"), report)
}

/// (name, verdict) per row.
fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts the rows are exactly `CHECKS` with `expected(name)` as verdicts.
fn assert_verdicts(report: &Value, expected: impl Fn(&str) -> &'static str) {
    let got = verdicts(report);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, CHECKS, "{report:#}");
    for (name, verdict) in &got {
        assert_eq!(verdict, expected(name), "check {name}: {report:#}");
    }
}

/// Asserts the robot's last command was EStop and it stayed latched: after the last `estop`
/// event the sim logged nothing but status queries answered in state Stopped.
fn assert_left_latched(events: &[Value]) {
    let last = events
        .iter()
        .rposition(|e| e["event"] == "estop")
        .unwrap_or_else(|| panic!("the robot never saw EStop: {events:?}"));
    for e in &events[last + 1..] {
        assert!(
            e["event"] == "status" && e["state"] == "Stopped",
            "after the final EStop the robot logged {e}"
        );
    }
}

#[test]
fn the_synthetic_sim_passes_every_check_and_is_left_latched() {
    let w = Workdir::new();
    let s = sim(&[], Some(&w.event_log()));
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(&report, |_| "PASS");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["left_latched"], true, "{report:#}");
    assert_eq!(report["params"].as_array().unwrap().len(), 8);
    assert_eq!(report["robot"]["protocol_version"], 2);
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("robot left latched stopped"));
    assert_left_latched(&w.events());
}

#[test]
fn the_physics_sim_passes_every_check_and_prints_a_table() {
    let s = sim(&["--model", "physics"], None);
    let out = Command::new(bin())
        .args(["probe", &s.device, "--estop-samples", "5"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    for name in CHECKS {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"));
        assert!(row.contains("PASS"), "{row}\n{table}");
    }
    assert!(table.contains("declared parameters"), "{table}");
    assert!(table.contains("12 passed, 0 failed, 0 skipped"), "{table}");
    assert!(table.contains("robot left latched stopped"), "{table}");
}

#[test]
fn a_v1_only_firmware_passes_with_the_status_check_skipped() {
    let s = sim(&["--quirk", "v1-only"], None);
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(
        &report,
        |name| if name == "status" { "SKIP" } else { "PASS" },
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["robot"]["protocol_version"], 1);
    assert!(
        report["checks"][0]["measured"]
            .as_str()
            .unwrap()
            .contains("v1 only; GetStatus checks skipped"),
        "{report:#}"
    );
    assert_eq!(report["left_latched"], true, "{report:#}");
}

/// A sim with `quirk` (stepping every `step_delay_ms`) fails `check` and nothing else; exit 1.
fn only_this_check_fails(quirk: &str, step_delay_ms: &str, check: &str) -> Value {
    let s = sim_paced(step_delay_ms, &["--quirk", quirk], None);
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(&report, |name| if name == check { "FAIL" } else { "PASS" });
    assert_eq!(code, 1, "{report:#}");
    let row = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap();
    let failure = &row["failures"][0];
    for field in ["expected", "seen", "spec"] {
        assert!(
            !failure[field].as_str().unwrap_or("").is_empty(),
            "{field} in {row:#}"
        );
    }
    assert_eq!(report["left_latched"], true, "{report:#}");
    report
}

#[test]
fn a_clamp_without_its_mask_bit_fails_set_params_echo() {
    only_this_check_fails("no-clamp-bit", STEP_DELAY_MS, "set-params-echo");
}

#[test]
fn a_retry_executed_twice_fails_retry_idempotence() {
    only_this_check_fails("no-retry-store", STEP_DELAY_MS, "retry-idempotence");
}

#[test]
fn a_firmware_without_watchdog_fails_the_watchdog_check() {
    // 5 ms steps: the 200-step episode outlasts watchdog + margin (450 ms).
    only_this_check_fails("no-watchdog", "5", "watchdog");
}

#[test]
fn steps_after_the_estop_ack_fail_estop_stop_and_the_robot_ends_latched() {
    let w = Workdir::new();
    let s = sim(&["--quirk", "late-estop=3"], Some(&w.event_log()));
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(
        &report,
        |name| {
            if name == "estop-stop" {
                "FAIL"
            } else {
                "PASS"
            }
        },
    );
    assert_eq!(code, 1, "{report:#}");
    let seen = report["checks"][7]["failures"][0]["seen"].as_str().unwrap();
    assert!(seen.contains("Step(s) after the Ack"), "{report:#}");
    assert_left_latched(&w.events());
}

#[test]
fn an_estop_that_does_not_latch_fails_estop_latch() {
    let s = sim(&["--quirk", "no-latch"], None);
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(&report, |name| {
        if name == "estop-latch" {
            "FAIL"
        } else {
            "PASS"
        }
    });
    assert_eq!(code, 1, "{report:#}");
    // Even its final EStop does not latch, and the summary says so.
    assert_eq!(report["left_latched"], false, "{report:#}");
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("not Stopped: check it by hand"));
}

#[test]
fn an_ignored_abort_fails_abort() {
    only_this_check_fails("ignore-abort", STEP_DELAY_MS, "abort");
}

#[test]
fn slow_heartbeats_fail_heartbeats() {
    only_this_check_fails("slow-heartbeat=600", STEP_DELAY_MS, "heartbeats");
}

#[test]
fn a_step_before_the_ack_fails_episode() {
    let report = only_this_check_fails("step-before-ack", STEP_DELAY_MS, "episode");
    assert_eq!(report["checks"][4]["failures"][0]["spec"], "§7.3");
}

#[test]
fn a_miscounted_episode_end_fails_episode() {
    let report = only_this_check_fails("miscount-steps", STEP_DELAY_MS, "episode");
    assert_eq!(report["checks"][4]["failures"][0]["spec"], "§5 EpisodeEnd");
}

#[test]
fn a_bad_schema_hash_fails_declarations_and_stops_at_the_handshake() {
    let w = Workdir::new();
    let s = sim(&["--quirk", "bad-schema-hash"], Some(&w.event_log()));
    let (code, report) = probe_json(&s.device, &[]);
    assert_verdicts(&report, |name| match name {
        "version" => "PASS",
        "declarations" => "FAIL",
        _ => "SKIP",
    });
    assert_eq!(code, 1, "{report:#}");
    assert!(report["aborted"]
        .as_str()
        .unwrap()
        .contains("must refuse these declarations"));
    let events = w.events();
    assert!(named(&events, "set_params").is_empty(), "{events:?}");
    assert!(named(&events, "episode_start").is_empty(), "{events:?}");
    assert_left_latched(&events);
}

#[test]
fn a_missing_device_exits_2() {
    let (code, report) = probe_json("/dev/does-not-exist-gaittune", &[]);
    assert_eq!(code, 2, "{report:#}");
    assert!(report["aborted"]
        .as_str()
        .unwrap()
        .contains("/dev/does-not-exist-gaittune"));
    assert_verdicts(&report, |_| "SKIP");
}

#[test]
fn a_latched_robot_is_not_moved_without_release_latch() {
    let w = Workdir::new();
    let s = sim(&[], Some(&w.event_log()));
    let (first, _) = probe_json(&s.device, &[]);
    assert_eq!(first, 0);
    let starts = named(&w.events(), "episode_start").len();
    let (code, report) = probe_json(&s.device, &[]);
    assert_eq!(code, 2, "{report:#}");
    assert!(report["aborted"]
        .as_str()
        .unwrap()
        .contains("--release-latch"));
    let events = w.events();
    assert_eq!(named(&events, "episode_start").len(), starts, "it moved");
    assert_left_latched(&events);
}

#[test]
fn ctrl_c_ends_with_estop_and_exit_130() {
    let w = Workdir::new();
    // 2 s episodes: the whole probe must not finish before the signal lands on a loaded
    // machine (at the usual pace it takes about a second).
    let s = sim_paced("10", &[], Some(&w.event_log()));
    let child = Command::new(bin())
        .args(["probe", &s.device, "--estop-samples", "5", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        std::time::Duration::from_secs(30),
        "the probe's second episode",
        || named(&w.events(), "episode_start").len() >= 2,
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report after Ctrl-C ({e}); exit {:?}; stderr:\n{}\nthe sim's events:\n{:#?}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            w.events()
        )
    });
    assert_eq!(out.status.code(), Some(130), "{report:#}");
    assert_eq!(report["aborted"], "interrupted", "{report:#}");
    assert_eq!(report["left_latched"], true, "{report:#}");
    assert_left_latched(&w.events());
}

#[test]
fn a_firmware_faster_than_its_step_period_is_inconclusive_not_failed() {
    // No step delay: 200 steps run in a few ms, before any watchdog, Abort or EStop can
    // land. Those checks may only say SKIP, and the robot is Ready for the next check.
    let s = sim_paced("0", &[], None);
    let (code, report) = probe_json(&s.device, &[]);
    assert_eq!(code, 0, "{report:#}");
    for (name, verdict) in verdicts(&report) {
        let timing = ["abort", "estop-stop", "watchdog"].contains(&name.as_str());
        let allowed: &[&str] = if timing { &["PASS", "SKIP"] } else { &["PASS"] };
        assert!(allowed.contains(&verdict.as_str()), "{name}: {report:#}");
    }
}
