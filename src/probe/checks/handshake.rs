//! The handshake checks (`version`, `declarations`) and the passive `heartbeats` check.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use firmware_protocol::{
    HostMsg, NackCode, RobotMsg, RobotState, SchemaHasher, MAX_PARAMS, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

use super::{describe, is_nack, wraps_forward, Check, CheckId, ANSWER_TIMEOUT};
use crate::probe::report::{ParamRow, RobotSummary};
use crate::probe::session::{Received, Session, SessionError};

/// Wait per Hello attempt; Hello is resent (same seq) up to 3 times, as a host would.
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest gap between robot heartbeats SPEC §7.5 allows.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_millis(250);
/// Added to [`HEARTBEAT_LIMIT`] for scheduling jitter on both ends before a gap fails.
pub const HEARTBEAT_TOLERANCE: Duration = Duration::from_millis(50);

/// The robot's Info, as negotiated.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// The protocol version agreed (the one the probe asked for).
    pub protocol_version: u16,
    /// Robot identifier.
    pub robot_id: String,
    /// Firmware version (major, minor, patch).
    pub firmware: (u8, u8, u8),
    /// Random per boot.
    pub boot_id: u32,
    /// Declared parameters.
    pub param_count: u8,
    /// Announced schema hash.
    pub schema_hash: u32,
    /// Host-silence watchdog, ms.
    pub watchdog_ms: u16,
    /// Control period, µs.
    pub step_period_us: u32,
}

impl Info {
    fn from_msg(msg: &RobotMsg) -> Option<Info> {
        match *msg {
            RobotMsg::Info {
                protocol_version,
                robot_id,
                fw_major,
                fw_minor,
                fw_patch,
                boot_id,
                param_count,
                schema_hash,
                watchdog_ms,
                step_period_us,
                ..
            } => Some(Info {
                protocol_version,
                robot_id: robot_id.as_str().to_string(),
                firmware: (fw_major, fw_minor, fw_patch),
                boot_id,
                param_count,
                schema_hash,
                watchdog_ms,
                step_period_us,
            }),
            _ => None,
        }
    }

    /// The report's view of it.
    pub fn summary(&self) -> RobotSummary {
        let (a, b, c) = self.firmware;
        RobotSummary {
            robot_id: self.robot_id.clone(),
            firmware: format!("{a}.{b}.{c}"),
            protocol_version: self.protocol_version,
            boot_id: self.boot_id,
            param_count: self.param_count,
            schema_hash: self.schema_hash,
            watchdog_ms: self.watchdog_ms,
            step_period_us: self.step_period_us,
        }
    }

    /// The host-heartbeat period SPEC §7.5 asks for: watchdog_ms / 4, at most 500 ms.
    pub fn host_heartbeat_period(&self) -> Duration {
        Duration::from_millis((self.watchdog_ms as u64 / 4).clamp(10, 500))
    }
}

/// How the handshake went, beyond the check's verdict.
#[derive(Debug)]
pub enum Handshake {
    /// The robot answered Hello; `Some` once a version was agreed.
    Answered(Option<Info>),
    /// Nothing answered Hello at all.
    Silent,
}

/// Sends Hello{`version`} and waits for an answer, resending it (same seq) up to 3 times.
fn hello(s: &mut Session, version: u16) -> Result<Option<Received>, SessionError> {
    let from = s.mark();
    let first = s.send(&HostMsg::Hello {
        protocol_version: version,
    })?;
    let mut attempt = first.clone();
    for n in 1..=4 {
        if let Some(a) = s.answer_from(from, &attempt, HELLO_TIMEOUT)? {
            return Ok(Some(a));
        }
        if n < 4 {
            attempt = s.resend(&first)?;
        }
    }
    Ok(None)
}

/// `version`: Hello{2} → Info{2}, or Nack UnsupportedVersion, Hello{1} → Info{1}.
pub fn version(s: &mut Session) -> Result<(Check, Handshake), SessionError> {
    let mut c = Check::new(CheckId::Version);
    let Some(first) = hello(s, PROTOCOL_VERSION)? else {
        c.fail(
            format!("Info or Nack UnsupportedVersion answering Hello{{{PROTOCOL_VERSION}}}"),
            "no answer to 4 Hellos in 2 s",
            "§7.1",
        );
        return Ok((c, Handshake::Silent));
    };
    let answer = match first.msg {
        RobotMsg::Nack {
            code: NackCode::UnsupportedVersion,
            ..
        } => {
            let second = hello(s, MIN_PROTOCOL_VERSION)?;
            if is_nack(second.as_ref(), NackCode::UnsupportedVersion) {
                c.fail(
                    format!("Info answering Hello{{{PROTOCOL_VERSION}}} or Hello{{{MIN_PROTOCOL_VERSION}}}"),
                    "Nack UnsupportedVersion to both",
                    "§11",
                );
                return Ok((c, Handshake::Answered(None)));
            }
            (MIN_PROTOCOL_VERSION, second)
        }
        _ => (PROTOCOL_VERSION, Some(first)),
    };
    let (asked, reply) = answer;
    let Some(info) = reply.as_ref().and_then(|r| Info::from_msg(&r.msg)) else {
        c.fail(
            format!("Info answering Hello{{{asked}}}"),
            describe(reply.as_ref()),
            "§7.1",
        );
        return Ok((c, Handshake::Answered(None)));
    };
    c.expect(
        info.protocol_version == asked,
        format!("Info{{protocol_version {asked}}}: the version asked"),
        || format!("Info{{protocol_version {}}}", info.protocol_version),
        "§11",
    );
    c.expect(
        info.watchdog_ms >= 1,
        "watchdog_ms ≥ 1",
        || "watchdog_ms 0".into(),
        "§5 Info",
    );
    c.measured(if asked == PROTOCOL_VERSION {
        format!("v{asked}")
    } else {
        format!("v{asked} only; GetStatus checks skipped")
    });
    if !(200..=5000).contains(&info.watchdog_ms) {
        c.measured(format!(
            "note: watchdog_ms {} (SHOULD be 200–5000, §10.4)",
            info.watchdog_ms
        ));
    }
    if info.boot_id == 0 {
        c.measured("note: boot_id 0 (SHOULD be avoided, §7.6)");
    }
    Ok((c, Handshake::Answered(Some(info))))
}

/// `declarations`: every ParamInfo, the schema hash, and BadParamIndex past the end.
pub fn declarations(s: &mut Session, info: &Info) -> Result<(Check, Vec<ParamRow>), SessionError> {
    let mut c = Check::new(CheckId::Declarations);
    let mut rows = Vec::new();
    if !c.expect(
        info.param_count as usize <= MAX_PARAMS,
        format!("param_count ≤ {MAX_PARAMS}"),
        || format!("param_count {}", info.param_count),
        "§7.1",
    ) {
        return Ok((c, rows));
    }
    let mut names = HashSet::new();
    let mut hasher = SchemaHasher::new();
    for index in 0..info.param_count {
        let discarded = s.discarded().len();
        let (_, answer) = s.request(&HostMsg::GetParamInfo { index }, ANSWER_TIMEOUT)?;
        let Some(RobotMsg::ParamInfo {
            index: got,
            name,
            min,
            max,
            default,
            ..
        }) = answer.map(|a| a.msg)
        else {
            let lost = s.discarded()[discarded..].first().copied();
            let seen = match (answer, lost) {
                (None, Some(e)) => format!("no valid answer (a robot frame was discarded: {e:?})"),
                _ => describe(answer.as_ref()),
            };
            c.fail(format!("ParamInfo{{index {index}}}"), seen, "§5 ParamInfo");
            return Ok((c, rows));
        };
        let name = name.as_str().to_string();
        c.expect(
            got == index,
            format!("ParamInfo index {index} (the one asked)"),
            || format!("index {got}"),
            "§7.1",
        );
        c.expect(
            min.is_finite() && max.is_finite() && default.is_finite(),
            format!("finite limits and default for {name:?}"),
            || format!("min {min}, max {max}, default {default}"),
            "§7.1",
        );
        c.expect(
            min <= max && min <= default && default <= max,
            format!("min ≤ default ≤ max for {name:?}"),
            || format!("min {min}, default {default}, max {max}"),
            "§7.1",
        );
        c.expect(
            names.insert(name.clone()),
            "unique parameter names",
            || format!("{name:?} declared twice"),
            "§7.1",
        );
        if name.is_empty() {
            c.measured(format!(
                "note: parameter {index} has an empty name (SHOULD NOT, §3.1)"
            ));
        }
        hasher.add(&name, min, max, default);
        rows.push(ParamRow {
            index,
            name,
            min,
            max,
            default,
        });
    }
    let hash = hasher.finish();
    c.expect(
        hash == info.schema_hash,
        format!("Info.schema_hash = FNV-1a of the declarations = {hash:#010x}"),
        || format!("Info.schema_hash {:#010x}", info.schema_hash),
        "§6",
    );
    let (_, past) = s.request(
        &HostMsg::GetParamInfo {
            index: info.param_count,
        },
        ANSWER_TIMEOUT,
    )?;
    c.expect(
        is_nack(past.as_ref(), NackCode::BadParamIndex),
        format!("Nack BadParamIndex to GetParamInfo{{{}}}", info.param_count),
        || describe(past.as_ref()),
        "§4 GetParamInfo",
    );
    c.measured(format!("{} parameters", rows.len()));
    c.claim(format!("schema hash {hash:#010x} matches"));
    Ok((c, rows))
}

/// `heartbeats`: listens for `window` and measures the robot's heartbeats. Also returns the
/// state the last one reported.
pub fn heartbeats(
    s: &mut Session,
    window: Duration,
) -> Result<(Check, Option<RobotState>), SessionError> {
    let mut c = Check::new(CheckId::Heartbeats);
    let from = s.mark();
    let discarded = s.discarded().len();
    let start = Instant::now();
    s.idle_until(start + window)?;
    let end = Instant::now();
    let beats: Vec<(Instant, u32, RobotState)> = s.frames()[from..]
        .iter()
        .filter_map(|f| match f.msg {
            RobotMsg::Heartbeat { uptime_ms, state } => Some((f.at, uptime_ms, state)),
            _ => None,
        })
        .collect();
    let mut times = vec![start];
    times.extend(beats.iter().map(|b| b.0));
    times.push(end);
    let max_gap = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or(window);
    c.expect(
        max_gap <= HEARTBEAT_LIMIT + HEARTBEAT_TOLERANCE,
        format!(
            "a robot Heartbeat at least every {} ms (+{} ms tolerance)",
            HEARTBEAT_LIMIT.as_millis(),
            HEARTBEAT_TOLERANCE.as_millis()
        ),
        || {
            format!(
                "{} heartbeats in {:.2} s, a gap of {} ms",
                beats.len(),
                window.as_secs_f64(),
                max_gap.as_millis()
            )
        },
        "§7.5",
    );
    for w in beats.windows(2) {
        let (a, b) = (w[0].1, w[1].1);
        if !c.expect(
            a == b || wraps_forward(a, b),
            "uptime_ms never going backwards (a host takes that for a reboot)",
            || format!("uptime_ms {a} then {b}"),
            "§5 Heartbeat, §7.6",
        ) {
            break;
        }
    }
    let lost = &s.discarded()[discarded..];
    c.expect(
        lost.is_empty(),
        "only well-formed robot frames (a heartbeat with an unknown state code is discarded)",
        || {
            format!(
                "{} robot frame(s) discarded, first: {:?}",
                lost.len(),
                lost[0]
            )
        },
        "§2.5, §3.3",
    );
    let uptime = match (beats.first(), beats.last()) {
        (Some(a), Some(b)) if beats.len() > 1 => format!(
            ", uptime +{} ms in {} ms",
            b.1.wrapping_sub(a.1),
            b.0.saturating_duration_since(a.0).as_millis()
        ),
        _ => String::new(),
    };
    c.measured(format!(
        "{} in {:.2} s, max gap {} ms{uptime}",
        beats.len(),
        window.as_secs_f64(),
        max_gap.as_millis()
    ));
    if beats.len() > 1 && beats[0].1 == beats[beats.len() - 1].1 {
        c.measured("note: uptime_ms did not advance (a clock ahead of wall time, or stopped?)");
    }
    Ok((c, beats.last().map(|b| b.2)))
}
