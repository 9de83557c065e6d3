//! The host side of a protocol session: handshake and version negotiation, commands with
//! acknowledgement and retry, heartbeats, and the stream of the episode in flight, with every
//! lost, duplicated, corrupted or stale frame turned into a bounded recovery or a clear error.
//! Knows nothing about samplers or studies.
//!
//! What the robot says between answers is judged by the [`Session`] state machine; this file
//! does the I/O around it and the recoveries that need the robot's help:
//!
//! | what happened | how it shows | what the link does |
//! |---|---|---|
//! | an answer lost or corrupted | no answer within `response_timeout` | resends with the same seq (SPEC §7.4), `retries` times |
//! | a Step lost or corrupted | the next step's index jumps | [`RobotEvent::StepsMissed`] |
//! | a Step duplicated | a repeated index | dropped |
//! | a Ready lost | a heartbeat says Ready | ready all the same |
//! | an EpisodeEnd (or SafetyTrip) lost | a heartbeat or Ready says the episode is over | v2: asks GetStatus and delivers the end it reports; v1: [`LinkError::EpisodeLost`] (re-run the episode) |
//! | no EpisodeEnd by the deadline | `max_steps × step_period × 1.25 + episode_margin` passed | as above (v2 Status, else `EpisodeLost`) |
//! | the robot rebooted | uptime went backwards, or Idle with parameters applied | repeats the handshake, checks the schema, [`LinkError::Rebooted`] (re-run the trial) |
//! | frames of an earlier session | buffered in the line at open, or not of the episode watched | drained at open; dropped ([`Session`]) |
//! | the robot latched outside an episode | SafetyTrip or a heartbeat saying Stopped while waiting for Ready | [`LinkError::Latched`] with the cause |
//! | silence | no valid frame for `silence_timeout` | [`LinkError::Silent`]; [`RobotLink::reconnect`] tries the handshake again |

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_protocol::{
    decode, encode, DecodeError, EpisodePhase, EpisodeStatus, Frame, FrameAccumulator, HostMsg,
    NackCode, ParamValues, RobotMsg, RobotState, SchemaHasher, Status, Step, StopCause, TripReason,
    MAX_FRAME, MAX_PARAMS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::port::Port;
use super::session::{Latch, LieKind, Noticed, Session};

/// Timeouts and retry policy of a link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How long to wait for the answer to one command before resending it.
    pub response_timeout: Duration,
    /// How many times a command is resent (same sequence number) before giving up.
    pub retries: u32,
    /// No frame at all from the robot for this long means the link is lost.
    pub silence_timeout: Duration,
    /// Added to an episode's nominal length (`max_steps × step_period × 1.25`) to give its
    /// deadline.
    pub episode_margin: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_millis(250),
            retries: 3,
            silence_timeout: Duration::from_secs(2),
            episode_margin: Duration::from_secs(2),
        }
    }
}

/// How long the link discards input after opening: frames already waiting in the line are
/// from an earlier session. It stops early after this much quiet.
const DRAIN_LIMIT: Duration = Duration::from_millis(300);
const DRAIN_QUIET: Duration = Duration::from_millis(30);

/// One parameter the firmware declares, with its hard limits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParamDecl {
    /// Parameter name.
    pub name: String,
    /// Hard lower limit.
    pub min: f64,
    /// Hard upper limit.
    pub max: f64,
    /// Firmware default.
    pub default: f64,
}

/// What the handshake learned about the robot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RobotInfo {
    /// Robot identifier.
    pub robot_id: String,
    /// Firmware version "major.minor.patch".
    pub firmware_version: String,
    /// The protocol version both sides speak (negotiated: 2, or 1 with an older firmware).
    pub protocol_version: u16,
    /// Changes at every boot of the firmware.
    pub boot_id: u32,
    /// Declared parameters in index order.
    pub params: Vec<ParamDecl>,
    /// The firmware's schema hash (verified against `params`).
    pub schema_hash: u32,
    /// The firmware's host-heartbeat watchdog, ms.
    pub watchdog_ms: u16,
    /// The firmware's control period between Step frames, µs.
    pub step_period_us: u32,
}

/// The values a SetParams actually applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Applied values in schema order.
    pub values: Vec<f64>,
    /// Indices of parameters the firmware clamped.
    pub clamped: Vec<usize>,
}

/// What the robot says about itself right now.
#[derive(Debug, Clone, Copy)]
pub struct RobotSnapshot {
    /// Its state (from GetStatus, or its next heartbeat with a version-1 firmware).
    pub state: RobotState,
    /// The whole Status (protocol v2 only).
    pub status: Option<Status>,
}

/// Something the robot reported about the episode in flight. Only the watched episode's
/// frames become events; each step once, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RobotEvent {
    /// One control step of telemetry.
    Step(Step),
    /// Steps `from..to` never arrived (lost or corrupted on the line); the next Step (if any)
    /// is `to`.
    StepsMissed {
        /// First missing step.
        from: u32,
        /// One past the last missing step.
        to: u32,
    },
    /// The episode ended.
    EpisodeEnd {
        /// Sum of rewards.
        episode_return: f32,
        /// Steps run.
        steps: u32,
        /// How it ended.
        status: EpisodeStatus,
        /// The EpisodeEnd frame was lost and this was recovered from the robot's Status.
        recovered: bool,
    },
    /// The firmware's own safety limit stopped the robot (latched).
    SafetyTrip {
        /// Step at the trip.
        step: u32,
        /// Which limit.
        reason: TripReason,
        /// The value that tripped it.
        value: f32,
    },
}

/// A link fault the link recovered from (or that the daemon recovered from with a re-run),
/// recorded with the trial in flight as `link_incidents`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Incident {
    /// What happened: `retry` (a command resent), `lost_episode_end`, `deadline` (no
    /// EpisodeEnd in time), `reboot`, `watchdog_trip`, `stale_frames` (dropped at open),
    /// `step_gap` (steps lost on the line).
    pub kind: &'static str,
    /// The episode it hit, if any.
    pub episode: Option<u32>,
    /// From the fault's first sign (or the last progress before it) to normal work again, ms.
    pub recovery_ms: f64,
    /// Robot time spent on work that had to be thrown away or waited out, ms.
    pub robot_ms_lost: f64,
    /// Human-readable detail.
    pub detail: String,
}

/// Why talking to the robot failed. Every variant names the device.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The device could not be opened.
    #[error("cannot open robot device {device}: {source}. Check the path (e.g. ls /dev/ttyUSB* /dev/ttyACM*), that you may use it (the dialout group), and that no other program holds it")]
    Open {
        /// Device path.
        device: String,
        /// The OS error.
        source: io::Error,
    },
    /// A command was not answered after every retry.
    #[error("robot on {device} did not answer {command} with {expected} within {timeout_ms} ms ({attempts} attempts). Is the firmware running and speaking gaittune protocol v{MIN_PROTOCOL_VERSION}..v{PROTOCOL_VERSION} at this baud rate?")]
    NoResponse {
        /// Device path.
        device: String,
        /// The command sent.
        command: &'static str,
        /// The answer that was expected.
        expected: &'static str,
        /// Per-attempt timeout.
        timeout_ms: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// The robot refused a command.
    #[error("robot on {device} refused {command}: {code:?}")]
    Nack {
        /// Device path.
        device: String,
        /// The command sent.
        command: &'static str,
        /// The firmware's reason.
        code: NackCode,
    },
    /// No valid frame from the robot for the silence timeout (the line or the robot is dead,
    /// or stalled).
    #[error("lost the robot on {device}: no frame for {silence_ms} ms (the firmware's heartbeats stopped)")]
    Silent {
        /// Device path.
        device: String,
        /// The silence timeout that passed.
        silence_ms: u64,
    },
    /// The byte stream closed or failed.
    #[error("lost the robot on {device}: {reason}")]
    Lost {
        /// Device path.
        device: String,
        /// What was seen.
        reason: String,
    },
    /// The robot said something that breaks the protocol (a firmware that lies).
    #[error("robot on {device} broke the protocol: {detail}")]
    Protocol {
        /// Device path.
        device: String,
        /// What was wrong.
        detail: String,
    },
    /// A waited-for condition did not come in time.
    #[error("robot on {device}: {what} did not happen within {timeout_ms} ms")]
    Timeout {
        /// Device path.
        device: String,
        /// What was awaited.
        what: &'static str,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// The episode in flight is over but its result was lost; re-run it.
    #[error("robot on {device}: the result of episode {episode} was lost ({why})")]
    EpisodeLost {
        /// Device path.
        device: String,
        /// The episode index.
        episode: u16,
        /// What showed it.
        why: String,
        /// The robot's state when it was noticed, if known.
        state: Option<RobotState>,
    },
    /// The robot rebooted; the handshake was repeated and the schema is unchanged, but the
    /// parameter set and any episode in flight are gone: re-run the trial.
    #[error("robot on {device} rebooted ({why}); new boot id {boot_id:#010x}")]
    Rebooted {
        /// Device path.
        device: String,
        /// What showed it.
        why: String,
        /// The new boot id.
        boot_id: u32,
    },
    /// The robot latched itself stopped outside an episode (a safety trip during its reset,
    /// its own stop button, ...).
    #[error("robot on {device} is latched stopped outside an episode: {cause}")]
    Latched {
        /// Device path.
        device: String,
        /// What the robot said.
        cause: String,
        /// Its watchdog latched it (the host went quiet): not a fault of the robot's.
        watchdog: bool,
    },
}

struct FrameWriter {
    port: Port,
    seq: u16,
}

/// The write half of a link, shareable with other threads (the signal thread, the panic
/// hook) so they can send EStop without the async runtime.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Mutex<FrameWriter>>,
    estops: Arc<std::sync::atomic::AtomicU64>,
}

impl Sender {
    fn next_seq(&self) -> u16 {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.seq = w.seq.wrapping_add(1);
        w.seq
    }

    fn send_with_seq(&self, seq: u16, msg: &HostMsg) -> io::Result<()> {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(seq, msg, &mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.port.write_all(&buf[..n])?;
        w.port.flush()
    }

    /// Sends a message with a fresh sequence number; returns that number.
    pub fn send(&self, msg: &HostMsg) -> io::Result<u16> {
        let seq = self.next_seq();
        self.send_with_seq(seq, msg)?;
        Ok(seq)
    }

    /// Sends EStop now, from any thread. Fire and forget: the latch on the firmware side makes
    /// repeats harmless.
    pub fn estop(&self) -> io::Result<()> {
        self.estops.fetch_add(1, Ordering::SeqCst);
        self.send(&HostMsg::EStop).map(|_| ())
    }

    /// How many EStops this process has sent on this link (from any thread): an episode
    /// that ends EStopped was stopped by us if this moved.
    pub fn estops_sent(&self) -> u64 {
        self.estops.load(Ordering::SeqCst)
    }
}

/// A check run by the link's reader thread on every Step frame the moment it is decoded,
/// before the frame is queued for the trial loop; returning `true` makes that thread write
/// EStop at once. Safety never waits behind the trial loop (a storage write, a busy runtime).
pub type StepGuard = Box<dyn Fn(&Step) -> bool + Send>;

type GuardSlot = Arc<Mutex<Option<StepGuard>>>;

#[allow(clippy::large_enum_variant)] // one frame in flight per message; no need to box
enum Incoming {
    Frame(Frame<RobotMsg>),
    Bad(DecodeError),
    Closed(String),
}

/// Something the session noticed that the current wait must act on.
#[derive(Debug, Clone)]
enum Fault {
    EndMissing(RobotState),
    Reboot(&'static str),
    Lie(String),
}

/// A protocol session with one robot.
pub struct RobotLink {
    device: String,
    sender: Sender,
    rx: mpsc::UnboundedReceiver<Incoming>,
    events: VecDeque<RobotEvent>,
    settings: LinkSettings,
    info: Option<RobotInfo>,
    session: Session,
    state: Option<RobotState>,
    heartbeats_seen: u64,
    fault: Option<Fault>,
    /// When the episode in flight must have ended.
    deadline: Option<tokio::time::Instant>,
    incidents: Vec<Incident>,
    stop_reader: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    bad_frames: u64,
    guard: GuardSlot,
    /// When the last valid frame arrived (the link's opening before the first).
    last_frame_at: tokio::time::Instant,
}

impl RobotLink {
    /// Opens `device` at `baud` and starts reading. Call [`RobotLink::handshake`] next.
    pub async fn open(device: &str, baud: u32, settings: LinkSettings) -> Result<Self, LinkError> {
        let dev = device.to_string();
        let port = tokio::task::spawn_blocking(move || Port::open(&dev, baud))
            .await
            .map_err(|e| LinkError::Open {
                device: device.to_string(),
                source: io::Error::other(e.to_string()),
            })?
            .map_err(|source| LinkError::Open {
                device: device.to_string(),
                source,
            })?;
        Self::from_port(device, port, settings)
    }

    /// Starts a session over an already opened port.
    pub fn from_port(device: &str, port: Port, settings: LinkSettings) -> Result<Self, LinkError> {
        let open_err = |source| LinkError::Open {
            device: device.to_string(),
            source,
        };
        let mut reader = port.try_clone().map_err(open_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stop_reader = Arc::new(AtomicBool::new(false));
        let stop = stop_reader.clone();
        let sender = Sender {
            inner: Arc::new(Mutex::new(FrameWriter { port, seq: 0 })),
            estops: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let guard: GuardSlot = Arc::new(Mutex::new(None));
        let reader_guard = guard.clone();
        let reader_sender = sender.clone();
        std::thread::Builder::new()
            .name("robot-reader".into())
            .spawn(move || read_loop(&mut reader, &tx, &stop, &reader_guard, &reader_sender))
            .map_err(open_err)?;
        // A lone delimiter flushes whatever partial frame the firmware may hold.
        {
            let mut w = sender.inner.lock().unwrap_or_else(|e| e.into_inner());
            w.port.write_all(&[0]).map_err(open_err)?;
        }
        Ok(Self {
            device: device.to_string(),
            sender,
            rx,
            events: VecDeque::new(),
            settings,
            info: None,
            session: Session::new(),
            state: None,
            heartbeats_seen: 0,
            fault: None,
            deadline: None,
            incidents: Vec::new(),
            stop_reader,
            heartbeat: None,
            bad_frames: 0,
            last_frame_at: tokio::time::Instant::now(),
            guard,
        })
    }

    /// Installs the check the reader thread runs on every Step frame (see [`StepGuard`]).
    pub fn set_step_guard(&self, guard: StepGuard) {
        *self.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    /// The device path this link talks to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// A handle that can send EStop from any thread.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// What the handshake learned, once it has run.
    pub fn info(&self) -> Option<&RobotInfo> {
        self.info.as_ref()
    }

    /// The firmware state from its latest heartbeat.
    pub fn robot_state(&self) -> Option<RobotState> {
        self.state
    }

    /// Frames dropped because they failed COBS/CRC/decoding.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// Frames dropped as belonging to no episode in flight (earlier sessions, duplicates of
    /// finished episodes).
    pub fn stale_frames(&self) -> u64 {
        self.session.stale_frames()
    }

    /// The incidents recorded since the last call.
    pub fn take_incidents(&mut self) -> Vec<Incident> {
        std::mem::take(&mut self.incidents)
    }

    /// Records an incident the caller recovered from (e.g. a re-run episode).
    pub fn record_incident(&mut self, incident: Incident) {
        self.incidents.push(incident);
    }

    /// Discards what the line holds from before this session, negotiates the protocol
    /// version (2, or 1 with an older firmware), reads every parameter declaration and
    /// verifies the schema hash, then starts host heartbeats at a quarter of the firmware's
    /// watchdog period.
    pub async fn handshake(&mut self) -> Result<RobotInfo, LinkError> {
        let drained = self.drain().await?;
        if drained > 0 {
            self.incidents.push(Incident {
                kind: "stale_frames",
                episode: None,
                recovery_ms: 0.0,
                robot_ms_lost: 0.0,
                detail: format!("{drained} frames from before this session discarded at open"),
            });
        }
        let info = self.hello().await?;
        self.start_heartbeats(Duration::from_millis(
            (info.watchdog_ms as u64 / 4).clamp(1, 500),
        ));
        self.info = Some(info.clone());
        Ok(info)
    }

    async fn drain(&mut self) -> Result<u64, LinkError> {
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        let mut drained = 0u64;
        loop {
            let quiet = (tokio::time::Instant::now() + DRAIN_QUIET).min(limit);
            match self.recv_until(quiet).await? {
                Some(_) => drained += 1,
                None => return Ok(drained),
            }
        }
    }

    /// Hello (newest version first), then every ParamInfo and the schema hash check.
    async fn hello(&mut self) -> Result<RobotInfo, LinkError> {
        let mut version = PROTOCOL_VERSION;
        let reply = loop {
            match self
                .request(
                    HostMsg::Hello {
                        protocol_version: version,
                    },
                    "Hello",
                    "Info",
                )
                .await
            {
                Err(LinkError::Nack {
                    code: NackCode::UnsupportedVersion,
                    ..
                }) if version > MIN_PROTOCOL_VERSION => version -= 1,
                Err(LinkError::Nack {
                    code: NackCode::UnsupportedVersion,
                    ..
                }) => {
                    return Err(self.protocol(format!(
                        "speaks none of protocol versions {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION} (it refused each with UnsupportedVersion); update the firmware or gaittune"
                    )))
                }
                other => break other?,
            }
        };
        let RobotMsg::Info {
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
        } = reply
        else {
            return Err(self.protocol(format!("answered Hello with {reply:?}")));
        };
        if protocol_version != version {
            return Err(self.protocol(format!(
                "answered Hello for protocol version {version} with an Info for version {protocol_version}"
            )));
        }
        if param_count as usize > MAX_PARAMS {
            return Err(self.protocol(format!(
                "declares {param_count} parameters; the protocol allows at most {MAX_PARAMS}"
            )));
        }
        let mut params = Vec::with_capacity(param_count as usize);
        let mut hasher = SchemaHasher::new();
        for index in 0..param_count {
            let reply = self
                .request(HostMsg::GetParamInfo { index }, "GetParamInfo", "ParamInfo")
                .await?;
            let RobotMsg::ParamInfo {
                index: got,
                name,
                min,
                max,
                default,
                ..
            } = reply
            else {
                return Err(self.protocol(format!("answered GetParamInfo with {reply:?}")));
            };
            if got != index {
                return Err(self.protocol(format!(
                    "answered GetParamInfo {index} with parameter {got}"
                )));
            }
            if !(min.is_finite() && max.is_finite() && default.is_finite())
                || min > max
                || default < min
                || default > max
            {
                return Err(self.protocol(format!(
                    "parameter '{}' declares impossible limits min {min}, max {max}, default {default}",
                    name.as_str()
                )));
            }
            if params.iter().any(|p: &ParamDecl| p.name == name.as_str()) {
                return Err(self.protocol(format!(
                    "parameter name '{}' is declared twice",
                    name.as_str()
                )));
            }
            hasher.add(name.as_str(), min, max, default);
            params.push(ParamDecl {
                name: name.as_str().to_string(),
                min: min as f64,
                max: max as f64,
                default: default as f64,
            });
        }
        if hasher.finish() != schema_hash {
            return Err(self.protocol(format!(
                "announced schema hash {schema_hash:#010x} but its declared parameters hash to {:#010x}",
                hasher.finish()
            )));
        }
        Ok(RobotInfo {
            robot_id: robot_id.as_str().to_string(),
            firmware_version: format!("{fw_major}.{fw_minor}.{fw_patch}"),
            protocol_version: version,
            boot_id,
            params,
            schema_hash,
            watchdog_ms,
            step_period_us,
        })
    }

    fn start_heartbeats(&mut self, period: Duration) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let sender = self.sender.clone();
        let started = Instant::now();
        self.heartbeat = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let host_time_ms = started.elapsed().as_millis() as u32;
                if let Err(e) = sender.send(&HostMsg::Heartbeat { host_time_ms }) {
                    tracing::warn!("heartbeat not sent: {e}");
                }
            }
        }));
    }

    fn version(&self) -> u16 {
        self.info
            .as_ref()
            .map_or(MIN_PROTOCOL_VERSION, |i| i.protocol_version)
    }

    /// What the robot says about itself now: GetStatus with a version-2 firmware, else its
    /// next heartbeat.
    pub async fn snapshot(&mut self) -> Result<RobotSnapshot, LinkError> {
        if self.version() >= 2 {
            let status = self.status().await?;
            return Ok(RobotSnapshot {
                state: status.state,
                status: Some(status),
            });
        }
        let seen = self.heartbeats_seen;
        let deadline = tokio::time::Instant::now() + self.settings.silence_timeout;
        while self.heartbeats_seen == seen {
            match self.recv_until(deadline).await? {
                Some(frame) => self.absorb(frame),
                None => return Err(self.silent()),
            }
        }
        Ok(RobotSnapshot {
            state: self.state.unwrap_or(RobotState::Idle),
            status: None,
        })
    }

    async fn status(&mut self) -> Result<Status, LinkError> {
        match self
            .request(HostMsg::GetStatus, "GetStatus", "Status")
            .await?
        {
            RobotMsg::Status(s) => Ok(s),
            other => Err(self.protocol(format!("answered GetStatus with {other:?}"))),
        }
    }

    /// Sends a whole parameter set and checks the firmware's echo.
    pub async fn set_params(&mut self, values: &[f64]) -> Result<Applied, LinkError> {
        let decls = self
            .info
            .as_ref()
            .map(|i| i.params.clone())
            .unwrap_or_default();
        if values.len() != decls.len() {
            return Err(self.protocol(format!(
                "host built {} values for {} declared parameters",
                values.len(),
                decls.len()
            )));
        }
        let sent: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let pv = ParamValues::from_slice(&sent)
            .ok_or_else(|| self.protocol("too many values".into()))?;
        let reply = self
            .request(
                HostMsg::SetParams { values: pv },
                "SetParams",
                "ParamsApplied",
            )
            .await?;
        let RobotMsg::ParamsApplied {
            clamped_mask,
            values: applied,
            ..
        } = reply
        else {
            return Err(self.protocol(format!("answered SetParams with {reply:?}")));
        };
        if applied.as_slice().len() != sent.len() {
            return Err(self.protocol(format!(
                "echoed {} applied values for {} sent",
                applied.as_slice().len(),
                sent.len()
            )));
        }
        let mut clamped = Vec::new();
        for (i, ((&a, &s), decl)) in applied.as_slice().iter().zip(&sent).zip(&decls).enumerate() {
            let was_clamped = clamped_mask & (1u64 << i) != 0;
            if was_clamped {
                if !(a as f64 >= decl.min && a as f64 <= decl.max) {
                    return Err(self.protocol(format!(
                        "clamped '{}' to {a}, outside its own limits [{}, {}]",
                        decl.name, decl.min, decl.max
                    )));
                }
                clamped.push(i);
            } else if a.to_bits() != s.to_bits() {
                return Err(self.protocol(format!(
                    "applied '{}' = {a} but was sent {s} and did not report a clamp",
                    decl.name
                )));
            }
        }
        let declared_bits = match sent.len() {
            64.. => u64::MAX,
            n => (1u64 << n) - 1,
        };
        if clamped_mask & !declared_bits != 0 {
            return Err(self.protocol(format!(
                "reported clamp mask {clamped_mask:#x} with bits past its {} parameters",
                sent.len()
            )));
        }
        self.session.params_applied();
        Ok(Applied {
            values: applied.as_slice().iter().map(|&v| v as f64).collect(),
            clamped,
        })
    }

    /// Waits until the firmware reports Ready (a Ready frame, or a heartbeat saying Ready,
    /// after the answer to the last command). Fails at once with [`LinkError::Latched`] if
    /// the robot latches itself meanwhile (a trip during its reset), and with
    /// [`LinkError::Rebooted`] if it rebooted.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(), LinkError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.settle_fault().await?;
            if self.session.ready() {
                return Ok(());
            }
            if let Some(latch) = self.session.latch() {
                return Err(self.latched(latch).await);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LinkError::Timeout {
                    device: self.device.clone(),
                    what: "Ready (robot back at its start pose)",
                    timeout_ms: limit.as_millis() as u64,
                });
            }
            let silence = now + self.settings.silence_timeout;
            match self.recv_until(silence.min(deadline)).await? {
                Some(frame) => self.absorb(frame),
                None if silence <= deadline => return Err(self.silent()),
                None => {}
            }
        }
    }

    /// Describes a latch seen outside an episode, asking the robot for its cause (v2).
    async fn latched(&mut self, latch: Latch) -> LinkError {
        let tripped = |r: TripReason, value: f32| match r {
            TripReason::Watchdog => {
                format!("its watchdog tripped after {value:.0} ms without a host frame")
            }
            _ => format!("its {r:?} limit tripped (value {value})"),
        };
        let (cause, reason) = match latch {
            Latch::Trip { reason, value } => (
                format!(
                    "{} outside an episode (during its reset)",
                    tripped(reason, value)
                ),
                Some(reason),
            ),
            Latch::Stopped => match self.status_if_v2().await {
                Some(s) if s.stop_cause == StopCause::EStop => (
                    "an EStop gaittune did not send (its own stop button?)".to_string(),
                    None,
                ),
                Some(s) => match s.stop_cause.trip_reason() {
                    Some(r) => (tripped(r, s.stop_value), Some(r)),
                    None => ("it reports state Stopped".to_string(), None),
                },
                None => (
                    "it reports state Stopped (cause unknown: a version-1 firmware)".into(),
                    None,
                ),
            },
        };
        LinkError::Latched {
            device: self.device.clone(),
            cause,
            watchdog: reason == Some(TripReason::Watchdog),
        }
    }

    async fn status_if_v2(&mut self) -> Option<Status> {
        if self.version() < 2 {
            return None;
        }
        self.status().await.ok()
    }

    /// Acts on a reboot the session noticed (outside an episode: there the episode's wait
    /// handles it).
    async fn settle_fault(&mut self) -> Result<(), LinkError> {
        match self.fault.take() {
            None => Ok(()),
            Some(Fault::Reboot(why)) => self.confirm_reboot(why).await,
            Some(Fault::Lie(detail)) => Err(self.protocol(detail)),
            // Only raised while an episode is watched; nothing to do outside one.
            Some(Fault::EndMissing(_)) => Ok(()),
        }
    }

    /// Repeats the handshake after signs of a reboot. A new boot id confirms it: the schema
    /// must be unchanged, and [`LinkError::Rebooted`] tells the caller to start the trial
    /// over. The same boot id was a false alarm.
    async fn confirm_reboot(&mut self, why: &'static str) -> Result<(), LinkError> {
        let same_boot = self.handshake_again(why).await?;
        if same_boot {
            tracing::warn!(
                "{}: the robot looked rebooted ({why}) but its boot id is unchanged",
                self.device
            );
        }
        Ok(())
    }

    /// The handshake again: `Ok(true)` if the same boot answered, [`LinkError::Rebooted`] if
    /// a new one did (with the schema checked unchanged).
    async fn handshake_again(&mut self, why: &'static str) -> Result<bool, LinkError> {
        let old = self.info.clone();
        let info = self.hello().await?;
        let Some(old) = old else {
            self.info = Some(info);
            return Ok(true);
        };
        if info.boot_id == old.boot_id {
            return Ok(true);
        }
        if info.schema_hash != old.schema_hash || info.params != old.params {
            return Err(self.protocol(format!(
                "rebooted with a different parameter schema (hash {:#010x}, was {:#010x}): a firmware update? Restart gaittune to check the search space against the new declarations",
                info.schema_hash, old.schema_hash
            )));
        }
        let boot_id = info.boot_id;
        self.info = Some(info);
        self.session.restart();
        self.events.clear();
        self.deadline = None;
        Err(LinkError::Rebooted {
            device: self.device.clone(),
            why: why.to_string(),
            boot_id,
        })
    }

    /// Starts one episode with the applied parameters (call after [`Self::wait_ready`]).
    /// Its telemetry follows as events ([`Self::next_event`]); frames of any other episode
    /// are dropped.
    pub async fn start_episode(
        &mut self,
        trial: u32,
        episode: u16,
        max_steps: u32,
        seed: u64,
    ) -> Result<(), LinkError> {
        let now = Instant::now();
        self.events.clear();
        if matches!(self.fault, Some(Fault::EndMissing(_))) {
            self.fault = None;
        }
        self.session.watch(trial, episode, max_steps, now);
        let period = self.info.as_ref().map_or(0, |i| i.step_period_us) as f64;
        let nominal = Duration::from_secs_f64(max_steps as f64 * period * 1.25 / 1e6);
        self.deadline = Some(tokio::time::Instant::now() + nominal + self.settings.episode_margin);
        let result = self
            .command(
                HostMsg::StartEpisode {
                    trial,
                    episode,
                    max_steps,
                    seed,
                },
                "StartEpisode",
            )
            .await;
        match result {
            Ok(()) => {
                self.session.started(Instant::now());
                Ok(())
            }
            Err(e) => {
                self.session.unwatch();
                self.deadline = None;
                if let LinkError::Nack {
                    code: NackCode::NoParams,
                    ..
                } = e
                {
                    if self.session.has_params() {
                        // Only a boot loses an applied parameter set: e.g. the robot rebooted
                        // between a StartEpisode whose Ack was lost and its retry.
                        self.confirm_reboot("it refused StartEpisode with NoParams although a parameter set was applied").await?;
                    }
                }
                Err(e)
            }
        }
    }

    /// Stops the motors now and latches; waits for the acknowledgement.
    pub async fn estop(&mut self) -> Result<(), LinkError> {
        self.sender.estops.fetch_add(1, Ordering::SeqCst);
        self.command(HostMsg::EStop, "EStop").await
    }

    /// Releases a latched EStop or safety trip; the robot resets and reports Ready.
    pub async fn clear_estop(&mut self) -> Result<(), LinkError> {
        self.command(HostMsg::ClearEStop, "ClearEStop").await?;
        self.session.released();
        Ok(())
    }

    /// Why the robot is latched, as far as it can be told: its Status (v2), else the last
    /// SafetyTrip or Stopped heartbeat seen outside an episode.
    pub async fn latch_cause(&mut self) -> LinkError {
        let latch = self.session.last_latch().unwrap_or(Latch::Stopped);
        self.latched(latch).await
    }

    /// Ends the running episode (not latched).
    pub async fn abort(&mut self) -> Result<(), LinkError> {
        self.command(HostMsg::Abort, "Abort").await
    }

    /// After a silence: repeats the handshake until the robot answers or `window` has passed
    /// (a stalled line, a robot that hung for a moment). The episode in flight is given up.
    /// Ok if the same boot answers; [`LinkError::Rebooted`] if a new one does; the last
    /// error if none answered in time.
    pub async fn reconnect(&mut self, window: Duration) -> Result<(), LinkError> {
        self.forget_episode();
        let until = tokio::time::Instant::now() + window;
        loop {
            match self
                .handshake_again("it answered again after a silence")
                .await
            {
                Err(LinkError::NoResponse { .. } | LinkError::Silent { .. })
                    if tokio::time::Instant::now() < until => {}
                other => return other.map(|_| ()),
            }
        }
    }

    /// Takes in what the robot says for `span` while the host waits between episodes (for the
    /// operator's go, a release, a resume), keeping its state current. Fails with
    /// [`LinkError::Silent`] when no frame came for the silence timeout, counted from the
    /// last frame (so short calls in a loop notice it too). Cancel-safe.
    pub async fn listen(&mut self, span: Duration) -> Result<(), LinkError> {
        let until = tokio::time::Instant::now() + span;
        loop {
            let silence = self.last_frame_at + self.settings.silence_timeout;
            match self.recv_until(silence.min(until)).await? {
                Some(frame) => self.absorb(frame),
                None if silence <= until => return Err(self.silent()),
                None => return Ok(()),
            }
        }
    }

    /// Stops watching the episode in flight (after giving it up).
    pub fn forget_episode(&mut self) {
        self.session.unwatch();
        self.deadline = None;
        self.events.clear();
        self.fault = None;
    }

    /// The next event of the episode in flight. Fails with [`LinkError::EpisodeLost`] when
    /// its result is lost for good, [`LinkError::Rebooted`] when the robot rebooted, and
    /// [`LinkError::Silent`] when the robot goes silent. Cancel-safe: nothing is lost if the
    /// future is dropped.
    pub async fn next_event(&mut self) -> Result<RobotEvent, LinkError> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                if matches!(ev, RobotEvent::EpisodeEnd { .. }) {
                    self.deadline = None;
                }
                return Ok(ev);
            }
            match self.fault.take() {
                Some(Fault::EndMissing(state)) => {
                    let why = format!("the robot reports {state:?} but its EpisodeEnd never came");
                    self.recover_end(why, Some(state)).await?;
                    continue;
                }
                Some(other) => {
                    self.fault = Some(other);
                    self.settle_fault().await?;
                    continue;
                }
                None => {}
            }
            let now = tokio::time::Instant::now();
            let silence = now + self.settings.silence_timeout;
            let deadline = self.deadline;
            if deadline.is_some_and(|d| d <= now) {
                let why = "no EpisodeEnd by its deadline (max_steps × step_period × 1.25 + episode_margin)".to_string();
                self.recover_end(why, None).await?;
                continue;
            }
            let until = deadline.map_or(silence, |d| d.min(silence));
            match self.recv_until(until).await? {
                Some(frame) => self.absorb(frame),
                None if until == silence => return Err(self.silent()),
                None => {}
            }
        }
    }

    /// The episode in flight is over (or overdue) without its EpisodeEnd: with a version-2
    /// firmware, the Status carries its end; otherwise it is lost.
    async fn recover_end(
        &mut self,
        why: String,
        state: Option<RobotState>,
    ) -> Result<(), LinkError> {
        let noticed = Instant::now();
        let Some((trial, episode, next_step)) = self.session.watched() else {
            return Ok(());
        };
        let since = self.session.last_progress().unwrap_or(noticed);
        if let Some(status) = self.status_if_v2().await {
            if self
                .info
                .as_ref()
                .is_some_and(|i| i.boot_id != status.boot_id)
            {
                return self.confirm_reboot("GetStatus reports a new boot id").await;
            }
            if status.phase == EpisodePhase::Ended
                && (status.trial, status.episode) == (trial, episode)
            {
                self.deliver_recovered_end(&status, next_step);
                self.session.unwatch();
                self.incidents.push(Incident {
                    kind: "lost_episode_end",
                    episode: Some(episode as u32),
                    recovery_ms: ms(since.elapsed()),
                    robot_ms_lost: 0.0,
                    detail: format!("{why}; recovered from the robot's Status"),
                });
                return Ok(());
            }
            let state = Some(status.state);
            return Err(self.episode_lost(episode, why, state));
        }
        Err(self.episode_lost(episode, why, state.or(self.state)))
    }

    fn episode_lost(&mut self, episode: u16, why: String, state: Option<RobotState>) -> LinkError {
        self.session.unwatch();
        self.events.clear();
        LinkError::EpisodeLost {
            device: self.device.clone(),
            episode,
            why,
            state,
        }
    }

    /// Queues what a Status says about an episode whose SafetyTrip/EpisodeEnd were lost.
    fn deliver_recovered_end(&mut self, status: &Status, next_step: u32) {
        if status.steps > next_step {
            self.events.push_back(RobotEvent::StepsMissed {
                from: next_step,
                to: status.steps,
            });
        }
        if status.end_status == EpisodeStatus::SafetyTrip {
            if let Some(reason) = status.stop_cause.trip_reason() {
                // A limit trips on the step that showed it; the watchdog on the step that
                // did not run (SPEC §10.2, §10.4).
                let step = if reason == TripReason::Watchdog {
                    status.steps
                } else {
                    status.steps.saturating_sub(1)
                };
                self.events.push_back(RobotEvent::SafetyTrip {
                    step,
                    reason,
                    value: status.stop_value,
                });
            }
        }
        self.events.push_back(RobotEvent::EpisodeEnd {
            episode_return: status.episode_return,
            steps: status.steps,
            status: status.end_status,
            recovered: true,
        });
    }

    async fn command(&mut self, msg: HostMsg, name: &'static str) -> Result<(), LinkError> {
        let reply = self.request(msg, name, "Ack").await?;
        match reply {
            RobotMsg::Ack { .. } => Ok(()),
            other => Err(self.protocol(format!("answered {name} with {other:?}"))),
        }
    }

    /// Sends `msg` and waits for the answer carrying its sequence number, resending with the
    /// same number on timeout. Other frames that arrive meanwhile go to the session.
    async fn request(
        &mut self,
        msg: HostMsg,
        name: &'static str,
        expected: &'static str,
    ) -> Result<RobotMsg, LinkError> {
        let seq = self.sender.next_seq();
        let attempts = self.settings.retries + 1;
        let first_sent = Instant::now();
        // Queries and the handshake do not change the robot: what it said before their
        // answer stays true.
        let changes_state = !matches!(
            msg,
            HostMsg::GetStatus | HostMsg::Hello { .. } | HostMsg::GetParamInfo { .. }
        );
        for attempt in 0..attempts {
            if attempt > 0 {
                tracing::debug!("{}: resending {name} (seq {seq})", self.device);
            }
            self.sender
                .send_with_seq(seq, &msg)
                .map_err(|e| self.lost(format!("writing {name} failed: {e}")))?;
            let deadline = tokio::time::Instant::now() + self.settings.response_timeout;
            while let Some(frame) = self.recv_until(deadline).await? {
                match answer_seq(&frame.msg) {
                    Some(ack) if ack == seq => {
                        if changes_state {
                            self.session.answer_received();
                        }
                        if attempt > 0 {
                            let waited = ms(first_sent.elapsed());
                            self.incidents.push(Incident {
                                kind: "retry",
                                episode: None,
                                recovery_ms: waited,
                                robot_ms_lost: waited,
                                detail: format!("{name} answered after {} attempts", attempt + 1),
                            });
                        }
                        if let RobotMsg::Nack { code, .. } = frame.msg {
                            return Err(LinkError::Nack {
                                device: self.device.clone(),
                                command: name,
                                code,
                            });
                        }
                        return Ok(frame.msg);
                    }
                    Some(_) => tracing::debug!("{}: stale answer {:?}", self.device, frame.msg),
                    None => self.absorb(frame),
                }
            }
        }
        Err(LinkError::NoResponse {
            device: self.device.clone(),
            command: name,
            expected,
            timeout_ms: self.settings.response_timeout.as_millis() as u64,
            attempts,
        })
    }

    /// Receives the next valid frame before `deadline`; `None` on timeout.
    async fn recv_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Frame<RobotMsg>>, LinkError> {
        loop {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(self.lost("the reader stopped".into())),
                Ok(Some(Incoming::Closed(reason))) => return Err(self.lost(reason)),
                Ok(Some(Incoming::Bad(err))) => {
                    self.bad_frames += 1;
                    tracing::debug!("{}: dropped a corrupted frame ({err:?})", self.device);
                }
                Ok(Some(Incoming::Frame(frame))) => {
                    self.last_frame_at = tokio::time::Instant::now();
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// Hands a frame that answers nothing to the session and queues what it showed.
    fn absorb(&mut self, frame: Frame<RobotMsg>) {
        if let RobotMsg::Heartbeat { state, .. } = frame.msg {
            self.state = Some(state);
            self.heartbeats_seen += 1;
        }
        for noticed in self.session.on_frame(&frame.msg, Instant::now()) {
            match noticed {
                Noticed::Step(step) => self.events.push_back(RobotEvent::Step(step)),
                Noticed::StepsMissed { from, to } => {
                    self.events.push_back(RobotEvent::StepsMissed { from, to })
                }
                Noticed::End {
                    episode_return,
                    steps,
                    status,
                } => self.events.push_back(RobotEvent::EpisodeEnd {
                    episode_return,
                    steps,
                    status,
                    recovered: false,
                }),
                Noticed::Trip {
                    step,
                    reason,
                    value,
                } => self.events.push_back(RobotEvent::SafetyTrip {
                    step,
                    reason,
                    value,
                }),
                Noticed::EndMissing { state } => {
                    self.fault.get_or_insert(Fault::EndMissing(state));
                }
                Noticed::Reboot { why } => self.fault = Some(Fault::Reboot(why)),
                Noticed::Lie {
                    what: LieKind::StepPastMaxSteps { step, max_steps },
                } => {
                    self.fault = Some(Fault::Lie(format!(
                        "sent step {step} of an episode of {max_steps} steps"
                    )))
                }
            }
        }
    }

    fn protocol(&self, detail: String) -> LinkError {
        LinkError::Protocol {
            device: self.device.clone(),
            detail,
        }
    }

    fn lost(&self, reason: String) -> LinkError {
        LinkError::Lost {
            device: self.device.clone(),
            reason,
        }
    }

    fn silent(&self) -> LinkError {
        LinkError::Silent {
            device: self.device.clone(),
            silence_ms: self.settings.silence_timeout.as_millis() as u64,
        }
    }
}

impl Drop for RobotLink {
    fn drop(&mut self) {
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn answer_seq(msg: &RobotMsg) -> Option<u16> {
    match *msg {
        RobotMsg::Info { ack_seq, .. }
        | RobotMsg::ParamInfo { ack_seq, .. }
        | RobotMsg::ParamsApplied { ack_seq, .. }
        | RobotMsg::Ack { ack_seq }
        | RobotMsg::Nack { ack_seq, .. } => Some(ack_seq),
        RobotMsg::Status(ref s) => Some(s.ack_seq),
        _ => None,
    }
}

fn read_loop(
    port: &mut Port,
    tx: &mpsc::UnboundedSender<Incoming>,
    stop: &AtomicBool,
    guard: &GuardSlot,
    sender: &Sender,
) {
    let mut acc = FrameAccumulator::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let n = match port.read_some(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Incoming::Closed("the device closed (end of file)".into()));
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => {
                let _ = tx.send(Incoming::Closed(format!("read failed: {e}")));
                return;
            }
        };
        for &b in &buf[..n] {
            let item = match acc.push(b) {
                None => continue,
                Some(Err(e)) => Incoming::Bad(e),
                Some(Ok(bytes)) => match decode::<RobotMsg>(bytes) {
                    Ok(frame) => {
                        if let RobotMsg::Step(step) = &frame.msg {
                            let trip = guard
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .as_ref()
                                .is_some_and(|g| g(step));
                            if trip {
                                if let Err(e) = sender.estop() {
                                    tracing::error!("EStop could not be written: {e}");
                                }
                            }
                        }
                        Incoming::Frame(frame)
                    }
                    Err(e) => Incoming::Bad(e),
                },
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    }
}
