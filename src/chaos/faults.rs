//! The fault engine of `gaittune chaos`: `--fault` specs, and what to do with every frame and
//! byte that crosses the line, decided from one seeded RNG. No I/O and no clock: the proxy
//! ([`super::proxy`]) feeds it the stream cut into frames ([`FrameSplitter`]) and applies its
//! [`Verdict`]s, so tests drive it with plain byte streams. The same seed and the same
//! stream give the same decisions.
//!
//! # Fault syntax
//!
//! `KIND[:key=value]...`; `dir=up` is host → robot, `dir=down` robot → host.
//!
//! | kind | does | keys |
//! |---|---|---|
//! | `drop` | drops a matching frame | `dir`, `type`, `after`, one of `p`, `count`, `every` |
//! | `dup` | sends a matching frame twice | as `drop` |
//! | `corrupt` | flips one random bit of one random byte of a matching frame; without `type=`, of each matching byte (`p` per byte) | as `drop` (without `type=`, a trigger is required) |
//! | `delay` | holds a matching frame, and so everything after it in its direction, for `ms` | as `drop`, and `ms` |
//! | `swap` | swaps two adjacent (different) bytes inside a matching frame | as `drop` |
//! | `reboot` | reboots the robot (SIGUSR2 to its process) `steps` Step frames into the episode of the Nth StartEpisode | `at-start=N` or `every-starts=N`, `steps` (10) |
//! | `stall` | stops forwarding `dir` (both) for `ms` once `after-steps` Step frames went down | `dir`, `ms`, `after-steps` (0) |
//!
//! Frame filters: `dir=up|down|both` (default: both, or the direction of `type`), `type=NAME`
//! (a message name of the `firmware-protocol` crate, e.g. `Step`, `EpisodeEnd`, `Ready`,
//! `Ack`, `StartEpisode`, `EStop`; see [`MESSAGE_TYPES`]), `after=N` (the first N matching
//! frames pass untouched). Triggers, counted over the matching frames after `after`:
//! `p=PROB` (each with that probability), `count=N` (the first N), `every=N` (the Nth, 2Nth,
//! …); none = every matching frame. A frame dropped by one fault is not seen by the faults
//! given after it. A lone delimiter (0x00 between frames) is not a frame: only byte-level
//! `corrupt` touches it. StartEpisode retries (the same bytes again) do not count as starts.

use std::fmt;
use std::time::Duration;

use firmware_protocol::{decode, HostMsg, Message, RobotMsg, MAX_FRAME};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A direction on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Host → robot.
    Up,
    /// Robot → host.
    Down,
}

impl Dir {
    /// Both directions.
    pub const ALL: [Dir; 2] = [Dir::Up, Dir::Down];

    /// `"up"` or `"down"`, as in the fault syntax and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directions a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirs {
    up: bool,
    down: bool,
}

impl Dirs {
    /// Both directions.
    pub const BOTH: Dirs = Dirs {
        up: true,
        down: true,
    };

    /// One direction.
    pub fn only(dir: Dir) -> Dirs {
        Dirs {
            up: dir == Dir::Up,
            down: dir == Dir::Down,
        }
    }

    /// Whether `dir` is one of them.
    pub fn contains(self, dir: Dir) -> bool {
        match dir {
            Dir::Up => self.up,
            Dir::Down => self.down,
        }
    }

    /// Each direction included, up first.
    pub fn iter(self) -> impl Iterator<Item = Dir> {
        Dir::ALL.into_iter().filter(move |&d| self.contains(d))
    }
}

/// Every message type: its name (the `firmware-protocol` variant), type byte and direction.
/// `Heartbeat` exists in both directions.
pub const MESSAGE_TYPES: &[(&str, u8, Dir)] = &[
    ("Hello", 0x01, Dir::Up),
    ("GetParamInfo", 0x02, Dir::Up),
    ("SetParams", 0x03, Dir::Up),
    ("StartEpisode", 0x04, Dir::Up),
    ("Abort", 0x05, Dir::Up),
    ("EStop", 0x06, Dir::Up),
    ("ClearEStop", 0x07, Dir::Up),
    ("Heartbeat", 0x08, Dir::Up),
    ("GetStatus", 0x09, Dir::Up),
    ("Info", 0x81, Dir::Down),
    ("ParamInfo", 0x82, Dir::Down),
    ("ParamsApplied", 0x83, Dir::Down),
    ("Ack", 0x84, Dir::Down),
    ("Nack", 0x85, Dir::Down),
    ("Step", 0x86, Dir::Down),
    ("EpisodeEnd", 0x87, Dir::Down),
    ("SafetyTrip", 0x88, Dir::Down),
    ("Ready", 0x89, Dir::Down),
    ("Heartbeat", 0x8A, Dir::Down),
    ("Status", 0x8B, Dir::Down),
];

fn type_name(type_byte: u8) -> Option<&'static str> {
    MESSAGE_TYPES.iter().find(|t| t.1 == type_byte).map(|t| t.0)
}

/// The fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Drop whole frames.
    Drop,
    /// Send frames twice.
    Dup,
    /// Flip a bit.
    Corrupt,
    /// Hold frames back.
    Delay,
    /// Swap two adjacent bytes of a frame.
    Swap,
    /// Reboot the robot.
    Reboot,
    /// Stop forwarding for a while.
    Stall,
}

impl FaultKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Drop,
        FaultKind::Dup,
        FaultKind::Corrupt,
        FaultKind::Delay,
        FaultKind::Swap,
        FaultKind::Reboot,
        FaultKind::Stall,
    ];

    /// The name in the fault syntax and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Drop => "drop",
            FaultKind::Dup => "dup",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Delay => "delay",
            FaultKind::Swap => "swap",
            FaultKind::Reboot => "reboot",
            FaultKind::Stall => "stall",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        const FRAME: &[&str] = &["dir", "type", "after", "p", "count", "every"];
        match self {
            FaultKind::Drop | FaultKind::Dup | FaultKind::Corrupt | FaultKind::Swap => FRAME,
            FaultKind::Delay => &["dir", "type", "after", "p", "count", "every", "ms"],
            FaultKind::Reboot => &["at-start", "every-starts", "steps"],
            FaultKind::Stall => &["dir", "ms", "after-steps"],
        }
    }
}

/// When a fault fires among the frames (or bytes) that match it, past `after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Every one.
    Always,
    /// Each with this probability.
    Prob(f64),
    /// The first N.
    Count(u64),
    /// The Nth, 2Nth, ...
    Every(u64),
}

/// Which frames (or bytes) a fault looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filter {
    /// Directions.
    pub dirs: Dirs,
    /// A message type name from [`MESSAGE_TYPES`], or any frame.
    pub msg_type: Option<&'static str>,
    /// Matching units that pass untouched before the trigger counts.
    pub after: u64,
}

/// What a fault watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// `drop`, `dup`, `delay`, `swap`, and `corrupt` with `type=`: matching frames.
    Frames {
        /// Which frames.
        filter: Filter,
        /// Which of them.
        trigger: Trigger,
    },
    /// `corrupt` without `type=`: matching bytes.
    Bytes {
        /// Which bytes (`msg_type` is `None`).
        filter: Filter,
        /// Which of them.
        trigger: Trigger,
    },
    /// `reboot`: the Nth StartEpisode (`first`), and every `every` after it if set, then
    /// `steps` Step frames of that episode.
    Reboot {
        /// The start that reboots first (1-based).
        first: u64,
        /// Repeat every this many starts.
        every: Option<u64>,
        /// Step frames of that episode to let through first.
        steps: u64,
    },
    /// `stall`: once `after_steps` Step frames went down, stop `dirs` for the fault's `hold`.
    Stall {
        /// Directions stalled.
        dirs: Dirs,
        /// Step frames seen before the stall.
        after_steps: u64,
    },
}

/// One parsed `--fault` spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The spec as given.
    pub text: String,
    /// Its kind.
    pub kind: FaultKind,
    /// What it watches for.
    pub plan: Plan,
    /// `ms` of `delay` and `stall` (zero for the others).
    pub hold: Duration,
}

/// Parses one key's number; the error names the spec and the key.
fn number<T: std::str::FromStr>(
    spec: &str,
    key: &str,
    value: &str,
    what: &str,
) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("--fault {spec:?}: {key} must be {what}, got {value:?}"))
}

fn at_least_one(spec: &str, key: &str, value: &str) -> Result<u64, String> {
    match number::<u64>(spec, key, value, "a whole number >= 1")? {
        0 => Err(format!("--fault {spec:?}: {key} must be at least 1, got 0")),
        n => Ok(n),
    }
}

fn parse_dirs(spec: &str, value: &str) -> Result<Dirs, String> {
    match value {
        "up" => Ok(Dirs::only(Dir::Up)),
        "down" => Ok(Dirs::only(Dir::Down)),
        "both" => Ok(Dirs::BOTH),
        other => Err(format!(
            "--fault {spec:?}: dir must be up (host -> robot), down (robot -> host) or both, got {other:?}"
        )),
    }
}

/// The canonical name and the directions of message type `value` (case-insensitive).
fn parse_type(spec: &str, value: &str) -> Result<(&'static str, Dirs), String> {
    let mut found: Option<(&'static str, Dirs)> = None;
    for &(name, _, dir) in MESSAGE_TYPES {
        if name.eq_ignore_ascii_case(value) {
            let dirs = found.map_or(Dirs::only(dir), |(_, d)| Dirs {
                up: d.up || dir == Dir::Up,
                down: d.down || dir == Dir::Down,
            });
            found = Some((name, dirs));
        }
    }
    found.ok_or_else(|| {
        let mut names: Vec<&str> = MESSAGE_TYPES.iter().map(|t| t.0).collect();
        names.dedup();
        format!(
            "--fault {spec:?}: unknown message type {value:?} (types: {})",
            names.join(", ")
        )
    })
}

impl FaultSpec {
    /// Parses `KIND[:key=value]...` (see the [module docs](self)). Errors name the spec and
    /// say what is wrong and what is accepted.
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        let mut parts = spec.split(':');
        let kind_text = parts.next().unwrap_or_default();
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind_text)
            .ok_or_else(|| {
                let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "--fault {spec:?}: unknown fault kind {kind_text:?} (kinds: {})",
                    kinds.join(", ")
                )
            })?;
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--fault {spec:?}: {part:?} is not key=value"))?;
            if !kind.keys().contains(&key) {
                return Err(format!(
                    "--fault {spec:?}: {kind_text} takes no key {key:?} (its keys: {})",
                    kind.keys().join(", ")
                ));
            }
            if keys.iter().any(|(k, _)| *k == key) {
                return Err(format!("--fault {spec:?}: {key} is given twice"));
            }
            keys.push((key, value));
        }
        let get = |key: &str| keys.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let hold = match get("ms") {
            Some(v) => Duration::from_millis(at_least_one(spec, "ms", v)?),
            None if matches!(kind, FaultKind::Delay | FaultKind::Stall) => {
                return Err(format!(
                    "--fault {spec:?}: {kind_text} needs ms=MILLISECONDS (how long)"
                ))
            }
            None => Duration::ZERO,
        };
        let plan = match kind {
            FaultKind::Reboot => {
                let (first, every) = match (get("at-start"), get("every-starts")) {
                    (Some(v), None) => (at_least_one(spec, "at-start", v)?, None),
                    (None, Some(v)) => {
                        let n = at_least_one(spec, "every-starts", v)?;
                        (n, Some(n))
                    }
                    _ => {
                        return Err(format!(
                        "--fault {spec:?}: reboot needs exactly one of at-start=N (the Nth episode start) or every-starts=N"
                    ))
                    }
                };
                let steps = match get("steps") {
                    Some(v) => number(spec, "steps", v, "a whole number of Step frames")?,
                    None => 10,
                };
                Plan::Reboot {
                    first,
                    every,
                    steps,
                }
            }
            FaultKind::Stall => Plan::Stall {
                dirs: get("dir").map_or(Ok(Dirs::BOTH), |v| parse_dirs(spec, v))?,
                after_steps: match get("after-steps") {
                    Some(v) => number(spec, "after-steps", v, "a whole number of Step frames")?,
                    None => 0,
                },
            },
            _ => Self::frame_plan(spec, kind, &get)?,
        };
        Ok(FaultSpec {
            text: spec.to_string(),
            kind,
            plan,
            hold,
        })
    }

    /// The plan of a frame or byte fault.
    fn frame_plan<'a>(
        spec: &str,
        kind: FaultKind,
        get: &dyn Fn(&str) -> Option<&'a str>,
    ) -> Result<Plan, String> {
        let typed = get("type").map(|v| parse_type(spec, v)).transpose()?;
        let dirs = match (get("dir"), typed) {
            (Some(v), Some((name, travels))) => {
                let dirs = parse_dirs(spec, v)?;
                if dirs.iter().any(|d| !travels.contains(d)) {
                    let only = travels.iter().next().unwrap_or(Dir::Up);
                    return Err(format!(
                        "--fault {spec:?}: {name} travels {} only ({})",
                        only,
                        if only == Dir::Up {
                            "host -> robot"
                        } else {
                            "robot -> host"
                        }
                    ));
                }
                dirs
            }
            (Some(v), None) => parse_dirs(spec, v)?,
            (None, Some((_, travels))) => travels,
            (None, None) => Dirs::BOTH,
        };
        let after = match get("after") {
            Some(v) => number(spec, "after", v, "a whole number of frames")?,
            None => 0,
        };
        let triggers: Vec<&str> = ["p", "count", "every"]
            .into_iter()
            .filter(|k| get(k).is_some())
            .collect();
        let trigger = match triggers.as_slice() {
            [] => Trigger::Always,
            ["p"] => {
                let v = get("p").unwrap_or_default();
                let p: f64 = number(spec, "p", v, "a probability between 0 and 1")?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!(
                        "--fault {spec:?}: p must be a probability between 0 and 1, got {v:?}"
                    ));
                }
                Trigger::Prob(p)
            }
            ["count"] => Trigger::Count(at_least_one(
                spec,
                "count",
                get("count").unwrap_or_default(),
            )?),
            ["every"] => Trigger::Every(at_least_one(
                spec,
                "every",
                get("every").unwrap_or_default(),
            )?),
            several => {
                return Err(format!(
                    "--fault {spec:?}: give one of p, count or every, not {}",
                    several.join(" and ")
                ))
            }
        };
        let filter = Filter {
            dirs,
            msg_type: typed.map(|t| t.0),
            after,
        };
        if kind == FaultKind::Corrupt && typed.is_none() {
            if trigger == Trigger::Always {
                return Err(format!(
                    "--fault {spec:?}: corrupt without type= acts on every byte: give p=PROB per byte (e.g. p=1e-3), count or every"
                ));
            }
            return Ok(Plan::Bytes { filter, trigger });
        }
        Ok(Plan::Frames { filter, trigger })
    }
}

/// What a frame carries that the log reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// Whether the chunk holds more than delimiters (a frame, decodable or not).
    pub is_frame: bool,
    /// The message type name, when the frame decodes.
    pub msg_type: Option<&'static str>,
    /// Trial number (StartEpisode, Step, EpisodeEnd, SafetyTrip).
    pub trial: Option<u32>,
    /// Episode index (as `trial`).
    pub episode: Option<u16>,
    /// Step index (Step, SafetyTrip), or steps sent (EpisodeEnd).
    pub step: Option<u32>,
}

impl FrameInfo {
    /// Decodes `chunk` (a frame's bytes with its delimiter) as a message of direction `dir`.
    pub fn of(dir: Dir, chunk: &[u8]) -> FrameInfo {
        let is_frame = chunk.iter().any(|&b| b != 0);
        let mut info = FrameInfo {
            is_frame,
            ..FrameInfo::default()
        };
        if !is_frame {
            return info;
        }
        match dir {
            Dir::Up => {
                if let Ok(frame) = decode::<HostMsg>(chunk) {
                    info.msg_type = type_name(frame.msg.type_byte());
                    if let HostMsg::StartEpisode { trial, episode, .. } = frame.msg {
                        (info.trial, info.episode) = (Some(trial), Some(episode));
                    }
                }
            }
            Dir::Down => {
                if let Ok(frame) = decode::<RobotMsg>(chunk) {
                    info.msg_type = type_name(frame.msg.type_byte());
                    match frame.msg {
                        RobotMsg::Step(s) => {
                            (info.trial, info.episode, info.step) =
                                (Some(s.trial), Some(s.episode), Some(s.step));
                        }
                        RobotMsg::EpisodeEnd {
                            trial,
                            episode,
                            steps,
                            ..
                        } => {
                            (info.trial, info.episode, info.step) =
                                (Some(trial), Some(episode), Some(steps));
                        }
                        RobotMsg::SafetyTrip {
                            trial,
                            episode,
                            step,
                            ..
                        } => {
                            (info.trial, info.episode, info.step) =
                                (Some(trial), Some(episode), Some(step));
                        }
                        _ => {}
                    }
                }
            }
        }
        info
    }
}

/// One injected fault, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Which kind.
    pub kind: FaultKind,
    /// The spec that injected it.
    pub spec: String,
    /// The direction it acted on.
    pub dir: Dir,
    /// The frame it acted on (for `reboot`, the Step frame that set it off).
    pub frame: FrameInfo,
    /// What exactly was done, for people.
    pub detail: String,
}

/// What to do with one chunk of the stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// The bytes to forward, in order: none when dropped, two copies when duplicated.
    pub copies: Vec<Vec<u8>>,
    /// Hold these bytes, and so everything after them in this direction, this long.
    pub delay: Duration,
    /// Stop forwarding these directions this long, from after these bytes on.
    pub stalls: Vec<(Dir, Duration)>,
    /// Send the robot its reboot signal now.
    pub reboot: bool,
    /// Every fault injected, in order.
    pub injected: Vec<Injection>,
}

/// A reboot waiting for its episode's Step frames.
#[derive(Debug, Clone, Copy)]
struct PendingReboot {
    spec: usize,
    trial: u32,
    episode: u16,
    start: u64,
    steps_left: u64,
}

/// A spec with its counters.
#[derive(Debug, Clone)]
struct Armed {
    spec: FaultSpec,
    matched: u64,
    fired: u64,
}

impl Armed {
    /// Counts one matching unit and decides whether the fault fires on it.
    fn fires(&mut self, filter: &Filter, trigger: Trigger, rng: &mut StdRng) -> bool {
        self.matched += 1;
        if self.matched <= filter.after {
            return false;
        }
        let n = self.matched - filter.after;
        let fire = match trigger {
            Trigger::Always => true,
            Trigger::Prob(p) if p >= 1.0 => true,
            Trigger::Prob(p) if p <= 0.0 => false,
            Trigger::Prob(p) => rng.gen::<f64>() < p,
            Trigger::Count(c) => n <= c,
            Trigger::Every(e) => n % e == 0,
        };
        self.fired += fire as u64;
        fire
    }

    fn why(&self, trigger: Trigger) -> String {
        match trigger {
            Trigger::Always => format!("match #{}", self.matched),
            Trigger::Prob(p) => format!("p={p}, match #{}", self.matched),
            Trigger::Count(c) => format!("{} of count={c}", self.fired),
            Trigger::Every(e) => format!("every={e}, match #{}", self.matched),
        }
    }
}

/// Decides every fault from one seeded RNG (see the [module docs](self)).
pub struct FaultEngine {
    faults: Vec<Armed>,
    rng: StdRng,
    steps_down: u64,
    starts: u64,
    last_start: Option<Vec<u8>>,
    reboots: Vec<PendingReboot>,
}

impl FaultEngine {
    /// An engine applying `specs` in order, its RNG seeded with `seed`.
    pub fn new(specs: Vec<FaultSpec>, seed: u64) -> FaultEngine {
        FaultEngine {
            faults: specs
                .into_iter()
                .map(|spec| Armed {
                    spec,
                    matched: 0,
                    fired: 0,
                })
                .collect(),
            rng: StdRng::seed_from_u64(seed),
            steps_down: 0,
            starts: 0,
            last_start: None,
            reboots: Vec::new(),
        }
    }

    /// Whether any spec is a `reboot` (which needs a robot process to signal).
    pub fn reboots_robot(&self) -> bool {
        self.faults.iter().any(|f| f.spec.kind == FaultKind::Reboot)
    }

    /// Decides what happens to `chunk`, the next frame of direction `dir` with its 0x00
    /// delimiter (or a lone delimiter, or an over-long run cut by [`FrameSplitter`]).
    pub fn on_chunk(&mut self, dir: Dir, chunk: &[u8]) -> Verdict {
        let info = FrameInfo::of(dir, chunk);
        let mut verdict = Verdict::default();
        self.observe(dir, chunk, &info, &mut verdict);
        let mut bytes = chunk.to_vec();
        let mut copies = 1;
        if info.is_frame {
            copies = self.frame_faults(dir, &info, &mut bytes, &mut verdict);
        }
        if copies > 0 {
            self.byte_faults(dir, &info, &mut bytes, &mut verdict);
        }
        verdict.copies = vec![bytes; copies];
        verdict
    }

    /// Reboot and stall bookkeeping on the original frame.
    fn observe(&mut self, dir: Dir, chunk: &[u8], info: &FrameInfo, verdict: &mut Verdict) {
        match (dir, info.msg_type) {
            (Dir::Up, Some("StartEpisode")) => {
                if self.last_start.as_deref() == Some(chunk) {
                    return;
                }
                self.last_start = Some(chunk.to_vec());
                self.starts += 1;
                let (trial, episode) = (info.trial.unwrap_or(0), info.episode.unwrap_or(0));
                for (spec, f) in self.faults.iter().enumerate() {
                    if let Plan::Reboot {
                        first,
                        every,
                        steps,
                    } = f.spec.plan
                    {
                        let due = self.starts == first
                            || every.is_some_and(|e| self.starts > first && self.starts % e == 0);
                        if due {
                            self.reboots.push(PendingReboot {
                                spec,
                                trial,
                                episode,
                                start: self.starts,
                                steps_left: steps,
                            });
                        }
                    }
                }
                self.fire_reboots(dir, info, verdict);
            }
            (Dir::Down, Some("Step")) => {
                self.steps_down += 1;
                for r in &mut self.reboots {
                    if (Some(r.trial), Some(r.episode)) == (info.trial, info.episode) {
                        r.steps_left = r.steps_left.saturating_sub(1);
                    }
                }
                self.fire_reboots(dir, info, verdict);
                for f in &mut self.faults {
                    if let Plan::Stall { dirs, after_steps } = f.spec.plan {
                        if f.fired == 0 && self.steps_down >= after_steps.max(1) {
                            f.fired = 1;
                            for d in dirs.iter() {
                                verdict.stalls.push((d, f.spec.hold));
                                verdict.injected.push(Injection {
                                    kind: FaultKind::Stall,
                                    spec: f.spec.text.clone(),
                                    dir: d,
                                    frame: *info,
                                    detail: format!(
                                        "{d} stalled {} ms after {} Step frames",
                                        f.spec.hold.as_millis(),
                                        self.steps_down
                                    ),
                                });
                            }
                        }
                    }
                }
            }
            (Dir::Down, Some("EpisodeEnd")) => {
                // The episode ended before its reboot was due: that reboot is off.
                self.reboots
                    .retain(|r| (Some(r.trial), Some(r.episode)) != (info.trial, info.episode));
            }
            _ => {}
        }
    }

    fn fire_reboots(&mut self, dir: Dir, info: &FrameInfo, verdict: &mut Verdict) {
        let faults = &self.faults;
        self.reboots.retain(|r| {
            if r.steps_left > 0 {
                return true;
            }
            verdict.reboot = true;
            verdict.injected.push(Injection {
                kind: FaultKind::Reboot,
                spec: faults[r.spec].spec.text.clone(),
                dir,
                frame: *info,
                detail: format!(
                    "reboot signal to the robot: episode start #{} (trial {} episode {})",
                    r.start, r.trial, r.episode
                ),
            });
            false
        });
    }

    /// Frame faults in spec order; returns how many copies to send.
    fn frame_faults(
        &mut self,
        dir: Dir,
        info: &FrameInfo,
        bytes: &mut [u8],
        verdict: &mut Verdict,
    ) -> usize {
        let mut copies = 1;
        for f in &mut self.faults {
            let Plan::Frames { filter, trigger } = f.spec.plan else {
                continue;
            };
            if !filter.dirs.contains(dir)
                || filter.msg_type.is_some_and(|t| info.msg_type != Some(t))
                || !f.fires(&filter, trigger, &mut self.rng)
            {
                continue;
            }
            let why = f.why(trigger);
            let detail = match f.spec.kind {
                FaultKind::Drop => {
                    copies = 0;
                    format!("dropped ({why})")
                }
                FaultKind::Dup => {
                    copies = 2;
                    format!("sent twice ({why})")
                }
                FaultKind::Corrupt => {
                    let body = body_len(bytes);
                    let at = self.rng.gen_range(0..body);
                    format!("{} ({why})", flip_bit(bytes, at, &mut self.rng, body))
                }
                FaultKind::Swap => format!("{} ({why})", swap_adjacent(bytes, &mut self.rng)),
                FaultKind::Delay => {
                    verdict.delay += f.spec.hold;
                    format!("held {} ms ({why})", f.spec.hold.as_millis())
                }
                FaultKind::Reboot | FaultKind::Stall => unreachable!("not frame faults"),
            };
            verdict.injected.push(Injection {
                kind: f.spec.kind,
                spec: f.spec.text.clone(),
                dir,
                frame: *info,
                detail,
            });
            if copies == 0 {
                break;
            }
        }
        copies
    }

    /// Byte-level `corrupt`: each byte of the chunk, delimiter included.
    fn byte_faults(&mut self, dir: Dir, info: &FrameInfo, bytes: &mut [u8], verdict: &mut Verdict) {
        for f in &mut self.faults {
            let Plan::Bytes { filter, trigger } = f.spec.plan else {
                continue;
            };
            if !filter.dirs.contains(dir) {
                continue;
            }
            for at in 0..bytes.len() {
                if f.fires(&filter, trigger, &mut self.rng) {
                    let detail = flip_bit(bytes, at, &mut self.rng, bytes.len());
                    verdict.injected.push(Injection {
                        kind: FaultKind::Corrupt,
                        spec: f.spec.text.clone(),
                        dir,
                        frame: *info,
                        detail,
                    });
                }
            }
        }
    }
}

/// The chunk's length without its trailing delimiter (at least 1).
fn body_len(bytes: &[u8]) -> usize {
    match bytes.last() {
        Some(0) if bytes.len() > 1 => bytes.len() - 1,
        _ => bytes.len().max(1),
    }
}

/// Flips one random bit of `bytes[at]` (`len` = the bytes considered, for the message).
fn flip_bit(bytes: &mut [u8], at: usize, rng: &mut StdRng, len: usize) -> String {
    let bit = rng.gen_range(0..8u32);
    let was = bytes[at];
    bytes[at] ^= 1 << bit;
    format!(
        "byte {at} of {len}, bit {bit}: {was:#04x} -> {:#04x}",
        bytes[at]
    )
}

/// Swaps a random pair of adjacent, different bytes before the delimiter.
fn swap_adjacent(bytes: &mut [u8], rng: &mut StdRng) -> String {
    let body = body_len(bytes);
    let pairs: Vec<usize> = (0..body.saturating_sub(1))
        .filter(|&i| bytes[i] != bytes[i + 1])
        .collect();
    if pairs.is_empty() {
        return "no two adjacent bytes differ: unchanged".into();
    }
    let i = pairs[rng.gen_range(0..pairs.len())];
    bytes.swap(i, i + 1);
    format!(
        "bytes {i} and {} of {body} swapped: {:02x} {:02x} -> {:02x} {:02x}",
        i + 1,
        bytes[i + 1],
        bytes[i],
        bytes[i],
        bytes[i + 1]
    )
}

/// Cuts a byte stream into chunks that each end with a 0x00 delimiter: a frame on the wire,
/// or a lone delimiter. A run without a delimiter longer than four of the longest frames is
/// cut off as a chunk of its own (line noise).
#[derive(Debug, Default)]
pub struct FrameSplitter {
    buf: Vec<u8>,
}

/// Longest run without a delimiter kept in one chunk.
const MAX_CHUNK: usize = 4 * MAX_FRAME;

impl FrameSplitter {
    /// An empty splitter.
    pub fn new() -> FrameSplitter {
        FrameSplitter::default()
    }

    /// Adds received bytes; appends every completed chunk to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        for &b in bytes {
            self.buf.push(b);
            if b == 0 || self.buf.len() >= MAX_CHUNK {
                out.push(std::mem::take(&mut self.buf));
            }
        }
    }

    /// Forgets a partly received chunk.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests;
