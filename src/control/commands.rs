//! The operator's commands, one implementation for every endpoint (the control socket, the
//! dashboard): each is carried out here and answered with what happened.
//!
//! A command is a JSON object named by `cmd`:
//!
//! | `cmd`     | fields                                   | what it does |
//! |-----------|------------------------------------------|--------------|
//! | `status`  |                                          | the daemon's status |
//! | `stop`    |                                          | EStop now (latched); the trial in flight is re-queued; the study waits |
//! | `release` |                                          | ClearEStop after the operator's check; the study goes on |
//! | `pause`   | `now` (bool, default false)              | pause after the trial in flight (`now`: abort it and re-queue it) |
//! | `resume`  |                                          | end a pause |
//! | `skip`    |                                          | abort the trial in flight: PRUNED, reason `operator` |
//! | `fail`    | `trial`, `unsafe` (bool), `note` (text)  | the operator's verdict on a finished trial |
//! | `enqueue` | `params` (an object name → value)        | run this parameter set next |
//! | `go`      |                                          | the operator's go for the next episode (`[robot] operator_go`) |
//! | `trials`  |                                          | the study's trials (for the dashboard) |
//!
//! The answer is `{"ok": bool, "message": text, "status": {…}}`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::desk::Desk;
use super::global_slot;

/// One operator command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// The daemon's status.
    Status,
    /// EStop now, latched; the trial in flight is re-queued and the study waits for release.
    Stop,
    /// ClearEStop after the operator's check; the study goes on.
    Release,
    /// Pause after the trial in flight, or at once (`now`: the trial is re-queued).
    Pause {
        /// Abort the episode in flight and re-queue its trial.
        #[serde(default)]
        now: bool,
    },
    /// End a pause.
    Resume,
    /// Abort the trial in flight and record it PRUNED for the reason `operator`.
    Skip,
    /// The operator's verdict on a finished trial: FAIL, or unsafe (a constraint violation).
    Fail {
        /// The trial's number.
        trial: u64,
        /// Record it unsafe (PRUNED, a constraint violation the sampler learns from).
        #[serde(default, rename = "unsafe")]
        unsafe_: bool,
        /// What the operator saw.
        #[serde(default)]
        note: Option<String>,
    },
    /// Run this parameter set next.
    Enqueue {
        /// Parameter name → value.
        params: Map<String, Value>,
    },
    /// The operator's go for the next episode.
    Go,
    /// The study's trials.
    Trials,
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command was carried out.
    pub ok: bool,
    /// What happened, for a person.
    pub message: String,
    /// The daemon's status after the command (the trials for `trials`).
    pub status: Value,
}

/// What the commands need from the study (implemented by the daemon, which owns it).
pub trait StudyActions: Send + Sync {
    /// Records the operator's verdict on finished trial `trial`; returns what was recorded.
    fn fail(
        &self,
        trial: u64,
        unsafe_: bool,
        note: Option<&str>,
        by: &str,
    ) -> Result<String, String>;
    /// Validates `params` against the search space and the firmware's limits and enqueues
    /// them; returns what was enqueued.
    fn enqueue(&self, params: &Map<String, Value>, by: &str) -> Result<String, String>;
    /// The study's trials as JSON, as `gaittune export` writes them (number, state, value,
    /// params, intermediate `[[step, value], …]`, prune_reason, attrs, …).
    fn trials(&self) -> Result<Value, String>;
}

/// How long `release` waits for the trial loop to report the robot's acknowledgement.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Carries out operator commands against the desk and the study.
#[derive(Clone)]
pub struct Operator {
    desk: Desk,
    actions: Arc<dyn StudyActions>,
}

impl Operator {
    /// An operator working at `desk`, reaching the study through `actions`.
    pub fn new(desk: Desk, actions: Arc<dyn StudyActions>) -> Operator {
        Operator { desk, actions }
    }

    /// The desk the commands act on.
    pub fn desk(&self) -> &Desk {
        &self.desk
    }

    /// Carries out `command` for `by` (who asked, as recorded) and says what happened.
    pub fn execute(&self, command: Command, by: &str) -> Reply {
        let desk = &self.desk;
        if command != Command::Status && command != Command::Trials {
            desk.publish("operator", json!({ "command": command, "by": by }));
        }
        let result: Result<String, String> = match command {
            Command::Status => Ok("status".into()),
            Command::Stop => {
                let was = desk.stop(by);
                // The stop reaches the wire from this thread, as a signal's does.
                let sent = global_slot().fire();
                tracing::info!("operator stop from {by}");
                Ok(match (sent, was) {
                    (true, false) => "EStop sent: the robot is stopped and latched; the trial in flight is re-queued. Check the robot, then `release`".into(),
                    (true, true) => "EStop sent again (the robot was already stopped by the operator); `release` after your check".into(),
                    (false, _) => "no robot connected at this moment: the study holds before the next command to the robot until `release`".into(),
                })
            }
            Command::Release => {
                if !desk.stopped() {
                    Err("the robot is not stopped by the operator: nothing to release".into())
                } else {
                    let before = desk.releases_done();
                    desk.release();
                    if desk.wait_until(RELEASE_WAIT, |d| d.releases_done() > before) {
                        Ok("released: the robot acknowledged ClearEStop; the study goes on".into())
                    } else {
                        Ok(format!(
                            "release passed to the trial loop; the robot has not acknowledged ClearEStop within {} s (see `status`)",
                            RELEASE_WAIT.as_secs()
                        ))
                    }
                }
            }
            Command::Pause { now } => {
                let in_flight = desk.status().get("trial").is_some_and(|t| !t.is_null());
                if desk.paused() && !now {
                    Ok("already paused".into())
                } else {
                    desk.pause(now && in_flight, by);
                    Ok(match (now, in_flight) {
                        (true, true) => {
                            "pausing now: the episode in flight is aborted and its trial re-queued"
                                .into()
                        }
                        (false, true) => "pausing after the trial in flight".into(),
                        _ => "paused".into(),
                    })
                }
            }
            Command::Resume => {
                if desk.resume() {
                    Ok("resumed".into())
                } else {
                    Err("not paused".into())
                }
            }
            Command::Skip => match desk.status().get("trial").and_then(Value::as_u64) {
                Some(trial) => {
                    desk.skip(by);
                    Ok(format!(
                        "skipping trial {trial}: it is aborted and recorded PRUNED (operator)"
                    ))
                }
                None => Err("no trial in flight to skip".into()),
            },
            Command::Fail {
                trial,
                unsafe_,
                note,
            } => self.actions.fail(trial, unsafe_, note.as_deref(), by),
            Command::Enqueue { params } => self.actions.enqueue(&params, by),
            Command::Go => {
                if desk.status()["operator_go"] != json!(true) {
                    Err("this run does not wait for an operator's go (set `[robot] operator_go = true` to have it hold before each episode)".into())
                } else {
                    desk.go();
                    Ok("go given for the next episode".into())
                }
            }
            Command::Trials => {
                return match self.actions.trials() {
                    Ok(trials) => Reply {
                        ok: true,
                        message: "trials".into(),
                        status: trials,
                    },
                    Err(message) => Reply {
                        ok: false,
                        message,
                        status: Value::Null,
                    },
                }
            }
        };
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        Reply {
            ok,
            message,
            status: desk.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoStudy;
    impl StudyActions for NoStudy {
        fn fail(&self, trial: u64, _: bool, _: Option<&str>, _: &str) -> Result<String, String> {
            Err(format!("no trial {trial}"))
        }
        fn enqueue(&self, _: &Map<String, Value>, _: &str) -> Result<String, String> {
            Ok("enqueued".into())
        }
        fn trials(&self) -> Result<Value, String> {
            Ok(json!([]))
        }
    }

    #[test]
    fn commands_parse_from_their_json_form() {
        let parse = |s: &str| serde_json::from_str::<Command>(s).unwrap();
        assert_eq!(parse(r#"{"cmd":"pause"}"#), Command::Pause { now: false });
        assert_eq!(
            parse(r#"{"cmd":"fail","trial":3,"unsafe":true,"note":"scraped a leg"}"#),
            Command::Fail {
                trial: 3,
                unsafe_: true,
                note: Some("scraped a leg".into())
            }
        );
        assert!(serde_json::from_str::<Command>(r#"{"cmd":"launch"}"#).is_err());
    }

    #[test]
    fn commands_answer_what_happened() {
        let desk = Desk::new();
        let op = Operator::new(desk.clone(), Arc::new(NoStudy));
        let skip = op.execute(Command::Skip, "test");
        assert!(!skip.ok && skip.message.contains("no trial in flight"));
        desk.report(json!({"trial": 7}));
        assert!(op.execute(Command::Skip, "test").ok);
        assert!(
            !op.execute(Command::Go, "test").ok,
            "go without operator_go"
        );
        assert!(
            !op.execute(Command::Release, "test").ok,
            "release when not stopped"
        );
        assert!(!op.execute(Command::Resume, "test").ok);
        assert!(op.execute(Command::Pause { now: false }, "test").ok);
        assert!(desk.paused());
        assert_eq!(
            desk.take_disruptions(),
            vec![super::super::desk::Disruption::Skip { by: "test".into() }],
            "a pause after the trial interrupts nothing"
        );
        let fail = op.execute(
            Command::Fail {
                trial: 9,
                unsafe_: false,
                note: None,
            },
            "test",
        );
        assert_eq!((fail.ok, fail.message.as_str()), (false, "no trial 9"));
    }
}
