//! The physics quadruped behind the simulated firmware: determinism (offline and through the
//! whole daemon), the firmware's own safety on a falling gait, the baseline walking forward,
//! EStop within one step, and the Step stream over a real pseudo-terminal matching what the
//! physics produced.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use firmware_protocol::{
    decode, encode, EpisodeStatus, FrameAccumulator, HostMsg, ParamValues, RobotMsg, RobotState,
    Step, TripReason, MAX_FRAME,
};
use gaittune::sim::firmware::{Firmware, FirmwareOptions, RobotModel, Telemetry};
use gaittune::sim::physics::{replay, PhysicsQuadruped, PARAMS};
use serde_json::Value;

fn defaults() -> Vec<f32> {
    PARAMS.iter().map(|p| p.default).collect()
}

/// A gait that throws the robot over: big, fast, hips far back, legs out of phase.
fn falling_gait() -> Vec<f32> {
    let mut v = defaults();
    v[0] = 0.8; // hip_amp
    v[1] = -1.2; // hip_offset
    v[2] = 0.8; // knee_amp
    v[5] = 1.0; // phase_fr
    v[8] = 3.0; // swing_hz
    v[9] = 3.0; // stance_hz
    v
}

/// The host side of an in-memory session with a firmware running the physics robot; time
/// is driven by hand.
struct Host {
    fw: Firmware<PhysicsQuadruped>,
    now: Duration,
    seq: u16,
    rx: FrameAccumulator,
    inbox: Vec<RobotMsg>,
}

impl Host {
    fn new(model: PhysicsQuadruped) -> Host {
        let opts = FirmwareOptions {
            reset_delay: Duration::from_millis(5),
            watchdog_ms: 60_000,
            ..FirmwareOptions::default()
        };
        Host {
            fw: Firmware::new(model, opts),
            now: Duration::ZERO,
            seq: 0,
            rx: FrameAccumulator::new(),
            inbox: Vec::new(),
        }
    }

    fn absorb(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(Ok(stuffed)) = self.rx.push(b) {
                let frame = decode::<RobotMsg>(stuffed).expect("the firmware sends valid frames");
                if !matches!(frame.msg, RobotMsg::Heartbeat { .. }) {
                    self.inbox.push(frame.msg);
                }
            }
        }
    }

    fn send(&mut self, msg: HostMsg) {
        self.seq += 1;
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(self.seq, &msg, &mut buf).unwrap();
        let mut out = Vec::new();
        for &b in &buf[..n] {
            self.fw
                .on_byte(b, self.now, &mut |f: &[u8]| out.extend_from_slice(f));
        }
        self.absorb(&out);
    }

    /// Advances time by `dt` and polls once (at most one control step).
    fn tick(&mut self, dt: Duration) {
        self.now += dt;
        let mut out = Vec::new();
        self.fw
            .poll(self.now, &mut |f: &[u8]| out.extend_from_slice(f));
        self.absorb(&out);
    }

    fn steps(&self) -> Vec<Step> {
        self.inbox
            .iter()
            .filter_map(|m| match m {
                RobotMsg::Step(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// SetParams, wait for Ready, StartEpisode.
    fn start(&mut self, values: &[f32], max_steps: u32, seed: u64) {
        self.tick(Duration::ZERO);
        let values = ParamValues::from_slice(values).unwrap();
        self.send(HostMsg::SetParams { values });
        for _ in 0..10 {
            self.tick(Duration::from_millis(5));
        }
        assert_eq!(self.fw.state(), RobotState::Ready);
        self.send(HostMsg::StartEpisode {
            trial: 1,
            episode: 0,
            max_steps,
            seed,
        });
        assert_eq!(self.fw.state(), RobotState::Running);
    }
}

#[test]
fn same_seed_same_telemetry_bit_for_bit() {
    let run = || {
        let m = PhysicsQuadruped::new(4, 1.0, false);
        let mut ep = m.start_episode(&defaults(), 99);
        (0..150)
            .map(|k| m.step(&mut ep, k))
            .collect::<Vec<Telemetry>>()
    };
    let a = run();
    let b = run();
    let bits = |t: &[Telemetry]| -> Vec<[u32; 6]> {
        t.iter()
            .map(|s| {
                [
                    s.reward.to_bits(),
                    s.roll.to_bits(),
                    s.pitch.to_bits(),
                    s.body_height.to_bits(),
                    s.max_joint_temp.to_bits(),
                    s.faults,
                ]
            })
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn baseline_gait_walks_forward() {
    let m = PhysicsQuadruped::new(1, 1.0, false);
    for seed in [1, 2, 3] {
        let r = replay(&m, &defaults(), seed, 400);
        assert!(r.trip.is_none(), "seed {seed}: {:?}", r.trip);
        let v = r.mean_forward_speed();
        assert!(v > 0.01, "seed {seed}: mean forward speed {v} m/s");
        // Slowly, and upright all the way.
        assert!(v < 0.1, "seed {seed}: {v}");
        for f in &r.frames {
            assert!(f.telemetry.roll.abs() < 0.3 && f.telemetry.pitch.abs() < 0.3);
            assert!(f.telemetry.body_height > 0.2, "{f:?}");
        }
    }
}

#[test]
fn falling_gait_trips_the_firmwares_own_safety() {
    let mut host = Host::new(PhysicsQuadruped::new(1, 1.0, false));
    host.start(&falling_gait(), 1000, 7);
    for _ in 0..1000 {
        host.tick(Duration::from_millis(1));
        if host.fw.state() != RobotState::Running {
            break;
        }
    }
    assert_eq!(
        host.fw.state(),
        RobotState::Stopped,
        "the robot did not fall"
    );
    let steps = host.steps();
    let trip = host
        .inbox
        .iter()
        .find_map(|m| match m {
            RobotMsg::SafetyTrip { step, reason, .. } => Some((*step, *reason)),
            _ => None,
        })
        .expect("a SafetyTrip frame");
    assert!(
        matches!(
            trip.1,
            TripReason::Roll | TripReason::Pitch | TripReason::BodyHeight
        ),
        "{trip:?}"
    );
    // The tripping step is the last Step sent, well before the episode's end.
    assert_eq!(steps.last().unwrap().step, trip.0);
    assert!(trip.0 < 500, "{trip:?}");
    let last = steps.last().unwrap();
    assert!(
        last.roll.abs() > 0.8 || last.pitch.abs() > 0.8 || last.body_height < 0.08,
        "{last:?}"
    );
    assert!(host.inbox.iter().any(|m| matches!(
        m,
        RobotMsg::EpisodeEnd {
            status: EpisodeStatus::SafetyTrip,
            ..
        }
    )));
}

#[test]
fn physics_robot_obeys_estop_within_one_step() {
    let mut host = Host::new(PhysicsQuadruped::new(1, 1.0, false));
    host.start(&defaults(), 1000, 3);
    for _ in 0..25 {
        host.tick(Duration::from_millis(1));
    }
    let before = host.steps().len();
    assert_eq!(before, 25);
    host.send(HostMsg::EStop);
    assert_eq!(host.fw.state(), RobotState::Stopped);
    for _ in 0..50 {
        host.tick(Duration::from_millis(1));
    }
    // Not one more control step after the EStop.
    assert_eq!(host.steps().len(), before);
    assert!(host.inbox.iter().any(|m| matches!(
        m,
        RobotMsg::EpisodeEnd {
            status: EpisodeStatus::EStopped,
            steps: 25,
            ..
        }
    )));
}

/// A raw host on the simulated robot's pseudo-terminal.
struct PtyHost {
    file: std::fs::File,
    seq: u16,
    rx: FrameAccumulator,
}

impl PtyHost {
    fn open(path: &str) -> PtyHost {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, SpecialCharacterIndices};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(path)
            .expect("open the pty");
        let mut t = tcgetattr(&file).unwrap();
        cfmakeraw(&mut t);
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 1;
        tcsetattr(&file, SetArg::TCSANOW, &t).unwrap();
        PtyHost {
            file,
            seq: 0,
            rx: FrameAccumulator::new(),
        }
    }

    fn send(&mut self, msg: HostMsg) {
        self.seq += 1;
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(self.seq, &msg, &mut buf).unwrap();
        self.file.write_all(&buf[..n]).unwrap();
    }

    /// Reads frames until `done` says so (heartbeats answered with ours), or panics after
    /// `limit`.
    fn read_until(&mut self, limit: Duration, mut done: impl FnMut(&RobotMsg) -> bool) {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        let mut last_beat = Instant::now();
        loop {
            assert!(start.elapsed() < limit, "timed out reading from the robot");
            if last_beat.elapsed() > Duration::from_millis(100) {
                self.send(HostMsg::Heartbeat { host_time_ms: 0 });
                last_beat = Instant::now();
            }
            let n = self.file.read(&mut buf).unwrap_or(0);
            let mut msgs = Vec::new();
            for &b in &buf[..n] {
                if let Some(Ok(stuffed)) = self.rx.push(b) {
                    if let Ok(frame) = decode::<RobotMsg>(stuffed) {
                        msgs.push(frame.msg);
                    }
                }
            }
            for m in msgs {
                if done(&m) {
                    return;
                }
            }
        }
    }
}

#[test]
fn step_stream_over_the_pty_is_what_the_physics_produced() {
    let sim = common::HandSim::start(&["--model", "physics", "--seed", "5", "--noise", "1"]);
    let mut host = PtyHost::open(&sim.device);
    let values = ParamValues::from_slice(&defaults()).unwrap();
    host.send(HostMsg::Hello {
        protocol_version: firmware_protocol::PROTOCOL_VERSION,
    });
    host.read_until(Duration::from_secs(10), |m| {
        matches!(
            m,
            RobotMsg::Info {
                param_count: 10,
                ..
            }
        )
    });
    host.send(HostMsg::SetParams { values });
    host.read_until(Duration::from_secs(10), |m| matches!(m, RobotMsg::Ready));
    let (max_steps, seed) = (120, 0xDEAD_BEEF);
    host.send(HostMsg::StartEpisode {
        trial: 3,
        episode: 0,
        max_steps,
        seed,
    });
    let mut received = Vec::new();
    host.read_until(Duration::from_secs(30), |m| match m {
        RobotMsg::Step(s) => {
            received.push(*s);
            false
        }
        RobotMsg::EpisodeEnd { status, steps, .. } => {
            assert_eq!(*status, EpisodeStatus::Completed);
            assert_eq!(*steps, max_steps);
            true
        }
        _ => false,
    });

    let model = PhysicsQuadruped::new(5, 1.0, false);
    let mut ep = model.start_episode(&defaults(), seed);
    assert_eq!(received.len(), max_steps as usize);
    for (k, s) in received.iter().enumerate() {
        let t = model.step(&mut ep, k as u32);
        assert_eq!(s.step, k as u32);
        let got = [s.reward, s.roll, s.pitch, s.body_height, s.max_joint_temp];
        let want = [t.reward, t.roll, t.pitch, t.body_height, t.max_joint_temp];
        assert_eq!(
            got.map(f32::to_bits),
            want.map(f32::to_bits),
            "step {k}: {s:?} vs {t:?}"
        );
        assert_eq!(s.faults, t.faults, "step {k}");
    }
}

/// Drops the fields that are wall-clock times or durations, the worker (its pid), and what
/// the host's latency decides: how many steps an EStopped episode ran (and their return)
/// before the daemon's EStop reached the robot. Which step tripped the envelope, by how
/// much, and everything the samplers and the study recorded stay compared.
fn without_timestamps(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    let estopped = map.get("status").and_then(Value::as_str) == Some("EStopped");
                    !(estopped && matches!(k.as_str(), "steps" | "return"))
                })
                .filter(|(k, _)| {
                    !(k.ends_with("_at")
                        || k.as_str() == "worker"
                        || k.contains("time")
                        || k.contains("duration")
                        || k.ends_with("_s")
                        || k.ends_with("_ms"))
                })
                .map(|(k, v)| (k.clone(), without_timestamps(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timestamps).collect()),
        other => other.clone(),
    }
}

fn physics_study(storage: &str) -> String {
    format!(
        r#"
[study]
name = "phys"
storage = "{storage}"
direction = "maximize"
trials = 4
seed = 11

[sampler]
kind = "random"

[robot]
device = "sim"

[sim]
model = "physics"
seed = 2
reset_delay_ms = 1.0
# Paced, so that the daemon's EStop (well under a millisecond) usually lands before the next
# step; on a loaded machine it can still land a step later, as on a real robot, so the
# comparison leaves an EStopped episode's step count out.
step_delay_ms = 5.0

[episode]
max_steps = 60
report_every = 10

[safety]
max_roll_deg = 25.0
max_pitch_deg = 25.0
min_body_height_m = 0.15
max_joint_temp_c = 70.0

[space.hip_amp]
type = "float"
low = 0.0
high = 0.6

[space.knee_amp]
type = "float"
low = 0.0
high = 0.6

[space.phase_fr]
type = "float"
low = 0.0
high = 6.2831

[space.swing_hz]
type = "float"
low = 0.5
high = 3.0
"#
    )
}

#[test]
fn two_daemon_runs_with_the_same_config_export_the_same_study() {
    let export = || {
        let w = common::Workdir::new();
        let config = w.write_config(&physics_study(&w.storage_url()));
        let out = w.run(&config, &[]);
        assert!(
            out.status.success(),
            "gaittune run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let trials = w.export("phys");
        assert_eq!(trials.len(), 4);
        without_timestamps(&Value::Array(trials))
    };
    let a = export();
    let b = export();
    assert_eq!(a, b);
    // Trial 0 is the baseline, and it completed its episode.
    let first = &a.as_array().unwrap()[0];
    assert_eq!(first["state"], "COMPLETE", "{first}");
}

#[test]
fn require_go_holds_ready_until_the_operators_go() {
    let sim = common::HandSim::start(&["--model", "physics", "--require-go"]);
    let mut host = PtyHost::open(&sim.device);
    host.send(HostMsg::Hello {
        protocol_version: firmware_protocol::PROTOCOL_VERSION,
    });
    host.read_until(Duration::from_secs(10), |m| {
        matches!(m, RobotMsg::Info { .. })
    });
    host.send(HostMsg::SetParams {
        values: ParamValues::from_slice(&defaults()).unwrap(),
    });
    // The reset (5 ms) is long over, but the robot waits: heartbeats say Resetting.
    let mut resetting_beats = 0;
    host.read_until(Duration::from_secs(10), |m| match m {
        RobotMsg::Ready => panic!("Ready without the operator's go"),
        RobotMsg::Heartbeat {
            state: RobotState::Resetting,
            ..
        } => {
            resetting_beats += 1;
            resetting_beats >= 4
        }
        _ => false,
    });
    let pid = nix::unistd::Pid::from_raw(sim.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    host.read_until(Duration::from_secs(10), |m| matches!(m, RobotMsg::Ready));
}
