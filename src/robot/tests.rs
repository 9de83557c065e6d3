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
