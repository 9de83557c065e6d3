//! `gaittune probe DEVICE`: a conformance check a firmware author runs against a board (or
//! the simulator). It speaks the protocol itself, frame by frame, through the
//! `firmware-protocol` crate over a [`Port`](crate::robot::Port) (not through the daemon's
//! link), so it controls exactly what is sent — the same seq resent, silence, damaged bytes —
//! and measures what comes back.
//!
//! The checks run in a fixed order ([`CheckId::ALL`]); each judges its own SPEC
//! rules only, so one broken rule fails one row. After a failed check the probe brings the
//! robot back (EStop, ClearEStop, default parameters, Ready) and goes on. Episodes are at
//! most 200 steps with the firmware's default parameters. Host heartbeats go out every
//! watchdog_ms / 4 from the end of the handshake, except while the watchdog check keeps
//! quiet on purpose.
//!
//! **Safety.** Every exit path ends with EStop: the normal end, a failed check, a lost link,
//! Ctrl-C or SIGTERM (the signal handler writes EStop at once, then the probe waits for its
//! Ack) and a panic (a guard's `Drop`). The robot is therefore left latched stopped; the
//! summary says so.
//!
//! Exit status: 0 every check passed (or was skipped), 1 a check failed (including a
//! handshake a host must refuse: wrong version, bad declarations or schema hash), 2 the probe
//! could not run its checks (the device does not open, nothing answers Hello, or the robot is
//! latched stopped and `--release-latch` was not given), 130 interrupted.

mod checks;
mod report;
mod session;

pub use checks::CheckId;
pub use report::{CheckReport, EndState, Failure, ParamRow, Report, RobotSummary, Verdict};

use crate::control::{self, Interrupts};
use std::time::{Duration, Instant};

use firmware_protocol::{HostMsg, RobotMsg, RobotState};

use checks::{not_run, Check, Handshake, Probe, ANSWER_TIMEOUT};
use session::{Session, SessionError, Writer};

/// Exit status: every check passed.
pub const EXIT_PASSED: u8 = 0;
/// Exit status: at least one check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the checks could not run (no device, no answer, latched robot).
pub const EXIT_NO_ROBOT: u8 = 2;
/// Exit status after Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = crate::control::EXIT_INTERRUPTED as u8;

/// How long the probe listens to the robot's heartbeats.
const HEARTBEAT_WINDOW: Duration = Duration::from_millis(1100);

/// Options of `gaittune probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeOptions {
    /// The robot's serial device (or a pseudo-terminal, e.g. the one `gaittune sim` prints).
    pub device: String,
    /// Baud rate of a real serial line.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// How many EStops the estop-stop check measures.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub estop_samples: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Release a robot found latched stopped before the checks (they move it). Only when you
    /// have checked it is safe to move.
    #[arg(long)]
    pub release_latch: bool,
    /// Longest wait for Ready after a reset, ms.
    #[arg(long, default_value_t = 30_000)]
    pub ready_timeout_ms: u64,
}

/// Why the probe stopped before running every check.
enum Stop {
    /// It did not.
    Done,
    /// The checks could not run (exit 2).
    NoRobot(String),
    /// A check that a host must act on failed, or the robot could not be brought back.
    Halted(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Writes EStop when dropped while armed: the last resort on a panic.
struct EStopOnDrop(Option<Writer>);

impl Drop for EStopOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            let _ = w.estop();
        }
    }
}

/// Runs the probe against `opts.device` and returns its report (print it with
/// [`Report::table`] or [`Report::json`]; exit with [`Report::exit_code`]).
///
/// `interrupts` are the stop signals `control::install` took: the first sends EStop from
/// the signal thread at once, then the probe ends with its own final EStop.
pub fn run(opts: &ProbeOptions, interrupts: Interrupts) -> Report {
    let mut report = Report::new(&opts.device);
    progress(&format!("opening {} at {} baud", opts.device, opts.baud));
    let session = match Session::open(&opts.device, opts.baud, interrupts) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot open {}: {e}", opts.device);
            return finish(report, Stop::NoRobot(why), None);
        }
    };
    control::global_slot().arm(session.writer());
    let _guard = EStopOnDrop(Some(session.writer()));
    let (mut session, version, stop) = drive(session, opts, &mut report);
    progress("final EStop");
    session.ignore_interrupts();
    let end = final_estop(&mut session, version);
    finish(report, stop, Some(end))
}

/// Runs every check in order, appending rows to `report`; gives the session back with the
/// agreed protocol version (if any) and why it stopped.
fn drive(mut s: Session, opts: &ProbeOptions, report: &mut Report) -> (Session, Option<u16>, Stop) {
    macro_rules! attempt {
        ($e:expr, $s:expr, $id:expr, $version:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => {
                    let stop = on_error(report, $id, e);
                    return ($s, $version, stop);
                }
            }
        };
    }
    progress("version");
    let (c, handshake) = attempt!(checks::version(&mut s), s, CheckId::Version, None);
    let failed = c.failed();
    push(report, c);
    let info = match handshake {
        Handshake::Silent => return (s, None, Stop::NoRobot("no answer to Hello".into())),
        Handshake::Answered(None) => {
            return (s, None, Stop::Halted("no protocol version agreed".into()))
        }
        Handshake::Answered(Some(info)) => info,
    };
    report.robot = Some(info.summary());
    let version = Some(info.protocol_version);
    if failed {
        let why = "a host must refuse this Info (SPEC §7.1, §11)".into();
        return (s, version, Stop::Halted(why));
    }
    progress("declarations");
    let (c, params) = attempt!(
        checks::declarations(&mut s, &info),
        s,
        CheckId::Declarations,
        version
    );
    let failed = c.failed();
    report.params = params.clone();
    push(report, c);
    if failed {
        let why = "a host must refuse these declarations (SPEC §7.1)".into();
        return (s, version, Stop::Halted(why));
    }
    s.start_heartbeats(info.host_heartbeat_period());
    progress(&format!(
        "heartbeats: listening {:.1} s",
        HEARTBEAT_WINDOW.as_secs_f64()
    ));
    let (c, state) = attempt!(
        checks::heartbeats(&mut s, HEARTBEAT_WINDOW),
        s,
        CheckId::Heartbeats,
        version
    );
    push(report, c);
    let mut probe = Probe::new(
        s,
        info,
        params,
        Duration::from_millis(opts.ready_timeout_ms),
        opts.estop_samples,
    );
    if let Err(stop) = settle_initial_state(&mut probe, state, opts.release_latch) {
        return (probe.s, version, stop);
    }
    type CheckFn = fn(&mut Probe) -> Result<Check, SessionError>;
    let rest: [(CheckId, CheckFn); 9] = [
        (CheckId::SetParamsEcho, checks::set_params_echo),
        (CheckId::Episode, checks::episode),
        (CheckId::RetryIdempotence, checks::retry_idempotence),
        (CheckId::Abort, checks::abort),
        (CheckId::EStopStop, checks::estop_stop),
        (CheckId::EStopLatch, checks::estop_latch),
        (CheckId::Watchdog, checks::watchdog),
        (CheckId::LostFrameRecovery, checks::lost_frame_recovery),
        (CheckId::Status, checks::status),
    ];
    for (id, check) in rest {
        progress(id.name());
        match probe.ensure_ready() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let why = format!("the robot is not Ready before {}: {why}", id.name());
                return (probe.s, version, Stop::Halted(why));
            }
            Err(e) => {
                let stop = on_error(report, id, e);
                return (probe.s, version, stop);
            }
        }
        let c = attempt!(check(&mut probe), probe.s, id, version);
        let failed = c.failed();
        push(report, c);
        if failed {
            progress("bringing the robot back: EStop, ClearEStop, defaults, Ready");
            match probe.recover() {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    let why = format!("the robot did not come back after {}: {why}", id.name());
                    return (probe.s, version, Stop::Halted(why));
                }
                Err(e) => {
                    let stop = on_error(report, id, e);
                    report.checks.pop();
                    return (probe.s, version, stop);
                }
            }
        }
    }
    (probe.s, version, Stop::Done)
}

/// Before the active checks: a latched robot is released only with `--release-latch`; an
/// episode someone left running is aborted.
fn settle_initial_state(
    p: &mut Probe,
    state: Option<RobotState>,
    release_latch: bool,
) -> Result<(), Stop> {
    let result = match state {
        Some(RobotState::Stopped) if !release_latch => {
            return Err(Stop::NoRobot(
                "the robot is latched stopped; the checks move it: run again with --release-latch once it is safe"
                    .into(),
            ))
        }
        Some(RobotState::Stopped) => {
            progress("releasing the latch (--release-latch)");
            p.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT).map(|_| ())
        }
        Some(RobotState::Running) => {
            progress("an episode is running: Abort");
            p.s.request(&HostMsg::Abort, ANSWER_TIMEOUT).and_then(|_| {
                let settle = Instant::now() + p.step_period() * 3 + Duration::from_millis(100);
                p.s.idle_until(settle)
            })
        }
        _ => Ok(()),
    };
    result.map_err(|e| match e {
        SessionError::Interrupted => Stop::Interrupted,
        SessionError::Link(e) => Stop::Halted(format!("the link failed: {e}")),
    })
}

/// Turns an error during check `id` into its row and the reason to stop.
fn on_error(report: &mut Report, id: CheckId, e: SessionError) -> Stop {
    match e {
        SessionError::Interrupted => {
            report.checks.push(not_run(id, "interrupted"));
            Stop::Interrupted
        }
        SessionError::Link(e) => {
            let mut c = Check::new(id);
            c.fail("a working link", e.to_string(), "§7.5");
            push(report, c);
            Stop::Halted(format!("the link failed during {}", id.name()))
        }
    }
}

/// Appends a finished check to the report and prints its progress line.
fn push(report: &mut Report, c: Check) {
    let row = c.report();
    progress(&format!(
        "{}: {} {}",
        row.name,
        row.verdict.label(),
        row.measured
    ));
    report.checks.push(row);
}

/// Ends with EStop and waits for its Ack, then asks the state (GetStatus on v2, the next
/// heartbeat on v1). Best effort: errors leave fields empty.
fn final_estop(s: &mut Session, version: Option<u16>) -> EndState {
    let from = s.mark();
    let Ok((sent, ack)) = s.request(&HostMsg::EStop, ANSWER_TIMEOUT) else {
        return EndState {
            estop_acknowledged: false,
            state_after: None,
        };
    };
    let acknowledged = matches!(ack.map(|a| a.msg), Some(RobotMsg::Ack { .. }));
    let ack_at = s.frames()[from..]
        .iter()
        .position(|f| f.ack_seq() == Some(sent.seq))
        .map_or(s.mark(), |i| from + i + 1);
    let state = if !acknowledged {
        None
    } else if version.is_some_and(|v| v >= 2) {
        s.request(&HostMsg::GetStatus, ANSWER_TIMEOUT)
            .ok()
            .and_then(|(_, a)| match a.map(|a| a.msg) {
                Some(RobotMsg::Status(st)) => Some(st.state),
                _ => None,
            })
    } else {
        s.wait_heartbeat(ack_at, Duration::from_millis(1500))
            .ok()
            .flatten()
    };
    EndState {
        estop_acknowledged: acknowledged,
        state_after: state.map(|st| format!("{st:?}")),
    }
}

/// Completes the report: rows for checks that did not run, counts and the exit status.
fn finish(mut report: Report, stop: Stop, end: Option<EndState>) -> Report {
    let why = match &stop {
        Stop::Done => None,
        Stop::NoRobot(w) | Stop::Halted(w) => Some(w.clone()),
        Stop::Interrupted => Some("interrupted".to_string()),
    };
    for id in CheckId::ALL {
        if !report.checks.iter().any(|c| c.name == id.name()) {
            let note = why.as_deref().unwrap_or("not run");
            report.checks.push(not_run(id, &format!("not run: {note}")));
        }
    }
    let count = |v| report.checks.iter().filter(|c| c.verdict == v).count();
    report.passed = count(Verdict::Pass);
    report.failed = count(Verdict::Fail);
    report.skipped = count(Verdict::Skip);
    report.exit_code = match stop {
        Stop::Interrupted => EXIT_INTERRUPTED,
        Stop::NoRobot(_) => EXIT_NO_ROBOT,
        _ if report.failed > 0 => EXIT_FAILED,
        Stop::Halted(_) => EXIT_FAILED,
        Stop::Done => EXIT_PASSED,
    };
    report.aborted = why;
    report.end = end;
    report
}

/// One progress line on stderr.
fn progress(text: &str) {
    eprintln!("probe: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(verdict_of: impl Fn(CheckId) -> Verdict) -> Report {
        let mut r = Report::new("/dev/test");
        for id in CheckId::ALL {
            let mut c = Check::new(id);
            match verdict_of(id) {
                Verdict::Pass => {}
                Verdict::Fail => c.fail("x", "y", "§1"),
                Verdict::Skip => c.mark_skipped("why"),
            }
            r.checks.push(c.report());
        }
        r
    }

    fn latched() -> Option<EndState> {
        Some(EndState {
            estop_acknowledged: true,
            state_after: Some("Stopped".into()),
        })
    }

    #[test]
    fn the_exit_status_follows_the_rows_and_why_the_probe_stopped() {
        let pass = finish(rows(|_| Verdict::Pass), Stop::Done, latched());
        assert_eq!((pass.exit_code, pass.passed), (EXIT_PASSED, 12));
        assert!(pass.summary().contains("robot left latched stopped"));
        let skip = |id| {
            if id == CheckId::Status {
                Verdict::Skip
            } else {
                Verdict::Pass
            }
        };
        assert_eq!(
            finish(rows(skip), Stop::Done, latched()).exit_code,
            EXIT_PASSED
        );
        let fail = |id| {
            if id == CheckId::Abort {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        };
        let failed = finish(rows(fail), Stop::Done, latched());
        assert_eq!((failed.exit_code, failed.failed), (EXIT_FAILED, 1));
        let stopped = finish(rows(fail), Stop::Interrupted, latched());
        assert_eq!(stopped.exit_code, EXIT_INTERRUPTED);
        let none = finish(
            Report::new("/dev/x"),
            Stop::NoRobot("cannot open".into()),
            None,
        );
        assert_eq!((none.exit_code, none.skipped), (EXIT_NO_ROBOT, 12));
        assert!(none
            .checks
            .iter()
            .all(|c| c.measured == "not run: cannot open"));
    }

    #[test]
    fn the_summary_warns_when_the_robot_did_not_latch() {
        let mut end = latched();
        end.as_mut().unwrap().state_after = Some("Ready".into());
        let r = finish(rows(|_| Verdict::Pass), Stop::Done, end);
        assert!(
            r.summary().contains("reported Ready, not Stopped"),
            "{}",
            r.summary()
        );
        let unacked = Some(EndState {
            estop_acknowledged: false,
            state_after: None,
        });
        let r = finish(rows(|_| Verdict::Pass), Stop::Done, unacked);
        assert!(r.summary().contains("stop the robot by hand"));
        assert!(r.json().contains("\"left_latched\": false"));
    }
}
