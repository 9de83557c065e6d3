//! The operator's commands that change the study (a verdict on a finished trial, a parameter
//! set to run next), carried out on the study's thread for the control endpoints.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::firmware::{f32_text, within_declared};
use super::worker::StudyHandle;
use crate::config::Config;
use crate::control::commands::{Operator, StudyActions};
use crate::control::dashboard::{self, Dashboard};
use crate::control::desk::{unix_now, Desk};
use crate::control::events::EventLog;
use crate::control::socket::{self, ControlSocket};
use crate::control::terminal::StatusLine;
use crate::robot::RobotInfo;
use crate::space::SearchSpace;
use crate::study::Study;
use crate::trial::ConstraintViolation;

/// Where the operator's controls are served (`gaittune run` options).
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// The control socket's path (default: [`socket::default_path`]).
    pub socket: Option<PathBuf>,
    /// Write every event as JSON lines to this file.
    pub events: Option<PathBuf>,
    /// Serve the live dashboard on this address.
    pub dashboard: Option<std::net::SocketAddr>,
    /// The dashboard may listen on an address other hosts reach (`--dashboard-public`).
    pub dashboard_public: bool,
}

/// The operator's controls of a running daemon: the desk the trial loop reads, and the
/// endpoints serving it. Dropped at the end of the run (the socket file is removed).
pub struct Controls {
    /// Shared with the trial loop.
    pub desk: Desk,
    _socket: ControlSocket,
    _events: Option<EventLog>,
    _status_line: StatusLine,
    _dashboard: Option<Dashboard>,
}

impl Controls {
    /// Serves the control socket (and the event log) for the study `study_name`; says where.
    pub fn open(
        config: &Config,
        options: &ControlOptions,
        worker_index: Option<u32>,
        study_name: &str,
        actions: DaemonActions,
    ) -> Result<Controls> {
        let desk = Desk::new();
        desk.report(json!({
            "study": study_name,
            "direction": config.study.direction,
            "safety": config.safety,
            "size": config.study.trials,
            "robot": { "id": actions.info.robot_id, "firmware": actions.info.firmware_version },
            "operator_go": config.robot.operator_go,
            "trial": null,
            "waiting_for": null,
        }));
        let events = match &options.events {
            Some(path) => Some(
                EventLog::start(path, &desk)
                    .with_context(|| format!("--events {}: cannot write it", path.display()))?,
            ),
            None => None,
        };
        let operator = Operator::new(desk.clone(), Arc::new(actions));
        let socket = match &options.socket {
            Some(path) => ControlSocket::serve(path, operator.clone()),
            None => {
                socket::remove_dead_sockets();
                // Another daemon on the same study (a second robot) has the study's name:
                // this one adds its process id.
                let path = socket::default_path(study_name, worker_index);
                ControlSocket::serve(&path, operator.clone()).or_else(|e| {
                    if e.kind() != std::io::ErrorKind::AddrInUse {
                        return Err(e);
                    }
                    let own = path.with_extension(format!("{}.sock", std::process::id()));
                    ControlSocket::serve(&own, operator.clone())
                })
            }
        }
        .with_context(|| "serving the control socket (choose its path with --control PATH)")?;
        let path = socket.path().to_path_buf();
        outln!(
            "control: gaittune ctl --control {} status|stop|release|pause|resume|skip|fail|enqueue|go",
            path.display()
        );
        let dashboard = match options.dashboard {
            None => None,
            Some(addr) => {
                if !addr.ip().is_loopback() && !options.dashboard_public {
                    anyhow::bail!(
                        "--dashboard {addr}: other hosts could reach the robot's STOP and controls there; bind 127.0.0.1 (the default use), or add --dashboard-public if you mean it"
                    );
                }
                let board = Dashboard::serve(addr, operator.clone(), dashboard::new_token())
                    .with_context(|| format!("--dashboard {addr}: cannot listen there"))?;
                if !addr.ip().is_loopback() {
                    outln!("warning: the dashboard listens on {addr}: anyone on that network with its URL (the token) can operate the robot");
                }
                outln!("dashboard: {}", board.url());
                Some(board)
            }
        };
        let status_line = StatusLine::start(&desk, config.episode.max_steps)
            .context("starting the progress line")?;
        Ok(Controls {
            desk,
            _socket: socket,
            _events: events,
            _status_line: status_line,
            _dashboard: dashboard,
        })
    }
}

/// The trial attribute listing what operators did to a trial: `[{action, by, at, note?}]`.
pub const OPERATOR_ATTR: &str = "operator";

/// The study side of the operator's commands for a running daemon.
pub struct DaemonActions {
    /// The study, on its own thread.
    pub study: StudyHandle,
    /// The study's search space.
    pub space: SearchSpace,
    /// What the robot declared (its parameter limits).
    pub info: RobotInfo,
}

/// Appends what an operator did to trial `number`'s [`OPERATOR_ATTR`] list.
pub fn log_operator_action(
    study: &mut Study,
    number: u64,
    action: &str,
    by: &str,
    note: Option<&str>,
) -> Result<(), crate::study::StudyError> {
    let mut list = study
        .trial(number)?
        .attrs
        .get(OPERATOR_ATTR)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entry = json!({ "action": action, "by": by, "at": unix_now() });
    if let Some(note) = note {
        entry["note"] = json!(note);
    }
    list.push(entry);
    study.set_attr(number, OPERATOR_ATTR, Value::Array(list))
}

impl StudyActions for DaemonActions {
    fn fail(
        &self,
        trial: u64,
        unsafe_: bool,
        note: Option<&str>,
        by: &str,
    ) -> Result<String, String> {
        let note = note.map(str::to_string);
        let by = by.to_string();
        self.study.call_blocking(move |s| {
            let reason = note
                .clone()
                .unwrap_or_else(|| format!("failed by the operator ({by})"));
            let violation = unsafe_.then(|| {
                ConstraintViolation::new("operator", f64::NAN, f64::NAN)
                    .from_source("operator")
                    .with_excess(1.0)
            });
            s.judge(trial, violation.as_ref(), &reason)
                .map_err(|e| e.to_string())?;
            let action = if unsafe_ { "unsafe" } else { "fail" };
            log_operator_action(s, trial, action, &by, note.as_deref())
                .map_err(|e| e.to_string())?;
            Ok(if unsafe_ {
                format!("trial {trial} recorded unsafe (PRUNED, a constraint violation the sampler learns from)")
            } else {
                format!("trial {trial} recorded FAIL: {reason}")
            })
        })
    }

    fn enqueue(&self, params: &Map<String, Value>, by: &str) -> Result<String, String> {
        let internal = self
            .space
            .params_from_external(params)
            .map_err(|e| format!("not enqueued: {e}"))?;
        for (name, &x) in &internal {
            let value = self.space.firmware_value(name, x);
            if let Some(decl) = self.info.params.iter().find(|p| &p.name == name) {
                if !within_declared(decl, value, value) {
                    return Err(format!(
                        "not enqueued: {name} = {value} leaves the robot's declared limits [{}, {}]",
                        f32_text(decl.min),
                        f32_text(decl.max)
                    ));
                }
            }
        }
        let by = by.to_string();
        let shown = self.space.external_params(&internal);
        self.study.call_blocking(move |s| {
            let number = s.enqueue(internal).map_err(|e| e.to_string())?;
            log_operator_action(s, number, "enqueue", &by, None).map_err(|e| e.to_string())?;
            Ok(format!(
                "enqueued as trial {number} (WAITING; it runs next): {}",
                Value::Object(shown)
            ))
        })
    }

    fn trials(&self) -> Result<Value, String> {
        let space = self.space.clone();
        self.study.call_blocking(move |s| {
            let trials = s.trials().map_err(|e| e.to_string())?;
            Ok(Value::Array(
                trials
                    .iter()
                    .map(|t| crate::export::trial_json(t, &space))
                    .collect(),
            ))
        })
    }
}
