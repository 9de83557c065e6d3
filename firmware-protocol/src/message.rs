//! The messages of both directions and their payload layouts. Field order here is wire order;
//! SPEC.md gives the same layouts as tables.

use crate::wire::{DecodeError, EncodeError, Message, Reader, Writer};
use crate::{MAX_NAME_LEN, MAX_PARAMS};

/// A short UTF-8 name (robot id, parameter name) stored inline; at most [`MAX_NAME_LEN`] bytes.
/// On the wire: length byte, then the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl Name {
    /// Builds a name; `None` if `s` is longer than [`MAX_NAME_LEN`] bytes.
    pub fn new(s: &str) -> Option<Self> {
        let src = s.as_bytes();
        if src.len() > MAX_NAME_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        bytes[..src.len()].copy_from_slice(src);
        Some(Self {
            len: src.len() as u8,
            bytes,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Invariant: only built from &str or validated UTF-8.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.len)?;
        w.bytes(&self.bytes[..self.len as usize])
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.u8()? as usize;
        if len > MAX_NAME_LEN {
            return Err(DecodeError::InvalidField);
        }
        let s = core::str::from_utf8(r.bytes(len)?).map_err(|_| DecodeError::InvalidField)?;
        Self::new(s).ok_or(DecodeError::InvalidField)
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A whole parameter set in schema index order, stored inline; at most [`MAX_PARAMS`] values.
/// On the wire: count byte, then `count` little-endian `f32`.
#[derive(Clone, Copy)]
pub struct ParamValues {
    len: u8,
    values: [f32; MAX_PARAMS],
}

impl ParamValues {
    /// Copies `values`; `None` if there are more than [`MAX_PARAMS`].
    pub fn from_slice(values: &[f32]) -> Option<Self> {
        if values.len() > MAX_PARAMS {
            return None;
        }
        let mut v = [0f32; MAX_PARAMS];
        v[..values.len()].copy_from_slice(values);
        Some(Self {
            len: values.len() as u8,
            values: v,
        })
    }

    /// The values, in schema index order.
    pub fn as_slice(&self) -> &[f32] {
        &self.values[..self.len as usize]
    }

    /// The values, mutable (for clamping in place).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.values[..self.len as usize]
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.len)?;
        for &v in self.as_slice() {
            w.f32(v)?;
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.u8()? as usize;
        if len > MAX_PARAMS {
            return Err(DecodeError::InvalidField);
        }
        let mut values = [0f32; MAX_PARAMS];
        for v in values.iter_mut().take(len) {
            *v = r.f32()?;
        }
        Ok(Self {
            len: len as u8,
            values,
        })
    }
}

/// Bitwise equality, so NaN payloads compare equal to themselves (a decoded frame must equal
/// the frame that was encoded, whatever the floats hold).
impl PartialEq for ParamValues {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .as_slice()
                .iter()
                .zip(other.as_slice())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl core::fmt::Debug for ParamValues {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $name { $($(#[$vmeta])* $variant = $code),+ }
        impl $name {
            /// The wire code.
            pub const fn code(self) -> u8 { self as u8 }
            /// Parses a wire code.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)+ _ => None }
            }
            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Self::from_code(r.u8()?).ok_or(DecodeError::InvalidField)
            }
        }
    };
}

wire_enum! {
    /// How an episode ended.
    EpisodeStatus {
        /// Ran its `max_steps`.
        Completed = 0,
        /// Stopped by the host's Abort.
        Aborted = 1,
        /// Stopped by the firmware's own safety limits (a SafetyTrip was sent).
        SafetyTrip = 2,
        /// Stopped by an EStop.
        EStopped = 3,
    }
}

wire_enum! {
    /// Which firmware safety limit tripped.
    TripReason {
        /// |roll| beyond the firmware's hard limit.
        Roll = 1,
        /// |pitch| beyond the firmware's hard limit.
        Pitch = 2,
        /// Body below the firmware's minimum height (fallen).
        BodyHeight = 3,
        /// A joint above the firmware's maximum temperature.
        JointTemperature = 4,
        /// A motor or driver fault.
        MotorFault = 5,
        /// The host's heartbeats stopped for longer than the watchdog timeout.
        Watchdog = 6,
    }
}

wire_enum! {
    /// Why a command was refused.
    NackCode {
        /// The command is not valid in the robot's current state.
        InvalidState = 1,
        /// EStop is latched; send ClearEStop first.
        EStopLatched = 2,
        /// SetParams carried a different number of values than the schema declares.
        WrongParamCount = 3,
        /// GetParamInfo named an index past the schema.
        BadParamIndex = 4,
        /// The host's protocol version is not supported.
        UnsupportedVersion = 5,
        /// StartEpisode before any SetParams was applied.
        NoParams = 6,
        /// The robot has not finished resetting (no Ready yet).
        NotReady = 7,
        /// A value is not a finite number.
        NotFinite = 8,
    }
}

wire_enum! {
    /// The firmware's state, carried by its heartbeats.
    RobotState {
        /// Booted; no parameter set applied yet.
        Idle = 0,
        /// Returning to the start pose after an episode.
        Resetting = 1,
        /// At the start pose with parameters applied: StartEpisode is accepted.
        Ready = 2,
        /// An episode is running (motors powered).
        Running = 3,
        /// EStop or a safety trip latched: motors stopped until ClearEStop.
        Stopped = 4,
    }
}

wire_enum! {
    /// Where the robot's current or most recent episode stands (Status, protocol v2).
    EpisodePhase {
        /// No episode has started since boot.
        NoEpisode = 0,
        /// The episode is running.
        Running = 1,
        /// The episode ended; `end_status` says how.
        Ended = 2,
    }
}

wire_enum! {
    /// Why the robot is latched Stopped (Status, protocol v2): a [`TripReason`] code, or
    /// EStop.
    StopCause {
        /// The robot is not Stopped.
        NotStopped = 0,
        /// Firmware roll limit.
        Roll = 1,
        /// Firmware pitch limit.
        Pitch = 2,
        /// Firmware minimum body height.
        BodyHeight = 3,
        /// Firmware joint temperature limit.
        JointTemperature = 4,
        /// A motor or driver fault.
        MotorFault = 5,
        /// The host-heartbeat watchdog.
        Watchdog = 6,
        /// An EStop: received from the host, or the robot's own stop button.
        EStop = 7,
    }
}

impl StopCause {
    /// The cause of a firmware safety trip.
    pub const fn from_trip(reason: TripReason) -> Self {
        match reason {
            TripReason::Roll => StopCause::Roll,
            TripReason::Pitch => StopCause::Pitch,
            TripReason::BodyHeight => StopCause::BodyHeight,
            TripReason::JointTemperature => StopCause::JointTemperature,
            TripReason::MotorFault => StopCause::MotorFault,
            TripReason::Watchdog => StopCause::Watchdog,
        }
    }

    /// The firmware safety trip behind this stop, if it was one.
    pub const fn trip_reason(self) -> Option<TripReason> {
        match self {
            StopCause::Roll => Some(TripReason::Roll),
            StopCause::Pitch => Some(TripReason::Pitch),
            StopCause::BodyHeight => Some(TripReason::BodyHeight),
            StopCause::JointTemperature => Some(TripReason::JointTemperature),
            StopCause::MotorFault => Some(TripReason::MotorFault),
            StopCause::Watchdog => Some(TripReason::Watchdog),
            StopCause::NotStopped | StopCause::EStop => None,
        }
    }
}

/// The robot's answer to GetStatus (protocol v2): its state, the episode running or the last
/// one that ended, and why it is latched. Lets a host recover a lost EpisodeEnd, SafetyTrip
/// or Ready exactly, and notice a reboot (`boot_id`).
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// Seq of the GetStatus answered.
    pub ack_seq: u16,
    /// The boot id announced in Info (changes at every boot).
    pub boot_id: u32,
    /// Firmware clock, ms since boot (wraps), as in Heartbeat.
    pub uptime_ms: u32,
    /// Current state.
    pub state: RobotState,
    /// Whether a parameter set is applied (false after boot until a SetParams).
    pub params_applied: bool,
    /// The episode running now, or the last one that ended since boot.
    pub phase: EpisodePhase,
    /// Its trial number (0 with [`EpisodePhase::NoEpisode`]).
    pub trial: u32,
    /// Its episode index (0 with [`EpisodePhase::NoEpisode`]).
    pub episode: u16,
    /// Step frames sent in it so far (its EpisodeEnd `steps` once ended).
    pub steps: u32,
    /// Sum of those steps' rewards in binary32 (its EpisodeEnd `episode_return` once ended).
    pub episode_return: f32,
    /// How it ended ([`EpisodePhase::Ended`] only; `Completed` otherwise).
    pub end_status: EpisodeStatus,
    /// Why the robot is Stopped ([`StopCause::NotStopped`] in every other state).
    pub stop_cause: StopCause,
    /// The value that tripped a firmware limit (unit per [`TripReason`]); 0 otherwise.
    pub stop_value: f32,
}

impl PartialEq for Status {
    fn eq(&self, o: &Self) -> bool {
        (
            self.ack_seq,
            self.boot_id,
            self.uptime_ms,
            self.state,
            self.params_applied,
            self.phase,
            self.trial,
            self.episode,
            self.steps,
            self.end_status,
            self.stop_cause,
        ) == (
            o.ack_seq,
            o.boot_id,
            o.uptime_ms,
            o.state,
            o.params_applied,
            o.phase,
            o.trial,
            o.episode,
            o.steps,
            o.end_status,
            o.stop_cause,
        ) && same_f32(self.episode_return, o.episode_return)
            && same_f32(self.stop_value, o.stop_value)
    }
}

impl Status {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.ack_seq)?;
        w.u32(self.boot_id)?;
        w.u32(self.uptime_ms)?;
        w.u8(self.state.code())?;
        w.u8(self.params_applied as u8)?;
        w.u8(self.phase.code())?;
        w.u32(self.trial)?;
        w.u16(self.episode)?;
        w.u32(self.steps)?;
        w.f32(self.episode_return)?;
        w.u8(self.end_status.code())?;
        w.u8(self.stop_cause.code())?;
        w.f32(self.stop_value)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ack_seq: r.u16()?,
            boot_id: r.u32()?,
            uptime_ms: r.u32()?,
            state: RobotState::read(r)?,
            params_applied: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::InvalidField),
            },
            phase: EpisodePhase::read(r)?,
            trial: r.u32()?,
            episode: r.u16()?,
            steps: r.u32()?,
            episode_return: r.f32()?,
            end_status: EpisodeStatus::read(r)?,
            stop_cause: StopCause::read(r)?,
            stop_value: r.f32()?,
        })
    }
}

/// Fault bit: a motor hit its torque limit during the step.
pub const FAULT_TORQUE_SATURATION: u32 = 1 << 0;
/// Fault bit: a joint hit its mechanical limit during the step.
pub const FAULT_JOINT_LIMIT: u32 = 1 << 1;
/// Fault bit: a motor driver reported a fault.
pub const FAULT_MOTOR_DRIVER: u32 = 1 << 2;
/// Fault bit: supply voltage is low.
pub const FAULT_LOW_VOLTAGE: u32 = 1 << 3;

/// One control step's telemetry, sent by the firmware while an episode runs.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Firmware clock, microseconds since boot (wraps).
    pub timestamp_us: u32,
    /// Trial number from StartEpisode.
    pub trial: u32,
    /// Episode index within the trial.
    pub episode: u16,
    /// Step index within the episode, from 0.
    pub step: u32,
    /// Reward of this step.
    pub reward: f32,
    /// Body roll, radians.
    pub roll: f32,
    /// Body pitch, radians.
    pub pitch: f32,
    /// Body height above ground, metres.
    pub body_height: f32,
    /// Hottest joint's temperature, °C.
    pub max_joint_temp: f32,
    /// `FAULT_*` bits.
    pub faults: u32,
}

impl PartialEq for Step {
    fn eq(&self, o: &Self) -> bool {
        self.timestamp_us == o.timestamp_us
            && self.trial == o.trial
            && self.episode == o.episode
            && self.step == o.step
            && self.faults == o.faults
            && [
                self.reward,
                self.roll,
                self.pitch,
                self.body_height,
                self.max_joint_temp,
            ]
            .iter()
            .zip([o.reward, o.roll, o.pitch, o.body_height, o.max_joint_temp])
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// Host → robot messages. Every one but [`HostMsg::Heartbeat`] is answered with a message
/// carrying its sequence number (`ack_seq`).
// Inline fixed-size payloads are the point (no allocator in firmware): no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostMsg {
    /// 0x01 — opens the session; answered by [`RobotMsg::Info`].
    Hello {
        /// The host's [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
    },
    /// 0x02 — asks for one parameter's declaration; answered by [`RobotMsg::ParamInfo`].
    GetParamInfo {
        /// Parameter index, from 0.
        index: u8,
    },
    /// 0x03 — the whole parameter set, applied atomically; answered by
    /// [`RobotMsg::ParamsApplied`].
    SetParams {
        /// One value per declared parameter, in index order.
        values: ParamValues,
    },
    /// 0x04 — runs one episode with the applied parameters; answered by [`RobotMsg::Ack`],
    /// then [`RobotMsg::Step`]s and one [`RobotMsg::EpisodeEnd`].
    StartEpisode {
        /// Host's trial number (echoed in telemetry).
        trial: u32,
        /// Episode index within the trial.
        episode: u16,
        /// Steps to run at most.
        max_steps: u32,
        /// Seed for any randomness the firmware uses (simulators).
        seed: u64,
    },
    /// 0x05 — ends the running episode now (motors to a safe stop, not latched).
    Abort,
    /// 0x06 — stops the motors now and latches until [`HostMsg::ClearEStop`].
    EStop,
    /// 0x07 — releases a latched EStop or safety trip.
    ClearEStop,
    /// 0x08 — host liveness; the firmware's watchdog stops the robot when these stop.
    Heartbeat {
        /// Host clock, milliseconds (wraps).
        host_time_ms: u32,
    },
    /// 0x09 (protocol v2) — asks for the robot's [`Status`]; answered by
    /// [`RobotMsg::Status`]. A query: never stored for retry detection.
    GetStatus,
}

/// Robot → host messages.
///
/// Equality compares `f32` fields bitwise (like [`Step`] and [`ParamValues`]), so a decoded
/// frame equals the frame that was encoded even when it carries NaN, and `-0.0 != 0.0`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum RobotMsg {
    /// 0x81 — answers Hello: who the robot is and what it declares.
    Info {
        /// Seq of the Hello answered.
        ack_seq: u16,
        /// The firmware's [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
        /// Robot identifier.
        robot_id: Name,
        /// Firmware version, major.
        fw_major: u8,
        /// Firmware version, minor.
        fw_minor: u8,
        /// Firmware version, patch.
        fw_patch: u8,
        /// Random at every boot: a change tells the host the robot rebooted.
        boot_id: u32,
        /// Number of declared parameters.
        param_count: u8,
        /// [`crate::SchemaHasher`] over the declared parameters.
        schema_hash: u32,
        /// Host heartbeat timeout after which the firmware stops the robot, ms.
        watchdog_ms: u16,
        /// Firmware control period between Step frames, µs.
        step_period_us: u32,
    },
    /// 0x82 — answers GetParamInfo: one parameter's declaration and hard limits.
    ParamInfo {
        /// Seq of the GetParamInfo answered.
        ack_seq: u16,
        /// Parameter index.
        index: u8,
        /// Parameter name.
        name: Name,
        /// Hard lower limit.
        min: f32,
        /// Hard upper limit.
        max: f32,
        /// Firmware default.
        default: f32,
    },
    /// 0x83 — answers SetParams: the values actually applied.
    ParamsApplied {
        /// Seq of the SetParams answered.
        ack_seq: u16,
        /// Bit i set: parameter i was clamped to its limits.
        clamped_mask: u64,
        /// The applied values.
        values: ParamValues,
    },
    /// 0x84 — a command was accepted.
    Ack {
        /// Seq of the command.
        ack_seq: u16,
    },
    /// 0x85 — a command was refused.
    Nack {
        /// Seq of the command.
        ack_seq: u16,
        /// Why.
        code: NackCode,
    },
    /// 0x86 — one control step of telemetry.
    Step(Step),
    /// 0x87 — an episode ended.
    EpisodeEnd {
        /// Trial number.
        trial: u32,
        /// Episode index.
        episode: u16,
        /// Sum of the steps' rewards.
        episode_return: f32,
        /// Steps run.
        steps: u32,
        /// How it ended.
        status: EpisodeStatus,
    },
    /// 0x88 — the firmware's own safety limit stopped the motors (latched).
    SafetyTrip {
        /// Trial number (0 outside an episode).
        trial: u32,
        /// Episode index.
        episode: u16,
        /// Step index at the trip.
        step: u32,
        /// Which limit.
        reason: TripReason,
        /// The measured value that tripped it.
        value: f32,
    },
    /// 0x89 — at the start pose, parameters applied: StartEpisode will be accepted.
    Ready,
    /// 0x8A — firmware liveness and state.
    Heartbeat {
        /// Firmware clock, ms since boot (wraps).
        uptime_ms: u32,
        /// Current state.
        state: RobotState,
    },
    /// 0x8B (protocol v2) — answers GetStatus.
    Status(Status),
}

/// Bitwise `f32` equality: NaN equals the same NaN, `-0.0` differs from `0.0`.
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

impl PartialEq for RobotMsg {
    fn eq(&self, other: &Self) -> bool {
        use RobotMsg as R;
        match (self, other) {
            (
                R::Info {
                    ack_seq: a0,
                    protocol_version: a1,
                    robot_id: a2,
                    fw_major: a3,
                    fw_minor: a4,
                    fw_patch: a5,
                    boot_id: a6,
                    param_count: a7,
                    schema_hash: a8,
                    watchdog_ms: a9,
                    step_period_us: a10,
                },
                R::Info {
                    ack_seq: b0,
                    protocol_version: b1,
                    robot_id: b2,
                    fw_major: b3,
                    fw_minor: b4,
                    fw_patch: b5,
                    boot_id: b6,
                    param_count: b7,
                    schema_hash: b8,
                    watchdog_ms: b9,
                    step_period_us: b10,
                },
            ) => {
                (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10)
                    == (b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10)
            }
            (
                R::ParamInfo {
                    ack_seq: a0,
                    index: a1,
                    name: a2,
                    min: a3,
                    max: a4,
                    default: a5,
                },
                R::ParamInfo {
                    ack_seq: b0,
                    index: b1,
                    name: b2,
                    min: b3,
                    max: b4,
                    default: b5,
                },
            ) => {
                (a0, a1, a2) == (b0, b1, b2)
                    && same_f32(*a3, *b3)
                    && same_f32(*a4, *b4)
                    && same_f32(*a5, *b5)
            }
            (
                R::ParamsApplied {
                    ack_seq: a0,
                    clamped_mask: a1,
                    values: a2,
                },
                R::ParamsApplied {
                    ack_seq: b0,
                    clamped_mask: b1,
                    values: b2,
                },
            ) => (a0, a1, a2) == (b0, b1, b2),
            (R::Ack { ack_seq: a }, R::Ack { ack_seq: b }) => a == b,
            (
                R::Nack {
                    ack_seq: a0,
                    code: a1,
                },
                R::Nack {
                    ack_seq: b0,
                    code: b1,
                },
            ) => (a0, a1) == (b0, b1),
            (R::Step(a), R::Step(b)) => a == b,
            (
                R::EpisodeEnd {
                    trial: a0,
                    episode: a1,
                    episode_return: a2,
                    steps: a3,
                    status: a4,
                },
                R::EpisodeEnd {
                    trial: b0,
                    episode: b1,
                    episode_return: b2,
                    steps: b3,
                    status: b4,
                },
            ) => (a0, a1, a3, a4) == (b0, b1, b3, b4) && same_f32(*a2, *b2),
            (
                R::SafetyTrip {
                    trial: a0,
                    episode: a1,
                    step: a2,
                    reason: a3,
                    value: a4,
                },
                R::SafetyTrip {
                    trial: b0,
                    episode: b1,
                    step: b2,
                    reason: b3,
                    value: b4,
                },
            ) => (a0, a1, a2, a3) == (b0, b1, b2, b3) && same_f32(*a4, *b4),
            (R::Ready, R::Ready) => true,
            (
                R::Heartbeat {
                    uptime_ms: a0,
                    state: a1,
                },
                R::Heartbeat {
                    uptime_ms: b0,
                    state: b1,
                },
            ) => (a0, a1) == (b0, b1),
            (R::Status(a), R::Status(b)) => a == b,
            _ => false,
        }
    }
}

impl Message for HostMsg {
    fn type_byte(&self) -> u8 {
        match self {
            HostMsg::Hello { .. } => 0x01,
            HostMsg::GetParamInfo { .. } => 0x02,
            HostMsg::SetParams { .. } => 0x03,
            HostMsg::StartEpisode { .. } => 0x04,
            HostMsg::Abort => 0x05,
            HostMsg::EStop => 0x06,
            HostMsg::ClearEStop => 0x07,
            HostMsg::Heartbeat { .. } => 0x08,
            HostMsg::GetStatus => 0x09,
        }
    }

    fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            HostMsg::Hello { protocol_version } => w.u16(protocol_version),
            HostMsg::GetParamInfo { index } => w.u8(index),
            HostMsg::SetParams { ref values } => values.write(w),
            HostMsg::StartEpisode {
                trial,
                episode,
                max_steps,
                seed,
            } => {
                w.u32(trial)?;
                w.u16(episode)?;
                w.u32(max_steps)?;
                w.u64(seed)
            }
            HostMsg::Abort | HostMsg::EStop | HostMsg::ClearEStop | HostMsg::GetStatus => Ok(()),
            HostMsg::Heartbeat { host_time_ms } => w.u32(host_time_ms),
        }
    }

    fn read_payload(ty: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            0x01 => HostMsg::Hello {
                protocol_version: r.u16()?,
            },
            0x02 => HostMsg::GetParamInfo { index: r.u8()? },
            0x03 => HostMsg::SetParams {
                values: ParamValues::read(r)?,
            },
            0x04 => HostMsg::StartEpisode {
                trial: r.u32()?,
                episode: r.u16()?,
                max_steps: r.u32()?,
                seed: r.u64()?,
            },
            0x05 => HostMsg::Abort,
            0x06 => HostMsg::EStop,
            0x07 => HostMsg::ClearEStop,
            0x08 => HostMsg::Heartbeat {
                host_time_ms: r.u32()?,
            },
            0x09 => HostMsg::GetStatus,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

impl Message for RobotMsg {
    fn type_byte(&self) -> u8 {
        match self {
            RobotMsg::Info { .. } => 0x81,
            RobotMsg::ParamInfo { .. } => 0x82,
            RobotMsg::ParamsApplied { .. } => 0x83,
            RobotMsg::Ack { .. } => 0x84,
            RobotMsg::Nack { .. } => 0x85,
            RobotMsg::Step(_) => 0x86,
            RobotMsg::EpisodeEnd { .. } => 0x87,
            RobotMsg::SafetyTrip { .. } => 0x88,
            RobotMsg::Ready => 0x89,
            RobotMsg::Heartbeat { .. } => 0x8A,
            RobotMsg::Status(_) => 0x8B,
        }
    }

    fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            RobotMsg::Info {
                ack_seq,
                protocol_version,
                ref robot_id,
                fw_major,
                fw_minor,
                fw_patch,
                boot_id,
                param_count,
                schema_hash,
                watchdog_ms,
                step_period_us,
            } => {
                w.u16(ack_seq)?;
                w.u16(protocol_version)?;
                robot_id.write(w)?;
                w.bytes(&[fw_major, fw_minor, fw_patch])?;
                w.u32(boot_id)?;
                w.u8(param_count)?;
                w.u32(schema_hash)?;
                w.u16(watchdog_ms)?;
                w.u32(step_period_us)
            }
            RobotMsg::ParamInfo {
                ack_seq,
                index,
                ref name,
                min,
                max,
                default,
            } => {
                w.u16(ack_seq)?;
                w.u8(index)?;
                name.write(w)?;
                w.f32(min)?;
                w.f32(max)?;
                w.f32(default)
            }
            RobotMsg::ParamsApplied {
                ack_seq,
                clamped_mask,
                ref values,
            } => {
                w.u16(ack_seq)?;
                w.u64(clamped_mask)?;
                values.write(w)
            }
            RobotMsg::Ack { ack_seq } => w.u16(ack_seq),
            RobotMsg::Nack { ack_seq, code } => {
                w.u16(ack_seq)?;
                w.u8(code.code())
            }
            RobotMsg::Step(ref s) => {
                w.u32(s.timestamp_us)?;
                w.u32(s.trial)?;
                w.u16(s.episode)?;
                w.u32(s.step)?;
                w.f32(s.reward)?;
                w.f32(s.roll)?;
                w.f32(s.pitch)?;
                w.f32(s.body_height)?;
                w.f32(s.max_joint_temp)?;
                w.u32(s.faults)
            }
            RobotMsg::EpisodeEnd {
                trial,
                episode,
                episode_return,
                steps,
                status,
            } => {
                w.u32(trial)?;
                w.u16(episode)?;
                w.f32(episode_return)?;
                w.u32(steps)?;
                w.u8(status.code())
            }
            RobotMsg::SafetyTrip {
                trial,
                episode,
                step,
                reason,
                value,
            } => {
                w.u32(trial)?;
                w.u16(episode)?;
                w.u32(step)?;
                w.u8(reason.code())?;
                w.f32(value)
            }
            RobotMsg::Ready => Ok(()),
            RobotMsg::Heartbeat { uptime_ms, state } => {
                w.u32(uptime_ms)?;
                w.u8(state.code())
            }
            RobotMsg::Status(ref s) => s.write(w),
        }
    }

    fn read_payload(ty: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            0x81 => RobotMsg::Info {
                ack_seq: r.u16()?,
                protocol_version: r.u16()?,
                robot_id: Name::read(r)?,
                fw_major: r.u8()?,
                fw_minor: r.u8()?,
                fw_patch: r.u8()?,
                boot_id: r.u32()?,
                param_count: r.u8()?,
                schema_hash: r.u32()?,
                watchdog_ms: r.u16()?,
                step_period_us: r.u32()?,
            },
            0x82 => RobotMsg::ParamInfo {
                ack_seq: r.u16()?,
                index: r.u8()?,
                name: Name::read(r)?,
                min: r.f32()?,
                max: r.f32()?,
                default: r.f32()?,
            },
            0x83 => RobotMsg::ParamsApplied {
                ack_seq: r.u16()?,
                clamped_mask: r.u64()?,
                values: ParamValues::read(r)?,
            },
            0x84 => RobotMsg::Ack { ack_seq: r.u16()? },
            0x85 => RobotMsg::Nack {
                ack_seq: r.u16()?,
                code: NackCode::read(r)?,
            },
            0x86 => RobotMsg::Step(Step {
                timestamp_us: r.u32()?,
                trial: r.u32()?,
                episode: r.u16()?,
                step: r.u32()?,
                reward: r.f32()?,
                roll: r.f32()?,
                pitch: r.f32()?,
                body_height: r.f32()?,
                max_joint_temp: r.f32()?,
                faults: r.u32()?,
            }),
            0x87 => RobotMsg::EpisodeEnd {
                trial: r.u32()?,
                episode: r.u16()?,
                episode_return: r.f32()?,
                steps: r.u32()?,
                status: EpisodeStatus::read(r)?,
            },
            0x88 => RobotMsg::SafetyTrip {
                trial: r.u32()?,
                episode: r.u16()?,
                step: r.u32()?,
                reason: TripReason::read(r)?,
                value: r.f32()?,
            },
            0x89 => RobotMsg::Ready,
            0x8A => RobotMsg::Heartbeat {
                uptime_ms: r.u32()?,
                state: RobotState::read(r)?,
            },
            0x8B => RobotMsg::Status(Status::read(r)?),
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, FrameAccumulator, MAX_FRAME};

    fn roundtrip<M: Message + PartialEq + core::fmt::Debug>(msg: M) {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(0xBEEF, &msg, &mut buf).unwrap();
        assert_eq!(buf[n - 1], 0);
        assert!(!buf[..n - 1].contains(&0));
        let f = decode::<M>(&buf[..n]).unwrap();
        assert_eq!(f.seq, 0xBEEF);
        assert_eq!(f.msg, msg);
    }

    #[test]
    fn largest_messages_fit() {
        let values = ParamValues::from_slice(&[f32::MAX; MAX_PARAMS]).unwrap();
        roundtrip(HostMsg::SetParams { values });
        roundtrip(RobotMsg::ParamsApplied {
            ack_seq: 1,
            clamped_mask: u64::MAX,
            values,
        });
        roundtrip(RobotMsg::ParamInfo {
            ack_seq: 2,
            index: 63,
            name: Name::new("abcdefghijklmnopqrstuvwx").unwrap(),
            min: -1.0,
            max: 1.0,
            default: 0.0,
        });
    }

    #[test]
    fn robot_msg_equality_is_bitwise() {
        let end = |r: f32| RobotMsg::EpisodeEnd {
            trial: 1,
            episode: 0,
            episode_return: r,
            steps: 3,
            status: EpisodeStatus::Completed,
        };
        assert_eq!(end(f32::NAN), end(f32::NAN));
        assert_ne!(end(0.0), end(-0.0));
        assert_ne!(end(1.0), RobotMsg::Ready);
        let trip = |v: f32| RobotMsg::SafetyTrip {
            trial: 1,
            episode: 0,
            step: 3,
            reason: TripReason::Roll,
            value: v,
        };
        assert_eq!(trip(f32::NAN), trip(f32::NAN));
        assert_ne!(trip(f32::NAN), trip(-f32::NAN));
        roundtrip(end(f32::NAN));
    }

    #[test]
    fn direction_is_checked() {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(1, &HostMsg::EStop, &mut buf).unwrap();
        assert_eq!(
            decode::<RobotMsg>(&buf[..n]),
            Err(DecodeError::UnknownType(0x06))
        );
    }

    #[test]
    fn accumulator_resyncs_after_garbage() {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(3, &RobotMsg::Ready, &mut buf).unwrap();
        let mut acc = FrameAccumulator::new();
        let mut stream = [0xAAu8; 2 * MAX_FRAME];
        stream[2 * MAX_FRAME - n..].copy_from_slice(&buf[..n]);
        stream[MAX_FRAME] = 0; // ends the over-long garbage frame
        stream[2 * MAX_FRAME - n - 1] = 0; // ends the short garbage run before the frame
        let mut results = 0;
        let mut ok = 0;
        for &b in stream.iter() {
            if let Some(r) = acc.push(b) {
                results += 1;
                if let Ok(f) = r {
                    if decode::<RobotMsg>(f).is_ok() {
                        ok += 1;
                    }
                }
            }
        }
        assert_eq!(ok, 1);
        assert!(results >= 3);
    }
}
