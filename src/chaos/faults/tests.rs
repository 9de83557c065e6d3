use super::*;
use firmware_protocol::{encode, EpisodeStatus, FrameAccumulator, RobotState, Step};

fn wire<M: Message>(seq: u16, msg: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = encode(seq, msg, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn step(trial: u32, episode: u16, step: u32) -> RobotMsg {
    RobotMsg::Step(Step {
        timestamp_us: step * 20_000,
        trial,
        episode,
        step,
        reward: 0.25 + step as f32,
        roll: 0.01,
        pitch: -0.02,
        body_height: 0.3,
        max_joint_temp: 40.0,
        faults: 0,
    })
}

fn episode_end(trial: u32, episode: u16, steps: u32) -> RobotMsg {
    RobotMsg::EpisodeEnd {
        trial,
        episode,
        episode_return: 1.5,
        steps,
        status: EpisodeStatus::Completed,
    }
}

fn start(trial: u32, episode: u16) -> HostMsg {
    HostMsg::StartEpisode {
        trial,
        episode,
        max_steps: 100,
        seed: 9,
    }
}

/// Robot traffic: a heartbeat, then per episode 0..3 five Steps, EpisodeEnd and Ready.
fn robot_stream() -> Vec<Vec<u8>> {
    let mut frames = vec![wire(
        1,
        &RobotMsg::Heartbeat {
            uptime_ms: 5,
            state: RobotState::Ready,
        },
    )];
    let mut seq = 2;
    let mut push = |m: RobotMsg, frames: &mut Vec<Vec<u8>>| {
        frames.push(wire(seq, &m));
        seq += 1;
    };
    for ep in 0..3u16 {
        for k in 0..5 {
            push(step(7, ep, k), &mut frames);
        }
        push(episode_end(7, ep, 5), &mut frames);
        push(RobotMsg::Ready, &mut frames);
    }
    frames
}

fn engine(specs: &[&str], seed: u64) -> FaultEngine {
    FaultEngine::new(
        specs.iter().map(|s| FaultSpec::parse(s).unwrap()).collect(),
        seed,
    )
}

/// Feeds `frames` (one direction) through a splitter and the engine; returns the verdicts
/// and the bytes that would go on the line.
fn run(e: &mut FaultEngine, dir: Dir, frames: &[Vec<u8>]) -> (Vec<Verdict>, Vec<u8>) {
    let mut splitter = FrameSplitter::new();
    let mut chunks = Vec::new();
    splitter.push(&frames.concat(), &mut chunks);
    let verdicts: Vec<Verdict> = chunks.iter().map(|c| e.on_chunk(dir, c)).collect();
    let out = verdicts.iter().flat_map(|v| v.copies.concat()).collect();
    (verdicts, out)
}

/// The robot messages a host would decode from `bytes`.
fn decoded(bytes: &[u8]) -> Vec<RobotMsg> {
    let mut acc = FrameAccumulator::new();
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(Ok(frame)) = acc.push(b) {
            if let Ok(f) = decode::<RobotMsg>(frame) {
                out.push(f.msg);
            }
        }
    }
    out
}

fn injected(verdicts: &[Verdict]) -> Vec<&Injection> {
    verdicts.iter().flat_map(|v| &v.injected).collect()
}

fn err(spec: &str) -> String {
    FaultSpec::parse(spec).unwrap_err()
}

#[test]
fn specs_parse_with_their_defaults() {
    let s = FaultSpec::parse("drop:type=EpisodeEnd:count=1").unwrap();
    assert_eq!(s.kind, FaultKind::Drop);
    assert_eq!(
        s.plan,
        Plan::Frames {
            filter: Filter {
                dirs: Dirs::only(Dir::Down),
                msg_type: Some("EpisodeEnd"),
                after: 0
            },
            trigger: Trigger::Count(1)
        }
    );
    let s = FaultSpec::parse("delay:dir=up:p=0.5:ms=30:after=4").unwrap();
    assert_eq!(s.hold, Duration::from_millis(30));
    assert_eq!(
        s.plan,
        Plan::Frames {
            filter: Filter {
                dirs: Dirs::only(Dir::Up),
                msg_type: None,
                after: 4
            },
            trigger: Trigger::Prob(0.5)
        }
    );
    // Heartbeat travels both ways; a type name is case-insensitive.
    let s = FaultSpec::parse("dup:type=heartbeat:every=3").unwrap();
    assert_eq!(
        s.plan,
        Plan::Frames {
            filter: Filter {
                dirs: Dirs::BOTH,
                msg_type: Some("Heartbeat"),
                after: 0
            },
            trigger: Trigger::Every(3)
        }
    );
    assert!(matches!(
        FaultSpec::parse("corrupt:p=1e-3").unwrap().plan,
        Plan::Bytes {
            trigger: Trigger::Prob(p),
            ..
        } if p == 1e-3
    ));
    assert!(matches!(
        FaultSpec::parse("corrupt:type=Step:count=2").unwrap().plan,
        Plan::Frames { .. }
    ));
    assert!(matches!(
        FaultSpec::parse("swap").unwrap().plan,
        Plan::Frames {
            trigger: Trigger::Always,
            ..
        }
    ));
    assert_eq!(
        FaultSpec::parse("reboot:every-starts=20").unwrap().plan,
        Plan::Reboot {
            first: 20,
            every: Some(20),
            steps: 10
        }
    );
    assert_eq!(
        FaultSpec::parse("reboot:at-start=2:steps=0").unwrap().plan,
        Plan::Reboot {
            first: 2,
            every: None,
            steps: 0
        }
    );
    let s = FaultSpec::parse("stall:ms=1500:after-steps=30:dir=down").unwrap();
    assert_eq!(s.hold, Duration::from_millis(1500));
    assert_eq!(
        s.plan,
        Plan::Stall {
            dirs: Dirs::only(Dir::Down),
            after_steps: 30
        }
    );
}

#[test]
fn bad_specs_are_refused_with_a_message_naming_them() {
    for (spec, says) in [
        ("explode", "unknown fault kind \"explode\""),
        (
            "drop:p=2",
            "p must be a probability between 0 and 1, got \"2\"",
        ),
        ("drop:p=lots", "p must be a probability"),
        (
            "drop:p=0.1:count=3",
            "give one of p, count or every, not p and count",
        ),
        ("drop:ms=3", "drop takes no key \"ms\""),
        ("drop:type=Stepp", "unknown message type \"Stepp\""),
        ("drop:type=Step:dir=up", "Step travels down only"),
        ("drop:type=EStop:dir=down", "EStop travels up only"),
        ("drop:count=0", "count must be at least 1"),
        ("drop:every=-1", "every must be a whole number >= 1"),
        (
            "drop:dir=sideways",
            "dir must be up (host -> robot), down (robot -> host) or both",
        ),
        ("drop:p", "\"p\" is not key=value"),
        ("drop:count=1:count=2", "count is given twice"),
        ("delay:p=0.1", "delay needs ms=MILLISECONDS"),
        ("stall:after-steps=3", "stall needs ms="),
        ("corrupt", "corrupt without type= acts on every byte"),
        ("reboot", "reboot needs exactly one of at-start=N"),
        (
            "reboot:at-start=1:every-starts=2",
            "reboot needs exactly one of",
        ),
        ("reboot:at-start=0", "at-start must be at least 1"),
    ] {
        let e = err(spec);
        assert!(
            e.starts_with(&format!("--fault {spec:?}: ")),
            "{spec}: the message names the spec: {e}"
        );
        assert!(e.contains(says), "{spec}: {e:?} should say {says:?}");
    }
}

#[test]
fn message_type_names_are_the_crates() {
    let host = [
        HostMsg::Hello {
            protocol_version: 2,
        },
        HostMsg::GetParamInfo { index: 0 },
        HostMsg::SetParams {
            values: firmware_protocol::ParamValues::from_slice(&[1.0]).unwrap(),
        },
        start(1, 0),
        HostMsg::Abort,
        HostMsg::EStop,
        HostMsg::ClearEStop,
        HostMsg::Heartbeat { host_time_ms: 0 },
        HostMsg::GetStatus,
    ];
    for m in host {
        let info = FrameInfo::of(Dir::Up, &wire(3, &m));
        let debug = format!("{m:?}");
        assert!(debug.starts_with(info.msg_type.unwrap()), "{debug}");
    }
    for m in robot_stream() {
        let info = FrameInfo::of(Dir::Down, &m);
        let debug = format!("{:?}", decode::<RobotMsg>(&m).unwrap().msg);
        assert!(debug.starts_with(info.msg_type.unwrap()), "{debug}");
    }
    let names: std::collections::HashSet<&str> = MESSAGE_TYPES.iter().map(|t| t.0).collect();
    assert_eq!(
        names.len(),
        MESSAGE_TYPES.len() - 1,
        "only Heartbeat is listed twice"
    );
}

#[test]
fn drop_removes_exactly_the_matching_frames() {
    let frames = robot_stream();
    let mut e = engine(&["drop:type=EpisodeEnd:count=1"], 1);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    let want: Vec<u8> = frames
        .iter()
        .filter(|f| FrameInfo::of(Dir::Down, f) != FrameInfo::of(Dir::Down, &frames[6]))
        .flatten()
        .copied()
        .collect();
    assert_eq!(out, want, "everything else passes byte for byte");
    let inj = injected(&verdicts);
    assert_eq!(inj.len(), 1);
    assert_eq!(inj[0].kind, FaultKind::Drop);
    assert_eq!(inj[0].dir, Dir::Down);
    assert_eq!(inj[0].frame.msg_type, Some("EpisodeEnd"));
    assert_eq!(
        (inj[0].frame.trial, inj[0].frame.episode, inj[0].frame.step),
        (Some(7), Some(0), Some(5))
    );

    // every=2 after=1 over the 15 Steps: matches 3, 5, 7, ... (1-based) are dropped.
    let mut e = engine(&["drop:type=Step:after=1:every=2"], 1);
    let (_, out) = run(&mut e, Dir::Down, &frames);
    let steps: Vec<(u16, u32)> = decoded(&out)
        .into_iter()
        .filter_map(|m| match m {
            RobotMsg::Step(s) => Some((s.episode, s.step)),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            (0, 0),
            (0, 1),
            (0, 3),
            (1, 0),
            (1, 2),
            (1, 4),
            (2, 1),
            (2, 3)
        ]
    );

    // A direction filter: nothing robot -> host matches dir=up.
    let mut e = engine(&["drop:dir=up"], 1);
    assert_eq!(run(&mut e, Dir::Down, &frames).1, frames.concat());
}

#[test]
fn dup_sends_matching_frames_twice() {
    let frames = robot_stream();
    let mut e = engine(&["dup:type=Step:count=2"], 1);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    let mut want = frames.clone();
    want.insert(2, frames[1].clone());
    want.insert(4, frames[2].clone());
    assert_eq!(out, want.concat());
    assert_eq!(injected(&verdicts).len(), 2);
}

#[test]
fn corrupting_a_frame_flips_one_bit_and_the_receiver_discards_it() {
    let frames = robot_stream();
    let mut e = engine(&["corrupt:type=EpisodeEnd:count=1"], 5);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    assert_eq!(out.len(), frames.concat().len());
    let diff: u32 = out
        .iter()
        .zip(frames.concat())
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(diff, 1);
    let msgs = decoded(&out);
    assert_eq!(msgs.len(), frames.len() - 1);
    assert!(!msgs.contains(&episode_end(7, 0, 5)));
    assert!(msgs.contains(&episode_end(7, 1, 5)));
    let inj = injected(&verdicts);
    assert_eq!(inj.len(), 1);
    assert!(inj[0].detail.contains("bit"), "{}", inj[0].detail);
}

#[test]
fn byte_corruption_flips_one_bit_per_injection() {
    let frames = robot_stream();
    let mut e = engine(&["corrupt:p=0.05"], 11);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    let original = frames.concat();
    assert_eq!(out.len(), original.len());
    let flipped: Vec<u32> = out
        .iter()
        .zip(&original)
        .map(|(a, b)| (a ^ b).count_ones())
        .filter(|&n| n > 0)
        .collect();
    let inj = injected(&verdicts);
    assert!(!inj.is_empty(), "about 5% of {} bytes", original.len());
    assert!(flipped.iter().all(|&n| n == 1));
    assert_eq!(flipped.len(), inj.len());
    // Only the up direction: robot bytes pass.
    let mut e = engine(&["corrupt:p=1:dir=up"], 11);
    assert_eq!(run(&mut e, Dir::Down, &frames).1, original);
}

#[test]
fn delay_holds_the_matching_frames_only() {
    let frames = robot_stream();
    let mut e = engine(&["delay:type=Ready:ms=250"], 1);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    assert_eq!(out, frames.concat(), "a delayed frame is not altered");
    let held: Vec<Duration> = verdicts.iter().map(|v| v.delay).collect();
    for (f, d) in frames.iter().zip(&held) {
        let ready = FrameInfo::of(Dir::Down, f).msg_type == Some("Ready");
        assert_eq!(
            *d,
            if ready {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            }
        );
    }
    assert_eq!(injected(&verdicts).len(), 3);
}

#[test]
fn swap_exchanges_two_adjacent_bytes_of_the_frame() {
    let frames = robot_stream();
    let mut e = engine(&["swap:type=Step:count=1"], 3);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    let original = frames.concat();
    let changed: Vec<usize> = (0..original.len())
        .filter(|&i| out[i] != original[i])
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    let [i, j] = [changed[0], changed[1]];
    assert_eq!(j, i + 1);
    assert_eq!((out[i], out[j]), (original[j], original[i]));
    assert!(i >= frames[0].len() && j < frames[0].len() + frames[1].len() - 1);
    assert_eq!(
        decoded(&out).len(),
        frames.len() - 1,
        "the frame is discarded"
    );
    assert_eq!(injected(&verdicts).len(), 1);
}

#[test]
fn reboot_fires_steps_into_the_nth_started_episode() {
    let mut e = engine(&["reboot:every-starts=2:steps=3"], 1);
    let mut reboots = Vec::new();
    for ep in 0..5u16 {
        let s = wire(10 + ep, &start(4, ep));
        assert!(!e.on_chunk(Dir::Up, &s).reboot);
        // A retry of the same StartEpisode is not a new start.
        assert!(!e.on_chunk(Dir::Up, &s).reboot);
        for k in 0..6 {
            let v = e.on_chunk(Dir::Down, &wire(1, &step(4, ep, k)));
            if v.reboot {
                assert_eq!(v.injected.len(), 1);
                assert_eq!(v.injected[0].kind, FaultKind::Reboot);
                reboots.push((ep, k));
            }
        }
        e.on_chunk(Dir::Down, &wire(1, &episode_end(4, ep, 6)));
    }
    assert_eq!(
        reboots,
        [(1, 2), (3, 2)],
        "the 2nd and 4th starts, at their 3rd Step"
    );

    // An episode that ends before its reboot was due cancels it.
    let mut e = engine(&["reboot:at-start=1:steps=10"], 1);
    e.on_chunk(Dir::Up, &wire(1, &start(1, 0)));
    for k in 0..5 {
        assert!(!e.on_chunk(Dir::Down, &wire(1, &step(1, 0, k))).reboot);
    }
    e.on_chunk(Dir::Down, &wire(1, &episode_end(1, 0, 5)));
    e.on_chunk(Dir::Up, &wire(2, &start(1, 1)));
    for k in 0..20 {
        assert!(!e.on_chunk(Dir::Down, &wire(1, &step(1, 1, k))).reboot);
    }

    // steps=0: at the StartEpisode itself.
    let mut e = engine(&["reboot:at-start=1:steps=0"], 1);
    assert!(e.on_chunk(Dir::Up, &wire(1, &start(1, 0))).reboot);
}

#[test]
fn stall_starts_once_after_its_steps() {
    let frames = robot_stream();
    let mut e = engine(&["stall:ms=700:after-steps=4"], 1);
    let (verdicts, out) = run(&mut e, Dir::Down, &frames);
    assert_eq!(out, frames.concat());
    let stalls: Vec<(usize, &Vec<(Dir, Duration)>)> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.stalls.is_empty())
        .map(|(i, v)| (i, &v.stalls))
        .collect();
    let ms = Duration::from_millis(700);
    assert_eq!(stalls, [(4, &vec![(Dir::Up, ms), (Dir::Down, ms)])]);
    assert_eq!(
        injected(&verdicts).len(),
        2,
        "one line per stalled direction"
    );
}

#[test]
fn the_same_seed_makes_the_same_decisions() {
    let frames: Vec<Vec<u8>> = (0..40).flat_map(|_| robot_stream()).collect();
    let specs = [
        "drop:p=0.1",
        "dup:p=0.1",
        "swap:type=Step:p=0.1",
        "corrupt:p=0.002",
    ];
    let once = |seed| run(&mut engine(&specs, seed), Dir::Down, &frames);
    let (a_verdicts, a_out) = once(42);
    let (b_verdicts, b_out) = once(42);
    assert_eq!(a_out, b_out);
    assert_eq!(a_verdicts, b_verdicts);
    let (_, c_out) = once(43);
    assert_ne!(a_out, c_out, "another seed decides otherwise");
    let kinds: std::collections::HashSet<FaultKind> =
        injected(&a_verdicts).iter().map(|i| i.kind).collect();
    assert_eq!(kinds.len(), 4, "every fault fired at least once: {kinds:?}");
}

#[test]
fn a_dropped_frame_is_not_seen_by_later_faults() {
    let frames = robot_stream();
    let mut e = engine(&["drop:type=Ready", "dup:type=Ready"], 1);
    let (verdicts, _) = run(&mut e, Dir::Down, &frames);
    assert!(injected(&verdicts)
        .iter()
        .all(|i| i.kind == FaultKind::Drop));
}

#[test]
fn the_splitter_cuts_after_each_delimiter() {
    let mut s = FrameSplitter::new();
    let mut out = Vec::new();
    s.push(&[0, 1, 2], &mut out);
    assert_eq!(out, vec![vec![0]]);
    s.push(&[3, 0, 0, 4], &mut out);
    assert_eq!(out, vec![vec![0], vec![1, 2, 3, 0], vec![0]]);
    out.clear();
    s.clear();
    s.push(&vec![9; MAX_CHUNK + 3], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), MAX_CHUNK);
    assert!(!FrameInfo::of(Dir::Down, &[0]).is_frame);
    assert!(FrameInfo::of(Dir::Down, &[5, 0]).is_frame);
}
