//! Property tests of the framing and the message codecs: round trips, no panic on any input,
//! corruption never yields a different message, and resynchronisation after garbage.

use firmware_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Strategies.

/// Any f32 bit pattern (NaNs with payloads, infinities, subnormals, -0.0), plus plain values.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => any::<u32>().prop_map(f32::from_bits),
        1 => Just(f32::NAN),
        1 => -1000.0f32..1000.0,
    ]
}

fn any_name() -> impl Strategy<Value = Name> {
    vec(any::<char>(), 0..=MAX_NAME_LEN).prop_map(|chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > MAX_NAME_LEN {
                break;
            }
            s.push(c);
        }
        Name::new(&s).expect("at most MAX_NAME_LEN bytes")
    })
}

fn any_values() -> impl Strategy<Value = ParamValues> {
    vec(any_f32(), 0..=MAX_PARAMS)
        .prop_map(|v| ParamValues::from_slice(&v).expect("at most MAX_PARAMS values"))
}

fn any_host() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        any::<u16>().prop_map(|protocol_version| HostMsg::Hello { protocol_version }),
        any::<u8>().prop_map(|index| HostMsg::GetParamInfo { index }),
        any_values().prop_map(|values| HostMsg::SetParams { values }),
        (any::<u32>(), any::<u16>(), any::<u32>(), any::<u64>()).prop_map(
            |(trial, episode, max_steps, seed)| HostMsg::StartEpisode {
                trial,
                episode,
                max_steps,
                seed
            }
        ),
        Just(HostMsg::Abort),
        Just(HostMsg::EStop),
        Just(HostMsg::ClearEStop),
        any::<u32>().prop_map(|host_time_ms| HostMsg::Heartbeat { host_time_ms }),
        Just(HostMsg::GetStatus),
    ]
}

fn any_status() -> impl Strategy<Value = EpisodeStatus> {
    (0u8..4).prop_map(|c| EpisodeStatus::from_code(c).unwrap())
}
fn any_reason() -> impl Strategy<Value = TripReason> {
    (1u8..=6).prop_map(|c| TripReason::from_code(c).unwrap())
}
fn any_nack() -> impl Strategy<Value = NackCode> {
    (1u8..=8).prop_map(|c| NackCode::from_code(c).unwrap())
}
fn any_state() -> impl Strategy<Value = RobotState> {
    (0u8..5).prop_map(|c| RobotState::from_code(c).unwrap())
}

fn any_phase() -> impl Strategy<Value = EpisodePhase> {
    (0u8..3).prop_map(|c| EpisodePhase::from_code(c).unwrap())
}
fn any_cause() -> impl Strategy<Value = StopCause> {
    (0u8..=7).prop_map(|c| StopCause::from_code(c).unwrap())
}

fn any_status_report() -> impl Strategy<Value = Status> {
    (
        (
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any_state(),
            any::<bool>(),
        ),
        (
            any_phase(),
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
            any_f32(),
        ),
        (any_status(), any_cause(), any_f32()),
    )
        .prop_map(
            |(
                (ack_seq, boot_id, uptime_ms, state, params_applied),
                (phase, trial, episode, steps, episode_return),
                (end_status, stop_cause, stop_value),
            )| Status {
                ack_seq,
                boot_id,
                uptime_ms,
                state,
                params_applied,
                phase,
                trial,
                episode,
                steps,
                episode_return,
                end_status,
                stop_cause,
                stop_value,
            },
        )
}

fn any_step() -> impl Strategy<Value = Step> {
    (
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u32>()),
        (any_f32(), any_f32(), any_f32(), any_f32(), any_f32()),
        any::<u32>(),
    )
        .prop_map(
            |(
                (timestamp_us, trial, episode, step),
                (reward, roll, pitch, body_height, max_joint_temp),
                faults,
            )| Step {
                timestamp_us,
                trial,
                episode,
                step,
                reward,
                roll,
                pitch,
                body_height,
                max_joint_temp,
                faults,
            },
        )
}

fn any_robot() -> impl Strategy<Value = RobotMsg> {
    prop_oneof![
        (
            (any::<u16>(), any::<u16>(), any_name()),
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>()),
            (any::<u8>(), any::<u32>(), any::<u16>(), any::<u32>()),
        )
            .prop_map(
                |(
                    (ack_seq, protocol_version, robot_id),
                    (fw_major, fw_minor, fw_patch, boot_id),
                    (param_count, schema_hash, watchdog_ms, step_period_us),
                )| RobotMsg::Info {
                    ack_seq,
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
                }
            ),
        (
            any::<u16>(),
            any::<u8>(),
            any_name(),
            any_f32(),
            any_f32(),
            any_f32()
        )
            .prop_map(
                |(ack_seq, index, name, min, max, default)| RobotMsg::ParamInfo {
                    ack_seq,
                    index,
                    name,
                    min,
                    max,
                    default,
                }
            ),
        (any::<u16>(), any::<u64>(), any_values()).prop_map(|(ack_seq, clamped_mask, values)| {
            RobotMsg::ParamsApplied {
                ack_seq,
                clamped_mask,
                values,
            }
        }),
        any::<u16>().prop_map(|ack_seq| RobotMsg::Ack { ack_seq }),
        (any::<u16>(), any_nack()).prop_map(|(ack_seq, code)| RobotMsg::Nack { ack_seq, code }),
        any_step().prop_map(RobotMsg::Step),
        (
            any::<u32>(),
            any::<u16>(),
            any_f32(),
            any::<u32>(),
            any_status()
        )
            .prop_map(|(trial, episode, episode_return, steps, status)| {
                RobotMsg::EpisodeEnd {
                    trial,
                    episode,
                    episode_return,
                    steps,
                    status,
                }
            }),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
            any_reason(),
            any_f32()
        )
            .prop_map(
                |(trial, episode, step, reason, value)| RobotMsg::SafetyTrip {
                    trial,
                    episode,
                    step,
                    reason,
                    value,
                }
            ),
        Just(RobotMsg::Ready),
        (any::<u32>(), any_state())
            .prop_map(|(uptime_ms, state)| RobotMsg::Heartbeat { uptime_ms, state }),
        any_status_report().prop_map(RobotMsg::Status),
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn wire<M: Message>(seq: u16, msg: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(seq, msg, &mut buf).expect("every valid message fits MAX_FRAME");
    buf[..n].to_vec()
}

/// Feeds `bytes` to a fresh accumulator in chunks of the given sizes (cycled), as a serial
/// driver would deliver them, and returns every frame's decode result in order.
fn receive<M: Message>(bytes: &[u8], chunks: &[usize]) -> Vec<Result<Frame<M>, DecodeError>> {
    let mut acc = FrameAccumulator::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        for &b in chunk {
            if let Some(r) = acc.push(b) {
                out.push(r.and_then(decode::<M>));
            }
        }
        rest = tail;
    }
    out
}

fn check_roundtrip<M: Message + PartialEq + core::fmt::Debug + Copy>(seq: u16, msg: M) {
    let bytes = wire(seq, &msg);
    assert!(bytes.len() <= MAX_FRAME);
    assert_eq!(bytes.last(), Some(&0));
    assert!(
        !bytes[..bytes.len() - 1].contains(&0),
        "0x00 only as delimiter"
    );
    // Whole frame, with or without its delimiter.
    assert_eq!(decode::<M>(&bytes), Ok(Frame { seq, msg }));
    assert_eq!(
        decode::<M>(&bytes[..bytes.len() - 1]),
        Ok(Frame { seq, msg })
    );
    // Byte stream.
    assert_eq!(receive::<M>(&bytes, &[1]), vec![Ok(Frame { seq, msg })]);
    // The raw frame is type | seq LE | payload | CRC-32 LE over the rest.
    let mut raw = [0u8; MAX_RAW_FRAME];
    let n = cobs_decode(&bytes[..bytes.len() - 1], &mut raw).unwrap();
    assert!(n <= MAX_RAW_FRAME && n - 7 <= MAX_PAYLOAD);
    assert_eq!(raw[0], msg.type_byte());
    assert_eq!(u16::from_le_bytes([raw[1], raw[2]]), seq);
    assert_eq!(crc32(&raw[..n - 4]).to_le_bytes(), raw[n - 4..n]);
}

#[derive(Debug, Clone)]
enum Corruption {
    FlipBit { at: usize, bit: u8 },
    Replace { at: usize, with: u8 },
    Truncate { len: usize },
    Insert { at: usize, byte: u8 },
}

fn any_corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Corruption::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, with)| Corruption::Replace { at, with }),
        any::<usize>().prop_map(|len| Corruption::Truncate { len }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Corruption::Insert { at, byte }),
    ]
}

fn corrupt(bytes: &[u8], c: &Corruption) -> Vec<u8> {
    let mut v = bytes.to_vec();
    match *c {
        Corruption::FlipBit { at, bit } => {
            let i = at % v.len();
            v[i] ^= 1 << bit;
        }
        Corruption::Replace { at, with } => {
            let i = at % v.len();
            v[i] = with;
        }
        Corruption::Truncate { len } => v.truncate(len % v.len()),
        Corruption::Insert { at, byte } => v.insert(at % (v.len() + 1), byte),
    }
    v
}

/// A corrupted frame decodes to nothing but the original: through `decode` on the whole
/// buffer and through a stream receiver (flushed with a final delimiter).
fn check_corruption<M: Message + PartialEq + core::fmt::Debug + Copy>(
    seq: u16,
    msg: M,
    c: &Corruption,
) {
    let original = Frame { seq, msg };
    let bad = corrupt(&wire(seq, &msg), c);
    if let Ok(f) = decode::<M>(&bad) {
        assert_eq!(f, original, "corruption {c:?} decoded into another message");
    }
    let mut stream = bad.clone();
    stream.push(0);
    for f in receive::<M>(&stream, &[1]).into_iter().flatten() {
        assert_eq!(f, original, "corruption {c:?} decoded into another message");
    }
}

fn check_stream<M: Message + PartialEq + core::fmt::Debug + Copy>(
    frames: &[(u16, M, Vec<u8>)],
    chunks: &[usize],
) {
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (seq, msg, garbage) in frames {
        stream.extend_from_slice(garbage);
        stream.push(0); // garbage ends in a delimiter
        stream.extend_from_slice(&wire(*seq, msg));
        expected.push(Frame {
            seq: *seq,
            msg: *msg,
        });
    }
    let got: Vec<Frame<M>> = receive::<M>(&stream, chunks)
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn host_messages_round_trip(seq in any::<u16>(), msg in any_host()) {
        check_roundtrip(seq, msg);
        // Type bytes are per direction: a host frame is never a robot message.
        let bytes = wire(seq, &msg);
        prop_assert_eq!(
            decode::<RobotMsg>(&bytes).err(),
            Some(DecodeError::UnknownType(msg.type_byte()))
        );
    }

    #[test]
    fn robot_messages_round_trip(seq in any::<u16>(), msg in any_robot()) {
        check_roundtrip(seq, msg);
        let bytes = wire(seq, &msg);
        prop_assert_eq!(
            decode::<HostMsg>(&bytes).err(),
            Some(DecodeError::UnknownType(msg.type_byte()))
        );
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..700),
        chunks in vec(1usize..64, 1..8),
    ) {
        let h = decode::<HostMsg>(&bytes);
        let r = decode::<RobotMsg>(&bytes);
        let mut small = [0u8; 8];
        let _ = cobs_decode(&bytes, &mut small);
        let mut big = [0u8; 1024];
        let _ = cobs_decode(&bytes, &mut big);
        // Whatever decodes re-encodes into a frame that decodes to the same thing.
        if let Ok(f) = h {
            prop_assert_eq!(decode::<HostMsg>(&wire(f.seq, &f.msg)), Ok(f));
        }
        if let Ok(f) = r {
            prop_assert_eq!(decode::<RobotMsg>(&wire(f.seq, &f.msg)), Ok(f));
        }
        let _ = receive::<HostMsg>(&bytes, &chunks);
        let _ = receive::<RobotMsg>(&bytes, &chunks);
    }

    #[test]
    fn random_frames_with_valid_crc_never_panic(
        ty in prop_oneof![0u8..=0x0A, 0x80u8..=0x8B, any::<u8>()],
        seq in any::<u16>(),
        payload in vec(any::<u8>(), 0..300),
    ) {
        // Past the CRC check, so the payload parsers see arbitrary input.
        let mut raw = vec![ty];
        raw.extend_from_slice(&seq.to_le_bytes());
        raw.extend_from_slice(&payload);
        let crc = crc32(&raw);
        raw.extend_from_slice(&crc.to_le_bytes());
        let mut stuffed = [0u8; 400];
        let n = cobs_encode(&raw, &mut stuffed).unwrap();
        if let Ok(f) = decode::<HostMsg>(&stuffed[..n]) {
            prop_assert_eq!(f.seq, seq);
            prop_assert_eq!(wire(f.seq, &f.msg)[..n].to_vec(), stuffed[..n].to_vec());
        }
        if let Ok(f) = decode::<RobotMsg>(&stuffed[..n]) {
            prop_assert_eq!(f.seq, seq);
            prop_assert_eq!(wire(f.seq, &f.msg)[..n].to_vec(), stuffed[..n].to_vec());
        }
    }

    #[test]
    fn corrupted_host_frames_never_decode_to_another_message(
        seq in any::<u16>(), msg in any_host(), c in any_corruption(),
    ) {
        check_corruption(seq, msg, &c);
    }

    #[test]
    fn corrupted_robot_frames_never_decode_to_another_message(
        seq in any::<u16>(), msg in any_robot(), c in any_corruption(),
    ) {
        check_corruption(seq, msg, &c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_between_garbage_arrives_exactly_once(
        frames in vec((any::<u16>(), any_robot(), vec(any::<u8>(), 0..600)), 1..6),
        chunks in vec(1usize..300, 1..8),
    ) {
        check_stream(&frames, &chunks);
    }

    #[test]
    fn every_host_frame_between_garbage_arrives_exactly_once(
        frames in vec((any::<u16>(), any_host(), vec(any::<u8>(), 0..600)), 1..6),
        chunks in vec(1usize..300, 1..8),
    ) {
        check_stream(&frames, &chunks);
    }
}
