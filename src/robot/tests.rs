//! The link against scripted firmwares over a real pseudo-terminal: retries keep their
//! sequence number, corrupted frames are dropped, and a firmware that lies is caught.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_protocol::{
    decode, encode, Frame, FrameAccumulator, HostMsg, Name, RobotMsg, SchemaHasher, MAX_FRAME,
    PROTOCOL_VERSION,
};

use super::{LinkError, LinkSettings, RobotLink};

const PARAMS: [(&str, f32, f32, f32); 2] = [("freq_hz", 0.5, 4.0, 1.0), ("kp", 5.0, 80.0, 20.0)];

fn schema_hash() -> u32 {
    let mut h = SchemaHasher::new();
    for (n, lo, hi, d) in PARAMS {
        h.add(n, lo, hi, d);
    }
    h.finish()
}

fn info(ack_seq: u16, hash: u32) -> RobotMsg {
    RobotMsg::Info {
        ack_seq,
        protocol_version: PROTOCOL_VERSION,
        robot_id: Name::new("fake").unwrap(),
        fw_major: 1,
        fw_minor: 2,
        fw_patch: 3,
        boot_id: 42,
        param_count: PARAMS.len() as u8,
        schema_hash: hash,
        watchdog_ms: 1000,
        step_period_us: 20_000,
    }
}

fn param_info(ack_seq: u16, index: u8) -> RobotMsg {
    let (n, min, max, default) = PARAMS[index as usize];
    RobotMsg::ParamInfo {
        ack_seq,
        index,
        name: Name::new(n).unwrap(),
        min,
        max,
        default,
    }
}

/// A scripted firmware: answers each host frame with whatever `script` returns (raw bytes).
/// Returns the pty path for the link and a log of the host frames it saw.
fn fake_firmware<F>(mut script: F) -> (String, Arc<Mutex<Vec<Frame<HostMsg>>>>)
where
    F: FnMut(&Frame<HostMsg>) -> Vec<u8> + Send + 'static,
{
    let pty = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(pty.slave.as_fd()).unwrap();
    let mut tio = nix::sys::termios::tcgetattr(pty.slave.as_fd()).unwrap();
    nix::sys::termios::cfmakeraw(&mut tio);
    nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &tio)
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut master = File::from(pty.master);
    let slave = pty.slave;
    std::thread::spawn(move || {
        let _keep_slave_open = slave;
        let mut acc = FrameAccumulator::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                let Some(Ok(bytes)) = acc.push(b) else {
                    continue;
                };
                let Ok(frame) = decode::<HostMsg>(bytes) else {
                    continue;
                };
                if matches!(frame.msg, HostMsg::Heartbeat { .. }) {
                    continue;
                }
                log.lock().unwrap().push(frame);
                let out = script(&frame);
                if master.write_all(&out).is_err() {
                    return;
                }
            }
        }
    });
    (path.to_string_lossy().into_owned(), seen)
}

fn frame(msg: &RobotMsg) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(1, msg, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Answers the handshake honestly (or with `hash`), and SetParams through `on_set`.
fn honest(
    hash: u32,
    on_set: fn(u16, &[f32]) -> RobotMsg,
) -> impl FnMut(&Frame<HostMsg>) -> Vec<u8> {
    move |f| match f.msg {
        HostMsg::Hello { .. } => frame(&info(f.seq, hash)),
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => frame(&on_set(f.seq, values.as_slice())),
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    }
}

fn echo(ack_seq: u16, v: &[f32]) -> RobotMsg {
    RobotMsg::ParamsApplied {
        ack_seq,
        clamped_mask: 0,
        values: firmware_protocol::ParamValues::from_slice(v).unwrap(),
    }
}

fn settings() -> LinkSettings {
    LinkSettings {
        response_timeout: Duration::from_millis(100),
        retries: 2,
        silence_timeout: Duration::from_secs(2),
        ..LinkSettings::default()
    }
}

#[tokio::test]
async fn handshake_reads_the_schema() {
    let (path, _) = fake_firmware(honest(schema_hash(), echo));
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    let info = link.handshake().await.unwrap();
    assert_eq!(info.robot_id, "fake");
    assert_eq!(info.firmware_version, "1.2.3");
    assert_eq!(info.params.len(), 2);
    assert_eq!(info.params[1].name, "kp");
    assert_eq!(info.params[1].max, 80.0);
    let applied = link.set_params(&[2.0, 30.0]).await.unwrap();
    assert_eq!(applied.values, vec![2.0, 30.0]);
    assert!(applied.clamped.is_empty());
}

#[tokio::test]
async fn a_wrong_schema_hash_is_refused() {
    let (path, _) = fake_firmware(honest(schema_hash() ^ 1, echo));
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    let err = link.handshake().await.unwrap_err().to_string();
    assert!(err.contains("schema hash"), "{err}");
    assert!(err.contains(&path), "{err}");
}

#[tokio::test]
async fn an_unreported_change_in_the_echo_is_caught() {
    fn liar(ack_seq: u16, v: &[f32]) -> RobotMsg {
        let mut changed = v.to_vec();
        changed[0] += 0.5;
        echo(ack_seq, &changed)
    }
    let (path, _) = fake_firmware(honest(schema_hash(), liar));
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    link.handshake().await.unwrap();
    let err = link.set_params(&[2.0, 30.0]).await.unwrap_err().to_string();
    assert!(
        err.contains("freq_hz") && err.contains("did not report a clamp"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unanswered_command_is_resent_with_the_same_sequence_number() {
    let mut hellos = 0;
    let (path, seen) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { .. } => {
            hellos += 1;
            if hellos < 3 {
                Vec::new()
            } else {
                frame(&info(f.seq, schema_hash()))
            }
        }
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    link.handshake().await.unwrap();
    let hellos: Vec<u16> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|f| matches!(f.msg, HostMsg::Hello { .. }))
        .map(|f| f.seq)
        .collect();
    assert_eq!(hellos.len(), 3);
    assert!(hellos.iter().all(|&s| s == hellos[0]), "{hellos:?}");
}

#[tokio::test]
async fn a_silent_robot_is_named_in_the_error() {
    let (path, _) = fake_firmware(|_| Vec::new());
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    let err = link.handshake().await.unwrap_err();
    assert!(
        matches!(err, LinkError::NoResponse { attempts: 3, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&path) && text.contains("Hello"), "{text}");
}

#[tokio::test]
async fn corrupted_frames_are_dropped_and_counted() {
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { .. } => {
            let mut bad = frame(&info(f.seq, schema_hash()));
            let mid = bad.len() / 2;
            bad[mid] ^= 0x40;
            let mut out = vec![0x13, 0x37, 0x00];
            out.extend(bad);
            out.extend(frame(&info(f.seq, schema_hash())));
            out
        }
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    link.handshake().await.unwrap();
    assert_eq!(link.bad_frames(), 2);
}

#[tokio::test]
async fn a_missing_device_is_named() {
    let err = RobotLink::open("/dev/does-not-exist-gaittune", 115_200, settings())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/dev/does-not-exist-gaittune"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Episodes over a lossy line: what the session and the recoveries make of it.

use firmware_protocol::{
    EpisodePhase, EpisodeStatus, NackCode, RobotState, Status, Step as StepFrame, StopCause,
};

use super::RobotEvent;

fn info_with(ack_seq: u16, version: u16, boot_id: u32) -> RobotMsg {
    match info(ack_seq, schema_hash()) {
        RobotMsg::Info {
            ack_seq,
            robot_id,
            fw_major,
            fw_minor,
            fw_patch,
            param_count,
            schema_hash,
            watchdog_ms,
            step_period_us,
            ..
        } => RobotMsg::Info {
            ack_seq,
            protocol_version: version,
            robot_id,
            fw_major,
            fw_minor,
            fw_patch,
            boot_id,
            param_count,
            schema_hash,
            watchdog_ms,
            step_period_us,
        },
        _ => unreachable!(),
    }
}

fn step_frame(trial: u32, episode: u16, index: u32) -> Vec<u8> {
    frame(&RobotMsg::Step(StepFrame {
        timestamp_us: index * 20_000,
        trial,
        episode,
        step: index,
        reward: 0.25,
        roll: 0.0,
        pitch: 0.0,
        body_height: 0.3,
        max_joint_temp: 40.0,
        faults: 0,
    }))
}

fn heartbeat(uptime_ms: u32, state: RobotState) -> Vec<u8> {
    frame(&RobotMsg::Heartbeat { uptime_ms, state })
}

/// A firmware of protocol `version` whose answer to StartEpisode is `episode(seq)`; Ready
/// follows every ParamsApplied; GetStatus is answered by `status`.
fn episode_firmware(
    version: u16,
    episode: impl Fn(u16) -> Vec<u8> + Send + 'static,
    status: impl Fn(u16) -> RobotMsg + Send + 'static,
) -> String {
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { protocol_version } if protocol_version > version => {
            frame(&RobotMsg::Nack {
                ack_seq: f.seq,
                code: NackCode::UnsupportedVersion,
            })
        }
        HostMsg::Hello { .. } => frame(&info_with(f.seq, version, 42)),
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => {
            let mut out = frame(&echo(f.seq, values.as_slice()));
            out.extend(frame(&RobotMsg::Ready));
            out
        }
        HostMsg::StartEpisode { .. } => episode(f.seq),
        HostMsg::GetStatus => frame(&status(f.seq)),
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    path
}

fn ended_status(ack_seq: u16) -> RobotMsg {
    RobotMsg::Status(Status {
        ack_seq,
        boot_id: 42,
        uptime_ms: 5_000,
        state: RobotState::Resetting,
        params_applied: true,
        phase: EpisodePhase::Ended,
        trial: 7,
        episode: 0,
        steps: 5,
        episode_return: 1.25,
        end_status: EpisodeStatus::Completed,
        stop_cause: StopCause::NotStopped,
        stop_value: 0.0,
    })
}

/// Five steps of trial 7, then a heartbeat that shows the episode over: its EpisodeEnd lost.
fn five_steps_and_no_end(seq: u16) -> Vec<u8> {
    let mut out = frame(&RobotMsg::Ack { ack_seq: seq });
    for i in 0..5 {
        out.extend(step_frame(7, 0, i));
    }
    out.extend(heartbeat(5_000, RobotState::Resetting));
    out
}

async fn ready_link(path: &str) -> RobotLink {
    let mut link = RobotLink::open(path, 115_200, settings()).await.unwrap();
    link.handshake().await.unwrap();
    link.set_params(&[2.0, 30.0]).await.unwrap();
    link.wait_ready(Duration::from_secs(2)).await.unwrap();
    link
}

/// Events until an error or the episode's end.
async fn drain_events(link: &mut RobotLink) -> (Vec<RobotEvent>, Option<LinkError>) {
    let mut events = Vec::new();
    loop {
        match link.next_event().await {
            Ok(ev) => {
                let end = matches!(ev, RobotEvent::EpisodeEnd { .. });
                events.push(ev);
                if end {
                    return (events, None);
                }
            }
            Err(e) => return (events, Some(e)),
        }
    }
}

#[tokio::test]
async fn a_version_2_firmware_gives_back_a_lost_episode_end_from_its_status() {
    let path = episode_firmware(2, five_steps_and_no_end, ended_status);
    let mut link = ready_link(&path).await;
    assert_eq!(link.info().unwrap().protocol_version, 2);
    link.start_episode(7, 0, 5, 1).await.unwrap();
    let (events, err) = drain_events(&mut link).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(
        events[5],
        RobotEvent::EpisodeEnd {
            episode_return: 1.25,
            steps: 5,
            status: EpisodeStatus::Completed,
            recovered: true
        }
    );
    let incidents = link.take_incidents();
    assert!(
        incidents.iter().any(|i| i.kind == "lost_episode_end"),
        "{incidents:?}"
    );
}

#[tokio::test]
async fn a_version_1_firmware_negotiates_down_and_a_lost_end_is_reported_lost() {
    let path = episode_firmware(1, five_steps_and_no_end, ended_status);
    let mut link = ready_link(&path).await;
    assert_eq!(link.info().unwrap().protocol_version, 1);
    link.start_episode(7, 0, 5, 1).await.unwrap();
    let (events, err) = drain_events(&mut link).await;
    assert_eq!(events.len(), 5, "the steps, no end: {events:?}");
    assert!(
        matches!(
            err,
            Some(LinkError::EpisodeLost {
                episode: 0,
                state: Some(RobotState::Resetting),
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn duplicated_steps_count_once_and_lost_ones_are_reported() {
    let path = episode_firmware(
        2,
        |seq| {
            let mut out = frame(&RobotMsg::Ack { ack_seq: seq });
            for i in [0, 1, 1, 3, 4, 4] {
                out.extend(step_frame(7, 0, i));
            }
            out.extend(frame(&RobotMsg::EpisodeEnd {
                trial: 7,
                episode: 0,
                episode_return: 1.25,
                steps: 5,
                status: EpisodeStatus::Completed,
            }));
            out
        },
        ended_status,
    );
    let mut link = ready_link(&path).await;
    link.start_episode(7, 0, 5, 1).await.unwrap();
    let (events, err) = drain_events(&mut link).await;
    assert!(err.is_none(), "{err:?}");
    let shape: Vec<String> = events
        .iter()
        .map(|e| match e {
            RobotEvent::Step(s) => format!("s{}", s.step),
            RobotEvent::StepsMissed { from, to } => format!("gap{from}-{to}"),
            RobotEvent::EpisodeEnd { .. } => "end".into(),
            RobotEvent::SafetyTrip { .. } => "trip".into(),
        })
        .collect();
    assert_eq!(shape, ["s0", "s1", "gap2-3", "s3", "s4", "end"]);
}

#[tokio::test]
async fn frames_left_from_an_earlier_episode_never_become_this_ones() {
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { .. } => frame(&info_with(f.seq, 2, 42)),
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => {
            // An earlier session's trial 7 ends (and trips) just before our answer.
            let mut out = step_frame(7, 0, 3);
            out.extend(frame(&RobotMsg::SafetyTrip {
                trial: 7,
                episode: 0,
                step: 3,
                reason: firmware_protocol::TripReason::Watchdog,
                value: 1001.0,
            }));
            out.extend(frame(&RobotMsg::EpisodeEnd {
                trial: 7,
                episode: 0,
                episode_return: 99.0,
                steps: 4,
                status: EpisodeStatus::SafetyTrip,
            }));
            out.extend(frame(&echo(f.seq, values.as_slice())));
            out.extend(frame(&RobotMsg::Ready));
            out
        }
        HostMsg::StartEpisode { .. } => {
            let mut out = frame(&RobotMsg::Ack { ack_seq: f.seq });
            out.extend(step_frame(7, 0, 0));
            out.extend(frame(&RobotMsg::EpisodeEnd {
                trial: 7,
                episode: 0,
                episode_return: 0.25,
                steps: 1,
                status: EpisodeStatus::Completed,
            }));
            out
        }
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = ready_link(&path).await;
    link.start_episode(7, 0, 1, 1).await.unwrap();
    let (events, err) = drain_events(&mut link).await;
    assert!(err.is_none(), "{err:?}");
    assert!(
        matches!(
            events[..],
            [
                RobotEvent::Step(_),
                RobotEvent::EpisodeEnd {
                    steps: 1,
                    status: EpisodeStatus::Completed,
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    // The old Step and EpisodeEnd were dropped as stale; the old trip, seen before the answer
    // to SetParams, latched nothing.
    assert_eq!(link.stale_frames(), 2);
}

#[tokio::test]
async fn a_reboot_mid_episode_repeats_the_handshake_and_says_so() {
    let boots = Arc::new(Mutex::new(0u32));
    let seen = boots.clone();
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { protocol_version } => {
            let mut b = seen.lock().unwrap();
            *b += 1;
            frame(&info_with(f.seq, protocol_version, 100 + *b))
        }
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => {
            let mut out = frame(&echo(f.seq, values.as_slice()));
            out.extend(heartbeat(9_000, RobotState::Ready));
            out
        }
        HostMsg::StartEpisode { .. } => {
            let mut out = frame(&RobotMsg::Ack { ack_seq: f.seq });
            out.extend(step_frame(7, 0, 0));
            out.extend(heartbeat(9_100, RobotState::Running));
            out.extend(heartbeat(40, RobotState::Idle));
            out
        }
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = ready_link(&path).await;
    link.start_episode(7, 0, 100, 1).await.unwrap();
    let (events, err) = drain_events(&mut link).await;
    assert_eq!(events.len(), 1);
    assert!(
        matches!(err, Some(LinkError::Rebooted { boot_id: 102, .. })),
        "{err:?}"
    );
    assert_eq!(*boots.lock().unwrap(), 2, "the handshake was repeated");
}

#[tokio::test]
async fn an_episode_with_no_end_by_its_deadline_is_lost_not_waited_for() {
    let path = episode_firmware(
        1,
        |seq| {
            let mut out = frame(&RobotMsg::Ack { ack_seq: seq });
            out.extend(step_frame(7, 0, 0));
            out
        },
        ended_status,
    );
    let mut link = RobotLink::open(
        &path,
        115_200,
        LinkSettings {
            episode_margin: Duration::from_millis(100),
            ..settings()
        },
    )
    .await
    .unwrap();
    link.handshake().await.unwrap();
    link.set_params(&[2.0, 30.0]).await.unwrap();
    link.wait_ready(Duration::from_secs(2)).await.unwrap();
    // 10 steps of 20 ms: a deadline of 10 × 20 × 1.25 + 100 = 350 ms, before the 2 s silence.
    link.start_episode(7, 0, 10, 1).await.unwrap();
    let (_, err) = drain_events(&mut link).await;
    let Some(LinkError::EpisodeLost { why, .. }) = err else {
        panic!("{err:?}")
    };
    assert!(why.contains("deadline"), "{why}");
}

#[tokio::test]
async fn a_trip_while_waiting_for_ready_fails_at_once_naming_it() {
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { protocol_version } => frame(&info_with(f.seq, protocol_version, 42)),
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => {
            let mut out = frame(&echo(f.seq, values.as_slice()));
            out.extend(frame(&RobotMsg::SafetyTrip {
                trial: 0,
                episode: 0,
                step: 0,
                reason: firmware_protocol::TripReason::BodyHeight,
                value: 0.04,
            }));
            out
        }
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = RobotLink::open(&path, 115_200, settings()).await.unwrap();
    link.handshake().await.unwrap();
    link.set_params(&[2.0, 30.0]).await.unwrap();
    let started = std::time::Instant::now();
    let err = link.wait_ready(Duration::from_secs(30)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&err, LinkError::Latched { cause, watchdog: false, .. } if cause.contains("BodyHeight")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_retried_start_refused_for_want_of_parameters_is_a_reboot() {
    let boots = Arc::new(Mutex::new(0u32));
    let seen = boots.clone();
    let (path, _) = fake_firmware(move |f| match f.msg {
        HostMsg::Hello { protocol_version } => {
            let mut b = seen.lock().unwrap();
            *b += 1;
            frame(&info_with(f.seq, protocol_version, 200 + *b))
        }
        HostMsg::GetParamInfo { index } => frame(&param_info(f.seq, index)),
        HostMsg::SetParams { values } => {
            let mut out = frame(&echo(f.seq, values.as_slice()));
            out.extend(frame(&RobotMsg::Ready));
            out
        }
        // The robot rebooted after the first StartEpisode: its Ack never came, and the retry
        // meets a robot with no parameters.
        HostMsg::StartEpisode { .. } => frame(&RobotMsg::Nack {
            ack_seq: f.seq,
            code: NackCode::NoParams,
        }),
        _ => frame(&RobotMsg::Ack { ack_seq: f.seq }),
    });
    let mut link = ready_link(&path).await;
    let err = link.start_episode(7, 0, 10, 1).await.unwrap_err();
    assert!(
        matches!(err, LinkError::Rebooted { boot_id: 202, .. }),
        "{err:?}"
    );
}
