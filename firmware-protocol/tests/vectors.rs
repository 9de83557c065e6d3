//! Golden test vectors: `vectors/frames.json` (valid frames of both directions),
//! `vectors/corrupted.json` (frames every receiver must reject) and
//! `vectors/schema_hash.json` (worked schema hashes).
//!
//! The committed files are the conformance suite of SPEC.md. These tests prove, for every
//! vector, that this crate decodes the bytes into exactly the listed message and encodes the
//! message into exactly the listed bytes, and that the committed files equal what the
//! generator below produces, so any change of the wire format fails here.
//!
//! Regenerate after an *intended* change (and bump PROTOCOL_VERSION, see SPEC.md):
//! `GAITTUNE_REGEN_VECTORS=1 cargo test -p firmware-protocol --test vectors`

use std::f32::consts::PI;
use std::path::PathBuf;

use firmware_protocol::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// A JSON rendering of messages (the crate is serde-free on purpose).

/// f32 → JSON: finite values as numbers (shortest round-trip decimal), others as strings.
fn render_f32(v: f32) -> Value {
    if v.is_finite() {
        serde_json::from_str(&format!("{v:?}")).expect("Rust's f32 Debug output is a JSON number")
    } else if v.is_nan() {
        if v.to_bits() == 0x7FC0_0000 {
            json!("NaN")
        } else {
            json!(format!("f32:{:#010x}", v.to_bits()))
        }
    } else if v > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

fn parse_f32(v: &Value) -> f32 {
    match v {
        Value::Number(n) => n.as_f64().expect("float field is a number") as f32,
        Value::String(s) => match s.as_str() {
            "NaN" => f32::from_bits(0x7FC0_0000),
            "Infinity" => f32::INFINITY,
            "-Infinity" => f32::NEG_INFINITY,
            other => {
                let hex = other
                    .strip_prefix("f32:0x")
                    .unwrap_or_else(|| panic!("bad float string {other:?}"));
                f32::from_bits(u32::from_str_radix(hex, 16).expect("hex f32 bits"))
            }
        },
        other => panic!("bad float {other}"),
    }
}

fn render_values(v: &ParamValues) -> Value {
    Value::Array(v.as_slice().iter().map(|&x| render_f32(x)).collect())
}

fn parse_values(v: &Value) -> ParamValues {
    let list: Vec<f32> = v
        .as_array()
        .expect("values is an array")
        .iter()
        .map(parse_f32)
        .collect();
    ParamValues::from_slice(&list).expect("at most 64 values")
}

fn render_host(m: &HostMsg) -> Value {
    match *m {
        HostMsg::Hello { protocol_version } => {
            json!({"type": "Hello", "protocol_version": protocol_version})
        }
        HostMsg::GetParamInfo { index } => json!({"type": "GetParamInfo", "index": index}),
        HostMsg::SetParams { ref values } => {
            json!({"type": "SetParams", "values": render_values(values)})
        }
        HostMsg::StartEpisode {
            trial,
            episode,
            max_steps,
            seed,
        } => json!({"type": "StartEpisode", "trial": trial, "episode": episode,
                    "max_steps": max_steps, "seed": seed}),
        HostMsg::Abort => json!({"type": "Abort"}),
        HostMsg::EStop => json!({"type": "EStop"}),
        HostMsg::ClearEStop => json!({"type": "ClearEStop"}),
        HostMsg::Heartbeat { host_time_ms } => {
            json!({"type": "Heartbeat", "host_time_ms": host_time_ms})
        }
        HostMsg::GetStatus => json!({"type": "GetStatus"}),
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key} missing or not an unsigned integer in {v}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key} missing or not a string in {v}"))
}

fn fl(v: &Value, key: &str) -> f32 {
    parse_f32(
        v.get(key)
            .unwrap_or_else(|| panic!("field {key} missing in {v}")),
    )
}

fn parse_host(v: &Value) -> HostMsg {
    match s(v, "type") {
        "Hello" => HostMsg::Hello {
            protocol_version: u(v, "protocol_version") as u16,
        },
        "GetParamInfo" => HostMsg::GetParamInfo {
            index: u(v, "index") as u8,
        },
        "SetParams" => HostMsg::SetParams {
            values: parse_values(&v["values"]),
        },
        "StartEpisode" => HostMsg::StartEpisode {
            trial: u(v, "trial") as u32,
            episode: u(v, "episode") as u16,
            max_steps: u(v, "max_steps") as u32,
            seed: u(v, "seed"),
        },
        "Abort" => HostMsg::Abort,
        "EStop" => HostMsg::EStop,
        "ClearEStop" => HostMsg::ClearEStop,
        "Heartbeat" => HostMsg::Heartbeat {
            host_time_ms: u(v, "host_time_ms") as u32,
        },
        "GetStatus" => HostMsg::GetStatus,
        other => panic!("unknown host message type {other}"),
    }
}

macro_rules! enum_names {
    ($render:ident, $parse:ident, $ty:ident { $($v:ident),+ }) => {
        fn $render(e: $ty) -> &'static str {
            match e { $($ty::$v => stringify!($v)),+ }
        }
        fn $parse(name: &str) -> $ty {
            match name {
                $(stringify!($v) => $ty::$v,)+
                other => panic!("unknown {} {other}", stringify!($ty)),
            }
        }
    };
}

enum_names!(
    status_name,
    parse_status,
    EpisodeStatus {
        Completed,
        Aborted,
        SafetyTrip,
        EStopped
    }
);
enum_names!(
    reason_name,
    parse_reason,
    TripReason {
        Roll,
        Pitch,
        BodyHeight,
        JointTemperature,
        MotorFault,
        Watchdog
    }
);
enum_names!(
    nack_name,
    parse_nack,
    NackCode {
        InvalidState,
        EStopLatched,
        WrongParamCount,
        BadParamIndex,
        UnsupportedVersion,
        NoParams,
        NotReady,
        NotFinite
    }
);
enum_names!(
    phase_name,
    parse_phase,
    EpisodePhase {
        NoEpisode,
        Running,
        Ended
    }
);
enum_names!(
    cause_name,
    parse_cause,
    StopCause {
        NotStopped,
        Roll,
        Pitch,
        BodyHeight,
        JointTemperature,
        MotorFault,
        Watchdog,
        EStop
    }
);
enum_names!(
    state_name,
    parse_state,
    RobotState {
        Idle,
        Resetting,
        Ready,
        Running,
        Stopped
    }
);

fn render_robot(m: &RobotMsg) -> Value {
    match *m {
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
        } => json!({"type": "Info", "ack_seq": ack_seq, "protocol_version": protocol_version,
            "robot_id": robot_id.as_str(), "fw_major": fw_major, "fw_minor": fw_minor,
            "fw_patch": fw_patch, "boot_id": boot_id, "param_count": param_count,
            "schema_hash": schema_hash, "watchdog_ms": watchdog_ms,
            "step_period_us": step_period_us}),
        RobotMsg::ParamInfo {
            ack_seq,
            index,
            ref name,
            min,
            max,
            default,
        } => json!({"type": "ParamInfo", "ack_seq": ack_seq, "index": index,
            "name": name.as_str(), "min": render_f32(min), "max": render_f32(max),
            "default": render_f32(default)}),
        RobotMsg::ParamsApplied {
            ack_seq,
            clamped_mask,
            ref values,
        } => json!({"type": "ParamsApplied", "ack_seq": ack_seq, "clamped_mask": clamped_mask,
            "values": render_values(values)}),
        RobotMsg::Ack { ack_seq } => json!({"type": "Ack", "ack_seq": ack_seq}),
        RobotMsg::Nack { ack_seq, code } => {
            json!({"type": "Nack", "ack_seq": ack_seq, "code": nack_name(code)})
        }
        RobotMsg::Step(ref st) => json!({"type": "Step", "timestamp_us": st.timestamp_us,
            "trial": st.trial, "episode": st.episode, "step": st.step,
            "reward": render_f32(st.reward), "roll": render_f32(st.roll),
            "pitch": render_f32(st.pitch), "body_height": render_f32(st.body_height),
            "max_joint_temp": render_f32(st.max_joint_temp), "faults": st.faults}),
        RobotMsg::EpisodeEnd {
            trial,
            episode,
            episode_return,
            steps,
            status,
        } => json!({"type": "EpisodeEnd", "trial": trial, "episode": episode,
            "episode_return": render_f32(episode_return), "steps": steps,
            "status": status_name(status)}),
        RobotMsg::SafetyTrip {
            trial,
            episode,
            step,
            reason,
            value,
        } => json!({"type": "SafetyTrip", "trial": trial, "episode": episode, "step": step,
            "reason": reason_name(reason), "value": render_f32(value)}),
        RobotMsg::Ready => json!({"type": "Ready"}),
        RobotMsg::Heartbeat { uptime_ms, state } => {
            json!({"type": "Heartbeat", "uptime_ms": uptime_ms, "state": state_name(state)})
        }
        RobotMsg::Status(ref st) => json!({"type": "Status", "ack_seq": st.ack_seq,
            "boot_id": st.boot_id, "uptime_ms": st.uptime_ms, "state": state_name(st.state),
            "params_applied": st.params_applied, "phase": phase_name(st.phase),
            "trial": st.trial, "episode": st.episode, "steps": st.steps,
            "episode_return": render_f32(st.episode_return),
            "end_status": status_name(st.end_status), "stop_cause": cause_name(st.stop_cause),
            "stop_value": render_f32(st.stop_value)}),
    }
}

fn parse_robot(v: &Value) -> RobotMsg {
    let name = |key: &str| Name::new(s(v, key)).expect("name of at most 24 bytes");
    match s(v, "type") {
        "Info" => RobotMsg::Info {
            ack_seq: u(v, "ack_seq") as u16,
            protocol_version: u(v, "protocol_version") as u16,
            robot_id: name("robot_id"),
            fw_major: u(v, "fw_major") as u8,
            fw_minor: u(v, "fw_minor") as u8,
            fw_patch: u(v, "fw_patch") as u8,
            boot_id: u(v, "boot_id") as u32,
            param_count: u(v, "param_count") as u8,
            schema_hash: u(v, "schema_hash") as u32,
            watchdog_ms: u(v, "watchdog_ms") as u16,
            step_period_us: u(v, "step_period_us") as u32,
        },
        "ParamInfo" => RobotMsg::ParamInfo {
            ack_seq: u(v, "ack_seq") as u16,
            index: u(v, "index") as u8,
            name: name("name"),
            min: fl(v, "min"),
            max: fl(v, "max"),
            default: fl(v, "default"),
        },
        "ParamsApplied" => RobotMsg::ParamsApplied {
            ack_seq: u(v, "ack_seq") as u16,
            clamped_mask: u(v, "clamped_mask"),
            values: parse_values(&v["values"]),
        },
        "Ack" => RobotMsg::Ack {
            ack_seq: u(v, "ack_seq") as u16,
        },
        "Nack" => RobotMsg::Nack {
            ack_seq: u(v, "ack_seq") as u16,
            code: parse_nack(s(v, "code")),
        },
        "Step" => RobotMsg::Step(Step {
            timestamp_us: u(v, "timestamp_us") as u32,
            trial: u(v, "trial") as u32,
            episode: u(v, "episode") as u16,
            step: u(v, "step") as u32,
            reward: fl(v, "reward"),
            roll: fl(v, "roll"),
            pitch: fl(v, "pitch"),
            body_height: fl(v, "body_height"),
            max_joint_temp: fl(v, "max_joint_temp"),
            faults: u(v, "faults") as u32,
        }),
        "EpisodeEnd" => RobotMsg::EpisodeEnd {
            trial: u(v, "trial") as u32,
            episode: u(v, "episode") as u16,
            episode_return: fl(v, "episode_return"),
            steps: u(v, "steps") as u32,
            status: parse_status(s(v, "status")),
        },
        "SafetyTrip" => RobotMsg::SafetyTrip {
            trial: u(v, "trial") as u32,
            episode: u(v, "episode") as u16,
            step: u(v, "step") as u32,
            reason: parse_reason(s(v, "reason")),
            value: fl(v, "value"),
        },
        "Ready" => RobotMsg::Ready,
        "Heartbeat" => RobotMsg::Heartbeat {
            uptime_ms: u(v, "uptime_ms") as u32,
            state: parse_state(s(v, "state")),
        },
        "Status" => RobotMsg::Status(Status {
            ack_seq: u(v, "ack_seq") as u16,
            boot_id: u(v, "boot_id") as u32,
            uptime_ms: u(v, "uptime_ms") as u32,
            state: parse_state(s(v, "state")),
            params_applied: v["params_applied"]
                .as_bool()
                .expect("params_applied is a boolean"),
            phase: parse_phase(s(v, "phase")),
            trial: u(v, "trial") as u32,
            episode: u(v, "episode") as u16,
            steps: u(v, "steps") as u32,
            episode_return: fl(v, "episode_return"),
            end_status: parse_status(s(v, "end_status")),
            stop_cause: parse_cause(s(v, "stop_cause")),
            stop_value: fl(v, "stop_value"),
        }),
        other => panic!("unknown robot message type {other}"),
    }
}

fn render_error(e: DecodeError) -> String {
    match e {
        DecodeError::Empty => "Empty".into(),
        DecodeError::Framing => "Framing".into(),
        DecodeError::TooShort => "TooShort".into(),
        DecodeError::Crc { .. } => "Crc".into(),
        DecodeError::UnknownType(t) => format!("UnknownType({t:#04x})"),
        DecodeError::Truncated => "Truncated".into(),
        DecodeError::TrailingBytes => "TrailingBytes".into(),
        DecodeError::InvalidField => "InvalidField".into(),
    }
}

// ---------------------------------------------------------------------------------------
// An independent implementation of SPEC.md's framing (bitwise CRC, textbook COBS), used to
// cross-check the crate on every vector.

fn spec_crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// COBS as SPEC.md describes it, delimiter appended.
fn spec_cobs_encode(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut code_at = 0;
    for &b in raw {
        if b == 0 {
            out[code_at] = (out.len() - code_at) as u8;
            code_at = out.len();
            out.push(0);
        } else {
            out.push(b);
            if out.len() - code_at == 255 {
                out[code_at] = 0xFF;
                code_at = out.len();
                out.push(0);
            }
        }
    }
    out[code_at] = (out.len() - code_at) as u8;
    out.push(0);
    out
}

fn spec_cobs_decode(wire: &[u8]) -> Option<Vec<u8>> {
    let body = wire.strip_suffix(&[0])?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let code = body[i] as usize;
        if code == 0 || i + code > body.len() {
            return None;
        }
        let block = &body[i + 1..i + code];
        if block.contains(&0) {
            return None;
        }
        out.extend_from_slice(block);
        i += code;
        if code != 0xFF && i < body.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// type ‖ seq ‖ payload ‖ CRC-32, the unstuffed frame.
fn raw_frame(ty: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut raw = vec![ty];
    raw.extend_from_slice(&seq.to_le_bytes());
    raw.extend_from_slice(payload);
    let crc = spec_crc32(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    raw
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The golden messages.

enum Msg {
    Host(HostMsg),
    Robot(RobotMsg),
}

impl Msg {
    fn direction(&self) -> &'static str {
        match self {
            Msg::Host(_) => "host",
            Msg::Robot(_) => "robot",
        }
    }
    fn render(&self) -> Value {
        match self {
            Msg::Host(m) => render_host(m),
            Msg::Robot(m) => render_robot(m),
        }
    }
    fn encode(&self, seq: u16) -> Vec<u8> {
        let mut buf = [0u8; MAX_FRAME];
        let n = match self {
            Msg::Host(m) => encode(seq, m, &mut buf),
            Msg::Robot(m) => encode(seq, m, &mut buf),
        }
        .expect("golden message encodes");
        buf[..n].to_vec()
    }
}

/// One declared parameter: name, min, max, default.
type Param = (&'static str, f32, f32, f32);

/// The worked schema of SPEC.md: two parameters.
const SCHEMA: [Param; 2] = [("amp", 0.0, 1.0, 0.5), ("freq", 0.5, 3.0, 1.5)];

fn schema_hash(params: &[Param]) -> u32 {
    let mut h = SchemaHasher::new();
    for &(name, min, max, default) in params {
        h.add(name, min, max, default);
    }
    h.finish()
}

fn values(v: &[f32]) -> ParamValues {
    ParamValues::from_slice(v).unwrap()
}

/// 64 values whose bytes are all non-zero, so the frame has COBS blocks of 254 bytes.
fn max_values() -> ParamValues {
    let v: Vec<f32> = (0..MAX_PARAMS)
        .map(|i| 1.1 + i as f32 * 0.25)
        .inspect(|x| assert!(!x.to_le_bytes().contains(&0)))
        .collect();
    values(&v)
}

/// A SetParams whose raw frame ends in a run of exactly 254 non-zero bytes: its COBS encoding
/// ends with a 0xFF block followed by a lone 0x01 code (see SPEC.md, COBS). Found by scanning
/// sequence numbers until the CRC has no zero byte.
fn cobs_edge_case() -> (u16, HostMsg) {
    let mut v = [1.1f32; 63]; // 0x3f8ccccd: no zero byte
    v[0] = f32::from_bits(0x3F80_0001); // bytes 01 00 80 3f: the frame's only zero at offset 5
    let msg = HostMsg::SetParams { values: values(&v) };
    for seq in 0x0101u16.. {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(seq, &msg, &mut buf).unwrap();
        let raw = spec_cobs_decode(&buf[..n]).unwrap();
        if raw.iter().filter(|&&b| b == 0).count() == 1 && raw[5] == 0 {
            assert_eq!(raw.len() - 6, 254);
            return (seq, msg);
        }
    }
    unreachable!("some sequence number gives a CRC without zero bytes")
}

fn golden() -> Vec<(String, u16, Msg)> {
    let mut v: Vec<(String, u16, Msg)> = Vec::new();
    let mut host = |name: &str, seq: u16, m: HostMsg| v.push((name.into(), seq, Msg::Host(m)));
    host(
        "hello",
        1,
        HostMsg::Hello {
            protocol_version: 1,
        },
    );
    host(
        "hello_v2",
        1,
        HostMsg::Hello {
            protocol_version: 2,
        },
    );
    host(
        "hello_future_version",
        1,
        HostMsg::Hello {
            protocol_version: 3,
        },
    );
    host("get_param_info", 2, HostMsg::GetParamInfo { index: 0 });
    host("get_param_info_1", 3, HostMsg::GetParamInfo { index: 1 });
    host(
        "set_params",
        5,
        HostMsg::SetParams {
            values: values(&[0.75, 3.5]),
        },
    );
    host(
        "set_params_empty",
        6,
        HostMsg::SetParams {
            values: values(&[]),
        },
    );
    host(
        "set_params_nan",
        7,
        HostMsg::SetParams {
            values: values(&[f32::NAN, 1.0]),
        },
    );
    host(
        "set_params_max_size",
        8,
        HostMsg::SetParams {
            values: max_values(),
        },
    );
    let (seq, edge) = cobs_edge_case();
    host("set_params_cobs_block_at_end", seq, edge);
    host(
        "start_episode",
        9,
        HostMsg::StartEpisode {
            trial: 42,
            episode: 1,
            max_steps: 3000,
            seed: 0x0123_4567_89AB_CDEF,
        },
    );
    host("abort", 10, HostMsg::Abort);
    host("estop", 11, HostMsg::EStop);
    host("clear_estop", 12, HostMsg::ClearEStop);
    host("heartbeat", 7, HostMsg::Heartbeat { host_time_ms: 1500 });
    host("get_status", 13, HostMsg::GetStatus);
    host(
        "heartbeat_seq_ffff",
        0xFFFF,
        HostMsg::Heartbeat { host_time_ms: 0 },
    );
    host(
        "heartbeat_seq_0_after_wrap",
        0,
        HostMsg::Heartbeat {
            host_time_ms: u32::MAX,
        },
    );

    let mut robot = |name: &str, seq: u16, m: RobotMsg| v.push((name.into(), seq, Msg::Robot(m)));
    robot(
        "info",
        1,
        RobotMsg::Info {
            ack_seq: 1,
            protocol_version: 1,
            robot_id: Name::new("sim-quadruped").unwrap(),
            fw_major: 0,
            fw_minor: 3,
            fw_patch: 1,
            boot_id: 0xDEAD_BEEF,
            param_count: SCHEMA.len() as u8,
            schema_hash: schema_hash(&SCHEMA),
            watchdog_ms: 1000,
            step_period_us: 10_000,
        },
    );
    robot(
        "info_v2",
        1,
        RobotMsg::Info {
            ack_seq: 1,
            protocol_version: 2,
            robot_id: Name::new("sim-quadruped").unwrap(),
            fw_major: 0,
            fw_minor: 3,
            fw_patch: 1,
            boot_id: 0xDEAD_BEEF,
            param_count: SCHEMA.len() as u8,
            schema_hash: schema_hash(&SCHEMA),
            watchdog_ms: 1000,
            step_period_us: 10_000,
        },
    );
    for (i, &(name, min, max, default)) in SCHEMA.iter().enumerate() {
        robot(
            &format!("param_info_{i}"),
            2 + i as u16,
            RobotMsg::ParamInfo {
                ack_seq: 2 + i as u16,
                index: i as u8,
                name: Name::new(name).unwrap(),
                min,
                max,
                default,
            },
        );
    }
    let long = "Schrittlänge_vorn_links";
    assert_eq!(long.len(), MAX_NAME_LEN);
    robot(
        "param_info_name_24_bytes",
        4,
        RobotMsg::ParamInfo {
            ack_seq: 4,
            index: 63,
            name: Name::new(long).unwrap(),
            min: -PI,
            max: PI,
            default: -0.0,
        },
    );
    robot(
        "params_applied_clamped",
        5,
        RobotMsg::ParamsApplied {
            ack_seq: 5,
            clamped_mask: 0b10,
            values: values(&[0.75, 3.0]),
        },
    );
    robot(
        "params_applied_max_size",
        6,
        RobotMsg::ParamsApplied {
            ack_seq: 8,
            clamped_mask: 0x8000_0000_0000_0001,
            values: max_values(),
        },
    );
    robot("ack", 7, RobotMsg::Ack { ack_seq: 9 });
    let nacks = [
        NackCode::InvalidState,
        NackCode::EStopLatched,
        NackCode::WrongParamCount,
        NackCode::BadParamIndex,
        NackCode::UnsupportedVersion,
        NackCode::NoParams,
        NackCode::NotReady,
        NackCode::NotFinite,
    ];
    for (i, code) in nacks.into_iter().enumerate() {
        robot(
            &format!("nack_{}", nack_name(code)),
            20 + i as u16,
            RobotMsg::Nack {
                ack_seq: 100 + i as u16,
                code,
            },
        );
    }
    robot(
        "step",
        8,
        RobotMsg::Step(Step {
            timestamp_us: 12_345_678,
            trial: 42,
            episode: 1,
            step: 0,
            reward: 0.125,
            roll: -0.05,
            pitch: 0.02,
            body_height: 0.28,
            max_joint_temp: 41.5,
            faults: 0,
        }),
    );
    robot(
        "step_nan_reward_faults",
        9,
        RobotMsg::Step(Step {
            timestamp_us: u32::MAX,
            trial: 42,
            episode: 1,
            step: 2999,
            reward: f32::NAN,
            roll: f32::INFINITY,
            pitch: f32::NEG_INFINITY,
            body_height: -0.0,
            max_joint_temp: f32::from_bits(0x7FC0_0001),
            faults: FAULT_TORQUE_SATURATION
                | FAULT_JOINT_LIMIT
                | FAULT_MOTOR_DRIVER
                | FAULT_LOW_VOLTAGE,
        }),
    );
    let statuses = [
        EpisodeStatus::Completed,
        EpisodeStatus::Aborted,
        EpisodeStatus::SafetyTrip,
        EpisodeStatus::EStopped,
    ];
    for (i, status) in statuses.into_iter().enumerate() {
        robot(
            &format!("episode_end_{}", status_name(status)),
            30 + i as u16,
            RobotMsg::EpisodeEnd {
                trial: 42,
                episode: 1,
                episode_return: 187.25,
                steps: 3000 - i as u32,
                status,
            },
        );
    }
    robot(
        "episode_end_nan_return",
        34,
        RobotMsg::EpisodeEnd {
            trial: 7,
            episode: 0,
            episode_return: f32::NAN,
            steps: 12,
            status: EpisodeStatus::Completed,
        },
    );
    let reasons = [
        TripReason::Roll,
        TripReason::Pitch,
        TripReason::BodyHeight,
        TripReason::JointTemperature,
        TripReason::MotorFault,
        TripReason::Watchdog,
    ];
    for (i, reason) in reasons.into_iter().enumerate() {
        robot(
            &format!("safety_trip_{}", reason_name(reason)),
            40 + i as u16,
            RobotMsg::SafetyTrip {
                trial: 42,
                episode: 1,
                step: 512,
                reason,
                value: 0.9 + i as f32,
            },
        );
    }
    robot("ready", 50, RobotMsg::Ready);
    let states = [
        RobotState::Idle,
        RobotState::Resetting,
        RobotState::Ready,
        RobotState::Running,
        RobotState::Stopped,
    ];
    for (i, state) in states.into_iter().enumerate() {
        robot(
            &format!("heartbeat_{}", state_name(state)),
            60 + i as u16,
            RobotMsg::Heartbeat {
                uptime_ms: 100_000 + 100 * i as u32,
                state,
            },
        );
    }
    robot(
        "heartbeat_seq_ffff",
        0xFFFF,
        RobotMsg::Heartbeat {
            uptime_ms: u32::MAX,
            state: RobotState::Idle,
        },
    );
    let status = Status {
        ack_seq: 13,
        boot_id: 0xDEAD_BEEF,
        uptime_ms: 61_250,
        state: RobotState::Idle,
        params_applied: false,
        phase: EpisodePhase::NoEpisode,
        trial: 0,
        episode: 0,
        steps: 0,
        episode_return: 0.0,
        end_status: EpisodeStatus::Completed,
        stop_cause: StopCause::NotStopped,
        stop_value: 0.0,
    };
    robot("status_fresh_boot", 70, RobotMsg::Status(status));
    robot(
        "status_running",
        71,
        RobotMsg::Status(Status {
            state: RobotState::Running,
            params_applied: true,
            phase: EpisodePhase::Running,
            trial: 42,
            episode: 1,
            steps: 812,
            episode_return: 31.5,
            ..status
        }),
    );
    robot(
        "status_ended_resetting",
        72,
        RobotMsg::Status(Status {
            state: RobotState::Resetting,
            params_applied: true,
            phase: EpisodePhase::Ended,
            trial: 42,
            episode: 1,
            steps: 3000,
            episode_return: 187.25,
            end_status: EpisodeStatus::Completed,
            ..status
        }),
    );
    robot(
        "status_ended_ready_aborted",
        73,
        RobotMsg::Status(Status {
            state: RobotState::Ready,
            params_applied: true,
            phase: EpisodePhase::Ended,
            trial: 42,
            episode: 1,
            steps: 200,
            episode_return: 10.0,
            end_status: EpisodeStatus::Aborted,
            ..status
        }),
    );
    let causes = [
        (EpisodeStatus::SafetyTrip, StopCause::Roll, 0.9f32),
        (EpisodeStatus::SafetyTrip, StopCause::Pitch, -0.85),
        (EpisodeStatus::SafetyTrip, StopCause::BodyHeight, 0.05),
        (EpisodeStatus::SafetyTrip, StopCause::JointTemperature, 91.5),
        (EpisodeStatus::SafetyTrip, StopCause::MotorFault, 3.0),
        (EpisodeStatus::SafetyTrip, StopCause::Watchdog, 1204.0),
        (EpisodeStatus::EStopped, StopCause::EStop, 0.0),
    ];
    for (i, (end_status, stop_cause, stop_value)) in causes.into_iter().enumerate() {
        robot(
            &format!("status_stopped_{}", cause_name(stop_cause)),
            74 + i as u16,
            RobotMsg::Status(Status {
                state: RobotState::Stopped,
                params_applied: true,
                phase: EpisodePhase::Ended,
                trial: 42,
                episode: 1,
                steps: 513,
                episode_return: 20.75,
                end_status,
                stop_cause,
                stop_value,
                ..status
            }),
        );
    }
    v
}

/// Frames a receiver must reject: (name, direction, wire bytes, what is wrong).
fn corrupted() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let wire = |raw: &[u8]| spec_cobs_encode(raw);
    let good = raw_frame(0x08, 7, &1500u32.to_le_bytes()); // host Heartbeat
    let mut v = Vec::new();
    v.push((
        "empty_frame",
        "host",
        vec![0],
        "A lone delimiter: no frame (receivers skip it silently; it is how a sender flushes).",
    ));
    let mut bad = good.clone();
    bad[3] ^= 0x01;
    v.push((
        "bad_crc_payload_bit",
        "host",
        wire(&bad),
        "Heartbeat with one payload bit flipped after the CRC was computed.",
    ));
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    v.push((
        "bad_crc_crc_bit",
        "host",
        wire(&bad),
        "Heartbeat with one bit of its CRC flipped.",
    ));
    let mut bad = wire(&good);
    bad[0] = 0x30;
    v.push((
        "bad_cobs_code_past_end",
        "host",
        bad,
        "The first COBS code points past the delimiter.",
    ));
    let mut bad = wire(&good);
    bad.truncate(bad.len() - 3);
    bad.push(0);
    v.push((
        "truncated_on_the_wire",
        "host",
        bad,
        "A valid Heartbeat frame with its last two bytes before the delimiter lost.",
    ));
    v.push((
        "too_short",
        "host",
        wire(&[0x05, 0x01, 0x00, 0xAA, 0xBB, 0xCC]),
        "Six bytes: fewer than type + seq + CRC (7).",
    ));
    v.push((
        "truncated_payload",
        "host",
        wire(&raw_frame(0x01, 1, &[0x01])),
        "Hello with a 1-byte payload (needs 2), valid CRC.",
    ));
    v.push((
        "truncated_set_params",
        "host",
        wire(&raw_frame(0x03, 2, &[3, 0, 0, 0x80, 0x3F])),
        "SetParams announcing 3 values but carrying 1, valid CRC.",
    ));
    v.push((
        "unknown_type_host",
        "host",
        wire(&raw_frame(0x0A, 1, &[])),
        "Type 0x0A is not a host message (v2 defines 0x01..=0x09).",
    ));
    v.push((
        "unknown_type_robot",
        "robot",
        wire(&raw_frame(0x8C, 1, &[])),
        "Type 0x8C is not a robot message (v2 defines 0x81..=0x8B).",
    ));
    v.push((
        "get_status_with_payload",
        "host",
        wire(&raw_frame(0x09, 5, &[0x00])),
        "GetStatus with one payload byte (it has none), valid CRC.",
    ));
    let status_payload = |applied: u8, phase: u8, cause: u8| {
        let mut p = Vec::new();
        p.extend_from_slice(&13u16.to_le_bytes());
        p.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        p.extend_from_slice(&61_250u32.to_le_bytes());
        p.push(4); // Stopped
        p.push(applied);
        p.push(phase);
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(&513u32.to_le_bytes());
        p.extend_from_slice(&20.75f32.to_le_bytes());
        p.push(2); // SafetyTrip
        p.push(cause);
        p.extend_from_slice(&0.9f32.to_le_bytes());
        p
    };
    v.push((
        "status_params_applied_2",
        "robot",
        wire(&raw_frame(0x8B, 70, &status_payload(2, 2, 1))),
        "Status with params_applied 2 (it is 0 or 1).",
    ));
    v.push((
        "status_invalid_phase",
        "robot",
        wire(&raw_frame(0x8B, 70, &status_payload(1, 3, 1))),
        "Status with phase 3 (phases are 0..=2).",
    ));
    v.push((
        "status_invalid_stop_cause",
        "robot",
        wire(&raw_frame(0x8B, 70, &status_payload(1, 2, 8))),
        "Status with stop_cause 8 (causes are 0..=7).",
    ));
    let mut short = status_payload(1, 2, 1);
    short.pop();
    v.push((
        "status_truncated",
        "robot",
        wire(&raw_frame(0x8B, 70, &short)),
        "Status one byte short of its 35-byte payload, valid CRC.",
    ));
    v.push((
        "wrong_direction",
        "robot",
        wire(&raw_frame(0x06, 1, &[])),
        "A host EStop (0x06) received by the host: types are per direction.",
    ));
    v.push((
        "trailing_bytes",
        "host",
        wire(&raw_frame(0x05, 3, &[0x00])),
        "Abort with one extra payload byte, valid CRC.",
    ));
    let mut long = vec![0x01];
    long.extend_from_slice(&[0x11; 300 - 7]);
    v.push((
        "over_long_frame",
        "host",
        wire(&raw_frame(0x01, 1, &long[1..])),
        "Well-formed COBS and valid CRC, but 300 raw bytes: more than MAX_RAW_FRAME (295).",
    ));
    v.push((
        "invalid_nack_code_0",
        "robot",
        wire(&raw_frame(0x85, 1, &[0x01, 0x00, 0x00])),
        "Nack with code 0 (codes are 1..=8).",
    ));
    v.push((
        "invalid_nack_code_9",
        "robot",
        wire(&raw_frame(0x85, 1, &[0x01, 0x00, 0x09])),
        "Nack with code 9 (codes are 1..=8).",
    ));
    let mut end = Vec::new();
    end.extend_from_slice(&42u32.to_le_bytes());
    end.extend_from_slice(&1u16.to_le_bytes());
    end.extend_from_slice(&1.0f32.to_le_bytes());
    end.extend_from_slice(&10u32.to_le_bytes());
    end.push(4);
    v.push((
        "invalid_episode_status",
        "robot",
        wire(&raw_frame(0x87, 1, &end)),
        "EpisodeEnd with status 4 (statuses are 0..=3).",
    ));
    let mut trip = Vec::new();
    trip.extend_from_slice(&42u32.to_le_bytes());
    trip.extend_from_slice(&1u16.to_le_bytes());
    trip.extend_from_slice(&5u32.to_le_bytes());
    trip.push(0);
    trip.extend_from_slice(&1.0f32.to_le_bytes());
    v.push((
        "invalid_trip_reason",
        "robot",
        wire(&raw_frame(0x88, 1, &trip)),
        "SafetyTrip with reason 0 (reasons are 1..=6).",
    ));
    v.push((
        "invalid_robot_state",
        "robot",
        wire(&raw_frame(0x8A, 1, &[0x10, 0x27, 0, 0, 5])),
        "Heartbeat with state 5 (states are 0..=4).",
    ));
    let mut pinfo = vec![0x02, 0x00, 0x00, 0x02, 0xFF, 0xFE];
    for x in [0.0f32, 1.0, 0.5] {
        pinfo.extend_from_slice(&x.to_le_bytes());
    }
    v.push((
        "name_not_utf8",
        "robot",
        wire(&raw_frame(0x82, 2, &pinfo)),
        "ParamInfo whose 2-byte name is FF FE, not UTF-8.",
    ));
    let mut pinfo = vec![0x02, 0x00, 0x00, 25];
    pinfo.extend_from_slice(&[b'a'; 25]);
    for x in [0.0f32, 1.0, 0.5] {
        pinfo.extend_from_slice(&x.to_le_bytes());
    }
    v.push((
        "name_too_long",
        "robot",
        wire(&raw_frame(0x82, 2, &pinfo)),
        "ParamInfo whose name is 25 bytes (at most 24).",
    ));
    let mut sp = vec![65u8];
    for _ in 0..65 {
        sp.extend_from_slice(&1.0f32.to_le_bytes());
    }
    v.push((
        "set_params_count_65",
        "host",
        wire(&raw_frame(0x03, 4, &sp)),
        "SetParams with count 65 and 65 values (at most 64), valid CRC.",
    ));
    let mut pa = vec![0x04, 0x00];
    pa.extend_from_slice(&0u64.to_le_bytes());
    pa.extend_from_slice(&sp);
    v.push((
        "params_applied_count_65",
        "robot",
        wire(&raw_frame(0x83, 4, &pa)),
        "ParamsApplied with count 65 and 65 values (at most 64), valid CRC.",
    ));
    v
}

// ---------------------------------------------------------------------------------------
// Files.

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn regen() -> bool {
    std::env::var_os("GAITTUNE_REGEN_VECTORS").is_some_and(|v| v == "1")
}

fn decode_dir(direction: &str, stuffed: &[u8]) -> Result<(u16, Value), DecodeError> {
    match direction {
        "host" => decode::<HostMsg>(stuffed).map(|f| (f.seq, render_host(&f.msg))),
        "robot" => decode::<RobotMsg>(stuffed).map(|f| (f.seq, render_robot(&f.msg))),
        other => panic!("bad direction {other}"),
    }
}

/// Writes one JSON object per line with a fixed key order, so the files diff well.
fn write_lines(header: &[(&str, Value)], key: &str, items: &[Vec<(&str, Value)>]) -> String {
    let obj = |fields: &[(&str, Value)]| {
        let parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}: {}", json!(k), serde_json::to_string(v).unwrap()))
            .collect();
        format!("{{{}}}", parts.join(", "))
    };
    let mut out = String::from("{\n");
    for (k, v) in header {
        out += &format!("  {}: {},\n", json!(k), serde_json::to_string(v).unwrap());
    }
    out += &format!("  {}: [\n", json!(key));
    let lines: Vec<String> = items.iter().map(|f| format!("    {}", obj(f))).collect();
    out += &lines.join(",\n");
    out += "\n  ]\n}\n";
    out
}

fn render_frames_file() -> String {
    let items: Vec<Vec<(&str, Value)>> = golden()
        .into_iter()
        .map(|(name, seq, msg)| {
            let wire = msg.encode(seq);
            let raw = spec_cobs_decode(&wire).expect("crate output is valid COBS");
            vec![
                ("name", json!(name)),
                ("direction", json!(msg.direction())),
                ("seq", json!(seq)),
                ("message", msg.render()),
                ("raw", json!(hex(&raw))),
                ("hex", json!(hex(&wire))),
            ]
        })
        .collect();
    write_lines(
        &[
            (
                "about",
                json!("Golden frames of gaittune protocol v2 (SPEC.md); every v1 frame is unchanged, GetStatus/Status are v2 only. raw = type|seq|payload|crc32 before COBS; hex = the bytes on the wire, COBS-encoded, with the trailing 0x00 delimiter. Floats: JSON numbers, or \"NaN\" (bits 0x7fc00000), \"Infinity\", \"-Infinity\", \"f32:0x........\" (exact bits)."),
            ),
            ("protocol_version", json!(PROTOCOL_VERSION)),
        ],
        "frames",
        &items,
    )
}

fn render_corrupted_file() -> String {
    let items: Vec<Vec<(&str, Value)>> = corrupted()
        .into_iter()
        .map(|(name, direction, wire, why)| {
            let stuffed = &wire[..wire.len() - 1];
            let err = decode_dir(direction, stuffed).expect_err("corrupted vector must not decode");
            vec![
                ("name", json!(name)),
                ("direction", json!(direction)),
                ("error", json!(render_error(err))),
                ("why", json!(why)),
                ("hex", json!(hex(&wire))),
            ]
        })
        .collect();
    write_lines(
        &[(
            "about",
            json!("Frames every receiver must discard (SPEC.md, Receiver rules). error = the reason this crate's DecodeError gives; other implementations need only reject the frame."),
        )],
        "frames",
        &items,
    )
}

fn render_schema_file() -> String {
    let cases: Vec<(&str, &[Param])> = vec![
        ("empty", &[]),
        ("first_param_only", &SCHEMA[..1]),
        ("spec_example", &SCHEMA),
        ("utf8_name", &[("Schrittlänge_vorn_links", -PI, PI, -0.0)]),
    ];
    let items: Vec<Vec<(&str, Value)>> = cases
        .into_iter()
        .map(|(name, params)| {
            let mut bytes = Vec::new();
            for &(n, min, max, default) in params {
                bytes.extend_from_slice(n.as_bytes());
                bytes.push(0);
                for x in [min, max, default] {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            }
            let list: Vec<Value> = params
                .iter()
                .map(|&(n, min, max, d)| {
                    json!({"name": n, "min": render_f32(min), "max": render_f32(max), "default": render_f32(d)})
                })
                .collect();
            vec![
                ("name", json!(name)),
                ("params", Value::Array(list)),
                ("hashed_bytes", json!(hex(&bytes))),
                ("schema_hash", json!(format!("{:#010x}", schema_hash(params)))),
            ]
        })
        .collect();
    write_lines(
        &[(
            "about",
            json!("Schema hashes (SPEC.md, Schema hash): FNV-1a 32 over hashed_bytes."),
        )],
        "cases",
        &items,
    )
}

/// Compares a committed file with the generator's output (or rewrites it when regenerating).
fn check_file(file: &str, generated: String) {
    let path = vectors_dir().join(file);
    if regen() {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Generate it with GAITTUNE_REGEN_VECTORS=1 cargo test -p firmware-protocol --test vectors",
            path.display()
        )
    });
    let a: Value = serde_json::from_str(&committed).expect("committed vectors are JSON");
    let b: Value = serde_json::from_str(&generated).unwrap();
    assert!(
        a == b,
        "{} differs from what the generator produces: the wire format or the golden list \
         changed. If intended, bump PROTOCOL_VERSION per SPEC.md and regenerate with \
         GAITTUNE_REGEN_VECTORS=1 cargo test -p firmware-protocol --test vectors",
        path.display()
    );
}

/// The committed file (or, while regenerating, the generator's output, so tests running in
/// parallel with the rewrite do not race it).
fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let text = if regen() {
        match file {
            "frames.json" => render_frames_file(),
            "corrupted.json" => render_corrupted_file(),
            _ => render_schema_file(),
        }
    } else {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn committed_vectors_match_the_generator() {
    check_file("frames.json", render_frames_file());
    check_file("corrupted.json", render_corrupted_file());
    check_file("schema_hash.json", render_schema_file());
}

#[test]
fn every_golden_frame_decodes_and_encodes_exactly() {
    let doc = load("frames.json");
    assert_eq!(doc["protocol_version"], json!(PROTOCOL_VERSION));
    let frames = doc["frames"].as_array().expect("frames array");
    assert!(frames.len() >= 18);
    for f in frames {
        let name = f["name"].as_str().unwrap();
        let direction = f["direction"].as_str().unwrap();
        let seq = f["seq"].as_u64().unwrap() as u16;
        let wire = unhex(f["hex"].as_str().unwrap());
        let raw = unhex(f["raw"].as_str().unwrap());

        // Framing per SPEC.md, independently of the crate.
        assert_eq!(wire.last(), Some(&0), "{name}: ends with the delimiter");
        assert!(
            !wire[..wire.len() - 1].contains(&0),
            "{name}: no 0x00 inside"
        );
        assert!(wire.len() <= MAX_FRAME, "{name}: at most MAX_FRAME bytes");
        assert_eq!(spec_cobs_decode(&wire).as_ref(), Some(&raw), "{name}: COBS");
        assert_eq!(
            spec_cobs_encode(&raw),
            wire,
            "{name}: COBS encoding is canonical"
        );
        let (body, crc) = raw.split_at(raw.len() - 4);
        assert_eq!(
            spec_crc32(body).to_le_bytes(),
            crc,
            "{name}: CRC-32 little-endian over type|seq|payload"
        );
        assert_eq!(crc32(body), spec_crc32(body));
        assert_eq!(u16::from_le_bytes([raw[1], raw[2]]), seq, "{name}: seq");

        // Decode: hex -> exactly the listed message, through decode() and the accumulator.
        let (got_seq, got) = decode_dir(direction, &wire[..wire.len() - 1])
            .unwrap_or_else(|e| panic!("{name}: does not decode: {e:?}"));
        assert_eq!(got_seq, seq, "{name}");
        assert_eq!(got, f["message"], "{name}: decoded message");
        let mut acc = FrameAccumulator::new();
        let mut seen = 0;
        for &b in &wire {
            if let Some(r) = acc.push(b) {
                let stuffed = r.unwrap_or_else(|e| panic!("{name}: accumulator {e:?}"));
                assert_eq!(decode_dir(direction, stuffed).unwrap(), (seq, got.clone()));
                seen += 1;
            }
        }
        assert_eq!(seen, 1, "{name}: exactly one frame");

        // Encode: message -> exactly the listed bytes.
        let msg = match direction {
            "host" => Msg::Host(parse_host(&f["message"])),
            _ => Msg::Robot(parse_robot(&f["message"])),
        };
        assert_eq!(hex(&msg.encode(seq)), hex(&wire), "{name}: encoding");
        assert_eq!(raw[0], wire_type(&msg), "{name}: type byte");
    }
}

fn wire_type(m: &Msg) -> u8 {
    match m {
        Msg::Host(m) => m.type_byte(),
        Msg::Robot(m) => m.type_byte(),
    }
}

#[test]
fn golden_frames_cover_every_message_enum_code_and_edge_case() {
    let doc = load("frames.json");
    let frames = doc["frames"].as_array().unwrap();
    let has = |dir: &str, key: &str, val: &str| {
        frames
            .iter()
            .any(|f| f["direction"] == dir && f["message"][key] == val)
    };
    for t in [
        "Hello",
        "GetParamInfo",
        "SetParams",
        "StartEpisode",
        "Abort",
        "EStop",
        "ClearEStop",
        "Heartbeat",
        "GetStatus",
    ] {
        assert!(has("host", "type", t), "no host {t} vector");
    }
    for t in [
        "Info",
        "ParamInfo",
        "ParamsApplied",
        "Ack",
        "Nack",
        "Step",
        "EpisodeEnd",
        "SafetyTrip",
        "Ready",
        "Heartbeat",
        "Status",
    ] {
        assert!(has("robot", "type", t), "no robot {t} vector");
    }
    for c in [
        "InvalidState",
        "EStopLatched",
        "WrongParamCount",
        "BadParamIndex",
    ] {
        assert!(has("robot", "code", c), "no Nack {c}");
    }
    for c in ["UnsupportedVersion", "NoParams", "NotReady", "NotFinite"] {
        assert!(has("robot", "code", c), "no Nack {c}");
    }
    for c in ["Completed", "Aborted", "SafetyTrip", "EStopped"] {
        assert!(has("robot", "status", c), "no EpisodeEnd {c}");
    }
    for c in [
        "Roll",
        "Pitch",
        "BodyHeight",
        "JointTemperature",
        "MotorFault",
        "Watchdog",
    ] {
        assert!(has("robot", "reason", c), "no SafetyTrip {c}");
    }
    for c in ["Idle", "Resetting", "Ready", "Running", "Stopped"] {
        assert!(has("robot", "state", c), "no Heartbeat {c}");
    }
    for c in ["NoEpisode", "Running", "Ended"] {
        assert!(has("robot", "phase", c), "no Status phase {c}");
    }
    for c in [
        "NotStopped",
        "Roll",
        "Pitch",
        "BodyHeight",
        "JointTemperature",
        "MotorFault",
        "Watchdog",
        "EStop",
    ] {
        assert!(has("robot", "stop_cause", c), "no Status stop_cause {c}");
    }
    assert!(frames.iter().any(|f| f["seq"] == 0xFFFF));
    assert!(frames.iter().any(|f| f["message"]["reward"] == "NaN"));
    assert!(frames.iter().any(|f| f["message"]["values"]
        .as_array()
        .is_some_and(|v| v.len() == 64)));
    assert!(frames.iter().any(|f| f["message"]["name"]
        .as_str()
        .is_some_and(|n| n.len() == MAX_NAME_LEN)));
    // A 0xFF COBS block, and one followed by a lone 0x01 code at the end of the frame.
    assert!(frames
        .iter()
        .any(|f| unhex(f["hex"].as_str().unwrap()).contains(&0xFF)));
    assert!(frames
        .iter()
        .any(|f| f["hex"].as_str().unwrap().ends_with("0100")
            && unhex(f["hex"].as_str().unwrap()).len() > 256));
}

#[test]
fn every_corrupted_frame_is_rejected_with_its_error() {
    let doc = load("corrupted.json");
    let frames = doc["frames"].as_array().expect("frames array");
    assert!(frames.len() >= 15);
    for f in frames {
        let name = f["name"].as_str().unwrap();
        let direction = f["direction"].as_str().unwrap();
        let expected = f["error"].as_str().unwrap();
        let wire = unhex(f["hex"].as_str().unwrap());
        assert_eq!(wire.last(), Some(&0), "{name}: ends with the delimiter");
        let err = decode_dir(direction, &wire[..wire.len() - 1])
            .expect_err(&format!("{name}: must not decode"));
        assert_eq!(render_error(err), expected, "{name}");
        // The same bytes through a stream receiver: one error, never a message.
        let mut acc = FrameAccumulator::new();
        let mut results = Vec::new();
        for &b in &wire {
            if let Some(r) = acc.push(b) {
                results.push(
                    r.map_err(render_error)
                        .and_then(|s| decode_dir(direction, s).map_err(render_error)),
                );
            }
        }
        if expected == "Empty" {
            assert!(
                results.is_empty(),
                "{name}: a lone delimiter yields nothing"
            );
        } else {
            assert_eq!(results, vec![Err(expected.to_string())], "{name}");
        }
    }
    for kind in [
        "Crc",
        "Framing",
        "TooShort",
        "Truncated",
        "TrailingBytes",
        "InvalidField",
        "UnknownType(0x0a)",
    ] {
        assert!(
            frames.iter().any(|f| f["error"] == kind),
            "no corrupted vector for {kind}"
        );
    }
}

#[test]
fn schema_hash_vectors_hold() {
    let doc = load("schema_hash.json");
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let bytes = unhex(case["hashed_bytes"].as_str().unwrap());
        // FNV-1a 32 written out, independent of SchemaHasher.
        let mut h = 0x811C_9DC5u32;
        for b in &bytes {
            h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
        }
        let expected = format!("{h:#010x}");
        assert_eq!(case["schema_hash"], json!(expected), "{name}");
        let mut hasher = SchemaHasher::new();
        for p in case["params"].as_array().unwrap() {
            hasher.add(s(p, "name"), fl(p, "min"), fl(p, "max"), fl(p, "default"));
        }
        assert_eq!(format!("{:#010x}", hasher.finish()), expected, "{name}");
    }
}

#[test]
fn spec_framing_agrees_with_the_crate_on_known_inputs() {
    assert_eq!(spec_crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    // SPEC.md's COBS examples.
    let cases: [(&[u8], &[u8]); 5] = [
        (&[], &[0x01, 0x00]),
        (&[0x00], &[0x01, 0x01, 0x00]),
        (
            &[0x11, 0x22, 0x00, 0x33],
            &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00],
        ),
        (&[0x11, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x00]),
        (&[0x08, 0x07, 0x00], &[0x03, 0x08, 0x07, 0x01, 0x00]),
    ];
    for (raw, wire) in cases {
        assert_eq!(spec_cobs_encode(raw), wire);
        let mut out = [0u8; 16];
        let n = cobs_encode(raw, &mut out).unwrap();
        assert_eq!(&out[..n], &wire[..wire.len() - 1]);
    }
    let block: Vec<u8> = vec![0x01; 254];
    let wire = spec_cobs_encode(&block);
    assert_eq!(
        (wire[0], wire[255], wire[256], wire.len()),
        (0xFF, 0x01, 0x00, 257)
    );
}
