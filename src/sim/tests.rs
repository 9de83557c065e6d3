//! Tests of the simulated firmware: the state machine driven by bytes in memory with injected
//! time, and one session over a real pseudo-terminal.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_protocol::{
    decode, encode, EpisodeStatus, FrameAccumulator, HostMsg, NackCode, ParamValues, RobotMsg,
    RobotState, SchemaHasher, TripReason, MAX_FRAME, PROTOCOL_VERSION,
};
use serde_json::Value;

use super::firmware::{EventLog, Firmware, FirmwareOptions, LIMIT_ROLL_RAD};
use super::pty::PtyServer;
use super::synthetic::{SyntheticQuadruped, PARAMS};
use super::*;

const MS: Duration = Duration::from_millis(1);

/// A writer into a shared journal, so tests see event-log lines and frames in one order.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Write for Journal {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut j = self.0.lock().unwrap();
        for line in text.lines().filter(|l| !l.is_empty()) {
            j.push(format!("E {line}"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The host side of an in-memory session with a [`Firmware`], with time driven by hand.
struct Host {
    fw: Firmware<SyntheticQuadruped>,
    now: Duration,
    seq: u16,
    rx: FrameAccumulator,
    inbox: Vec<RobotMsg>,
    heartbeats: Vec<(u32, RobotState)>,
    journal: Journal,
}

fn options() -> FirmwareOptions {
    FirmwareOptions {
        boot_id: 0xB007,
        watchdog_ms: 300,
        reset_delay: 5 * MS,
        ..FirmwareOptions::default()
    }
}

impl Host {
    fn new(opts: FirmwareOptions) -> Host {
        Self::with_model(SyntheticQuadruped::new(1, 1.0), opts)
    }

    fn with_model(model: SyntheticQuadruped, opts: FirmwareOptions) -> Host {
        let journal = Journal::default();
        let fw =
            Firmware::new(model, opts).with_event_log(EventLog::new(Box::new(journal.clone())));
        let mut h = Host {
            fw,
            now: Duration::ZERO,
            seq: 100,
            rx: FrameAccumulator::new(),
            inbox: Vec::new(),
            heartbeats: Vec::new(),
            journal,
        };
        h.poll();
        h
    }

    fn absorb(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(Ok(frame)) = self.rx.push(b) {
                let msg = decode::<RobotMsg>(frame)
                    .expect("the firmware sends valid frames")
                    .msg;
                match msg {
                    RobotMsg::Heartbeat { uptime_ms, state } => {
                        self.heartbeats.push((uptime_ms, state))
                    }
                    other => self.inbox.push(other),
                }
            }
        }
    }

    /// An output callback that records each frame in the journal the moment it is sent.
    fn sink<'a>(journal: &'a Journal, out: &'a mut Vec<u8>) -> impl FnMut(&[u8]) + 'a {
        move |f: &[u8]| {
            if let Ok(frame) = decode::<RobotMsg>(f) {
                journal.0.lock().unwrap().push(format!("F {:?}", frame.msg));
            }
            out.extend_from_slice(f);
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut out = Vec::new();
        {
            let mut sink = Self::sink(&self.journal, &mut out);
            for &b in bytes {
                self.fw.on_byte(b, self.now, &mut sink);
            }
        }
        self.absorb(&out);
    }

    /// Sends `msg` with `seq` exactly.
    fn send_seq(&mut self, seq: u16, msg: HostMsg) {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(seq, &msg, &mut buf).unwrap();
        self.feed(&buf[..n]);
    }

    /// Sends `msg` with the next seq; returns the seq.
    fn send(&mut self, msg: HostMsg) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.send_seq(self.seq, msg);
        self.seq
    }

    fn poll(&mut self) {
        let mut out = Vec::new();
        self.fw
            .poll(self.now, &mut Self::sink(&self.journal, &mut out));
        self.absorb(&out);
    }

    /// Polls until nothing more is due at the current time (runs a fast episode to its end).
    fn pump(&mut self) {
        for _ in 0..100_000 {
            if self.fw.next_deadline() > self.now {
                return;
            }
            self.poll();
        }
        panic!("the firmware never went quiet");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.pump();
    }

    fn take(&mut self) -> Vec<RobotMsg> {
        std::mem::take(&mut self.inbox)
    }

    fn events(&self) -> Vec<Value> {
        self.journal
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("E "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn set_params(&mut self, values: &[f32]) -> Vec<RobotMsg> {
        self.send(HostMsg::SetParams {
            values: ParamValues::from_slice(values).unwrap(),
        });
        self.advance(10 * MS);
        self.take()
    }

    fn start(&mut self, trial: u32, max_steps: u32, seed: u64) -> u16 {
        self.send(HostMsg::StartEpisode {
            trial,
            episode: 0,
            max_steps,
            seed,
        })
    }
}

fn defaults() -> Vec<f32> {
    PARAMS.iter().map(|p| p.default).collect()
}

fn steps(msgs: &[RobotMsg]) -> Vec<firmware_protocol::Step> {
    msgs.iter()
        .filter_map(|m| match m {
            RobotMsg::Step(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn nack(ack_seq: u16, code: NackCode) -> RobotMsg {
    RobotMsg::Nack { ack_seq, code }
}

/// A host with the default parameters applied and the robot Ready.
fn ready_host(opts: FirmwareOptions) -> Host {
    let mut h = Host::new(opts);
    let got = h.set_params(&defaults());
    assert!(
        matches!(got[..], [RobotMsg::ParamsApplied { .. }, RobotMsg::Ready]),
        "{got:?}"
    );
    h
}

#[test]
fn handshake_and_parameter_declarations() {
    let mut h = Host::new(options());
    let seq = h.send(HostMsg::Hello {
        protocol_version: PROTOCOL_VERSION,
    });
    let info = h.take();
    let [RobotMsg::Info {
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
    }] = info[..]
    else {
        panic!("{info:?}")
    };
    assert_eq!((ack_seq, protocol_version), (seq, PROTOCOL_VERSION));
    assert_eq!(robot_id.as_str(), "sim-quadruped");
    assert_eq!((fw_major, fw_minor, fw_patch), (0, 1, 0));
    assert_eq!(
        (boot_id, param_count, watchdog_ms, step_period_us),
        (0xB007, 8, 300, 20_000)
    );

    // The declarations, read back like a host does, hash to the announced schema hash.
    let mut hasher = SchemaHasher::new();
    for index in 0..param_count {
        let seq = h.send(HostMsg::GetParamInfo { index });
        let got = h.take();
        let [RobotMsg::ParamInfo {
            ack_seq,
            index: i,
            name,
            min,
            max,
            default,
        }] = got[..]
        else {
            panic!("{got:?}")
        };
        assert_eq!((ack_seq, i), (seq, index));
        let spec = PARAMS[index as usize];
        assert_eq!(
            (name.as_str(), min, max, default),
            (spec.name, spec.min, spec.max, spec.default)
        );
        hasher.add(name.as_str(), min, max, default);
    }
    assert_eq!(hasher.finish(), schema_hash);
    assert_eq!(hasher.finish(), h.fw.schema_hash());
    let seq = h.send(HostMsg::GetParamInfo { index: 8 });
    assert_eq!(h.take(), vec![nack(seq, NackCode::BadParamIndex)]);
    let seq = h.send(HostMsg::Hello {
        protocol_version: PROTOCOL_VERSION + 1,
    });
    assert_eq!(h.take(), vec![nack(seq, NackCode::UnsupportedVersion)]);
    assert_eq!(h.fw.state(), RobotState::Idle);
    assert_eq!(h.events()[0]["event"], "hello");
}

#[test]
fn set_params_clamps_reports_the_mask_and_resets_to_ready() {
    let mut h = Host::new(options());
    let mut v = defaults();
    v[0] = 9.0; // freq above 4.0
    v[3] = -1.0; // hip below -0.4
    v[5] = 0.123_456_7; // inside: must come back bit-identical
    let seq = h.send(HostMsg::SetParams {
        values: ParamValues::from_slice(&v).unwrap(),
    });
    let got = h.take();
    let [RobotMsg::ParamsApplied {
        ack_seq,
        clamped_mask,
        values,
    }] = got[..]
    else {
        panic!("{got:?}")
    };
    assert_eq!(ack_seq, seq);
    assert_eq!(clamped_mask, 0b1001);
    let applied = values.as_slice();
    assert_eq!((applied[0], applied[3]), (4.0, -0.4));
    for i in [1, 2, 4, 5, 6, 7] {
        assert_eq!(applied[i].to_bits(), v[i].to_bits());
    }
    // Idle -> Resetting; Ready after the reset delay, not before.
    assert_eq!(h.fw.state(), RobotState::Resetting);
    let seq = h.start(1, 10, 1);
    assert_eq!(h.take(), vec![nack(seq, NackCode::NotReady)]);
    h.advance(4 * MS);
    assert!(h.take().is_empty());
    h.advance(2 * MS);
    assert_eq!(h.take(), vec![RobotMsg::Ready]);
    assert_eq!(h.fw.state(), RobotState::Ready);
    // In Ready a new set is applied at once and Ready follows the ParamsApplied.
    let got = h.set_params(&defaults());
    assert!(
        matches!(
            got[..],
            [
                RobotMsg::ParamsApplied {
                    clamped_mask: 0,
                    ..
                },
                RobotMsg::Ready
            ]
        ),
        "{got:?}"
    );
    let ev = h.events();
    assert_eq!(ev[0]["event"], "set_params");
    assert_eq!(ev[0]["clamped_mask"], 0b1001);
    // The refused StartEpisode is a `nack` event, not an episode start.
    assert!(!ev.iter().any(|e| e["event"] == "episode_start"));
    let refused = ev.iter().find(|e| e["event"] == "nack").unwrap();
    assert_eq!(
        (refused["command"].as_str(), refused["reason"].as_str()),
        (Some("episode_start"), Some("NotReady"))
    );
}

#[test]
fn invalid_parameter_sets_are_refused_whole() {
    let mut h = Host::new(options());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = defaults();
        v[2] = bad;
        let seq = h.send(HostMsg::SetParams {
            values: ParamValues::from_slice(&v).unwrap(),
        });
        assert_eq!(h.take(), vec![nack(seq, NackCode::NotFinite)]);
    }
    let seq = h.send(HostMsg::SetParams {
        values: ParamValues::from_slice(&defaults()[..7]).unwrap(),
    });
    assert_eq!(h.take(), vec![nack(seq, NackCode::WrongParamCount)]);
    // Nothing was applied.
    assert_eq!(h.fw.state(), RobotState::Idle);
    let seq = h.start(1, 10, 1);
    assert_eq!(h.take(), vec![nack(seq, NackCode::NoParams)]);
}

#[test]
fn an_episode_is_exactly_max_steps_then_episode_end_with_the_sum() {
    let mut h = ready_host(options());
    let seq = h.start(42, 50, 7);
    h.pump();
    let got = h.take();
    assert_eq!(got[0], RobotMsg::Ack { ack_seq: seq });
    let s = steps(&got);
    assert_eq!(s.len(), 50);
    assert_eq!(got.len(), 52, "Ack, 50 Steps, EpisodeEnd: {got:?}");
    let mut sum = 0f32;
    for (i, st) in s.iter().enumerate() {
        assert_eq!((st.trial, st.episode, st.step), (42, 0, i as u32));
        if i > 0 {
            assert_eq!(
                st.timestamp_us - s[i - 1].timestamp_us,
                20_000,
                "simulated time"
            );
        }
        sum += st.reward;
    }
    let RobotMsg::EpisodeEnd {
        trial,
        episode_return,
        steps: n,
        status,
        ..
    } = got[51]
    else {
        panic!("{:?}", got[51])
    };
    assert_eq!((trial, n, status), (42, 50, EpisodeStatus::Completed));
    assert_eq!(episode_return.to_bits(), sum.to_bits());
    assert!(sum > 0.0);
    // Resetting, then Ready again.
    assert_eq!(h.fw.state(), RobotState::Resetting);
    h.advance(10 * MS);
    assert_eq!(h.take(), vec![RobotMsg::Ready]);
    // An empty episode completes at once.
    let seq = h.start(43, 0, 7);
    let got = h.take();
    assert_eq!(got[0], RobotMsg::Ack { ack_seq: seq });
    assert!(matches!(
        got[1],
        RobotMsg::EpisodeEnd {
            steps: 0,
            status: EpisodeStatus::Completed,
            ..
        }
    ));
}

#[test]
fn steps_are_paced_by_the_step_delay() {
    let mut h = ready_host(FirmwareOptions {
        step_delay: 20 * MS,
        ..options()
    });
    h.start(1, 10, 3);
    h.pump();
    assert_eq!(steps(&h.take()).len(), 1, "step 0 runs at once");
    h.advance(19 * MS);
    assert!(steps(&h.take()).is_empty());
    h.send(HostMsg::Heartbeat { host_time_ms: 0 });
    h.advance(MS);
    assert_eq!(steps(&h.take()).len(), 1);
    assert_eq!(h.fw.state(), RobotState::Running);
}

#[test]
fn a_retried_command_is_answered_again_but_not_executed_again() {
    let mut h = ready_host(FirmwareOptions {
        step_delay: 20 * MS,
        ..options()
    });
    let start = HostMsg::StartEpisode {
        trial: 5,
        episode: 0,
        max_steps: 3,
        seed: 9,
    };
    h.send_seq(500, start);
    h.pump();
    h.send(HostMsg::Heartbeat { host_time_ms: 1 }); // heartbeats do not defeat detection
    h.send_seq(500, start);
    h.advance(100 * MS);
    let got = h.take();
    let acks = got
        .iter()
        .filter(|m| **m == RobotMsg::Ack { ack_seq: 500 })
        .count();
    assert_eq!(acks, 2, "{got:?}");
    assert!(
        !got.iter().any(|m| matches!(m, RobotMsg::Nack { .. })),
        "{got:?}"
    );
    assert_eq!(steps(&got).len(), 3);
    let ends = got
        .iter()
        .filter(|m| matches!(m, RobotMsg::EpisodeEnd { .. }))
        .count();
    assert_eq!(ends, 1);
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["event"] == "episode_start")
            .count(),
        1
    );

    // A retried SetParams in Ready: the stored answer, then Ready again; no reset.
    h.advance(10 * MS);
    assert_eq!(h.fw.state(), RobotState::Ready);
    h.take();
    let set = HostMsg::SetParams {
        values: ParamValues::from_slice(&defaults()).unwrap(),
    };
    h.send_seq(600, set);
    let first = h.take();
    h.send_seq(600, set);
    let again = h.take();
    assert_eq!(first, again);
    assert_eq!(h.fw.state(), RobotState::Ready);

    // The same seq with different bytes is a new command.
    h.send_seq(600, HostMsg::GetParamInfo { index: 1 });
    assert!(matches!(
        h.take()[..],
        [RobotMsg::ParamInfo {
            ack_seq: 600,
            index: 1,
            ..
        }]
    ));
}

#[test]
fn estop_mid_episode_stops_before_the_next_step_and_latches() {
    let mut h = ready_host(options());
    h.start(7, 1000, 1);
    for _ in 0..6 {
        h.poll(); // six control steps (the first poll after Ack is step 0)
    }
    let before = h.take();
    assert_eq!(steps(&before).len(), 6);
    let estop_seq = h.send(HostMsg::EStop);
    let got = h.take();
    assert_eq!(got[0], RobotMsg::Ack { ack_seq: estop_seq }, "{got:?}");
    assert!(
        matches!(
            got[1],
            RobotMsg::EpisodeEnd {
                trial: 7,
                steps: 6,
                status: EpisodeStatus::EStopped,
                ..
            }
        ),
        "{got:?}"
    );
    h.advance(1000 * MS);
    assert!(steps(&h.take()).is_empty(), "no Step after EStop");
    assert_eq!(h.fw.state(), RobotState::Stopped);
    assert_eq!(h.heartbeats.last().unwrap().1, RobotState::Stopped);

    // Latched: parameters and episodes refused; Hello and EStop still answered.
    let seq = h.set_params_seq();
    assert_eq!(h.take(), vec![nack(seq, NackCode::EStopLatched)]);
    let seq = h.start(8, 10, 1);
    assert_eq!(h.take(), vec![nack(seq, NackCode::EStopLatched)]);
    let seq = h.send(HostMsg::EStop);
    assert_eq!(h.take(), vec![RobotMsg::Ack { ack_seq: seq }]);

    // Release: Ack, reset, Ready (parameters are still applied), episodes run again.
    let seq = h.send(HostMsg::ClearEStop);
    assert_eq!(h.take(), vec![RobotMsg::Ack { ack_seq: seq }]);
    assert_eq!(h.fw.state(), RobotState::Resetting);
    h.advance(10 * MS);
    assert_eq!(h.take(), vec![RobotMsg::Ready]);
    h.start(9, 3, 1);
    h.pump();
    assert_eq!(steps(&h.take()).len(), 3);

    // The event log has the step at which EStop arrived, written before the Ack went out.
    let ev = h.events();
    let estop = ev.iter().find(|e| e["event"] == "estop").unwrap();
    assert_eq!(
        (estop["trial"].as_u64(), estop["step"].as_u64()),
        (Some(7), Some(6))
    );
    let journal = h.journal.0.lock().unwrap().clone();
    let logged = journal
        .iter()
        .position(|l| l.contains("\"estop\""))
        .unwrap();
    let acked = journal
        .iter()
        .position(|l| *l == format!("F Ack {{ ack_seq: {estop_seq} }}"))
        .unwrap();
    assert!(logged < acked, "{journal:?}");
    assert_eq!(ev.iter().filter(|e| e["event"] == "clear_estop").count(), 1);
    let second_estop = ev.iter().filter(|e| e["event"] == "estop").nth(1).unwrap();
    assert!(second_estop["step"].is_null(), "no episode was running");
}

impl Host {
    fn set_params_seq(&mut self) -> u16 {
        self.send(HostMsg::SetParams {
            values: ParamValues::from_slice(&defaults()).unwrap(),
        })
    }
}

#[test]
fn abort_ends_the_episode_and_resets() {
    let mut h = ready_host(options());
    h.start(3, 1000, 1);
    h.poll();
    h.poll();
    h.take();
    let seq = h.send(HostMsg::Abort);
    let got = h.take();
    assert_eq!(got[0], RobotMsg::Ack { ack_seq: seq });
    assert!(matches!(
        got[1],
        RobotMsg::EpisodeEnd {
            steps: 2,
            status: EpisodeStatus::Aborted,
            ..
        }
    ));
    h.advance(10 * MS);
    assert_eq!(h.take(), vec![RobotMsg::Ready]);
    // Abort with nothing running is acknowledged and does nothing.
    let seq = h.send(HostMsg::Abort);
    assert_eq!(h.take(), vec![RobotMsg::Ack { ack_seq: seq }]);
    assert_eq!(h.fw.state(), RobotState::Ready);
}

#[test]
fn commands_refused_in_the_wrong_state() {
    let mut h = ready_host(FirmwareOptions {
        step_delay: 20 * MS,
        ..options()
    });
    h.start(1, 100, 1);
    h.pump();
    let seq = h.set_params_seq();
    assert_eq!(h.take().last(), Some(&nack(seq, NackCode::InvalidState)));
    let seq = h.start(2, 100, 1);
    assert_eq!(h.take(), vec![nack(seq, NackCode::InvalidState)]);
}

#[test]
fn the_watchdog_trips_when_host_heartbeats_stop() {
    let mut h = ready_host(FirmwareOptions {
        step_delay: 20 * MS,
        ..options()
    });
    h.start(11, 10_000, 1);
    // Heartbeats every 50 ms keep it running (watchdog 300 ms).
    for i in 0..20 {
        h.advance(50 * MS);
        h.send(HostMsg::Heartbeat { host_time_ms: i });
    }
    assert_eq!(h.fw.state(), RobotState::Running);
    let got = h.take();
    assert!(steps(&got).len() > 40);
    assert!(!got.iter().any(|m| matches!(m, RobotMsg::SafetyTrip { .. })));
    // The host goes silent.
    h.advance(300 * MS);
    assert_eq!(
        h.fw.state(),
        RobotState::Running,
        "not yet: exactly the timeout"
    );
    h.advance(2 * MS);
    let got = h.take();
    let trip = got
        .iter()
        .position(|m| {
            matches!(
                m,
                RobotMsg::SafetyTrip {
                    reason: TripReason::Watchdog,
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("{got:?}"));
    let RobotMsg::SafetyTrip {
        trial, value, step, ..
    } = got[trip]
    else {
        unreachable!()
    };
    assert_eq!(trial, 11);
    assert!(value > 300.0, "{value}");
    assert!(matches!(
        got[trip + 1],
        RobotMsg::EpisodeEnd {
            status: EpisodeStatus::SafetyTrip,
            steps: n,
            ..
        } if n == step
    ));
    assert_eq!(h.fw.state(), RobotState::Stopped);
    let ev = h.events();
    assert!(ev
        .iter()
        .any(|e| e["event"] == "watchdog" && e["trial"] == 11));
    h.advance(500 * MS);
    assert!(steps(&h.take()).is_empty());
}

/// Runs an episode with `values` on a fresh Ready robot; returns everything after the Ack.
fn episode_with(values: &[f32], max_steps: u32) -> (Host, Vec<RobotMsg>) {
    let mut h = Host::new(options());
    h.set_params(values);
    h.start(1, max_steps, 4);
    h.pump();
    let got = h.take();
    (h, got)
}

#[test]
fn unsafe_parameters_trip_the_firmware_limits_mid_episode() {
    let mut v = defaults();
    v[0] = 4.0;
    v[1] = 0.8;
    let (h, got) = episode_with(&v, 2000);
    let s = steps(&got);
    let RobotMsg::SafetyTrip {
        reason,
        value,
        step,
        ..
    } = got[got.len() - 2]
    else {
        panic!("{:?}", &got[got.len() - 2..])
    };
    assert_eq!(reason, TripReason::Roll);
    assert!(value.abs() > LIMIT_ROLL_RAD);
    assert_eq!(
        step as usize,
        s.len() - 1,
        "the tripping step is the last sent"
    );
    assert!(s.len() > 10 && s.len() < 2000, "mid-episode: {}", s.len());
    assert!(matches!(
        got[got.len() - 1],
        RobotMsg::EpisodeEnd {
            status: EpisodeStatus::SafetyTrip,
            ..
        }
    ));
    assert_eq!(h.fw.state(), RobotState::Stopped);
    assert!(h
        .events()
        .iter()
        .any(|e| e["event"] == "safety_trip" && e["reason"] == "Roll"));

    let mut sag = defaults();
    sag[3] = -0.4;
    sag[6] = 5.0;
    let (_, got) = episode_with(&sag, 2000);
    assert!(got.iter().any(|m| matches!(
        m,
        RobotMsg::SafetyTrip {
            reason: TripReason::BodyHeight,
            ..
        }
    )));

    // The defaults run a whole episode without a trip.
    let (h, got) = episode_with(&defaults(), 200);
    assert_eq!(steps(&got).len(), 200);
    assert_eq!(h.fw.state(), RobotState::Resetting);
}

#[test]
fn corrupted_frames_are_counted_and_ignored() {
    let mut h = Host::new(options());
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(
        1,
        &HostMsg::Hello {
            protocol_version: 1,
        },
        &mut buf,
    )
    .unwrap();
    let mut bad = buf[..n].to_vec();
    bad[n - 2] = if bad[n - 2] == 0xFF { 0xFE } else { 0xFF }; // CRC mismatch
    h.feed(&bad);
    h.feed(&[0x05, 0x01, 0x00]); // COBS code running past the end
    h.feed(&[0xAA; 700]); // over-long garbage
    h.feed(&[0x00, 0x00]); // ends it; an empty frame is not an error
    let mut wrong_direction = [0u8; MAX_FRAME];
    let m = encode(1, &RobotMsg::Ready, &mut wrong_direction).unwrap();
    h.feed(&wrong_direction[..m]);
    assert!(h.take().is_empty());
    assert_eq!(h.fw.bad_frames(), 4);
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["event"] == "bad_frame")
            .count(),
        4
    );
    // The next good frame is served.
    let seq = h.send(HostMsg::Hello {
        protocol_version: 1,
    });
    assert!(matches!(h.take()[..], [RobotMsg::Info { ack_seq, .. }] if ack_seq == seq));
}

#[test]
fn fuzzed_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut h = ready_host(options());
    for _ in 0..20_000 {
        let b: u8 = if rng.gen_bool(0.05) { 0 } else { rng.gen() };
        h.feed(&[b]);
        if rng.gen_bool(0.01) {
            h.advance(7 * MS);
        }
    }
}

#[test]
fn same_seed_and_parameters_give_the_same_step_stream() {
    let run = |robot_seed: u64, seed: u64| {
        let mut h = Host::with_model(SyntheticQuadruped::new(robot_seed, 1.0), options());
        h.set_params(&defaults());
        h.start(1, 100, seed);
        h.pump();
        steps(&h.take())
    };
    let a = run(1, 77);
    assert_eq!(a.len(), 100);
    assert_eq!(a, run(1, 77));
    assert_ne!(a, run(1, 78));
    assert_ne!(a, run(2, 77));
}

#[test]
fn heartbeats_every_100_ms_with_the_state() {
    let mut h = Host::new(options());
    for _ in 0..10 {
        h.advance(50 * MS);
    }
    // Boot, then every 100 ms of 500 ms.
    assert_eq!(h.heartbeats.len(), 6, "{:?}", h.heartbeats);
    assert!(h.heartbeats.iter().all(|&(_, s)| s == RobotState::Idle));
    assert!(h.heartbeats.windows(2).all(|w| w[1].0 >= w[0].0 + 100));
}

fn read_frames_until<F: FnMut(&RobotMsg) -> bool>(
    port: &mut std::fs::File,
    acc: &mut FrameAccumulator,
    mut want: F,
) -> RobotMsg {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let n = port.read(&mut buf).unwrap();
        for &b in &buf[..n] {
            if let Some(Ok(frame)) = acc.push(b) {
                if let Ok(f) = decode::<RobotMsg>(frame) {
                    if want(&f.msg) {
                        return f.msg;
                    }
                }
            }
        }
    }
    panic!("no matching frame from the simulated robot");
}

#[test]
fn hello_over_a_real_pty_and_again_after_reopening() {
    let pty = PtyServer::create().unwrap();
    let path = pty.slave_path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut pty = pty;
        let model = SyntheticQuadruped::new(1, 1.0);
        let mut fw = Firmware::new(model, SimOptions::default().firmware_options(77));
        serve(&mut fw, &mut pty, Instant::now(), || {
            !stop2.load(Ordering::Relaxed)
        })
        .unwrap();
    });
    for round in 0..2u16 {
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut wire = vec![0u8];
        let mut buf = [0u8; MAX_FRAME];
        // Seq 0x0A0D: the bytes 0x0A and 0x0D must pass the pty untranslated.
        let seq = 0x0A0D + round;
        let n = encode(
            seq,
            &HostMsg::Hello {
                protocol_version: 1,
            },
            &mut buf,
        )
        .unwrap();
        wire.extend_from_slice(&buf[..n]);
        port.write_all(&wire).unwrap();
        let mut acc = FrameAccumulator::new();
        let info = read_frames_until(&mut port, &mut acc, |m| matches!(m, RobotMsg::Info { .. }));
        let RobotMsg::Info {
            ack_seq,
            robot_id,
            boot_id,
            param_count,
            ..
        } = info
        else {
            unreachable!()
        };
        assert_eq!((ack_seq, boot_id, param_count), (seq, 77, 8));
        assert_eq!(robot_id.as_str(), "sim-quadruped");
        // Heartbeats flow too.
        read_frames_until(&mut port, &mut acc, |m| {
            matches!(m, RobotMsg::Heartbeat { .. })
        });
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn options_are_validated_with_clear_messages() {
    let ok = SimOptions::default();
    ok.validate().unwrap();
    let e = SimOptions {
        step_delay_ms: -1.0,
        ..ok.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--step-delay-ms"), "{e}");
    let e = SimOptions {
        noise: f64::NAN,
        ..ok.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--noise"), "{e}");
    let e = SimOptions {
        watchdog_ms: 0,
        ..ok
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--watchdog-ms"), "{e}");
    assert_ne!(fresh_boot_id(), 0);
}

fn status(h: &mut Host) -> firmware_protocol::Status {
    let seq = h.send(HostMsg::GetStatus);
    let got = h.take();
    match got[..] {
        [RobotMsg::Status(s)] if s.ack_seq == seq => s,
        _ => panic!("expected one Status answering {seq}: {got:?}"),
    }
}

fn with_quirks(quirks: &[&str]) -> FirmwareOptions {
    FirmwareOptions {
        quirks: super::quirks::Quirks::parse(quirks).unwrap(),
        ..options()
    }
}

#[test]
fn status_reports_the_episode_running_then_its_end_and_why_it_is_latched() {
    use firmware_protocol::{EpisodePhase, StopCause};
    let mut h = Host::new(options());
    let s = status(&mut h);
    assert_eq!(
        (s.boot_id, s.state, s.params_applied, s.phase),
        (0xB007, RobotState::Idle, false, EpisodePhase::NoEpisode)
    );
    h.set_params(&defaults());
    h.start(12, 1000, 1);
    for _ in 0..5 {
        h.poll();
    }
    let sent = steps(&h.take());
    let s = status(&mut h);
    assert_eq!(
        (s.state, s.phase, s.trial, s.steps),
        (RobotState::Running, EpisodePhase::Running, 12, 5)
    );
    let sum = sent.iter().fold(0f32, |a, st| a + st.reward);
    assert_eq!(s.episode_return.to_bits(), sum.to_bits());
    h.send(HostMsg::EStop);
    let end = h.take();
    let s = status(&mut h);
    assert_eq!(
        (s.state, s.phase, s.end_status, s.stop_cause, s.steps),
        (
            RobotState::Stopped,
            EpisodePhase::Ended,
            EpisodeStatus::EStopped,
            StopCause::EStop,
            5
        ),
        "{end:?}"
    );
    // GetStatus is not stored: a retried EStop-free command after it is still recognised.
    let start = HostMsg::ClearEStop;
    h.send_seq(900, start);
    h.take();
    status(&mut h);
    h.send_seq(900, start);
    assert_eq!(h.take(), vec![RobotMsg::Ack { ack_seq: 900 }]);
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["event"] == "clear_estop")
            .count(),
        1
    );
    h.advance(10 * MS);
    assert_eq!(h.take(), vec![RobotMsg::Ready]);
    let s = status(&mut h);
    assert_eq!(
        (s.state, s.stop_cause),
        (RobotState::Ready, StopCause::NotStopped)
    );

    // A firmware trip records its reason and value; a later EStop keeps the first cause.
    let mut v = defaults();
    v[0] = 4.0;
    v[1] = 0.8;
    let (mut h, got) = episode_with(&v, 2000);
    let Some(RobotMsg::SafetyTrip { reason, value, .. }) = got
        .iter()
        .find(|m| matches!(m, RobotMsg::SafetyTrip { .. }))
        .copied()
    else {
        panic!("no trip: {got:?}")
    };
    h.send(HostMsg::EStop);
    h.take();
    let s = status(&mut h);
    assert_eq!(s.stop_cause, StopCause::from_trip(reason));
    assert_eq!(s.stop_value.to_bits(), value.to_bits());
    assert_eq!(s.end_status, EpisodeStatus::SafetyTrip);
}

#[test]
fn a_reboot_drops_the_episode_without_an_end_and_starts_afresh() {
    use firmware_protocol::EpisodePhase;
    let mut h = ready_host(options());
    h.advance(500 * MS);
    h.start(3, 1000, 1);
    for _ in 0..4 {
        h.poll();
    }
    h.take();
    let uptime_before = h.heartbeats.last().unwrap().0;
    assert!(uptime_before >= 400, "{uptime_before}");
    h.fw.reboot(h.now, 0x5EED);
    h.advance(150 * MS);
    let got = h.take();
    assert!(
        !got.iter()
            .any(|m| matches!(m, RobotMsg::EpisodeEnd { .. } | RobotMsg::Step(_))),
        "{got:?}"
    );
    let (uptime, state) = *h.heartbeats.last().unwrap();
    assert!(uptime < uptime_before, "uptime restarts: {uptime}");
    assert_eq!(state, RobotState::Idle);
    let s = status(&mut h);
    assert_eq!(
        (s.boot_id, s.params_applied, s.phase),
        (0x5EED, false, EpisodePhase::NoEpisode)
    );
    let seq = h.start(4, 10, 1);
    assert_eq!(h.take(), vec![nack(seq, NackCode::NoParams)]);
    assert!(h.events().iter().any(|e| e["event"] == "reboot"));
}

#[test]
fn quirk_reboot_at_step_reboots_once_mid_episode() {
    let mut h = ready_host(with_quirks(&["reboot-at-step=3"]));
    let boot = h.fw.boot_id();
    h.start(1, 10, 1);
    h.pump();
    assert_eq!(steps(&h.take()).len(), 3);
    assert_ne!(h.fw.boot_id(), boot);
    assert_eq!(h.fw.state(), RobotState::Idle);
    h.set_params(&defaults());
    h.start(1, 10, 1);
    h.pump();
    assert_eq!(steps(&h.take()).len(), 10, "only once per process");
}

#[test]
fn quirk_v1_only_refuses_version_2_and_ignores_get_status() {
    let mut h = Host::new(with_quirks(&["v1-only"]));
    let seq = h.send(HostMsg::Hello {
        protocol_version: 2,
    });
    assert_eq!(h.take(), vec![nack(seq, NackCode::UnsupportedVersion)]);
    h.send(HostMsg::Hello {
        protocol_version: 1,
    });
    assert!(matches!(
        h.take()[..],
        [RobotMsg::Info {
            protocol_version: 1,
            ..
        }]
    ));
    h.send(HostMsg::GetStatus);
    assert!(h.take().is_empty());
    assert_eq!(h.fw.bad_frames(), 1);
    // A version-2 firmware answers Hello{2} in kind.
    let mut h = Host::new(options());
    h.send(HostMsg::Hello {
        protocol_version: 2,
    });
    assert!(matches!(
        h.take()[..],
        [RobotMsg::Info {
            protocol_version: 2,
            ..
        }]
    ));
}

#[test]
fn quirk_runtime_limit_clamps_inside_the_declared_range_and_reports_it() {
    let name = PARAMS[0].name;
    let spec = format!("limit={name}:1.0:1.5");
    let mut h = Host::new(with_quirks(&[&spec]));
    let mut v = defaults();
    v[0] = 2.5;
    let got = h.set_params(&v);
    let RobotMsg::ParamsApplied {
        clamped_mask,
        values,
        ..
    } = got[0]
    else {
        panic!("{got:?}")
    };
    assert_eq!(clamped_mask, 1);
    assert_eq!(values.as_slice()[0], 1.5);
    let mut h = Host::new(with_quirks(&[&spec, "no-clamp-bit"]));
    let got = h.set_params(&v);
    assert!(matches!(
        got[0],
        RobotMsg::ParamsApplied {
            clamped_mask: 0,
            ..
        }
    ));
    let bad = Quirks::parse(&["limit=nope:0:1"]).unwrap();
    assert!(firmware::check_quirks(&PARAMS, &bad)
        .unwrap_err()
        .contains("nope"));
}

#[test]
fn quirk_trip_in_reset_trips_outside_an_episode() {
    let mut h = Host::new(with_quirks(&["trip-in-reset=1"]));
    let got = h.set_params(&defaults());
    assert!(
        matches!(
            got[..],
            [
                RobotMsg::ParamsApplied { .. },
                RobotMsg::SafetyTrip {
                    trial: 0,
                    episode: 0,
                    step: 0,
                    reason: TripReason::BodyHeight,
                    ..
                }
            ]
        ),
        "{got:?}"
    );
    assert_eq!(h.fw.state(), RobotState::Stopped);
}

#[test]
fn quirks_that_break_the_spec_do_what_they_say() {
    // no-ready: heartbeats say Ready, no Ready frame.
    let mut h = Host::new(with_quirks(&["no-ready"]));
    let got = h.set_params(&defaults());
    assert!(
        matches!(got[..], [RobotMsg::ParamsApplied { .. }]),
        "{got:?}"
    );
    h.advance(150 * MS);
    assert_eq!(h.heartbeats.last().unwrap().1, RobotState::Ready);
    // late-estop=3: Ack, then three more steps.
    let mut h = ready_host(with_quirks(&["late-estop=3"]));
    h.start(1, 100, 1);
    h.poll();
    h.take();
    h.send(HostMsg::EStop);
    h.pump();
    let got = h.take();
    assert!(matches!(got[0], RobotMsg::Ack { .. }));
    assert_eq!(steps(&got).len(), 3, "{got:?}");
    assert_eq!(h.fw.state(), RobotState::Stopped);
    // no-latch: SetParams accepted after EStop.
    let mut h = ready_host(with_quirks(&["no-latch"]));
    h.send(HostMsg::EStop);
    h.take();
    assert!(matches!(
        h.set_params(&defaults())[0],
        RobotMsg::ParamsApplied { .. }
    ));
    // ignore-abort: Ack, no EpisodeEnd.
    let mut h = ready_host(with_quirks(&["ignore-abort"]));
    h.start(1, 1000, 1);
    h.poll();
    h.send(HostMsg::Abort);
    let got = h.take();
    assert!(!got.iter().any(|m| matches!(m, RobotMsg::EpisodeEnd { .. })));
    assert_eq!(h.fw.state(), RobotState::Running);
    // step-before-ack and miscount-steps.
    let mut h = ready_host(with_quirks(&["step-before-ack", "miscount-steps"]));
    let seq = h.start(1, 4, 1);
    h.pump();
    let got = h.take();
    assert!(matches!(got[0], RobotMsg::Step(_)), "{got:?}");
    assert_eq!(got[1], RobotMsg::Ack { ack_seq: seq });
    assert!(got
        .iter()
        .any(|m| matches!(m, RobotMsg::EpisodeEnd { steps: 5, .. })));
    // no-retry-store: a retried StartEpisode is executed again (Nack InvalidState).
    let mut h = ready_host(FirmwareOptions {
        step_delay: 20 * MS,
        ..with_quirks(&["no-retry-store"])
    });
    let start = HostMsg::StartEpisode {
        trial: 5,
        episode: 0,
        max_steps: 3,
        seed: 9,
    };
    h.send_seq(500, start);
    h.send_seq(500, start);
    let got = h.take();
    assert!(got.contains(&nack(500, NackCode::InvalidState)), "{got:?}");
    // bad-schema-hash.
    let good = Host::new(options()).fw.schema_hash();
    assert_ne!(
        Host::new(with_quirks(&["bad-schema-hash"]))
            .fw
            .schema_hash(),
        good
    );
}
