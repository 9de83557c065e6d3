//! The host side of a protocol session: handshake, commands with acknowledgement and retry,
//! heartbeats, and the stream of episode events. Knows nothing about samplers or studies.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_protocol::{
    decode, encode, DecodeError, EpisodeStatus, Frame, FrameAccumulator, HostMsg, NackCode,
    ParamValues, RobotMsg, RobotState, SchemaHasher, Step, TripReason, MAX_FRAME, MAX_PARAMS,
    PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::port::Port;

/// Timeouts and retry policy of a link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How long to wait for the answer to one command before resending it.
    pub response_timeout: Duration,
    /// How many times a command is resent (same sequence number) before giving up.
    pub retries: u32,
    /// No frame at all from the robot for this long means the link is lost.
    pub silence_timeout: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_millis(250),
            retries: 3,
            silence_timeout: Duration::from_secs(2),
        }
    }
}

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

/// Something the robot reported during or around an episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RobotEvent {
    /// One control step of telemetry.
    Step(Step),
    /// The episode ended.
    EpisodeEnd {
        /// Trial number.
        trial: u32,
        /// Episode index.
        episode: u16,
        /// Sum of rewards.
        episode_return: f32,
        /// Steps run.
        steps: u32,
        /// How it ended.
        status: EpisodeStatus,
    },
    /// The firmware's own safety limit stopped the robot (latched).
    SafetyTrip {
        /// Trial number.
        trial: u32,
        /// Episode index.
        episode: u16,
        /// Step at the trip.
        step: u32,
        /// Which limit.
        reason: TripReason,
        /// The value that tripped it.
        value: f32,
    },
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
    #[error("robot on {device} did not answer {command} with {expected} within {timeout_ms} ms ({attempts} attempts). Is the firmware running and speaking gaittune protocol v{PROTOCOL_VERSION} at this baud rate?")]
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
    /// The byte stream closed or went silent.
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
}

struct FrameWriter {
    port: Port,
    seq: u16,
}

/// The write half of a link, shareable with other threads (the Ctrl-C handler, the panic
/// hook) so they can send EStop without the async runtime.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Mutex<FrameWriter>>,
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
        self.send(&HostMsg::EStop).map(|_| ())
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

/// A protocol session with one robot.
pub struct RobotLink {
    device: String,
    sender: Sender,
    rx: mpsc::UnboundedReceiver<Incoming>,
    events: VecDeque<RobotEvent>,
    settings: LinkSettings,
    info: Option<RobotInfo>,
    ready: bool,
    state: Option<RobotState>,
    stop_reader: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    bad_frames: u64,
    guard: GuardSlot,
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
            ready: false,
            state: None,
            stop_reader,
            heartbeat: None,
            bad_frames: 0,
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

    /// Hello → Info, then every ParamInfo; verifies the protocol version and the schema hash,
    /// then starts host heartbeats at a quarter of the firmware's watchdog period.
    pub async fn handshake(&mut self) -> Result<RobotInfo, LinkError> {
        let info = self
            .request(
                HostMsg::Hello {
                    protocol_version: PROTOCOL_VERSION,
                },
                "Hello",
                "Info",
            )
            .await?;
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
        } = info
        else {
            return Err(self.protocol(format!("answered Hello with {info:?}")));
        };
        if protocol_version != PROTOCOL_VERSION {
            return Err(self.protocol(format!(
                "firmware speaks protocol version {protocol_version}, this gaittune speaks {PROTOCOL_VERSION}; update one of them"
            )));
        }
        if watchdog_ms == 0 {
            return Err(self.protocol(
                "declares a watchdog of 0 ms: a firmware without a host watchdog is not safe to tune on".into(),
            ));
        }
        if param_count as usize > MAX_PARAMS {
            return Err(self.protocol(format!(
                "declares {param_count} parameters, more than the protocol's {MAX_PARAMS}"
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
        let info = RobotInfo {
            robot_id: robot_id.as_str().to_string(),
            firmware_version: format!("{fw_major}.{fw_minor}.{fw_patch}"),
            boot_id,
            params,
            schema_hash,
            watchdog_ms,
            step_period_us,
        };
        self.start_heartbeats(Duration::from_millis(
            (watchdog_ms as u64 / 4).clamp(1, 500),
        ));
        self.info = Some(info.clone());
        Ok(info)
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
        self.ready = false;
        Ok(Applied {
            values: applied.as_slice().iter().map(|&v| v as f64).collect(),
            clamped,
        })
    }

    /// Waits until the firmware reports Ready (reset done) after the last command.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(), LinkError> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.ready {
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
        Ok(())
    }

    /// Starts one episode with the applied parameters. Telemetry follows as events.
    pub async fn start_episode(
        &mut self,
        trial: u32,
        episode: u16,
        max_steps: u32,
        seed: u64,
    ) -> Result<(), LinkError> {
        self.command(
            HostMsg::StartEpisode {
                trial,
                episode,
                max_steps,
                seed,
            },
            "StartEpisode",
        )
        .await
    }

    /// Stops the motors now and latches; waits for the acknowledgement.
    pub async fn estop(&mut self) -> Result<(), LinkError> {
        self.command(HostMsg::EStop, "EStop").await
    }

    /// Releases a latched EStop or safety trip; the robot resets and reports Ready.
    pub async fn clear_estop(&mut self) -> Result<(), LinkError> {
        self.command(HostMsg::ClearEStop, "ClearEStop").await
    }

    /// Ends the running episode (not latched).
    pub async fn abort(&mut self) -> Result<(), LinkError> {
        self.command(HostMsg::Abort, "Abort").await
    }

    /// The next episode event. Fails if the robot goes silent for the silence timeout.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Result<RobotEvent, LinkError> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(ev);
            }
            let deadline = tokio::time::Instant::now() + self.settings.silence_timeout;
            match self.recv_until(deadline).await? {
                Some(frame) => self.absorb(frame),
                None => return Err(self.silent()),
            }
        }
    }

    async fn command(&mut self, msg: HostMsg, name: &'static str) -> Result<(), LinkError> {
        let reply = self.request(msg, name, "Ack").await?;
        match reply {
            RobotMsg::Ack { .. } => {
                self.ready = false;
                Ok(())
            }
            other => Err(self.protocol(format!("answered {name} with {other:?}"))),
        }
    }

    /// Sends `msg` and waits for the answer carrying its sequence number, resending with the
    /// same number on timeout. Other frames that arrive meanwhile are absorbed as events.
    async fn request(
        &mut self,
        msg: HostMsg,
        name: &'static str,
        expected: &'static str,
    ) -> Result<RobotMsg, LinkError> {
        let seq = self.sender.next_seq();
        let attempts = self.settings.retries + 1;
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
                    tracing::warn!("{}: dropped a corrupted frame ({err:?})", self.device);
                }
                Ok(Some(Incoming::Frame(frame))) => return Ok(Some(frame)),
            }
        }
    }

    fn absorb(&mut self, frame: Frame<RobotMsg>) {
        match frame.msg {
            RobotMsg::Heartbeat { state, .. } => self.state = Some(state),
            RobotMsg::Ready => self.ready = true,
            RobotMsg::Step(step) => self.events.push_back(RobotEvent::Step(step)),
            RobotMsg::EpisodeEnd {
                trial,
                episode,
                episode_return,
                steps,
                status,
            } => self.events.push_back(RobotEvent::EpisodeEnd {
                trial,
                episode,
                episode_return,
                steps,
                status,
            }),
            RobotMsg::SafetyTrip {
                trial,
                episode,
                step,
                reason,
                value,
            } => self.events.push_back(RobotEvent::SafetyTrip {
                trial,
                episode,
                step,
                reason,
                value,
            }),
            other => tracing::debug!("{}: unsolicited {other:?}", self.device),
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
        self.lost(format!(
            "no frame for {} ms (the firmware's heartbeats stopped)",
            self.settings.silence_timeout.as_millis()
        ))
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

fn answer_seq(msg: &RobotMsg) -> Option<u16> {
    match *msg {
        RobotMsg::Info { ack_seq, .. }
        | RobotMsg::ParamInfo { ack_seq, .. }
        | RobotMsg::ParamsApplied { ack_seq, .. }
        | RobotMsg::Ack { ack_seq }
        | RobotMsg::Nack { ack_seq, .. } => Some(ack_seq),
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
