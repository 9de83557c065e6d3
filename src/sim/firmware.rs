//! The firmware side of the protocol, written the way microcontroller firmware would use the
//! `firmware-protocol` crate: a state machine with fixed buffers that consumes received bytes
//! one at a time ([`Firmware::on_byte`]), runs its control loop from a periodic tick
//! ([`Firmware::poll`]), and emits whole frames through a callback. It owns no I/O and reads
//! no clock: the caller passes the time since boot, so tests drive it by hand.
//!
//! Behaviour follows `firmware-protocol/SPEC.md` (§7–§10): protocol versions 1 and 2 (Hello
//! is answered in the version asked), handshake, parameter declarations, atomic clamped
//! SetParams, episodes of Step frames, retry detection by (seq, CRC) (EStop and GetStatus are
//! never stored), Abort, latched EStop and safety trips, host-heartbeat watchdog, periodic
//! heartbeats, GetStatus (v2), and [`Firmware::reboot`] (a power cycle on cue). Quirks
//! ([`super::quirks`]) make it misbehave on purpose.
//!
//! Where SPEC.md lets a firmware choose, this one:
//! - sends the Step frame that showed a limit violation, then SafetyTrip with that step's
//!   index, then EpisodeEnd (SPEC §10.2 requires this order); a watchdog trip reports `step`
//!   = the number of Step frames already sent and `value` = ms since the last valid host
//!   frame;
//! - applies the watchdog while Running only;
//! - acts on EStop when its frame is processed, in arrival order (it processes every pending
//!   byte before each control step, so an EStop takes effect before the next Step);
//! - keeps its clock (Step timestamps, heartbeat uptime) in simulated time: it advances by
//!   `step_period_us` per control step and follows wall time when no episode runs (never
//!   going backwards; a reboot restarts it from zero).
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
//! | `status`       | GetStatus answered (v2)            | `state`, `phase`, `step` = steps of that episode |
//! | `reboot`       | the firmware rebooted (`t_ms` restarts from 0 after it) | `boot_id` (the new one), `state` before it, the dropped episode's `trial`/`episode`/`step` |

use std::io::Write;
use std::time::Duration;

use firmware_protocol::{
    cobs_decode, decode, encode, DecodeError, EpisodePhase, EpisodeStatus, FrameAccumulator,
    HostMsg, NackCode, Name, ParamValues, RobotMsg, RobotState, SchemaHasher, Status, Step,
    StopCause, TripReason, MAX_FRAME, MAX_RAW_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use serde_json::{json, Map, Value};

use super::quirks::Quirks;

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
    /// Deliberate misbehaviour for tests (all off: a conforming firmware).
    pub quirks: Quirks,
}

/// The roll a stumbling robot reports (quirk `stumble-on-abort`), rad: past any sensible host
/// envelope, inside the firmware's own limit.
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
            quirks: Quirks::default(),
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

/// How the last episode ended, for Status.
#[derive(Clone, Copy)]
struct EndedEpisode {
    trial: u32,
    episode: u16,
    steps: u32,
    episode_return: f32,
    status: EpisodeStatus,
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
    /// Caller time at which the current boot began: `now - epoch` is the time since boot.
    epoch: Duration,
    /// The protocol version of the last Hello answered with Info.
    version: u16,
    last_episode: Option<EndedEpisode>,
    stop_cause: StopCause,
    stop_value: f32,
    resets_since_boot: u32,
    /// Quirk `late-estop`: steps still to run after an acknowledged EStop.
    estop_pending: Option<u32>,
    /// Quirk `limit`: (parameter index, min, max).
    runtime_limits: Vec<(usize, f32, f32)>,
    rebooted_on_cue: bool,
}

impl<M: RobotModel> Firmware<M> {
    /// A firmware freshly booted at time zero, in state Idle, with no parameter set applied.
    ///
    /// Panics if the model declares more than 64 parameters or a name longer than 24 bytes,
    /// if `robot_id` is longer than 24 bytes, or if a `limit` quirk names no declared
    /// parameter: those are programming errors of the caller (check with
    /// [`check_quirks`] first).
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
        if let Err(e) = check_quirks(specs, &opts.quirks) {
            panic!("{e}");
        }
        let runtime_limits = opts
            .quirks
            .runtime_limits
            .iter()
            .map(|(name, lo, hi)| {
                let i = specs.iter().position(|p| p.name == name).expect("checked");
                (i, *lo, *hi)
            })
            .collect();
        let schema_hash = hasher.finish() ^ opts.quirks.bad_schema_hash as u32;
        Self {
            schema_hash,
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
            epoch: Duration::ZERO,
            version: MIN_PROTOCOL_VERSION,
            last_episode: None,
            stop_cause: StopCause::NotStopped,
            stop_value: 0.0,
            resets_since_boot: 0,
            estop_pending: None,
            runtime_limits,
            rebooted_on_cue: false,
        }
    }

    /// Reboots the firmware in place at caller time `now`, as a power cycle would: a new
    /// `boot_id`, the clock and uptime from zero, state Idle, no parameter set, the retry
    /// store empty, and a running episode dropped without an EpisodeEnd.
    pub fn reboot(&mut self, now: Duration, boot_id: u32) {
        let local = self.since_boot(now);
        let running = self
            .episode
            .as_ref()
            .map(|e| (e.trial, e.episode, e.steps_sent));
        self.log(
            local,
            "reboot",
            json!({
                "trial": running.map(|r| r.0), "episode": running.map(|r| r.1),
                "step": running.map(|r| r.2), "state": format!("{:?}", self.state),
                "boot_id": boot_id,
            }),
        );
        tracing::warn!("sim firmware: reboot (boot id {boot_id:#010x})");
        self.epoch = now;
        self.opts.boot_id = boot_id;
        self.rx = FrameAccumulator::new();
        self.state = RobotState::Idle;
        self.applied = None;
        self.reset_done_at = Duration::ZERO;
        self.last_command = None;
        self.last_host_frame = Duration::ZERO;
        self.next_heartbeat = Duration::ZERO;
        self.clock_us = 0;
        self.episode = None;
        self.booted = false;
        self.version = MIN_PROTOCOL_VERSION;
        self.last_episode = None;
        self.stop_cause = StopCause::NotStopped;
        self.stop_value = 0.0;
        self.resets_since_boot = 0;
        self.estop_pending = None;
    }

    /// The boot id announced in Info.
    pub fn boot_id(&self) -> u32 {
        self.opts.boot_id
    }

    fn since_boot(&self, now: Duration) -> Duration {
        now.saturating_sub(self.epoch)
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
        let now = self.since_boot(now);
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
        let now = self.since_boot(now);
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
            let period = self.heartbeat_period();
            self.next_heartbeat = (self.next_heartbeat + period).max(now + period / 2);
        }
        match self.state {
            RobotState::Resetting if now >= self.reset_done_at => {
                if self.applied.is_some() {
                    if self.model.reset_may_finish() {
                        self.resets_since_boot += 1;
                        if self.opts.quirks.trip_in_reset == Some(self.resets_since_boot) {
                            self.trip_outside_episode(now, out);
                        } else {
                            self.state = RobotState::Ready;
                            self.send_ready(out);
                        }
                    } else {
                        self.reset_done_at = now + GO_POLL;
                    }
                } else {
                    self.state = RobotState::Idle;
                }
            }
            RobotState::Running => {
                let silent = now.saturating_sub(self.last_host_frame);
                if silent > self.watchdog() && !self.opts.quirks.no_watchdog {
                    self.watchdog_trip(silent, now, out);
                } else if now >= self.next_step_due() {
                    self.control_step(now, out);
                    if let Some(left) = self.estop_pending {
                        if left <= 1 {
                            self.estop_pending = None;
                            self.state = RobotState::Stopped;
                            self.stop_cause = StopCause::EStop;
                            self.stop_value = 0.0;
                            self.end_episode(EpisodeStatus::EStopped, now, out);
                        } else {
                            self.estop_pending = Some(left - 1);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn heartbeat_period(&self) -> Duration {
        self.opts
            .quirks
            .heartbeat_period
            .unwrap_or(HEARTBEAT_PERIOD)
    }

    fn send_ready(&mut self, out: &mut impl FnMut(&[u8])) {
        if !self.opts.quirks.no_ready {
            self.send(&RobotMsg::Ready, out);
        }
    }

    /// Quirk `trip-in-reset`: a BodyHeight trip outside any episode (SPEC §10.2).
    fn trip_outside_episode(&mut self, now: Duration, out: &mut impl FnMut(&[u8])) {
        let value = LIMIT_MIN_BODY_HEIGHT_M / 2.0;
        self.state = RobotState::Stopped;
        self.log(
            now,
            "safety_trip",
            json!({"trial": 0, "episode": 0, "step": 0, "status": "tripped",
                   "reason": "BodyHeight", "value": value}),
        );
        self.safety_trip(0, TripReason::BodyHeight, value, now, out);
    }

    /// The earliest time at which [`Firmware::poll`] has something to do (may be in the past:
    /// then poll again without waiting).
    pub fn next_deadline(&self) -> Duration {
        self.next_local_deadline().saturating_add(self.epoch)
    }

    fn next_local_deadline(&self) -> Duration {
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
        if self.opts.quirks.v1_only && matches!(msg, HostMsg::GetStatus) {
            // A version-1 firmware does not know type 0x09 (SPEC §2.5 rule 5).
            self.on_bad_frame(DecodeError::UnknownType(0x09), now);
            return;
        }
        // Every valid host frame feeds the watchdog (SPEC §10.4).
        self.last_host_frame = now;
        match msg {
            HostMsg::Heartbeat { .. } => return,
            // EStop is executed and acknowledged every time it arrives and GetStatus is a
            // query: neither is stored for retry detection (SPEC §7.4).
            HostMsg::EStop => {
                self.cmd_estop(seq, now, out);
                return;
            }
            HostMsg::GetStatus => {
                self.cmd_status(seq, now, out);
                return;
            }
            _ if self.opts.quirks.no_retry_store => {}
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
                            self.send_ready(out);
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
            HostMsg::ClearEStop => self.cmd_clear_estop(seq, now, out),
            HostMsg::EStop | HostMsg::GetStatus | HostMsg::Heartbeat { .. } => return,
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
        let newest = if self.opts.quirks.v1_only {
            MIN_PROTOCOL_VERSION
        } else {
            PROTOCOL_VERSION
        };
        if !(MIN_PROTOCOL_VERSION..=newest).contains(&version) {
            let fields = json!({ "protocol_version": version });
            return self.nack_with(seq, NackCode::UnsupportedVersion, now, "hello", fields, out);
        }
        self.version = version;
        self.log(
            now,
            "hello",
            json!({"protocol_version": version, "status": "ok", "boot_id": self.opts.boot_id}),
        );
        let (fw_major, fw_minor, fw_patch) = FW_VERSION;
        let info = RobotMsg::Info {
            ack_seq: seq,
            protocol_version: version,
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

    /// Answers GetStatus (protocol v2) with the state, the running or last episode and the
    /// stop cause.
    fn cmd_status(&mut self, seq: u16, now: Duration, out: &mut impl FnMut(&[u8])) {
        let (phase, trial, episode, steps, episode_return, end_status) =
            match (&self.episode, &self.last_episode) {
                (Some(ep), _) => (
                    EpisodePhase::Running,
                    ep.trial,
                    ep.episode,
                    ep.steps_sent,
                    ep.episode_return,
                    EpisodeStatus::Completed,
                ),
                (None, Some(e)) => (
                    EpisodePhase::Ended,
                    e.trial,
                    e.episode,
                    e.steps,
                    e.episode_return,
                    e.status,
                ),
                (None, None) => (
                    EpisodePhase::NoEpisode,
                    0,
                    0,
                    0,
                    0.0,
                    EpisodeStatus::Completed,
                ),
            };
        let stopped = self.state == RobotState::Stopped;
        let status = Status {
            ack_seq: seq,
            boot_id: self.opts.boot_id,
            uptime_ms: (self.clock_us / 1000) as u32,
            state: self.state,
            params_applied: self.applied.is_some(),
            phase,
            trial,
            episode,
            steps,
            episode_return,
            end_status,
            stop_cause: if stopped {
                self.stop_cause
            } else {
                StopCause::NotStopped
            },
            stop_value: if stopped { self.stop_value } else { 0.0 },
        };
        self.log(
            now,
            "status",
            json!({"state": format!("{:?}", self.state), "phase": format!("{phase:?}"),
                   "trial": trial, "episode": episode, "step": steps}),
        );
        self.send(&RobotMsg::Status(status), out);
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
        for &(i, lo, hi) in &self.runtime_limits {
            let v = &mut values.as_mut_slice()[i];
            let c = v.clamp(lo, hi);
            if c.to_bits() != v.to_bits() {
                clamped_mask |= 1 << i;
                *v = c;
            }
        }
        if self.opts.quirks.no_clamp_bit {
            clamped_mask = 0;
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
            RobotState::Ready => self.send_ready(out),
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
        let ack = RobotMsg::Ack { ack_seq: seq };
        if !self.opts.quirks.step_before_ack {
            self.send(&ack, out);
        }
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
        if self.opts.quirks.step_before_ack {
            if max_steps > 0 {
                self.control_step(now, out);
            }
            self.send(&ack, out);
        }
        if max_steps == 0 {
            self.end_episode(EpisodeStatus::Completed, now, out);
        }
        ack
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
        if running.is_some() && self.opts.quirks.stumble_on_abort {
            self.step_with(now, out, Some(STUMBLE_ROLL_RAD));
        }
        let response = self.respond(RobotMsg::Ack { ack_seq: seq }, out);
        if self.episode.is_some() && !self.opts.quirks.ignore_abort {
            self.end_episode(EpisodeStatus::Aborted, now, out);
        }
        response
    }

    fn cmd_estop(&mut self, seq: u16, now: Duration, out: &mut impl FnMut(&[u8])) {
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
        let late = self.opts.quirks.late_estop_steps;
        if running.is_some() && late > 0 {
            // Quirk `late-estop`: acknowledged, but the motors run on for a few steps.
            self.send(&RobotMsg::Ack { ack_seq: seq }, out);
            self.estop_pending.get_or_insert(late);
            return;
        }
        // Motors off first, before anything else (SPEC §10.1). A latch keeps its first cause.
        if self.state != RobotState::Stopped {
            self.state = RobotState::Stopped;
            self.stop_cause = StopCause::EStop;
            self.stop_value = 0.0;
        }
        self.send(&RobotMsg::Ack { ack_seq: seq }, out);
        if running.is_some() {
            self.end_episode(EpisodeStatus::EStopped, now, out);
        }
        if self.opts.quirks.no_latch {
            // Quirk `no-latch`: back to work as if nothing happened.
            self.state = if self.applied.is_some() {
                RobotState::Ready
            } else {
                RobotState::Idle
            };
        }
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
                self.stop_cause = StopCause::NotStopped;
                self.stop_value = 0.0;
                self.reset_done_at = now + self.opts.reset_delay;
            }
            RobotState::Ready => self.send_ready(out),
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
        let due = self.episode.as_ref().map(|e| e.steps_sent);
        if due.is_some() && due == self.opts.quirks.reboot_at_step && !self.rebooted_on_cue {
            self.rebooted_on_cue = true;
            let boot_id = next_boot_id(self.opts.boot_id);
            self.reboot(now + self.epoch, boot_id);
            return;
        }
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
            self.estop_pending = None;
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
        self.estop_pending = None;
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
        self.stop_cause = StopCause::from_trip(reason);
        self.stop_value = value;
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
        self.last_episode = Some(EndedEpisode {
            trial: ep.trial,
            episode: ep.episode,
            steps: ep.steps_sent,
            episode_return: ep.episode_return,
            status,
        });
        self.send(
            &RobotMsg::EpisodeEnd {
                trial: ep.trial,
                episode: ep.episode,
                episode_return: ep.episode_return,
                steps: ep.steps_sent + self.opts.quirks.miscount_steps as u32,
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

/// Checks that every `limit` quirk names a declared parameter inside its declared limits.
pub fn check_quirks(specs: &[ParamSpec], quirks: &Quirks) -> Result<(), String> {
    for (name, lo, hi) in &quirks.runtime_limits {
        let Some(p) = specs.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = specs.iter().map(|p| p.name).collect();
            return Err(format!(
                "--quirk limit={name}:...: the robot declares no parameter {name:?} (it declares: {})",
                names.join(", ")
            ));
        };
        if *lo < p.min || *hi > p.max {
            return Err(format!(
                "--quirk limit={name}:{lo}:{hi}: runtime limits must lie inside the declared [{}, {}]",
                p.min, p.max
            ));
        }
    }
    Ok(())
}

/// The boot id after `previous` (a reboot on cue): a different, non-zero value.
pub fn next_boot_id(previous: u32) -> u32 {
    let mut z = (previous as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let id = (z ^ (z >> 31)) as u32;
    if id == 0 || id == previous {
        previous.wrapping_add(1).max(1)
    } else {
        id
    }
}
