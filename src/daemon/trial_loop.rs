//! The trial loop: ask → SetParams (what the robot applied is what is recorded) → per
//! episode: Ready → StartEpisode → Steps (safety envelope, pruner) → EpisodeEnd → tell.
//!
//! A link or host fault is never a verdict on the gait. A lost episode result, a deadline, a
//! watchdog trip re-run the episode; a reboot re-runs the trial; each trial may meet
//! [`MAX_FAULTS_PER_TRIAL`] faults before it is marked FAIL with the reason, and
//! [`MAX_FAILED_IN_A_ROW`] such failures in a row stop the run. What the loop recovered from
//! is recorded with the trial (`link_incidents`).

use std::time::{Duration, Instant};

use anyhow::anyhow;
use firmware_protocol::{EpisodeStatus, NackCode, RobotState, Step, TripReason};
use serde_json::{json, Value};

use super::firmware::{applied_params, firmware_values};
use super::operator::log_operator_action;
use super::progress::TrialProgress;
use super::summary::{format_params, print_end, TrialEnd};
use super::worker::{LeaseKeeper, StudyWorker};
use super::{count_finished, guard_step, pending_reevaluation, RunOutcome, PRUNE_POOR};
use crate::config::Config;
use crate::control::desk::{Desk, Disruption};
use crate::control::{global_slot, Interrupts};
use crate::evaluation;
use crate::pruner::{PruneRequest, Pruner};
use crate::robot::{Incident, LinkError, RobotEvent, RobotInfo, RobotLink};
use crate::safety::Violation;
use crate::space::{Params, SearchSpace};
use crate::storage::StorageError;
use crate::study::{StudyError, TrialHandle};
use crate::trial::{
    ConstraintViolation, Direction, EpisodeRecord, FrozenTrial, UNSAFE_ATTR, UNSAFE_REASON,
};

/// Link or host faults one trial may meet before it is marked FAIL.
pub const MAX_FAULTS_PER_TRIAL: u32 = 3;
/// Trials failed by faults in a row that stop the run (the link is too unreliable).
pub const MAX_FAILED_IN_A_ROW: u32 = 3;

/// The prune reason of a trial the operator skipped.
pub const OPERATOR_REASON: &str = "operator";

/// The trial attribute listing the link incidents a trial met.
pub const INCIDENTS_ATTR: &str = "link_incidents";

/// The trial loop's reasons to stop early.
pub(super) enum Stop {
    Interrupted,
    Link(LinkError),
    /// Another worker took the trial over (this one was silent longer than its lease).
    LeaseLost(String),
    /// The operator interrupted the trial in flight (stop, skip, pause now).
    Operator(Disruption),
    Other(anyhow::Error),
}

impl From<LinkError> for Stop {
    fn from(e: LinkError) -> Self {
        Stop::Link(e)
    }
}

impl From<StudyError> for Stop {
    fn from(e: StudyError) -> Self {
        match e {
            StudyError::Storage(lost @ StorageError::LeaseLost { .. }) => {
                Stop::LeaseLost(lost.to_string())
            }
            e => Stop::Other(e.into()),
        }
    }
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Other(e)
    }
}

macro_rules! or_interrupt {
    ($self:ident, $fut:expr) => {{
        let mut interrupts = $self.interrupts.clone();
        tokio::select! {
            biased;
            _ = interrupts.wait() => return Err(Stop::Interrupted),
            r = $fut => r,
        }
    }};
}

/// Like `or_interrupt!`, and also returns `Err(Stop::Operator(_))` when the operator
/// interrupts the trial (stop, skip, pause now). Only around waits that are cancel-safe and
/// leave the link consistent when dropped (`wait_ready`, `next_event`), never around a
/// command.
macro_rules! or_operator {
    ($self:ident, $fut:expr) => {{
        let mut interrupts = $self.interrupts.clone();
        let desk = $self.desk.clone();
        let mut desk_rx = desk.subscribe();
        let fut = $fut;
        tokio::pin!(fut);
        loop {
            if let Some(d) = most_urgent(&desk) {
                return Err(Stop::Operator(d));
            }
            tokio::select! {
                biased;
                _ = interrupts.wait() => return Err(Stop::Interrupted),
                _ = desk_rx.changed() => continue,
                r = &mut fut => break r,
            }
        }
    }};
}

/// A deliberate fault for tests of the safety paths, from `GAITTUNE_FAILPOINT`:
/// `panic-at-step:N` panics the daemon when step N of an episode arrives;
/// `interrupt-after-unsafe` sends the daemon SIGINT right after it persisted an unsafe verdict,
/// while the robot is still latched.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Failpoint {
    panic_at_step: Option<u32>,
    interrupt_after_unsafe: bool,
}

impl Failpoint {
    pub(super) fn from_env() -> Self {
        let spec = std::env::var("GAITTUNE_FAILPOINT").unwrap_or_default();
        Self {
            panic_at_step: spec
                .strip_prefix("panic-at-step:")
                .and_then(|n| n.parse().ok()),
            interrupt_after_unsafe: spec == "interrupt-after-unsafe",
        }
    }
}

/// How one episode ended.
enum EpisodeOutcome {
    /// Ran all its steps.
    Completed { record: EpisodeRecord },
    /// Aborted by us because the pruner judged the trial poor (the robot resets, unlatched).
    Pruned { record: Option<EpisodeRecord> },
    /// Stopped for safety (the envelope or the firmware's own limits); the robot is latched.
    Unsafe {
        detail: Value,
        summary: String,
        record: Option<EpisodeRecord>,
    },
    /// The firmware's watchdog stopped it: a host or link fault; the robot is latched.
    WatchdogTrip { silent_ms: f32 },
}

/// What a fault calls for.
enum Recovery {
    /// Run the episode again (the parameters are still applied).
    Episode,
    /// Run the whole trial again from SetParams (the robot rebooted).
    Trial,
}

/// Judges one trial's steps: its tally and the pruner.
struct Judge<'p> {
    progress: TrialProgress,
    current: FrozenTrial,
    history: Vec<FrozenTrial>,
    pruner: Option<&'p dyn Pruner>,
    study_name: String,
    direction: Direction,
}

impl Judge<'_> {
    /// Takes in a step; `true` when the pruner says the trial is poor.
    fn on_step(&mut self, episode: u32, step: &Step) -> bool {
        let Some((at, value)) = self.progress.on_step(episode, step) else {
            return false;
        };
        self.current.intermediate.insert(at, value);
        self.pruner.is_some_and(|p| {
            p.prune(&PruneRequest {
                study_name: &self.study_name,
                direction: self.direction,
                history: &self.history,
                trial: &self.current,
                step: at,
            })
        })
    }

    fn rollback_episode(&mut self) {
        self.progress.rollback_episode();
        self.current.intermediate = self.progress.intermediate().clone();
    }

    fn reset(&mut self) {
        self.progress.reset();
        self.current.intermediate.clear();
    }
}

pub(super) struct TrialRunner<'a> {
    pub config: &'a Config,
    pub info: RobotInfo,
    pub link: &'a mut RobotLink,
    pub study: &'a StudyWorker,
    pub space: SearchSpace,
    pub study_name: String,
    pub direction: Direction,
    pub interrupts: Interrupts,
    pub release_latch: bool,
    pub failpoint: Failpoint,
    pub pruner: Option<Box<dyn Pruner>>,
    pub failed_in_a_row: u32,
    /// The last sign of normal progress (an episode started, a step arrived).
    pub last_progress: Instant,
    /// A fault being recovered by a re-run: recorded once the re-run has started.
    pub recovering: Option<Incident>,
    /// A trial already started for this worker (the baseline), run before asking.
    pub first: Option<TrialHandle>,
    /// Keeps the lease on the trial in flight.
    pub lease: LeaseKeeper,
    /// "Waiting for other workers" was said since the last trial.
    pub waiting_noted: bool,
    /// The operator's requests and the daemon's status, shared with the control endpoints.
    pub desk: Desk,
    /// The operator's gos used so far (`[robot] operator_go`).
    pub gos_used: u64,
    /// The robot is latched by an operator's stop: release it when the operator says so.
    pub operator_latched: bool,
    /// What the daemon last said it waits for.
    pub waiting_for: Option<String>,
}

impl TrialRunner<'_> {
    pub async fn run_all(&mut self) -> anyhow::Result<RunOutcome> {
        let size = self.config.study.trials;
        loop {
            if let Err(stop) = self.hold().await {
                return self.stopped_outside_trial(stop, "the study").await;
            }
            let finished = count_finished(&self.study.call(|s| s.trials()).await?);
            if finished >= size {
                return self.reevaluate_until_done().await;
            }
            if self.interrupts.requested() {
                return self.stop_interrupted(None).await;
            }
            let trial = match self.first.take() {
                Some(t) => t,
                None => {
                    let claimed = self
                        .study
                        .call(move |s| {
                            let Some(t) = s.ask_within(size)? else {
                                return Ok(None);
                            };
                            if t.resumed {
                                // Whatever an interrupted attempt (or a worker that went
                                // away) recorded is not this run's measurement.
                                s.clear_progress(t.number)?;
                            }
                            Ok::<_, StudyError>(Some(t))
                        })
                        .await;
                    match claimed {
                        Ok(Some(t)) => t,
                        Ok(None) => {
                            self.wait_for_other_workers(finished, size).await?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            self.lease.watch(trial.number);
            self.waiting_noted = false;
            let started = Instant::now();
            let shown = self.space.external_params(&trial.params);
            self.desk.report(json!({
                "trial": trial.number, "params": shown, "episode": null, "step": null,
                "trial_started": crate::control::desk::unix_now(),
            }));
            self.desk.publish(
                "trial_started",
                json!({ "trial": trial.number, "params": shown, "position": finished + 1, "size": size }),
            );
            outln!(
                "trial {:>4} [{}/{}] {}",
                trial.number,
                finished + 1,
                size,
                format_params(&self.space, &trial.params)
            );
            let result = self.run_trial(trial.number, &trial.params).await;
            self.lease.release();
            self.finish_recovery();
            let incidents = self.link.take_incidents();
            if !incidents.is_empty() && !matches!(result, Err(Stop::LeaseLost(_))) {
                let number = trial.number;
                self.study
                    .call(move |s| append_incidents(s, number, incidents))
                    .await?;
            }
            if let Err(Stop::Operator(d)) = result {
                if let Err(stop) = self.settle_disruption(trial.number, d).await {
                    return self.stopped_outside_trial(stop, "the study").await;
                }
                self.report_progress().await?;
                continue;
            }
            match result {
                Ok(end) => {
                    let number = trial.number;
                    let best = self.report_progress().await?;
                    print_end(number, &end, best.as_ref(), started);
                    self.desk.publish("trial_finished", end.to_event(number));
                    self.desk
                        .report(json!({ "trial": null, "episode": null, "step": null }));
                    if matches!(end, TrialEnd::Failed(_)) {
                        self.failed_in_a_row += 1;
                        if self.failed_in_a_row >= MAX_FAILED_IN_A_ROW {
                            global_slot().fire();
                            return Err(anyhow!(
                                "{} trials in a row failed on link faults: the link to {} is too unreliable to tune on; check the cable, the baud rate and the firmware, then rerun (the study is saved)",
                                self.failed_in_a_row,
                                self.link.device()
                            ));
                        }
                    } else {
                        self.failed_in_a_row = 0;
                    }
                }
                Err(Stop::Interrupted) => return self.stop_interrupted(Some(trial.number)).await,
                Err(Stop::LeaseLost(why)) => {
                    outln!("trial {} abandoned: {why}", trial.number);
                }
                Err(Stop::Link(e)) => {
                    // The robot may still be moving if only our side of the line failed.
                    global_slot().fire();
                    let number = trial.number;
                    self.study
                        .call(move |s| s.requeue_if_running(number))
                        .await?;
                    return Err(anyhow!(e).context(format!(
                        "trial {number} stopped and re-queued; the study is saved — fix the link and rerun to continue"
                    )));
                }
                Err(Stop::Other(e)) => {
                    global_slot().fire();
                    let number = trial.number;
                    self.study
                        .call(move |s| s.requeue_if_running(number))
                        .await?;
                    return Err(e.context(format!("trial {number} re-queued")));
                }
                Err(Stop::Operator(_)) => unreachable!("settled above"),
            }
        }
    }

    /// Re-evaluates the top trials. The operator's stop or pause, met during an episode or
    /// between them (the robot already latched when the next trial's parameters go out), is
    /// acknowledged and held; then the re-evaluation resumes from what is persisted.
    async fn reevaluate_until_done(&mut self) -> anyhow::Result<RunOutcome> {
        loop {
            let stop = match self.reevaluate().await {
                Ok(()) => return Ok(RunOutcome::Finished),
                Err(Stop::Operator(d)) => {
                    outln!("re-evaluation: {} by {}", d.action(), d.by());
                    let held = match self.quiet_robot_for(&d).await {
                        Ok(()) => self.hold().await,
                        stop => stop,
                    };
                    match held {
                        Ok(()) => continue,
                        Err(stop) => stop,
                    }
                }
                Err(stop) => stop,
            };
            return self.stopped_outside_trial(stop, "re-evaluation").await;
        }
    }

    /// Ends the run on a stop met with no trial in flight (`what`: the study, or its
    /// re-evaluation).
    async fn stopped_outside_trial(
        &mut self,
        stop: Stop,
        what: &str,
    ) -> anyhow::Result<RunOutcome> {
        match stop {
            Stop::Interrupted => self.stop_interrupted(None).await,
            Stop::LeaseLost(why) => Err(anyhow!(why)),
            Stop::Link(e) => {
                global_slot().fire();
                Err(anyhow!(e).context(format!(
                    "{what} stopped; what ran is saved — fix the link and rerun to continue"
                )))
            }
            Stop::Other(e) => {
                global_slot().fire();
                Err(e.context(format!("{what} stopped; what ran is saved")))
            }
            Stop::Operator(d) => Err(anyhow!(
                "internal error: the operator's {} reached the end of {what}",
                d.action()
            )),
        }
    }

    /// Puts the study's counts and best trial in the status; returns that best trial.
    async fn report_progress(&mut self) -> Result<Option<FrozenTrial>, StudyError> {
        let (counts, best) = self
            .study
            .call(|s| Ok::<_, StudyError>((s.counts()?, s.best_trial()?)))
            .await?;
        self.desk.report(json!({
            "counts": counts,
            "best": best.as_ref().map(|b| json!({ "trial": b.number, "value": b.value })),
        }));
        Ok(best)
    }

    /// Nothing to claim and nothing to create: the last trials run on other workers. Waits a
    /// moment (their leases may expire, or they finish), saying so once.
    async fn wait_for_other_workers(&mut self, finished: u64, size: u64) -> anyhow::Result<()> {
        if !self.waiting_noted {
            outln!(
                "{finished} of {size} trials finished; the others run on other workers: waiting for them"
            );
            self.waiting_noted = true;
        }
        let mut interrupts = self.interrupts.clone();
        tokio::select! {
            _ = interrupts.wait() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        Ok(())
    }

    /// Says what the daemon waits for (in the status, the event stream and the log).
    fn waiting(&mut self, what: Option<&str>) {
        let state = self.link.robot_state().map(|s| format!("{s:?}"));
        self.desk
            .report(json!({ "waiting_for": what, "robot_state": state }));
        if self.waiting_for.as_deref() != what {
            self.waiting_for = what.map(str::to_string);
            self.desk
                .report(json!({ "waiting_since": crate::control::desk::unix_now() }));
            self.desk
                .publish("waiting", json!({ "for": what, "robot_state": state }));
            if let Some(what) = what {
                tracing::info!("waiting for {what}");
            }
        }
    }

    /// Waits for what the operator holds the study for (a release after their stop, a resume
    /// after their pause), listening to the robot meanwhile; then releases the robot if their
    /// stop latched it. A robot that goes silent meanwhile (switched off for a battery) is
    /// reconnected before the study goes on.
    async fn hold(&mut self) -> Result<(), Stop> {
        let mut desk_rx = self.desk.subscribe();
        let mut said = None;
        let mut silent = false;
        loop {
            for d in self.desk.take_disruptions() {
                match d {
                    Disruption::Stop { .. } => self.operator_latched = true,
                    other => outln!(
                        "{} from {}: no trial in flight, nothing to {}",
                        other.action(),
                        other.by(),
                        other.action()
                    ),
                }
            }
            let (what, line) = if let Some(by) = self.desk.stopped_by() {
                self.operator_latched = true;
                (
                    "operator release (stopped by the operator)",
                    format!("stopped by {by}: the robot is latched; waiting for `gaittune ctl release` after your check"),
                )
            } else if self.desk.paused() {
                (
                    "resume (paused by the operator)",
                    "paused by the operator: waiting for `gaittune ctl resume`".to_string(),
                )
            } else {
                break;
            };
            if said != Some(what) {
                outln!("{line}");
                said = Some(what);
                self.waiting(Some(what));
            }
            let mut interrupts = self.interrupts.clone();
            if silent {
                tokio::select! {
                    _ = interrupts.wait() => return Err(Stop::Interrupted),
                    _ = desk_rx.changed() => {}
                }
                continue;
            }
            let listened = tokio::select! {
                _ = interrupts.wait() => return Err(Stop::Interrupted),
                _ = desk_rx.changed() => Ok(()),
                r = self.link.listen(Duration::from_millis(500)) => r,
            };
            if let Err(e) = listened {
                outln!("{e}: the robot is switched off or unplugged? It is reconnected when the study goes on");
                silent = true;
            }
            self.report_robot_state(silent);
        }
        if silent {
            let window = Duration::from_millis(self.config.robot.reconnect_ms);
            self.waiting(Some("link recovery (the robot answering again)"));
            match or_interrupt!(self, self.link.reconnect(window)) {
                Ok(()) => outln!("the robot answers again"),
                Err(LinkError::Rebooted { boot_id, .. }) => {
                    outln!("the robot answers again: it rebooted (boot id {boot_id:#010x})")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut released = false;
        if silent || self.operator_latched {
            let snapshot = or_interrupt!(self, self.link.snapshot())?;
            let watchdog = snapshot
                .status
                .is_some_and(|s| s.stop_cause.trip_reason() == Some(TripReason::Watchdog));
            match snapshot.state {
                RobotState::Stopped if self.operator_latched || watchdog => {
                    or_interrupt!(self, self.link.clear_estop())?;
                    released = true;
                }
                RobotState::Stopped => {
                    return Err(Stop::Other(anyhow!(
                        "the robot on {} came back latched stopped, not by the operator's stop nor its watchdog; check the robot, then rerun with --release-latch",
                        self.link.device()
                    )))
                }
                RobotState::Running => {
                    or_interrupt!(self, self.link.abort())?;
                }
                _ => {}
            }
        }
        let operator_stopped = self.operator_latched;
        if self.operator_latched {
            self.operator_latched = false;
            self.desk.release_done();
            self.desk.publish("robot", json!({ "state": "released" }));
            outln!("released by the operator: ClearEStop acknowledged; the study goes on");
        } else if said.is_some() {
            outln!("resumed by the operator");
            if released {
                outln!("the robot's watchdog latched it while it was away: released (a link fault, not a gait's)");
            }
        }
        if said.is_some() || operator_stopped {
            // A go given before a stop or a pause does not carry over it (even when the
            // release came before the loop got here): the operator gives it again for the
            // robot as it is now.
            self.gos_used = self.desk.go_count();
        }
        self.waiting(None);
        Ok(())
    }

    /// Puts the robot's last reported state in the status (`silent`: it says nothing now).
    fn report_robot_state(&self, silent: bool) {
        let state = if silent {
            Some("silent".to_string())
        } else {
            self.link.robot_state().map(|s| format!("{s:?}"))
        };
        self.desk.report(json!({ "robot_state": state }));
    }

    /// With `[robot] operator_go`: holds until the operator's go for this episode (a go
    /// given while the robot was still resetting counts; more than one does not pile up).
    async fn wait_for_go(&mut self, number: u64, episode: u32) -> Result<(), Stop> {
        self.gos_used = self.gos_used.max(self.desk.go_count().saturating_sub(1));
        if self.desk.go_count() > self.gos_used {
            self.gos_used += 1;
            return Ok(());
        }
        outln!("trial {number} episode {episode}: the robot is Ready; waiting for the operator's go (`gaittune ctl go`)");
        self.waiting(Some("operator go"));
        let mut desk_rx = self.desk.subscribe();
        loop {
            if let Some(d) = most_urgent(&self.desk) {
                return Err(Stop::Operator(d));
            }
            if self.desk.go_count() > self.gos_used {
                self.gos_used += 1;
                self.waiting(None);
                return Ok(());
            }
            let mut interrupts = self.interrupts.clone();
            tokio::select! {
                _ = interrupts.wait() => return Err(Stop::Interrupted),
                _ = desk_rx.changed() => {}
                r = self.link.listen(Duration::from_millis(500)) => r?,
            }
            self.report_robot_state(false);
        }
    }

    /// Publishes a safe step of the episode in flight for the live views.
    fn on_live_step(&self, step: &Step, judge: Option<&Judge<'_>>) {
        let value = judge.and_then(|j| j.progress.last_report());
        // Angles in degrees, as the safety envelope's limits are written.
        let (roll, pitch) = (
            (step.roll as f64).to_degrees(),
            (step.pitch as f64).to_degrees(),
        );
        let telemetry = json!({
            "step": step.step, "reward": step.reward, "roll": roll, "pitch": pitch,
            "height": step.body_height, "temp": step.max_joint_temp,
        });
        self.desk
            .report(json!({ "step": step.step, "telemetry": telemetry }));
        self.desk.publish(
            "step",
            json!({
                "trial": step.trial, "episode": step.episode, "step": step.step,
                "reward": step.reward, "roll": roll, "pitch": pitch,
                "height": step.body_height, "temp": step.max_joint_temp, "value": value,
            }),
        );
    }

    /// After a safety verdict is persisted: releases the robot's latch, unless the operator
    /// stopped it meanwhile (then their release does).
    async fn release_after_verdict(&mut self) -> Result<(), Stop> {
        if self.desk.stopped() {
            self.operator_latched = true;
            return Ok(());
        }
        or_interrupt!(self, self.link.clear_estop())?;
        Ok(())
    }

    /// Carries out the operator's interruption of trial `number`: a stop (already on the
    /// wire) is acknowledged and the trial re-queued; a pause now aborts the episode and
    /// re-queues the trial; a skip aborts it and records it PRUNED (`operator`). The loop's
    /// [`Self::hold`] then waits for the release or the resume.
    async fn settle_disruption(&mut self, number: u64, d: Disruption) -> Result<(), Stop> {
        self.quiet_robot_for(&d).await?;
        let by = d.by().to_string();
        let action = d.action();
        let skipped = matches!(d, Disruption::Skip { .. });
        let recorded = self
            .study
            .call(move |s| {
                if s.trial(number)?.state != crate::trial::TrialState::Running {
                    return Ok(false);
                }
                log_operator_action(s, number, action, &by, None)?;
                if skipped {
                    let value = s.trial(number)?.last_intermediate().map(|(_, v)| v);
                    s.prune(number, OPERATOR_REASON, value)?;
                } else {
                    s.requeue_if_running(number)?;
                }
                Ok::<_, StudyError>(true)
            })
            .await?;
        let what = match (&d, recorded) {
            (_, false) => "it had already finished".to_string(),
            (Disruption::Skip { .. }, true) => "recorded PRUNED (operator)".to_string(),
            (Disruption::Stop { .. }, true) => {
                "EStop acknowledged, the robot is latched; the trial is re-queued".to_string()
            }
            (Disruption::PauseNow { .. }, true) => {
                "the episode is aborted and the trial re-queued".to_string()
            }
        };
        outln!("trial {number}: {} by {}: {what}", d.action(), d.by());
        self.desk.publish(
            "trial_finished",
            json!({ "trial": number, "state": if skipped { "PRUNED" } else { "WAITING" },
                    "reason": format!("operator {}", d.action()), "by": d.by() }),
        );
        self.desk
            .report(json!({ "trial": null, "episode": null, "step": null }));
        Ok(())
    }

    /// The robot's side of the operator's interruption: a stop (already on the wire) is
    /// acknowledged, a pause now or a skip aborts the episode in flight.
    async fn quiet_robot_for(&mut self, d: &Disruption) -> Result<(), Stop> {
        self.link.forget_episode();
        // A go given for the episode the operator interrupted is spent with it.
        self.gos_used = self.desk.go_count();
        match d {
            Disruption::Stop { .. } => {
                self.operator_latched = true;
                // Idempotent: waits for the robot's acknowledgement of the latch.
                or_interrupt!(self, self.link.estop())?;
            }
            // Whatever the last heartbeat said: the robot may have started the episode since.
            Disruption::PauseNow { .. } | Disruption::Skip { .. } => {
                match or_interrupt!(self, self.link.abort()) {
                    // Not running (it ended on its own meanwhile, or never started).
                    Ok(()) | Err(LinkError::Nack { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.link.forget_episode();
        Ok(())
    }

    /// Records the fault being recovered, its recovery time ending now.
    fn finish_recovery(&mut self) {
        if let Some(mut incident) = self.recovering.take() {
            incident.recovery_ms = self.last_progress.elapsed().as_secs_f64() * 1e3;
            self.link.record_incident(incident);
        }
    }

    async fn stop_interrupted(&mut self, in_flight: Option<u64>) -> anyhow::Result<RunOutcome> {
        // The signal thread already sent one EStop; this one waits for the robot's
        // acknowledgement so we exit knowing the motors are stopped.
        match tokio::time::timeout(Duration::from_secs(2), self.link.estop()).await {
            Ok(Ok(())) => outln!("robot acknowledged EStop (latched)"),
            Ok(Err(e)) => eprintln!("gaittune: EStop not acknowledged: {e}"),
            Err(_) => eprintln!("gaittune: EStop not acknowledged within 2 s"),
        }
        if let Some(number) = in_flight {
            // The trial may already be finished (a safety stop persisted just before the
            // interrupt): then there is nothing to re-queue.
            let by = match self.interrupts.signal() {
                Some(signal) => format!("signal {}", signal.as_str()),
                None => "signal".to_string(),
            };
            if self
                .study
                .call(move |s| {
                    let requeued = s.requeue_if_running(number)?;
                    if requeued {
                        log_operator_action(s, number, "interrupt", &by, None)?;
                    }
                    Ok::<_, StudyError>(requeued)
                })
                .await?
            {
                outln!("trial {number} re-queued (WAITING): it runs again on the next run");
            }
        }
        outln!("interrupted: study '{}' saved", self.study_name);
        Ok(RunOutcome::Interrupted)
    }

    /// After an EStop this process sent outside the safety envelope: the operator's stop (from
    /// a control endpoint), or a signal whose interrupt is on its way.
    async fn interrupted_soon(&self) -> Result<EpisodeOutcome, Stop> {
        if let Some(by) = self.desk.stopped_by() {
            return Err(Stop::Operator(Disruption::Stop { by }));
        }
        let mut interrupts = self.interrupts.clone();
        match tokio::time::timeout(Duration::from_secs(2), interrupts.wait()).await {
            Ok(()) => Err(Stop::Interrupted),
            Err(_) => Err(Stop::Other(anyhow!(
                "the robot was stopped by an EStop from this process without an operator's interrupt"
            ))),
        }
    }

    /// The `interrupt-after-unsafe` failpoint: SIGINT to this process, then wait until the
    /// signal thread has passed it on.
    async fn interrupt_self(&self) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGINT);
        for _ in 0..200 {
            if self.interrupts.requested() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn episode_seed(&self, number: u64, episode: u32) -> u64 {
        let mut x = self.config.study.seed
            ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((episode as u64) << 48);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// Sends a parameter set (releasing a latched robot only with the operator's
    /// `--release-latch`) and records what the firmware applied: clamped values become the
    /// trial's parameters, the requested ones stay in the attribute `requested_params`.
    async fn apply_params(&mut self, number: u64, params: &Params) -> Result<(), Stop> {
        let values = firmware_values(&self.space, &self.info, params);
        let applied = match or_interrupt!(self, self.link.set_params(&values)) {
            Err(LinkError::Nack {
                code: NackCode::EStopLatched,
                ..
            }) => {
                if let Some(by) = self.desk.stopped_by() {
                    return Err(Stop::Operator(Disruption::Stop { by }));
                }
                if !self.release_latch {
                    let cause = match self.link.latch_cause().await {
                        LinkError::Latched { cause, .. } => cause,
                        other => other.to_string(),
                    };
                    return Err(Stop::Other(anyhow!(
                        "the robot on {} is latched stopped: {cause}. Make sure it is safe to move, then rerun with --release-latch",
                        self.link.device()
                    )));
                }
                outln!("releasing the robot's latched stop (--release-latch)");
                or_interrupt!(self, self.link.clear_estop())?;
                or_interrupt!(self, self.link.set_params(&values))?
            }
            other => other?,
        };
        if let Some((ran, attr)) = applied_params(&self.space, &self.info, params, &applied) {
            let names: Vec<String> = attr["requested"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            outln!(
                "trial {number}: the firmware clamped {}; recording the values it applied",
                names.join(", ")
            );
            self.study
                .call(move |s| {
                    s.set_params(number, &ran)?;
                    s.set_attr(number, "requested_params", attr)?;
                    s.set_attr(number, "clamped", json!(names))
                })
                .await?;
        }
        Ok(())
    }

    async fn run_trial(&mut self, number: u64, params: &Params) -> Result<TrialEnd, Stop> {
        // The pruner is a pure function of the history; lend it out while episodes borrow us.
        let pruner = self.pruner.take();
        let result = self.run_trial_with(number, params, pruner.as_deref()).await;
        self.pruner = pruner;
        result
    }

    async fn run_trial_with(
        &mut self,
        number: u64,
        params: &Params,
        pruner: Option<&dyn Pruner>,
    ) -> Result<TrialEnd, Stop> {
        let episodes = self.config.study.episodes_per_trial;
        // Other trials do not change while this one runs: one read serves every report.
        let history = if pruner.is_some() {
            self.study.call(|s| s.trials()).await?
        } else {
            Vec::new()
        };
        let current = self.study.call(move |s| s.trial(number)).await?;
        let mut judge = Judge {
            progress: TrialProgress::new(
                self.config.episode.max_steps,
                self.config.episode.report_every,
            ),
            current,
            history,
            pruner,
            study_name: self.study_name.clone(),
            direction: self.direction,
        };
        let mut faults = 0u32;
        'trial: loop {
            let trial_attempt = Instant::now();
            self.apply_params(number, params).await?;
            let mut returns = Vec::with_capacity(episodes as usize);
            for episode in 0..episodes {
                let outcome = loop {
                    judge.progress.begin_episode();
                    let attempt = Instant::now();
                    let result = self.run_episode(number, episode, Some(&mut judge)).await;
                    let (kind, detail, recovery) = match self.fault_of(result).await? {
                        Ok(outcome) => break outcome,
                        Err(fault) => fault,
                    };
                    judge.rollback_episode();
                    faults += 1;
                    let trial_lost = matches!(recovery, Recovery::Trial);
                    let thrown_away = if trial_lost { trial_attempt } else { attempt };
                    self.finish_recovery();
                    self.recovering = Some(Incident {
                        kind,
                        episode: Some(episode),
                        recovery_ms: 0.0,
                        robot_ms_lost: thrown_away.elapsed().as_secs_f64() * 1e3,
                        detail: format!(
                            "{detail}; the {} ran again",
                            if trial_lost { "trial" } else { "episode" }
                        ),
                    });
                    if faults > MAX_FAULTS_PER_TRIAL {
                        let reason = format!(
                            "link faults: {faults} in this trial, the last at episode {episode}: {kind}: {detail}"
                        );
                        let why = reason.clone();
                        self.study.call(move |s| s.fail(number, &why)).await?;
                        return Ok(TrialEnd::Failed(reason));
                    }
                    outln!(
                        "trial {number}: {kind} at episode {episode} ({detail}); running the {} again",
                        if trial_lost { "trial" } else { "episode" }
                    );
                    if trial_lost {
                        judge.reset();
                        self.study.call(move |s| s.clear_progress(number)).await?;
                        continue 'trial;
                    }
                };
                let pending = judge.progress.take_pending();
                let gaps = judge.progress.gaps().to_vec();
                let record = match &outcome {
                    EpisodeOutcome::Completed { record } => Some(record.clone()),
                    EpisodeOutcome::Pruned { record } | EpisodeOutcome::Unsafe { record, .. } => {
                        record.clone()
                    }
                    EpisodeOutcome::WatchdogTrip { .. } => unreachable!("handled as a fault"),
                };
                self.study
                    .call(move |s| {
                        s.report_many(number, &pending)?;
                        if !gaps.is_empty() {
                            s.set_attr(number, "step_gaps", json!(gaps))?;
                        }
                        match record {
                            Some(r) => s.add_episode(number, r),
                            None => Ok(()),
                        }
                    })
                    .await?;
                match outcome {
                    EpisodeOutcome::Completed { record } => returns.push(record.episode_return),
                    EpisodeOutcome::Pruned { .. } => {
                        // Aborting first spends no more robot time on a poor gait; the
                        // verdict is committed before the next trial starts.
                        let step = judge.progress.last_reported_step();
                        let value = judge.progress.last_report();
                        self.study
                            .call(move |s| {
                                s.set_attr(number, "pruned_at_step", json!(step))?;
                                s.prune(number, PRUNE_POOR, value)
                            })
                            .await?;
                        return Ok(TrialEnd::Poor {
                            step,
                            value: value.unwrap_or(f64::NAN),
                        });
                    }
                    EpisodeOutcome::Unsafe {
                        detail, summary, ..
                    } => {
                        // The robot is stopped and latched: persist the verdict, then release it.
                        let value = judge.progress.last_report();
                        self.study
                            .call(move |s| {
                                s.set_attr(number, UNSAFE_ATTR, detail)?;
                                s.prune(number, UNSAFE_REASON, value)
                            })
                            .await?;
                        if self.failpoint.interrupt_after_unsafe {
                            self.interrupt_self().await;
                        }
                        self.release_after_verdict().await?;
                        return Ok(TrialEnd::Unsafe(summary));
                    }
                    EpisodeOutcome::WatchdogTrip { .. } => unreachable!("handled as a fault"),
                }
            }
            let value = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
            self.study.call(move |s| s.tell(number, value)).await?;
            return Ok(TrialEnd::Complete(value));
        }
    }

    /// Sorts an episode's result into an outcome to keep, or a fault to recover from (after
    /// doing what the recovery needs first: releasing a watchdog latch, aborting an overdue
    /// episode). Faults that need a person are passed on as errors.
    async fn fault_of(
        &mut self,
        result: Result<EpisodeOutcome, Stop>,
    ) -> Result<Result<EpisodeOutcome, (&'static str, String, Recovery)>, Stop> {
        // The operator's stop explains a latched robot, a lost episode: never a fault to
        // recover from by releasing the robot.
        if let Some(by) = self.desk.stopped_by() {
            if matches!(
                result,
                Ok(EpisodeOutcome::WatchdogTrip { .. }) | Err(Stop::Link(_))
            ) {
                return Err(Stop::Operator(Disruption::Stop { by }));
            }
        }
        match result {
            Ok(EpisodeOutcome::WatchdogTrip { silent_ms }) => {
                // The robot stopped itself because the host went quiet: not the gait's fault.
                or_interrupt!(self, self.link.clear_estop())?;
                Ok(Err((
                    "watchdog_trip",
                    format!("the robot's watchdog stopped it after {silent_ms:.0} ms without a host frame"),
                    Recovery::Episode,
                )))
            }
            Ok(outcome) => Ok(Ok(outcome)),
            Err(Stop::Link(LinkError::Rebooted { why, boot_id, .. })) => Ok(Err((
                "reboot",
                format!("the robot rebooted ({why}; boot id {boot_id:#010x})"),
                Recovery::Trial,
            ))),
            Err(Stop::Link(LinkError::EpisodeLost {
                why,
                state,
                episode,
                ..
            })) => match state {
                Some(RobotState::Stopped) => Err(Stop::Other(anyhow!(
                    "the robot on {} latched itself stopped during episode {episode} and the frames saying why were lost ({why}); a version-1 firmware cannot tell the cause. Check the robot, then rerun with --release-latch",
                    self.link.device()
                ))),
                Some(RobotState::Running) => {
                    or_interrupt!(self, self.link.abort())?;
                    self.link.forget_episode();
                    Ok(Err(("deadline", why, Recovery::Episode)))
                }
                _ => Ok(Err(("lost_episode_end", why, Recovery::Episode))),
            },
            Err(Stop::Link(LinkError::Silent { silence_ms, .. })) => {
                self.recover_from_silence(silence_ms).await
            }
            Err(Stop::Link(LinkError::Latched {
                cause,
                watchdog: true,
                ..
            })) => {
                or_interrupt!(self, self.link.clear_estop())?;
                Ok(Err(("watchdog_trip", cause, Recovery::Episode)))
            }
            Err(Stop::Link(LinkError::Latched { cause, .. })) => Err(Stop::Other(anyhow!(
                "the robot on {} latched itself stopped outside an episode (during its reset): {cause}. This is not charged to the gait. Check the robot, then rerun with --release-latch",
                self.link.device()
            ))),
            Err(other) => Err(other),
        }
    }

    /// The robot went silent: try the handshake again for `robot.reconnect_ms`; if it
    /// answers, bring it back to a known state (abort an episode it kept running, release
    /// its watchdog's latch) and run the episode again. A version-1 robot found latched for a
    /// cause it cannot tell, or no answer at all, stops the run.
    async fn recover_from_silence(
        &mut self,
        silence_ms: u64,
    ) -> Result<Result<EpisodeOutcome, (&'static str, String, Recovery)>, Stop> {
        let window = Duration::from_millis(self.config.robot.reconnect_ms);
        outln!(
            "the robot on {} went silent for {silence_ms} ms: trying the handshake again for up to {} s",
            self.link.device(),
            window.as_secs()
        );
        let detail = format!("no frame for {silence_ms} ms; the robot answered again");
        match or_interrupt!(self, self.link.reconnect(window)) {
            Ok(()) => {}
            Err(LinkError::Rebooted { why, boot_id, .. }) => {
                return Ok(Err((
                    "reboot",
                    format!("{detail}, rebooted ({why}; boot id {boot_id:#010x})"),
                    Recovery::Trial,
                )))
            }
            Err(e) => return Err(Stop::Link(e)),
        }
        let snapshot = or_interrupt!(self, self.link.snapshot())?;
        match snapshot.state {
            RobotState::Running => or_interrupt!(self, self.link.abort())?,
            RobotState::Stopped => {
                let watchdog = snapshot
                    .status
                    .is_some_and(|s| s.stop_cause.trip_reason() == Some(TripReason::Watchdog));
                if !watchdog {
                    return Err(Stop::Other(anyhow!(
                        "the robot on {} went silent and came back latched stopped for a cause it cannot tell (a version-1 firmware) or not its watchdog; check the robot, then rerun with --release-latch",
                        self.link.device()
                    )));
                }
                or_interrupt!(self, self.link.clear_estop())?;
            }
            _ => {}
        }
        Ok(Err(("link_lost", detail, Recovery::Episode)))
    }

    /// Re-runs the top trials for more episodes each (persisting every episode's return as it
    /// comes), then reports the likely best by mean return.
    async fn reevaluate(&mut self) -> Result<(), Stop> {
        let trials = self.study.call(|s| s.trials()).await?;
        let pending: Vec<(FrozenTrial, u32)> =
            pending_reevaluation(self.config, self.direction, &trials)
                .into_iter()
                .map(|(t, done)| (t.clone(), done))
                .collect();
        let wanted = self.config.study.reevaluate_episodes;
        for (trial, done) in pending {
            let number = trial.number;
            outln!(
                "re-evaluating trial {number} (value {:.4}): {} more episodes",
                trial.value.unwrap_or(f64::NAN),
                wanted - done
            );
            self.apply_params(number, &trial.params).await?;
            let mut returns = evaluation::reeval_returns(&trial);
            let mut faults = 0;
            let mut j = done;
            while j < wanted {
                let episode = self.config.study.episodes_per_trial + j;
                // A skip ends this trial's re-evaluation here; a stop or a pause goes up to
                // `reevaluate_until_done`, which holds and then resumes from what is persisted.
                let result = match self.run_episode(number, episode, None).await {
                    Err(Stop::Operator(d @ Disruption::Skip { .. })) => {
                        self.quiet_robot_for(&d).await?;
                        outln!("re-evaluation of trial {number}: skip by {}", d.by());
                        break;
                    }
                    other => other,
                };
                let outcome = match self.fault_of(result).await? {
                    Ok(outcome) => outcome,
                    Err((kind, detail, recovery)) => {
                        faults += 1;
                        if faults > MAX_FAULTS_PER_TRIAL {
                            return Err(Stop::Other(anyhow!(
                                "re-evaluation of trial {number}: too many link faults, the last: {kind}: {detail}"
                            )));
                        }
                        outln!("re-evaluation of trial {number}: {kind} ({detail}); again");
                        if matches!(recovery, Recovery::Trial) {
                            self.apply_params(number, &trial.params).await?;
                        }
                        continue;
                    }
                };
                match outcome {
                    EpisodeOutcome::Completed { record } => {
                        returns.push(record.episode_return);
                        let attr = json!({ "returns": returns });
                        self.study
                            .call(move |s| s.set_attr(number, evaluation::REEVAL_ATTR, attr))
                            .await?;
                    }
                    EpisodeOutcome::Pruned { .. } | EpisodeOutcome::WatchdogTrip { .. } => {
                        unreachable!("re-evaluation never prunes; watchdog trips are faults")
                    }
                    EpisodeOutcome::Unsafe {
                        detail, summary, ..
                    } => {
                        let attr = json!({ "returns": returns, "unsafe": detail });
                        self.study
                            .call(move |s| s.set_attr(number, evaluation::REEVAL_ATTR, attr))
                            .await?;
                        outln!("trial {number} was unsafe on re-evaluation: {summary}");
                        self.release_after_verdict().await?;
                        break;
                    }
                }
                j += 1;
            }
        }
        Ok(())
    }

    /// Runs one episode of the applied parameters: waits for Ready, starts it, guards every
    /// Step with the safety envelope (EStop first, bookkeeping after) and hands safe steps to
    /// the judge (none: never prune). An unsafe episode returns with the robot stopped and
    /// still latched: the caller persists the verdict, then releases it.
    async fn run_episode(
        &mut self,
        number: u64,
        episode: u32,
        mut judge: Option<&mut Judge<'_>>,
    ) -> Result<EpisodeOutcome, Stop> {
        let ready_timeout = Duration::from_millis(self.config.robot.ready_timeout_ms);
        self.waiting(Some("Ready (the robot resetting)"));
        or_operator!(self, self.link.wait_ready(ready_timeout))?;
        if self.config.robot.operator_go {
            self.wait_for_go(number, episode).await?;
            or_operator!(self, self.link.wait_ready(ready_timeout))?;
        }
        self.waiting(None);
        let estops_before = self.link.sender().estops_sent();
        let seed = self.episode_seed(number, episode);
        let max_steps = self.config.episode.max_steps;
        or_interrupt!(
            self,
            self.link
                .start_episode(number as u32, episode as u16, max_steps, seed)
        )?;
        self.finish_recovery();
        self.last_progress = Instant::now();
        self.desk
            .report(json!({ "episode": episode, "step": null, "robot_state": "Running" }));
        self.desk.publish(
            "episode_started",
            json!({ "trial": number, "episode": episode, "seed": seed }),
        );
        let mut firmware_trip: Option<Value> = None;
        let mut violation: Option<Violation> = None;
        let mut aborted = false;
        loop {
            // Once a verdict is on its way (a safety stop, the pruner's abort), it is
            // recorded first; the operator's request is taken after it.
            let next = if violation.is_none() && !aborted {
                or_operator!(self, self.link.next_event())
            } else {
                or_interrupt!(self, self.link.next_event())
            };
            let event = match next {
                Ok(event) => event,
                // The verdict is already in: its end frames are not needed.
                Err(LinkError::EpisodeLost { .. }) if violation.is_some() => {
                    return Ok(self.envelope_unsafe(violation, None));
                }
                Err(LinkError::EpisodeLost { .. }) if firmware_trip.is_some() => {
                    let detail = firmware_trip.take().expect("checked");
                    if let Some(ms) = detail.get("watchdog_ms").and_then(Value::as_f64) {
                        return Ok(EpisodeOutcome::WatchdogTrip {
                            silent_ms: ms as f32,
                        });
                    }
                    return Ok(firmware_unsafe(detail, episode, None));
                }
                Err(LinkError::EpisodeLost { .. }) if aborted => {
                    return Ok(EpisodeOutcome::Pruned { record: None });
                }
                Err(LinkError::EpisodeLost { .. })
                    if self.link.sender().estops_sent() > estops_before =>
                {
                    return self.interrupted_soon().await;
                }
                Err(e) => return Err(e.into()),
            };
            match event {
                RobotEvent::Step(step) => {
                    self.last_progress = Instant::now();
                    if self.lease.lost() && !aborted && violation.is_none() {
                        or_interrupt!(self, self.link.abort())?;
                        self.link.forget_episode();
                        return Err(Stop::LeaseLost(format!(
                            "another worker took trial {number} over: this worker's lease expired"
                        )));
                    }
                    // Steps that arrive after our Abort are still guarded: the robot moves
                    // until the Abort lands, and the link's guard may already have stopped it.
                    if violation.is_some() {
                        continue;
                    }
                    if self.failpoint.panic_at_step == Some(step.step) {
                        panic!("failpoint: panic at step {}", step.step);
                    }
                    if let Some(v) = guard_step(&self.config.safety, &self.link.sender(), &step)
                        .map_err(|e| LinkError::Lost {
                            device: self.link.device().to_string(),
                            reason: format!("EStop write failed: {e}"),
                        })?
                    {
                        // Wait for the robot's acknowledgement (EStop is idempotent); the
                        // stopped episode's end follows.
                        or_interrupt!(self, self.link.estop())?;
                        violation = Some(v);
                        continue;
                    }
                    self.on_live_step(&step, judge.as_deref());
                    if aborted {
                        continue;
                    }
                    if judge.as_mut().is_some_and(|j| j.on_step(episode, &step)) {
                        or_interrupt!(self, self.link.abort())?;
                        aborted = true;
                    }
                }
                RobotEvent::StepsMissed { from, to } => {
                    tracing::warn!(
                        "trial {number} episode {episode}: steps {from}..{to} lost on the line"
                    );
                    if let Some(j) = judge.as_mut() {
                        j.progress.on_gap(episode, from, to);
                    }
                    self.link.record_incident(Incident {
                        kind: "step_gap",
                        episode: Some(episode),
                        recovery_ms: 0.0,
                        robot_ms_lost: 0.0,
                        detail: format!("steps {from}..{to} never arrived"),
                    });
                }
                RobotEvent::SafetyTrip {
                    step,
                    reason,
                    value,
                } => {
                    if reason == TripReason::Watchdog {
                        // Its EpisodeEnd follows; the trip is the host's or the line's fault.
                        firmware_trip = Some(json!({ "watchdog_ms": value }));
                        continue;
                    }
                    firmware_trip = Some(json!({
                        "source": "firmware", "limit": format!("{reason:?}"), "value": value,
                        "episode": episode, "step": step, "excess": 1.0,
                    }));
                }
                RobotEvent::EpisodeEnd {
                    episode_return,
                    steps,
                    status,
                    recovered,
                } => {
                    if recovered {
                        outln!(
                            "trial {number} episode {episode}: its EpisodeEnd was lost on the line; recovered from the robot's status"
                        );
                    }
                    if steps > max_steps
                        || (status == EpisodeStatus::Completed && steps != max_steps)
                    {
                        return Err(Stop::Link(LinkError::Protocol {
                            device: self.link.device().to_string(),
                            detail: format!(
                                "ended episode {episode} of trial {number} as {status:?} after {steps} steps, but it was started with max_steps {max_steps}"
                            ),
                        }));
                    }
                    let record = EpisodeRecord {
                        episode,
                        episode_return: episode_return as f64,
                        steps,
                        status: format!("{status:?}"),
                        seed: Some(seed),
                    };
                    self.desk.publish(
                        "episode_ended",
                        json!({ "trial": number, "episode": episode, "return": episode_return,
                                "steps": steps, "status": record.status }),
                    );
                    if violation.is_some() {
                        return Ok(self.envelope_unsafe(violation, Some(record)));
                    }
                    return match status {
                        // Our Abort, or one that raced the episode's last step: the pruner's
                        // verdict stands.
                        EpisodeStatus::Aborted | EpisodeStatus::Completed if aborted => {
                            Ok(EpisodeOutcome::Pruned {
                                record: Some(record),
                            })
                        }
                        EpisodeStatus::Completed => Ok(EpisodeOutcome::Completed { record }),
                        EpisodeStatus::SafetyTrip => match firmware_trip.take() {
                            Some(t) if t.get("watchdog_ms").is_some() => {
                                Ok(EpisodeOutcome::WatchdogTrip {
                                    silent_ms: t["watchdog_ms"].as_f64().unwrap_or(0.0) as f32,
                                })
                            }
                            Some(detail) => Ok(firmware_unsafe(detail, episode, Some(record))),
                            None => Ok(firmware_unsafe(
                                json!({ "source": "firmware", "episode": episode, "step": steps, "excess": 1.0 }),
                                episode,
                                Some(record),
                            )),
                        },
                        // Ours: the signal thread stops the robot before it tells the loop.
                        EpisodeStatus::EStopped
                            if self.link.sender().estops_sent() > estops_before =>
                        {
                            self.interrupted_soon().await
                        }
                        EpisodeStatus::EStopped if self.desk.stopped() => {
                            self.interrupted_soon().await
                        }
                        EpisodeStatus::EStopped => Err(Stop::Other(anyhow!(
                            "the robot reports an EStop gaittune did not send (its own stop button?); clear it on the robot, then rerun to continue"
                        ))),
                        EpisodeStatus::Aborted => Err(Stop::Other(anyhow!(
                            "the robot aborted episode {episode} on its own"
                        ))),
                    };
                }
            }
        }
    }

    fn envelope_unsafe(
        &self,
        violation: Option<Violation>,
        record: Option<EpisodeRecord>,
    ) -> EpisodeOutcome {
        let v = violation.expect("an envelope verdict has its violation");
        EpisodeOutcome::Unsafe {
            summary: v.to_string(),
            detail: ConstraintViolation::from(&v).to_attr(),
            record,
        }
    }
}

/// Takes the operator's requests that interrupt a trial and returns the one that wins: a
/// stop over a pause over a skip (a skip superseded by a stop leaves the trial re-queued).
fn most_urgent(desk: &Desk) -> Option<Disruption> {
    desk.take_disruptions().into_iter().min_by_key(|d| match d {
        Disruption::Stop { .. } => 0,
        Disruption::PauseNow { .. } => 1,
        Disruption::Skip { .. } => 2,
    })
}

fn firmware_unsafe(detail: Value, episode: u32, record: Option<EpisodeRecord>) -> EpisodeOutcome {
    let summary = format!(
        "firmware safety trip {} (value {}) at episode {episode} step {}",
        detail["limit"].as_str().unwrap_or("?"),
        detail["value"],
        detail["step"]
    );
    EpisodeOutcome::Unsafe {
        detail,
        summary,
        record,
    }
}

/// Appends `incidents` to the trial's `link_incidents` attribute.
fn append_incidents(
    study: &mut crate::study::Study,
    number: u64,
    incidents: Vec<Incident>,
) -> Result<(), StudyError> {
    let mut list = study
        .trial(number)?
        .attrs
        .get(INCIDENTS_ATTR)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.extend(incidents.iter().map(|i| json!(i)));
    study.set_attr(number, INCIDENTS_ATTR, Value::Array(list))
}
