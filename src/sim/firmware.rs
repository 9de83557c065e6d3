//! The firmware side of the protocol, written the way microcontroller firmware would use the
//! `firmware-protocol` crate: a state machine with fixed buffers that consumes received bytes
//! one at a time ([`Firmware::on_byte`]), runs its control loop from a periodic tick
//! ([`Firmware::poll`]), and emits whole frames through a callback. It owns no I/O and reads
//! no clock: the caller passes the time since boot, so tests drive it by hand.
//!
//! Behaviour follows `firmware-protocol/SPEC.md` (§7–§10): handshake, parameter declarations,
//! atomic clamped SetParams, episodes of Step frames, retry detection by (seq, CRC), Abort,
//! latched EStop and safety trips, host-heartbeat watchdog, periodic heartbeats.
//!
//! Decisions the spec leaves open, as this firmware makes them:
//! - On a safety trip the Step frame that showed the violation is sent first (it counts in
//!   EpisodeEnd's `steps` and return), then SafetyTrip with that step's index, then EpisodeEnd.
//! - A watchdog trip reports `step` = the number of Step frames already sent (the index of
//!   the step that did not run) and `value` = ms since the last valid host frame.
//! - The watchdog applies while Running only.
//! - The firmware clock (Step timestamps, heartbeat uptime) is simulated time: it advances by
//!   `step_period_us` per control step, and follows wall time when no episode runs (never
//!   going backwards).
//!
//! # Event log
//!
//! With an [`EventLog`] attached, every protocol event is written as one JSON line, flushed,
//! **before** the frame that answers it is sent. Every line has `t_ms` (ms since boot),
//! `event`, `trial`, `episode`, `step`, `status`, `reason` (null where they do not apply):
//!
//! | event          | when                               | extra fields / meaning                        |
//! |----------------|------------------------------------|-----------------------------------------------|
//! | `hello`        | Hello answered with Info           | `protocol_version`, `boot_id`                 |
//! | `set_params`   | a parameter set applied            | `clamped_mask`, `values` (applied)            |
//! | `episode_start`| StartEpisode accepted              | `max_steps`, `seed`                           |
//! | `episode_end`  | EpisodeEnd sent                    | `step` = steps sent, `status`, `return`       |
//! | `estop`        | EStop received (every time)        | `step` = Step frames already sent in the running episode (the index of the first step that did not run), null if none ran |
//! | `clear_estop`  | ClearEStop received                | `state` before it                             |
//! | `abort`        | Abort received                     | `step` as for `estop`                         |
//! | `safety_trip`  | a firmware hard limit tripped      | `reason` (Roll, Pitch, BodyHeight, JointTemperature), `value`, `step` = the tripping step |
//! | `watchdog`     | the host-heartbeat watchdog tripped| `value` = ms of host silence, `step` as for `estop` |
//! | `nack`         | a command refused                  | `command`, `reason` = the Nack code           |
//! | `bad_frame`    | a received frame discarded         | `error`                                       |

use std::io::Write;
use std::time::Duration;

use firmware_protocol::{
    cobs_decode, decode, encode, DecodeError, EpisodeStatus, FrameAccumulator, HostMsg, NackCode,
    Name, ParamValues, RobotMsg, RobotState, SchemaHasher, Step, TripReason, MAX_FRAME,
    MAX_RAW_FRAME, PROTOCOL_VERSION,
};
use serde_json::{json, Map, Value};

/// Firmware hard limit on |roll|, rad.
pub const LIMIT_ROLL_RAD: f32 = 0.8;
/// Firmware hard limit on |pitch|, rad.
pub const LIMIT_PITCH_RAD: f32 = 0.8;
/// Firmware minimum body height, m.
pub const LIMIT_MIN_BODY_HEIGHT_M: f32 = 0.08;
/// Firmware maximum joint temperature, °C.
pub const LIMIT_MAX_JOINT_TEMP_C: f32 = 85.0;
/// Period of the firmware's own heartbeats (wall time).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);
/// Firmware version announced in Info.
pub const FW_VERSION: (u8, u8, u8) = (0, 1, 0);

/// One declared parameter: what ParamInfo announces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// Parameter name (at most 24 bytes).
    pub name: &'static str,
    /// Hard lower limit.
    pub min: f32,
    /// Hard upper limit.
    pub max: f32,
    /// Firmware default.
    pub default: f32,
}

impl ParamSpec {
    /// A declaration.
    pub const fn new(name: &'static str, min: f32, max: f32, default: f32) -> Self {
        Self {
            name,
            min,
            max,
            default,
        }
    }
}

/// What a robot model reports for one control step (a Step frame without its bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    /// Reward of this step.
    pub reward: f32,
    /// Body roll, rad.
    pub roll: f32,
    /// Body pitch, rad.
    pub pitch: f32,
    /// Body height, m.
    pub body_height: f32,
    /// Hottest joint, °C.
    pub max_joint_temp: f32,
    /// `FAULT_*` bits.
    pub faults: u32,
}

/// The robot behind the firmware: declares parameters and computes each control step.
pub trait RobotModel {
    /// State of one running episode.
    type Episode;
    /// The declared parameters, in index order (at most 64).
    fn params(&self) -> &[ParamSpec];
    /// Starts an episode with the applied (clamped) `values`; `seed` is StartEpisode's seed.
    fn start_episode(&self, values: &[f32], seed: u64) -> Self::Episode;
    /// Computes control step `step` (0, 1, 2, … within the episode).
    fn step(&self, episode: &mut Self::Episode, step: u32) -> Telemetry;
    /// Whether the reset routine may end now (Resetting → Ready). Asked while Resetting once
    /// the reset time has passed, and again every [`GO_POLL`] until it says yes: a robot that
    /// waits for an operator's go says no until the go arrives. The default never waits.
    fn reset_may_finish(&mut self) -> bool {
        true
    }
}

/// How often a firmware whose model holds the reset ([`RobotModel::reset_may_finish`]) asks
/// again.
pub const GO_POLL: Duration = Duration::from_millis(20);

/// Configuration of a [`Firmware`].
#[derive(Debug, Clone)]
pub struct FirmwareOptions {
    /// Robot identifier announced in Info (at most 24 bytes).
    pub robot_id: String,
    /// Random per boot; announced in Info.
    pub boot_id: u32,
    /// Host-silence timeout of the watchdog, ms (≥ 1).
    pub watchdog_ms: u16,
    /// Control period announced in Info and used for Step timestamps, µs.
    pub step_period_us: u32,
    /// Wall time between control steps (zero = as fast as the caller polls).
    pub step_delay: Duration,
    /// Wall time the reset routine takes (Resetting → Ready).
    pub reset_delay: Duration,
    /// Test fault: on Abort, run one more control step whose roll reads
    /// [`STUMBLE_ROLL_RAD`] (past any sensible host envelope, inside the firmware's own
    /// limit) before stopping: the robot that lurches while it stops.
    pub stumble_on_abort: bool,
}

/// The roll a stumbling robot reports ([`FirmwareOptions::stumble_on_abort`]), rad.
pub const STUMBLE_ROLL_RAD: f32 = 0.7;

impl Default for FirmwareOptions {
    fn default() -> Self {
        Self {
            robot_id: "sim-quadruped".into(),
            boot_id: 1,
            watchdog_ms: 1000,
            step_period_us: 20_000,
            step_delay: Duration::ZERO,
            reset_delay: Duration::from_millis(5),
            stumble_on_abort: false,
        }
    }
}

/// JSON-lines protocol event log: one object per line, flushed after every line.
///
/// Every line has `t_ms` (ms since boot), `event`, and `trial`, `episode`, `step`, `status`,
/// `reason` (null where they do not apply), plus event-specific fields.
pub struct EventLog {
    sink: Box<dyn Write + Send>,
    failed: bool,
}

impl EventLog {
    /// An event log appending to the file at `path` (created if missing).
    pub fn create(path: &std::path::Path) -> std::io::Result<EventLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::new(Box::new(file)))
    }

    /// An event log writing to any sink.
    pub fn new(sink: Box<dyn Write + Send>) -> EventLog {
        Self {
            sink,
            failed: false,
        }
    }

    fn write(&mut self, now: Duration, event: &str, fields: Value) {
        let mut line = Map::new();
        line.insert(
            "t_ms".into(),
            json!((now.as_secs_f64() * 1e6).round() / 1e3),
        );
        line.insert("event".into(), json!(event));
        for key in ["trial", "episode", "step", "status", "reason"] {
            line.insert(key.into(), Value::Null);
        }
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let result = self
            .sink
            .write_all(text.as_bytes())
            .and_then(|_| self.sink.flush());
        if let Err(e) = result {
            if !self.failed {
                tracing::warn!("cannot write the sim event log ({e}); further events are lost");
                self.failed = true;
            }
        }
    }
}

/// The last executed command, for retry detection (SPEC §7.4).
#[derive(Clone, Copy)]
struct StoredCommand {
    seq: u16,
    crc: u32,
    response: RobotMsg,
}

/// A running episode.
struct Episode<E> {
    trial: u32,
    episode: u16,
    max_steps: u32,
    steps_sent: u32,
    episode_return: f32,
    started: Duration,
    model: E,
}

/// The simulated firmware. See the [module docs](self).
pub struct Firmware<M: RobotModel> {
    model: M,
    opts: FirmwareOptions,
    robot_id: Name,
    schema_hash: u32,
    rx: FrameAccumulator,
    tx_seq: u16,
    state: RobotState,
    applied: Option<ParamValues>,
    reset_done_at: Duration,
    last_command: Option<StoredCommand>,
    last_host_frame: Duration,
    next_heartbeat: Duration,
    clock_us: u64,
    episode: Option<Episode<M::Episode>>,
    bad_frames: u64,
    events: Option<EventLog>,
    booted: bool,
}

impl<M: RobotModel> Firmware<M> {
    /// A firmware freshly booted at time zero, in state Idle, with no parameter set applied.
    ///
    /// Panics if the model declares more than 64 parameters or a name longer than 24 bytes,
    /// or if `robot_id` is longer than 24 bytes: those are programming errors of the model.
    pub fn new(model: M, opts: FirmwareOptions) -> Self {
        let specs = model.params();
        assert!(
            specs.len() <= firmware_protocol::MAX_PARAMS,
            "too many parameters declared"
        );
        let mut hasher = SchemaHasher::new();
        for p in specs {
            assert!(
                Name::new(p.name).is_some(),
                "parameter name {:?} is too long",
                p.name
            );
            hasher.add(p.name, p.min, p.max, p.default);
        }
        let robot_id = Name::new(&opts.robot_id).expect("robot_id longer than 24 bytes");
        Self {
            schema_hash: hasher.finish(),
            model,
            robot_id,
            opts,
            rx: FrameAccumulator::new(),
            tx_seq: 0,
            state: RobotState::Idle,
            applied: None,
            reset_done_at: Duration::ZERO,
            last_command: None,
            last_host_frame: Duration::ZERO,
            next_heartbeat: Duration::ZERO,
            clock_us: 0,
            episode: None,
            bad_frames: 0,
            events: None,
            booted: false,
        }
    }

    /// Attaches a protocol event log.
    pub fn with_event_log(mut self, log: EventLog) -> Self {
        self.events = Some(log);
        self
    }

    /// The current state.
    pub fn state(&self) -> RobotState {
        self.state
    }

    /// Received frames discarded so far (CRC, COBS, unknown type, bad fields, over-long).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// The parameter-schema hash announced in Info.
    pub fn schema_hash(&self) -> u32 {
        self.schema_hash
    }

    /// The model behind the firmware.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Feeds one received byte at time `now` (since boot). A completed frame is executed at
    /// once; its response and any frames it causes go to `out`, one whole frame per call.
    pub fn on_byte(&mut self, byte: u8, now: Duration, out: &mut impl FnMut(&[u8])) {
        self.sync_clock(now);
        let received = match self.rx.push(byte) {
            None => return,
            Some(Err(e)) => Err(e),
            Some(Ok(stuffed)) => match decode::<HostMsg>(stuffed) {
                Ok(frame) => {
                    let mut raw = [0u8; MAX_RAW_FRAME];
                    // decode succeeded, so the COBS is valid and at least 7 bytes long.
                    let n = cobs_decode(stuffed, &mut raw).unwrap_or(0);
                    let crc = if n >= 4 {
                        u32::from_le_bytes([raw[n - 4], raw[n - 3], raw[n - 2], raw[n - 1]])
                    } else {
                        0
                    };
                    Ok((frame, crc))
                }
                Err(e) => Err(e),
            },
        };
        match received {
            Ok((frame, crc)) => self.on_frame(frame.seq, crc, frame.msg, now, out),
            Err(e) => self.on_bad_frame(e, now),
        }
    }

    /// Runs what is due at time `now`: the first byte after boot, heartbeats, the end of a
    /// reset, the watchdog, and at most **one** control step (so the caller can feed all
    /// pending input before each step: an EStop always takes effect before the next Step).
    pub fn poll(&mut self, now: Duration, out: &mut impl FnMut(&[u8])) {
        self.sync_clock(now);
        if !self.booted {
            // SPEC §2.5: terminate whatever stale bytes the host may hold.
            out(&[0]);
            self.booted = true;
        }
        if now >= self.next_heartbeat {
            let uptime_ms = (self.clock_us / 1000) as u32;
            self.send(
                &RobotMsg::Heartbeat {
                    uptime_ms,
                    state: self.state,
                },
                out,
            );
            self.next_heartbeat =
                (self.next_heartbeat + HEARTBEAT_PERIOD).max(now + HEARTBEAT_PERIOD / 2);
        }
        match self.state {
            RobotState::Resetting if now >= self.reset_done_at => {
                if self.applied.is_some() {
                    if self.model.reset_may_finish() {
                        self.state = RobotState::Ready;
                        self.send(&RobotMsg::Ready, out);
                    } else {
                        self.reset_done_at = now + GO_POLL;
                    }
                } else {
                    self.state = RobotState::Idle;
                }
            }
            RobotState::Running => {
                let silent = now.saturating_sub(self.last_host_frame);
                if silent > self.watchdog() {
                    self.watchdog_trip(silent, now, out);
                } else if now >= self.next_step_due() {
                    self.control_step(now, out);
                }
            }
            _ => {}
        }
    }

    /// The earliest time at which [`Firmware::poll`] has something to do (may be in the past:
    /// then poll again without waiting).
    pub fn next_deadline(&self) -> Duration {
        let mut t = self.next_heartbeat;
        if !self.booted {
            return Duration::ZERO;
        }
        match self.state {
            RobotState::Resetting => t = t.min(self.reset_done_at),
            RobotState::Running => {
                t = t
                    .min(self.next_step_due())
                    .min(self.last_host_frame + self.watchdog() + Duration::from_millis(1));
            }
            _ => {}
        }
        t
    }

    fn watchdog(&self) -> Duration {
        Duration::from_millis(self.opts.watchdog_ms.max(1) as u64)
    }

    fn next_step_due(&self) -> Duration {
        match &self.episode {
            Some(ep) => ep.started + self.opts.step_delay * ep.steps_sent,
            None => Duration::MAX,
        }
    }

    /// Outside episodes the firmware clock follows wall time (never backwards).
    fn sync_clock(&mut self, now: Duration) {
        if self.state != RobotState::Running {
            self.clock_us = self.clock_us.max(now.as_micros() as u64);
        }
    }

    fn send(&mut self, msg: &RobotMsg, out: &mut impl FnMut(&[u8])) {
        let mut buf = [0u8; MAX_FRAME];
        match encode(self.tx_seq, msg, &mut buf) {
            Ok(n) => {
                out(&buf[..n]);
                self.tx_seq = self.tx_seq.wrapping_add(1);
            }
            Err(e) => tracing::error!("sim firmware cannot encode {msg:?}: {e:?}"),
        }
    }

    fn log(&mut self, now: Duration, event: &str, fields: Value) {
        if let Some(log) = &mut self.events {
            log.write(now, event, fields);
        }
    }

    fn on_bad_frame(&mut self, error: DecodeError, now: Duration) {
        self.bad_frames += 1;
        tracing::debug!("sim firmware discarded a frame: {error:?}");
        self.log(now, "bad_frame", json!({ "error": format!("{error:?}") }));
    }

    fn on_frame(
        &mut self,
        seq: u16,
        crc: u32,
        msg: HostMsg,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) {
        // Every valid host frame feeds the watchdog (SPEC §10.4).
        self.last_host_frame = now;
        match msg {
            HostMsg::Heartbeat { .. } => return,
            // EStop is executed every time, retry or not (SPEC §7.4); its response is the same.
            HostMsg::EStop => {}
            _ => {
                if let Some(stored) = self.last_command {
                    if stored.seq == seq && stored.crc == crc {
                        tracing::debug!(
                            "sim firmware: retry of seq {seq}, resending the stored response"
                        );
                        self.send(&stored.response, out);
                        let resend_ready =
                            matches!(msg, HostMsg::SetParams { .. } | HostMsg::ClearEStop);
                        if resend_ready && self.state == RobotState::Ready {
                            self.send(&RobotMsg::Ready, out);
                        }
                        return;
                    }
                }
            }
        }
        let response = match msg {
            HostMsg::Hello { protocol_version } => self.cmd_hello(seq, protocol_version, now, out),
            HostMsg::GetParamInfo { index } => self.cmd_param_info(seq, index, out),
            HostMsg::SetParams { values } => self.cmd_set_params(seq, values, now, out),
            HostMsg::StartEpisode {
                trial,
                episode,
                max_steps,
                seed,
            } => self.cmd_start(seq, trial, episode, max_steps, seed, now, out),
            HostMsg::Abort => self.cmd_abort(seq, now, out),
            HostMsg::EStop => self.cmd_estop(seq, now, out),
            HostMsg::ClearEStop => self.cmd_clear_estop(seq, now, out),
            HostMsg::Heartbeat { .. } => return,
        };
        self.last_command = Some(StoredCommand { seq, crc, response });
    }

    /// Sends `msg` as the response to a command and returns it for the retry store.
    fn respond(&mut self, msg: RobotMsg, out: &mut impl FnMut(&[u8])) -> RobotMsg {
        self.send(&msg, out);
        msg
    }

    fn cmd_hello(
        &mut self,
        seq: u16,
        version: u16,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        if version != PROTOCOL_VERSION {
            let fields = json!({ "protocol_version": version });
            return self.nack_with(seq, NackCode::UnsupportedVersion, now, "hello", fields, out);
        }
        self.log(
            now,
            "hello",
            json!({"protocol_version": version, "status": "ok", "boot_id": self.opts.boot_id}),
        );
        let (fw_major, fw_minor, fw_patch) = FW_VERSION;
        let info = RobotMsg::Info {
            ack_seq: seq,
            protocol_version: PROTOCOL_VERSION,
            robot_id: self.robot_id,
            fw_major,
            fw_minor,
            fw_patch,
            boot_id: self.opts.boot_id,
            param_count: self.model.params().len() as u8,
            schema_hash: self.schema_hash,
            watchdog_ms: self.opts.watchdog_ms.max(1),
            step_period_us: self.opts.step_period_us,
        };
        self.respond(info, out)
    }

    fn cmd_param_info(&mut self, seq: u16, index: u8, out: &mut impl FnMut(&[u8])) -> RobotMsg {
        let msg = match self.model.params().get(index as usize) {
            Some(p) => RobotMsg::ParamInfo {
                ack_seq: seq,
                index,
                name: Name::new(p.name).unwrap_or_else(|| Name::new("").expect("empty name fits")),
                min: p.min,
                max: p.max,
                default: p.default,
            },
            None => RobotMsg::Nack {
                ack_seq: seq,
                code: NackCode::BadParamIndex,
            },
        };
        self.respond(msg, out)
    }

    /// Refuses a command: logs a `nack` event naming the command, sends the Nack.
    fn nack(
        &mut self,
        seq: u16,
        code: NackCode,
        now: Duration,
        command: &str,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        self.nack_with(seq, code, now, command, json!({}), out)
    }

    fn nack_with(
        &mut self,
        seq: u16,
        code: NackCode,
        now: Duration,
        command: &str,
        mut fields: Value,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        if let Value::Object(map) = &mut fields {
            map.insert("command".into(), json!(command));
            map.insert("status".into(), json!("nack"));
            map.insert("reason".into(), json!(format!("{code:?}")));
        }
        self.log(now, "nack", fields);
        self.respond(RobotMsg::Nack { ack_seq: seq, code }, out)
    }

    fn cmd_set_params(
        &mut self,
        seq: u16,
        mut values: ParamValues,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        const EV: &str = "set_params";
        match self.state {
            RobotState::Stopped => return self.nack(seq, NackCode::EStopLatched, now, EV, out),
            RobotState::Running => return self.nack(seq, NackCode::InvalidState, now, EV, out),
            _ => {}
        }
        let specs = self.model.params();
        if values.as_slice().len() != specs.len() {
            return self.nack(seq, NackCode::WrongParamCount, now, EV, out);
        }
        if values.as_slice().iter().any(|v| !v.is_finite()) {
            return self.nack(seq, NackCode::NotFinite, now, EV, out);
        }
        let mut clamped_mask = 0u64;
        for (i, (v, spec)) in values.as_mut_slice().iter_mut().zip(specs).enumerate() {
            let c = if *v < spec.min {
                spec.min
            } else if *v > spec.max {
                spec.max
            } else {
                *v
            };
            if c.to_bits() != v.to_bits() {
                clamped_mask |= 1 << i;
                *v = c;
            }
        }
        self.applied = Some(values);
        self.log(
            now,
            EV,
            json!({"status": "ok", "clamped_mask": clamped_mask, "values": values.as_slice()}),
        );
        let response = self.respond(
            RobotMsg::ParamsApplied {
                ack_seq: seq,
                clamped_mask,
                values,
            },
            out,
        );
        match self.state {
            RobotState::Idle => {
                self.state = RobotState::Resetting;
                self.reset_done_at = now + self.opts.reset_delay;
            }
            RobotState::Ready => self.send(&RobotMsg::Ready, out),
            _ => {}
        }
        response
    }

    #[allow(clippy::too_many_arguments)]
    fn cmd_start(
        &mut self,
        seq: u16,
        trial: u32,
        episode: u16,
        max_steps: u32,
        seed: u64,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        const EV: &str = "episode_start";
        let refusal = match (self.state, &self.applied) {
            (RobotState::Stopped, _) => Some(NackCode::EStopLatched),
            (RobotState::Running, _) => Some(NackCode::InvalidState),
            (_, None) => Some(NackCode::NoParams),
            (RobotState::Resetting | RobotState::Idle, _) => Some(NackCode::NotReady),
            (RobotState::Ready, Some(_)) => None,
        };
        if let Some(code) = refusal {
            let fields = json!({ "trial": trial, "episode": episode });
            return self.nack_with(seq, code, now, EV, fields, out);
        }
        let values = self.applied.expect("checked above");
        self.log(
            now,
            EV,
            json!({"trial": trial, "episode": episode, "status": "ok", "max_steps": max_steps, "seed": seed}),
        );
        let response = self.respond(RobotMsg::Ack { ack_seq: seq }, out);
        self.state = RobotState::Running;
        self.episode = Some(Episode {
            trial,
            episode,
            max_steps,
            steps_sent: 0,
            episode_return: 0.0,
            started: now,
            model: self.model.start_episode(values.as_slice(), seed),
        });
        if max_steps == 0 {
            self.end_episode(EpisodeStatus::Completed, now, out);
        }
        response
    }

    fn cmd_abort(&mut self, seq: u16, now: Duration, out: &mut impl FnMut(&[u8])) -> RobotMsg {
        let running = self
            .episode
            .as_ref()
            .map(|e| (e.trial, e.episode, e.steps_sent));
        self.log(
            now,
            "abort",
            json!({
                "trial": running.map(|r| r.0),
                "episode": running.map(|r| r.1),
                "step": running.map(|r| r.2),
                "status": "ok",
            }),
        );
        if running.is_some() && self.opts.stumble_on_abort {
            self.step_with(now, out, Some(STUMBLE_ROLL_RAD));
        }
        let response = self.respond(RobotMsg::Ack { ack_seq: seq }, out);
        if self.episode.is_some() {
            self.end_episode(EpisodeStatus::Aborted, now, out);
        }
        response
    }

    fn cmd_estop(&mut self, seq: u16, now: Duration, out: &mut impl FnMut(&[u8])) -> RobotMsg {
        // Motors off first, before anything else (SPEC §10.1).
        self.state = RobotState::Stopped;
        let running = self
            .episode
            .as_ref()
            .map(|e| (e.trial, e.episode, e.steps_sent));
        self.log(
            now,
            "estop",
            json!({
                "trial": running.map(|r| r.0),
                "episode": running.map(|r| r.1),
                "step": running.map(|r| r.2),
                "status": "ok",
            }),
        );
        let response = self.respond(RobotMsg::Ack { ack_seq: seq }, out);
        if running.is_some() {
            self.end_episode(EpisodeStatus::EStopped, now, out);
        }
        response
    }

    fn cmd_clear_estop(
        &mut self,
        seq: u16,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) -> RobotMsg {
        let was = self.state;
        self.log(
            now,
            "clear_estop",
            json!({"status": "ok", "state": format!("{was:?}")}),
        );
        let response = self.respond(RobotMsg::Ack { ack_seq: seq }, out);
        match was {
            RobotState::Stopped => {
                self.state = RobotState::Resetting;
                self.reset_done_at = now + self.opts.reset_delay;
            }
            RobotState::Ready => self.send(&RobotMsg::Ready, out),
            _ => {}
        }
        response
    }

    /// Runs one control step of the running episode.
    fn control_step(&mut self, now: Duration, out: &mut impl FnMut(&[u8])) {
        self.step_with(now, out, None)
    }

    /// One control step; `roll` replaces the model's roll reading (a fault for tests).
    fn step_with(&mut self, now: Duration, out: &mut impl FnMut(&[u8]), roll: Option<f32>) {
        let timestamp_us = self.clock_us as u32;
        self.clock_us += self.opts.step_period_us as u64;
        let Some(ep) = self.episode.as_mut() else {
            return;
        };
        let index = ep.steps_sent;
        let mut t = self.model.step(&mut ep.model, index);
        if let Some(r) = roll {
            t.roll = r;
        }
        ep.steps_sent += 1;
        ep.episode_return += t.reward;
        let step = Step {
            timestamp_us,
            trial: ep.trial,
            episode: ep.episode,
            step: index,
            reward: t.reward,
            roll: t.roll,
            pitch: t.pitch,
            body_height: t.body_height,
            max_joint_temp: t.max_joint_temp,
            faults: t.faults,
        };
        let done = ep.steps_sent >= ep.max_steps;
        self.send(&RobotMsg::Step(step), out);
        // NaN trips too: a sensor without a reading is a violation.
        let over = |x: f32, limit: f32| x.is_nan() || x > limit;
        let trip = if over(t.roll.abs(), LIMIT_ROLL_RAD) {
            Some((TripReason::Roll, t.roll))
        } else if over(t.pitch.abs(), LIMIT_PITCH_RAD) {
            Some((TripReason::Pitch, t.pitch))
        } else if over(-t.body_height, -LIMIT_MIN_BODY_HEIGHT_M) {
            Some((TripReason::BodyHeight, t.body_height))
        } else if over(t.max_joint_temp, LIMIT_MAX_JOINT_TEMP_C) {
            Some((TripReason::JointTemperature, t.max_joint_temp))
        } else {
            None
        };
        if let Some((reason, value)) = trip {
            self.state = RobotState::Stopped;
            self.log(
                now,
                "safety_trip",
                json!({
                    "trial": step.trial, "episode": step.episode, "step": index,
                    "status": "tripped", "reason": format!("{reason:?}"), "value": value,
                }),
            );
            self.safety_trip(index, reason, value, now, out);
        } else if done {
            self.end_episode(EpisodeStatus::Completed, now, out);
        }
    }

    fn watchdog_trip(&mut self, silent: Duration, now: Duration, out: &mut impl FnMut(&[u8])) {
        self.state = RobotState::Stopped;
        let Some(ep) = self.episode.as_ref() else {
            return;
        };
        let (trial, episode, step) = (ep.trial, ep.episode, ep.steps_sent);
        let ms = silent.as_secs_f64() * 1e3;
        tracing::warn!("sim firmware watchdog: no host frame for {ms:.0} ms, motors stopped");
        self.log(
            now,
            "watchdog",
            json!({
                "trial": trial, "episode": episode, "step": step,
                "status": "tripped", "reason": "Watchdog", "value": ms,
            }),
        );
        self.safety_trip(step, TripReason::Watchdog, ms as f32, now, out);
    }

    /// Sends SafetyTrip and ends the running episode with status SafetyTrip (state already
    /// Stopped).
    fn safety_trip(
        &mut self,
        step: u32,
        reason: TripReason,
        value: f32,
        now: Duration,
        out: &mut impl FnMut(&[u8]),
    ) {
        let (trial, episode) = self
            .episode
            .as_ref()
            .map(|e| (e.trial, e.episode))
            .unwrap_or((0, 0));
        self.send(
            &RobotMsg::SafetyTrip {
                trial,
                episode,
                step,
                reason,
                value,
            },
            out,
        );
        if self.episode.is_some() {
            self.end_episode(EpisodeStatus::SafetyTrip, now, out);
        }
    }

    /// Ends the running episode: EpisodeEnd, then Resetting (Completed, Aborted) or Stopped.
    fn end_episode(&mut self, status: EpisodeStatus, now: Duration, out: &mut impl FnMut(&[u8])) {
        let Some(ep) = self.episode.take() else {
            return;
        };
        self.log(
            now,
            "episode_end",
            json!({
                "trial": ep.trial, "episode": ep.episode, "step": ep.steps_sent,
                "status": format!("{status:?}"), "return": ep.episode_return,
            }),
        );
        self.send(
            &RobotMsg::EpisodeEnd {
                trial: ep.trial,
                episode: ep.episode,
                episode_return: ep.episode_return,
                steps: ep.steps_sent,
                status,
            },
            out,
        );
        match status {
            EpisodeStatus::Completed | EpisodeStatus::Aborted => {
                self.state = RobotState::Resetting;
                self.reset_done_at = now + self.opts.reset_delay;
            }
            EpisodeStatus::SafetyTrip | EpisodeStatus::EStopped => self.state = RobotState::Stopped,
        }
        self.sync_clock(now);
    }
}
