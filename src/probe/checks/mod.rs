//! The conformance checks and what they share: the check builder, the probe context (session,
//! robot, declarations) and helpers to run episodes and read the timeline.
//!
//! Each SPEC rule is judged by exactly one check; other checks that happen to exercise it
//! stay silent about it, so a firmware that breaks one rule fails one row. Episode accounting
//! (EpisodeEnd `steps` and `episode_return`, Ack before the first Step) belongs to `episode`;
//! elsewhere Steps are counted as received, matched by their trial and episode numbers.

mod episodes;
mod framing;
mod handshake;
mod params;
mod safety;

pub use episodes::{abort, episode, status};
pub use framing::lost_frame_recovery;
pub use handshake::{declarations, heartbeats, version, Handshake, Info};
pub use params::{retry_idempotence, set_params_echo};
pub use safety::{estop_latch, estop_stop, watchdog};

use std::time::{Duration, Instant};

use firmware_protocol::{
    EpisodeStatus, HostMsg, NackCode, ParamValues, RobotMsg, RobotState, Status, Step,
};

use super::report::{CheckReport, Failure, ParamRow, Verdict};
use super::session::{Received, Sent, Session, SessionError};

/// How long the probe waits for the answer to a command: a host's whole retry budget
/// (4 attempts of 250 ms, SPEC §7.4). The probe does not resend unless a check says so.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Steps of a short episode (episode, retry, status checks).
pub const SHORT_EPISODE: u32 = 20;
/// Steps of a long episode (abort, EStop, watchdog checks): the most the probe ever runs.
pub const LONG_EPISODE: u32 = 200;

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckId {
    /// Hello / Info version negotiation.
    Version,
    /// ParamInfo declarations and the schema hash.
    Declarations,
    /// Robot heartbeats.
    Heartbeats,
    /// SetParams echo, clamping and refusals.
    SetParamsEcho,
    /// One episode, frame by frame.
    Episode,
    /// Retries answered from the store, executed once.
    RetryIdempotence,
    /// Abort ends an episode, unlatched.
    Abort,
    /// EStop stops a running episode at once.
    EStopStop,
    /// EStop latches until ClearEStop.
    EStopLatch,
    /// The host-silence watchdog.
    Watchdog,
    /// Damaged frames ignored, lost answers recovered.
    LostFrameRecovery,
    /// GetStatus (protocol v2).
    Status,
}

impl CheckId {
    /// Every check, in run order.
    pub const ALL: [CheckId; 12] = [
        CheckId::Version,
        CheckId::Declarations,
        CheckId::Heartbeats,
        CheckId::SetParamsEcho,
        CheckId::Episode,
        CheckId::RetryIdempotence,
        CheckId::Abort,
        CheckId::EStopStop,
        CheckId::EStopLatch,
        CheckId::Watchdog,
        CheckId::LostFrameRecovery,
        CheckId::Status,
    ];

    /// The row's name.
    pub fn name(self) -> &'static str {
        match self {
            CheckId::Version => "version",
            CheckId::Declarations => "declarations",
            CheckId::Heartbeats => "heartbeats",
            CheckId::SetParamsEcho => "set-params-echo",
            CheckId::Episode => "episode",
            CheckId::RetryIdempotence => "retry-idempotence",
            CheckId::Abort => "abort",
            CheckId::EStopStop => "estop-stop",
            CheckId::EStopLatch => "estop-latch",
            CheckId::Watchdog => "watchdog",
            CheckId::LostFrameRecovery => "lost-frame-recovery",
            CheckId::Status => "status",
        }
    }

    /// What passing proves.
    pub fn proves(self) -> &'static str {
        match self {
            CheckId::Version => "Hello{v} is answered by Info{v}, or Nack UnsupportedVersion and then Info{1}",
            CheckId::Declarations => "every ParamInfo is well-formed and the schema hash matches them",
            CheckId::Heartbeats => "robot heartbeats come at least every 250 ms, well-formed, their uptime never going backwards",
            CheckId::SetParamsEcho => "SetParams echoes bit-identical values, clamps with the mask bit set, refuses NaN and wrong counts atomically",
            CheckId::Episode => "Ack before Step 0, Steps 0,1,2,… echoing trial/episode, EpisodeEnd counts and sums them exactly, then Ready",
            CheckId::RetryIdempotence => "a resent command (same seq and bytes) gets the stored answer and is not executed again",
            CheckId::Abort => "Abort ends the episode with EpisodeEnd Aborted, no Step after it, Ready, not latched",
            CheckId::EStopStop => "EStop is acknowledged at once and no Step follows its Ack; EpisodeEnd EStopped",
            CheckId::EStopLatch => "after EStop the robot stays Stopped, refusing SetParams and StartEpisode, until ClearEStop",
            CheckId::Watchdog => "a robot whose host goes quiet stops itself within the watchdog time and latches",
            CheckId::LostFrameRecovery => "damaged frames are dropped silently and a resent command gets the same answer",
            CheckId::Status => "GetStatus reports state, episode, steps and return consistent with the frames seen",
        }
    }

    /// The SPEC.md sections it checks.
    pub fn spec(self) -> &'static str {
        match self {
            CheckId::Version => "§7.1, §11",
            CheckId::Declarations => "§5 ParamInfo, §6, §7.1",
            CheckId::Heartbeats => "§5 Heartbeat, §7.5",
            CheckId::SetParamsEcho => "§8, §9.1",
            CheckId::Episode => "§5 EpisodeEnd, §7.3, §9.2",
            CheckId::RetryIdempotence => "§7.4",
            CheckId::Abort => "§4 Abort, §9.2",
            CheckId::EStopStop => "§10.1",
            CheckId::EStopLatch => "§10.1, §10.3",
            CheckId::Watchdog => "§10.4",
            CheckId::LostFrameRecovery => "§2.5, §7.4",
            CheckId::Status => "v2 Status (message.rs)",
        }
    }
}

/// A check being run: what it measured and every expectation that failed.
#[derive(Debug)]
pub struct Check {
    id: CheckId,
    measured: Vec<String>,
    claims: Vec<String>,
    failures: Vec<Failure>,
    skip: Option<String>,
}

impl Check {
    /// A check with nothing measured or failed yet.
    pub fn new(id: CheckId) -> Self {
        Self {
            id,
            measured: Vec::new(),
            claims: Vec::new(),
            failures: Vec::new(),
            skip: None,
        }
    }

    /// Records a broken expectation.
    pub fn fail(
        &mut self,
        expected: impl Into<String>,
        seen: impl Into<String>,
        spec: &'static str,
    ) {
        self.failures.push(Failure {
            expected: expected.into(),
            seen: seen.into(),
            spec,
        });
    }

    /// Records a broken expectation unless `ok`; returns `ok`.
    pub fn expect(
        &mut self,
        ok: bool,
        expected: impl Into<String>,
        seen: impl FnOnce() -> String,
        spec: &'static str,
    ) -> bool {
        if !ok {
            self.fail(expected, seen(), spec);
        }
        ok
    }

    /// Adds a measured figure to the row.
    pub fn measured(&mut self, text: impl Into<String>) {
        self.measured.push(text.into());
    }

    /// Marks the check skipped (inconclusive or not applicable), with the reason.
    pub fn skip(mut self, why: impl Into<String>) -> Self {
        self.mark_skipped(why);
        self
    }

    /// Adds a statement that holds only if the check passes (shown only then).
    pub fn claim(&mut self, text: impl Into<String>) {
        self.claims.push(text.into());
    }

    /// Marks the check skipped in place.
    pub fn mark_skipped(&mut self, why: impl Into<String>) {
        self.skip = Some(why.into());
    }

    /// Whether an expectation failed.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The finished row.
    pub fn report(self) -> CheckReport {
        let verdict = if self.failed() {
            Verdict::Fail
        } else if self.skip.is_some() {
            Verdict::Skip
        } else {
            Verdict::Pass
        };
        let mut parts = self.measured;
        if verdict == Verdict::Pass {
            parts.extend(self.claims);
        }
        let mut measured = parts.join("; ");
        if let Some(why) = self.skip.filter(|_| verdict == Verdict::Skip) {
            measured = if measured.is_empty() {
                why
            } else {
                format!("{why} ({measured})")
            };
        }
        CheckReport {
            name: self.id.name(),
            proves: self.id.proves(),
            spec: self.id.spec(),
            verdict,
            measured,
            failures: self.failures,
        }
    }
}

/// A row for a check that did not run.
pub fn not_run(id: CheckId, why: &str) -> CheckReport {
    Check::new(id).skip(why).report()
}

/// An EpisodeEnd's fields.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// Echoed trial.
    pub trial: u32,
    /// Echoed episode.
    pub episode: u16,
    /// The return it reports.
    pub episode_return: f32,
    /// The step count it reports.
    pub steps: u32,
    /// How it ended.
    pub status: EpisodeStatus,
}

/// The EpisodeEnd in `msg`, if it is one.
pub fn as_end(msg: &RobotMsg) -> Option<End> {
    match *msg {
        RobotMsg::EpisodeEnd {
            trial,
            episode,
            episode_return,
            steps,
            status,
        } => Some(End {
            trial,
            episode,
            episode_return,
            steps,
            status,
        }),
        _ => None,
    }
}

/// An episode the probe started.
#[derive(Debug, Clone)]
pub struct Episode {
    /// Its trial number (unique per probe run).
    pub trial: u32,
    /// Its episode number.
    pub episode: u16,
    /// Its max_steps.
    pub max_steps: u32,
    /// The timeline position just before StartEpisode was written.
    pub from: usize,
    /// The StartEpisode frame.
    pub sent: Sent,
}

impl Episode {
    fn owns_step(&self, s: &Step) -> bool {
        s.trial == self.trial && s.episode == self.episode
    }

    fn owns_end(&self, e: &End) -> bool {
        e.trial == self.trial && e.episode == self.episode
    }
}

/// Everything the checks after the handshake need.
pub struct Probe {
    /// The link.
    pub s: Session,
    /// The robot's Info.
    pub info: Info,
    /// Its declarations.
    pub params: Vec<ParamRow>,
    /// Longest wait for Ready after a reset.
    pub ready_timeout: Duration,
    /// EStops measured by `estop-stop`.
    pub estop_samples: u32,
    next_trial: u32,
}

/// First trial number the probe uses; each episode gets the next one, so Steps are matched to
/// their episode by number.
const FIRST_TRIAL: u32 = 0x7000_0001;

impl Probe {
    /// The context for the checks after a successful handshake.
    pub fn new(
        s: Session,
        info: Info,
        params: Vec<ParamRow>,
        ready_timeout: Duration,
        estop_samples: u32,
    ) -> Self {
        Self {
            s,
            info,
            params,
            ready_timeout,
            estop_samples,
            next_trial: FIRST_TRIAL,
        }
    }

    /// Whether the firmware speaks protocol v2 (GetStatus).
    pub fn v2(&self) -> bool {
        self.info.protocol_version >= 2
    }

    /// The declared control period.
    pub fn step_period(&self) -> Duration {
        Duration::from_micros(self.info.step_period_us.max(1) as u64)
    }

    /// A generous bound for `n` control steps at the declared period: twice as long, plus 1 s.
    pub fn step_budget(&self, n: u32) -> Duration {
        self.step_period() * n.saturating_mul(2) + Duration::from_secs(1)
    }

    /// The firmware's default parameter set.
    pub fn defaults(&self) -> Vec<f32> {
        self.params.iter().map(|p| p.default).collect()
    }

    /// Sends SetParams with `values` and waits for its answer.
    pub fn set_params(&mut self, values: &[f32]) -> Result<(Sent, Option<Received>), SessionError> {
        let values = ParamValues::from_slice(values).expect("at most 64 values");
        self.s
            .request(&HostMsg::SetParams { values }, ANSWER_TIMEOUT)
    }

    /// Starts an episode of `max_steps` with a fresh trial number (does not wait for the Ack).
    pub fn start(&mut self, max_steps: u32) -> Result<Episode, SessionError> {
        let trial = self.next_trial;
        self.next_trial += 1;
        let episode = (trial % 5 + 1) as u16;
        let from = self.s.mark();
        let sent = self.s.send(&HostMsg::StartEpisode {
            trial,
            episode,
            max_steps,
            seed: trial as u64,
        })?;
        Ok(Episode {
            trial,
            episode,
            max_steps,
            from,
            sent,
        })
    }

    /// The answer to the episode's StartEpisode.
    pub fn answer(&mut self, ep: &Episode) -> Result<Option<Received>, SessionError> {
        self.s.answer_from(ep.from, &ep.sent, ANSWER_TIMEOUT)
    }

    /// The episode's Step frames received at timeline positions in `from..to`.
    pub fn steps(&self, ep: &Episode, from: usize, to: usize) -> Vec<(usize, Step)> {
        let frames = self.s.frames();
        let to = to.min(frames.len());
        (from.min(to)..to)
            .filter_map(|i| match frames[i].msg {
                RobotMsg::Step(s) if ep.owns_step(&s) => Some((i, s)),
                _ => None,
            })
            .collect()
    }

    /// Waits until `n` of the episode's Steps have arrived; false if its EpisodeEnd came
    /// first or `deadline` passed.
    pub fn wait_steps(
        &mut self,
        ep: &Episode,
        n: usize,
        deadline: Instant,
    ) -> Result<bool, SessionError> {
        let mut seen = 0;
        let found = self.s.wait_for(ep.from, deadline, |f| match &f.msg {
            RobotMsg::Step(s) if ep.owns_step(s) => {
                seen += 1;
                seen >= n
            }
            m => as_end(m).is_some_and(|e| ep.owns_end(&e)),
        })?;
        Ok(found.is_some_and(|i| matches!(self.s.frames()[i].msg, RobotMsg::Step(_))))
    }

    /// Waits until `deadline` for the episode's EpisodeEnd.
    pub fn wait_end(
        &mut self,
        ep: &Episode,
        deadline: Instant,
    ) -> Result<Option<(usize, End)>, SessionError> {
        let i = self.s.wait_for(ep.from, deadline, |f| {
            as_end(&f.msg).is_some_and(|e| ep.owns_end(&e))
        })?;
        Ok(i.and_then(|i| as_end(&self.s.frames()[i].msg).map(|e| (i, e))))
    }

    /// Waits for Ready (or a heartbeat saying Ready) at or after `from`; returns how long
    /// after `since` it came.
    pub fn ready_after(
        &mut self,
        from: usize,
        since: Instant,
    ) -> Result<Option<Duration>, SessionError> {
        let timeout = self.ready_timeout;
        Ok(self
            .s
            .wait_ready(from, timeout)?
            .map(|r| r.at.saturating_duration_since(since)))
    }

    /// A barrier: a harmless query whose answer proves the firmware has sent everything the
    /// commands before it caused. Returns its answer.
    pub fn sync(&mut self) -> Result<Option<Received>, SessionError> {
        let msg = if self.params.is_empty() {
            HostMsg::Hello {
                protocol_version: self.info.protocol_version,
            }
        } else {
            HostMsg::GetParamInfo { index: 0 }
        };
        Ok(self.s.request(&msg, ANSWER_TIMEOUT)?.1)
    }

    /// GetStatus (v2) and its answer with its timeline position.
    pub fn status(&mut self) -> Result<Option<(usize, Status)>, SessionError> {
        let from = self.s.mark();
        let sent = self.s.send(&HostMsg::GetStatus)?;
        let seq = sent.seq;
        let i = self.s.wait_for(
            from,
            sent.at + ANSWER_TIMEOUT,
            |f| matches!(f.msg, RobotMsg::Status(s) if s.ack_seq == seq),
        )?;
        Ok(i.and_then(|i| match self.s.frames()[i].msg {
            RobotMsg::Status(s) => Some((i, s)),
            _ => None,
        }))
    }

    /// Brings the robot back to Ready with its defaults after a failed check: EStop (stops
    /// whatever runs), ClearEStop, SetParams(defaults), Ready. The error says which step did
    /// not answer.
    pub fn recover(&mut self) -> Result<Result<(), String>, SessionError> {
        let (_, ack) = self.s.request(&HostMsg::EStop, ANSWER_TIMEOUT)?;
        if !is_ack(ack.as_ref()) {
            return Ok(Err(format!("EStop got {}", describe(ack.as_ref()))));
        }
        let settle = (self.step_period() * 2).max(Duration::from_millis(50));
        self.s.idle_until(Instant::now() + settle)?;
        let (_, ack) = self.s.request(&HostMsg::ClearEStop, ANSWER_TIMEOUT)?;
        if !is_ack(ack.as_ref()) {
            return Ok(Err(format!("ClearEStop got {}", describe(ack.as_ref()))));
        }
        let defaults = self.defaults();
        let from = self.s.mark();
        let (_, applied) = self.set_params(&defaults)?;
        if !matches!(applied.map(|a| a.msg), Some(RobotMsg::ParamsApplied { .. })) {
            return Ok(Err(format!(
                "SetParams(defaults) got {}",
                describe(applied.as_ref())
            )));
        }
        if self.ready_after(from, Instant::now())?.is_none() {
            return Ok(Err(format!(
                "no Ready within {} ms of ClearEStop and SetParams",
                self.ready_timeout.as_millis()
            )));
        }
        Ok(Ok(()))
    }

    /// Makes sure the robot is Ready (or Idle) before a check: at once if the last
    /// state-bearing frame said Ready, else after the next heartbeat (waiting for Ready if it
    /// is resetting, bringing it back with [`Probe::recover`] if it is running or stopped).
    pub fn ensure_ready(&mut self) -> Result<Result<(), String>, SessionError> {
        let last = self.s.frames().iter().rev().find(|f| {
            matches!(
                f.msg,
                RobotMsg::Ready
                    | RobotMsg::Heartbeat { .. }
                    | RobotMsg::EpisodeEnd { .. }
                    | RobotMsg::SafetyTrip { .. }
                    | RobotMsg::Ack { .. }
                    | RobotMsg::ParamsApplied { .. }
            )
        });
        if matches!(
            last.map(|f| f.msg),
            Some(
                RobotMsg::Ready
                    | RobotMsg::Heartbeat {
                        state: RobotState::Ready,
                        ..
                    }
            )
        ) {
            return Ok(Ok(()));
        }
        let from = self.s.mark();
        match self.heartbeat_state(from)? {
            // Idle: nothing applied yet (the first check applies the defaults).
            Some(RobotState::Ready | RobotState::Idle) => Ok(Ok(())),
            Some(RobotState::Resetting) if self.ready_after(from, Instant::now())?.is_some() => {
                Ok(Ok(()))
            }
            _ => self.recover(),
        }
    }

    /// The robot heartbeats' state at or after `from`, waiting up to 1.5 s (six times the
    /// longest heartbeat period SPEC §7.5 allows).
    pub fn heartbeat_state(&mut self, from: usize) -> Result<Option<RobotState>, SessionError> {
        self.s.wait_heartbeat(from, Duration::from_millis(1500))
    }
}

/// Whether `a` is an Ack.
pub fn is_ack(a: Option<&Received>) -> bool {
    matches!(a.map(|a| a.msg), Some(RobotMsg::Ack { .. }))
}

/// Whether an answer is a Nack with `code`.
pub fn is_nack(a: Option<&Received>, code: NackCode) -> bool {
    matches!(a.map(|a| a.msg), Some(RobotMsg::Nack { code: c, .. }) if c == code)
}

/// Where in the timeline (at or after `from`) the answer to the frame `sent` arrived.
pub fn answer_position(s: &Session, from: usize, sent: &Sent) -> Option<usize> {
    s.frames()[from..]
        .iter()
        .position(|f| f.ack_seq() == Some(sent.seq))
        .map(|i| from + i)
}

/// Sends `msg` and expects its Ack (a FAIL row citing `spec` otherwise); returns the
/// timeline position of the Ack, or `None` when there was none (the check has failed).
pub fn expect_acked(
    p: &mut Probe,
    c: &mut Check,
    msg: &HostMsg,
    spec: &'static str,
) -> Result<Option<usize>, SessionError> {
    let from = p.s.mark();
    let (sent, answer) = p.s.request(msg, ANSWER_TIMEOUT)?;
    let name = describe_host(msg);
    if !c.expect(
        is_ack(answer.as_ref()),
        format!("Ack to {name}"),
        || describe(answer.as_ref()),
        spec,
    ) {
        return Ok(None);
    }
    Ok(answer_position(&p.s, from, &sent))
}

/// The name of a host message, for a FAIL row.
fn describe_host(m: &HostMsg) -> &'static str {
    match m {
        HostMsg::Hello { .. } => "Hello",
        HostMsg::GetParamInfo { .. } => "GetParamInfo",
        HostMsg::SetParams { .. } => "SetParams",
        HostMsg::StartEpisode { .. } => "StartEpisode",
        HostMsg::Abort => "Abort",
        HostMsg::EStop => "EStop",
        HostMsg::ClearEStop => "ClearEStop",
        HostMsg::Heartbeat { .. } => "Heartbeat",
        HostMsg::GetStatus => "GetStatus",
    }
}

/// A short description of an answer (or its absence) for a FAIL row.
pub fn describe(a: Option<&Received>) -> String {
    match a {
        None => format!("no answer within {} ms", ANSWER_TIMEOUT.as_millis()),
        Some(r) => describe_msg(&r.msg),
    }
}

/// A short description of a robot message.
pub fn describe_msg(m: &RobotMsg) -> String {
    match m {
        RobotMsg::Info {
            protocol_version, ..
        } => format!("Info{{protocol_version {protocol_version}}}"),
        RobotMsg::ParamInfo { index, name, .. } => format!("ParamInfo{{{index}, {name:?}}}"),
        RobotMsg::ParamsApplied { clamped_mask, .. } => {
            format!("ParamsApplied{{clamped_mask {clamped_mask:#x}}}")
        }
        RobotMsg::Ack { .. } => "Ack".into(),
        RobotMsg::Nack { code, .. } => format!("Nack {code:?}"),
        RobotMsg::Step(s) => format!("Step{{step {}}}", s.step),
        RobotMsg::EpisodeEnd { steps, status, .. } => {
            format!("EpisodeEnd{{{status:?}, steps {steps}}}")
        }
        RobotMsg::SafetyTrip { reason, value, .. } => {
            format!("SafetyTrip{{{reason:?}, value {value}}}")
        }
        RobotMsg::Ready => "Ready".into(),
        RobotMsg::Heartbeat { state, .. } => format!("Heartbeat{{{state:?}}}"),
        RobotMsg::Status(s) => format!("Status{{{:?}, {:?}}}", s.state, s.phase),
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The binary32 sum of rewards in step order (SPEC §5 EpisodeEnd).
pub fn reward_sum(steps: &[(usize, Step)]) -> f32 {
    steps.iter().fold(0.0f32, |acc, (_, s)| acc + s.reward)
}

/// Whether `later` is after `earlier` on a wrapping u32 clock.
pub fn wraps_forward(earlier: u32, later: u32) -> bool {
    let d = later.wrapping_sub(earlier);
    d > 0 && d < 1 << 31
}
