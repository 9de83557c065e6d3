//! What the probe found: one row per check, the robot's declarations, the end state; printed
//! as a table or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every expectation held.
    Pass,
    /// At least one expectation failed.
    Fail,
    /// Not run (or inconclusive); the note says why.
    Skip,
}

impl Verdict {
    /// "PASS", "FAIL" or "SKIP".
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One broken expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// What SPEC.md requires.
    pub expected: String,
    /// What the robot did.
    pub seen: String,
    /// The SPEC.md section, e.g. "§10.1".
    pub spec: &'static str,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Short name, e.g. `estop-stop`.
    pub name: &'static str,
    /// What passing proves.
    pub proves: &'static str,
    /// The SPEC.md sections it checks.
    pub spec: &'static str,
    /// PASS, FAIL or SKIP.
    pub verdict: Verdict,
    /// The measured figure (or why it was skipped).
    pub measured: String,
    /// Every broken expectation (empty unless FAIL).
    pub failures: Vec<Failure>,
}

/// One declared parameter, as read with GetParamInfo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamRow {
    /// Index.
    pub index: u8,
    /// Name.
    pub name: String,
    /// Declared lower limit.
    pub min: f32,
    /// Declared upper limit.
    pub max: f32,
    /// Firmware default.
    pub default: f32,
}

/// Who answered the handshake.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobotSummary {
    /// Info.robot_id.
    pub robot_id: String,
    /// Firmware version "major.minor.patch".
    pub firmware: String,
    /// Protocol version agreed.
    pub protocol_version: u16,
    /// Info.boot_id.
    pub boot_id: u32,
    /// Info.param_count.
    pub param_count: u8,
    /// Info.schema_hash.
    pub schema_hash: u32,
    /// Info.watchdog_ms.
    pub watchdog_ms: u16,
    /// Info.step_period_us.
    pub step_period_us: u32,
}

/// How the probe left the robot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndState {
    /// The final EStop was acknowledged.
    pub estop_acknowledged: bool,
    /// The state the robot reported after it (heartbeat or Status), if it reported one.
    pub state_after: Option<String>,
}

impl EndState {
    /// Whether the robot confirmed it is latched stopped.
    pub fn latched(&self) -> bool {
        self.estop_acknowledged && self.state_after.as_deref() == Some("Stopped")
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The device probed.
    pub device: String,
    /// The robot, once Info was received.
    pub robot: Option<RobotSummary>,
    /// Its declarations, as far as they were read.
    pub params: Vec<ParamRow>,
    /// One entry per check, in the order run.
    pub checks: Vec<CheckReport>,
    /// Why the probe stopped early, if it did.
    pub aborted: Option<String>,
    /// The final EStop and the state after it (None if the device never opened).
    pub end: Option<EndState>,
    /// Counts.
    pub passed: usize,
    /// Counts.
    pub failed: usize,
    /// Counts.
    pub skipped: usize,
    /// The process exit status the report stands for.
    pub exit_code: u8,
}

impl Report {
    /// An empty report for `device` (exit status 2 until checks run).
    pub fn new(device: &str) -> Report {
        Report {
            device: device.to_string(),
            robot: None,
            params: Vec::new(),
            checks: Vec::new(),
            aborted: None,
            end: None,
            passed: 0,
            failed: 0,
            skipped: 0,
            exit_code: 2,
        }
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        if let Some(why) = &self.aborted {
            let _ = write!(s, " ({why})");
        }
        match &self.end {
            Some(end) if end.latched() => s.push_str(
                "; robot left latched stopped: release it with ClearEStop before the next run, \
                 e.g. `gaittune run … --release-latch` or `gaittune probe … --release-latch`",
            ),
            Some(end) if end.estop_acknowledged => {
                let _ = write!(
                    s,
                    "; final EStop acknowledged but the robot then reported {}, not Stopped: \
                     check it by hand",
                    end.state_after.as_deref().unwrap_or("no state")
                );
            }
            Some(_) => s.push_str(
                "; WARNING: the final EStop was not acknowledged: stop the robot by hand",
            ),
            None => {}
        }
        s
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "gaittune probe {}", self.device);
        if let Some(r) = &self.robot {
            let _ = writeln!(
                out,
                "robot {:?}, firmware {}, protocol v{}, boot id {:#010x}, watchdog {} ms, step period {} µs",
                r.robot_id, r.firmware, r.protocol_version, r.boot_id, r.watchdog_ms, r.step_period_us
            );
        }
        if !self.params.is_empty() {
            let w = self
                .params
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let _ = writeln!(out, "\ndeclared parameters:");
            let _ = writeln!(
                out,
                "  {:>3}  {:<w$}  {:>12}  {:>12}  {:>12}",
                "#", "name", "min", "max", "default"
            );
            for p in &self.params {
                let _ = writeln!(
                    out,
                    "  {:>3}  {:<w$}  {:>12}  {:>12}  {:>12}",
                    p.index, p.name, p.min, p.max, p.default
                );
            }
        }
        let w = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "\n{:<w$}  {:<6}  measured", "check", "result");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<w$}  {:<6}  {}",
                c.name,
                c.verdict.label(),
                c.measured
            );
            for f in &c.failures {
                let pad = " ".repeat(w + 2);
                let _ = writeln!(out, "{pad}  expected: {}", f.expected);
                let _ = writeln!(out, "{pad}  seen:     {}", f.seen);
                let _ = writeln!(out, "{pad}  spec:     {}", f.spec);
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// The JSON form (the same content as the table, plus the summary line).
    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("summary".into(), self.summary().into());
            let latched = self.end.as_ref().is_some_and(EndState::latched);
            obj.insert("left_latched".into(), latched.into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}
