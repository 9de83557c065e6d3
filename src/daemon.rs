//! The trial loop: the one place that knows both the study (samplers, storage) and the robot
//! link. ask → SetParams (echo checked) → Ready → StartEpisode → Steps (safety envelope on
//! each) → EpisodeEnd (× episodes) → tell. Every state change is committed before the loop
//! acts on it; a safety stop is the one thing that goes out before the write.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use firmware_protocol::{EpisodeStatus, NackCode, Step};

use crate::config::Config;
use crate::control::{global_slot, Interrupts};
use crate::evaluation;
use crate::pruner::{PruneRequest, Pruner};
use crate::robot::{LinkError, LinkSettings, RobotEvent, RobotInfo, RobotLink};
use crate::safety::Violation;
use crate::sampler;
use crate::space::{Params, SearchSpace};
use crate::storage;
use crate::study::Study;
use crate::trial::{EpisodeRecord, FrozenTrial, TrialState};

/// Command-line overrides of a config.
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    /// Study size (finished trials) instead of `study.trials`.
    pub trials: Option<u64>,
    /// Storage URL instead of `study.storage`.
    pub storage: Option<String>,
    /// Study name instead of `study.name`.
    pub study: Option<String>,
    /// The operator confirms it is safe to release a robot found latched stopped.
    pub release_latch: bool,
    /// Re-evaluate this many top trials (overrides study.reevaluate_top).
    pub reevaluate_top: Option<u32>,
    /// Episodes per re-evaluated trial (overrides study.reevaluate_episodes).
    pub reevaluate_episodes: Option<u32>,
}

/// How a run ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The study reached its size.
    Finished,
    /// An operator interrupt stopped it; the trial in flight was re-queued.
    Interrupted,
}

/// Reason recorded on trials the safety envelope or the firmware's own limits stopped.
pub const PRUNE_UNSAFE: &str = "unsafe";
/// Reason recorded on trials the pruner stopped for poor performance.
pub const PRUNE_POOR: &str = "poor";

/// Runs a study to its size against the robot the config names.
pub fn run(
    mut config: Config,
    overrides: RunOverrides,
    interrupts: Interrupts,
) -> Result<RunOutcome> {
    let release_latch = overrides.release_latch;
    if let Some(t) = overrides.trials {
        config.study.trials = t;
    }
    if let Some(s) = overrides.storage {
        config.study.storage = s;
    }
    if let Some(s) = overrides.study {
        config.study.name = s;
    }
    if let Some(k) = overrides.reevaluate_top {
        config.study.reevaluate_top = k;
    }
    if let Some(n) = overrides.reevaluate_episodes {
        config.study.reevaluate_episodes = n;
    }
    // One thread: if the trial loop ever hangs, host heartbeats stop too, and the firmware's
    // watchdog stops the robot.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(config, interrupts, release_latch))
}

async fn run_async(
    config: Config,
    interrupts: Interrupts,
    release_latch: bool,
) -> Result<RunOutcome> {
    let storage = storage::open(&config.study.storage)
        .with_context(|| format!("opening storage {}", config.study.storage))?;
    let sampler = build_sampler(&config)?;
    let mut study = Study::create_or_load(
        storage,
        &config.study.name,
        config.study.direction,
        config.space.clone(),
        sampler,
    )?;
    for number in study.requeue_running()? {
        outln!("trial {number} was left RUNNING by an earlier run: re-queued");
    }
    let trials = study.trials()?;
    let finished = count_finished(&trials);
    let reeval_pending = !pending_reevaluation(&config, study.direction(), &trials).is_empty();
    if finished >= config.study.trials && !reeval_pending {
        outln!(
            "study '{}' already has {finished} finished trials (size {}); raise --trials to run more",
            config.study.name, config.study.trials
        );
        print_summary(&study)?;
        return Ok(RunOutcome::Finished);
    }

    let sim = if config.uses_sim() {
        Some(SimProcess::spawn(&config)?)
    } else {
        None
    };
    let device = sim
        .as_ref()
        .map(|s| s.device.clone())
        .unwrap_or_else(|| config.robot.device.clone());
    let settings = LinkSettings {
        response_timeout: Duration::from_millis(config.robot.response_timeout_ms),
        retries: config.robot.retries,
        silence_timeout: Duration::from_millis(config.robot.silence_timeout_ms),
    };
    let mut link = RobotLink::open(&device, config.robot.baud, settings).await?;
    global_slot().arm(link.sender());
    let envelope = config.safety.clone();
    link.set_step_guard(Box::new(move |step| envelope.check(step).is_some()));
    let info = link.handshake().await?;
    outln!(
        "robot '{}' firmware {} on {} — {} parameters, schema {:#010x}, watchdog {} ms",
        info.robot_id,
        info.firmware_version,
        device,
        info.params.len(),
        info.schema_hash,
        info.watchdog_ms
    );
    check_space_against_firmware(&config.space, &info, &config)?;
    study.set_study_attr("robot", serde_json::to_value(&info)?)?;
    if config.study.baseline && study.trials()?.is_empty() {
        match baseline_params(study.space(), &info) {
            Ok(params) => {
                let number = study.enqueue(params)?;
                study.set_attr(number, "baseline", serde_json::Value::Bool(true))?;
                outln!("trial {number} is the baseline: the firmware's default gait");
            }
            Err(why) => outln!("no baseline trial: {why}"),
        }
    }

    let mut runner = TrialRunner {
        config: &config,
        info: &info,
        link: &mut link,
        interrupts,
        release_latch,
        failpoint: Failpoint::from_env(),
        pruner: crate::pruner::build(&config.pruner.kind, config.pruner_options())
            .map_err(|e| anyhow!("{}: {e}", config.path.display()))?,
    };
    let outcome = runner.run_all(&mut study).await;
    global_slot().disarm();
    drop(link);
    drop(sim);
    let outcome = outcome?;
    print_summary(&study)?;
    Ok(outcome)
}

/// The sampler the config describes, with what needs I/O done here (samplers never do
/// any): a CMA-ES warm start (`[sampler.cmaes] warm_start = { storage, study }`) reads the
/// source study's trials and starts the search from the distribution of its best ones.
pub fn build_sampler(config: &Config) -> Result<Box<dyn sampler::Sampler>> {
    let seed = config.sampler.seed.unwrap_or(config.study.seed);
    let place = || format!("{}: [sampler]", config.path.display());
    let mut built = match (config.sampler.kind.as_str(), config.sampler_options()) {
        ("cmaes", options) => {
            let o: sampler::CmaesOptions = sampler::parse_options("cmaes", options)
                .map_err(|e| anyhow!("{}: {e}", place()))?;
            let warm = match &o.warm_start {
                None => None,
                Some(src) => {
                    let storage = storage::open(&src.storage).with_context(|| {
                        format!("{}: warm_start: opening storage {}", place(), src.storage)
                    })?;
                    let source = Study::load(
                        storage,
                        &src.study,
                        Box::new(sampler::RandomSampler::new(0)),
                    )
                    .with_context(|| format!("{}: warm_start", place()))?;
                    let trials = source.trials()?;
                    let warm =
                        sampler::warm_start_from(&trials, &config.space, config.study.direction)
                            .map_err(|e| anyhow!("{}: {e}", place()))?;
                    outln!(
                        "CMA-ES warm start from study '{}' in {} ({} trials)",
                        src.study,
                        src.storage,
                        trials.len()
                    );
                    Some(warm)
                }
            };
            let cmaes = sampler::CmaesSampler::with_options(seed, o)
                .map_err(|e| anyhow!("{}: {e}", place()))?;
            Box::new(match warm {
                Some(w) => cmaes.with_warm_start(w),
                None => cmaes,
            }) as Box<dyn sampler::Sampler>
        }
        (kind, options) => {
            sampler::build(kind, seed, options).map_err(|e| anyhow!("{}: {e}", place()))?
        }
    };
    if !config.sampler.constraints {
        built = sampler::without_constraints(built);
    }
    Ok(built)
}

/// Top trials still owed re-evaluation episodes: (trial, episodes already re-run).
fn pending_reevaluation<'t>(
    config: &Config,
    direction: crate::trial::Direction,
    trials: &'t [FrozenTrial],
) -> Vec<(&'t FrozenTrial, u32)> {
    evaluation::top_k(trials, direction, config.study.reevaluate_top as usize)
        .into_iter()
        .map(|t| (t, evaluation::reeval_returns(t).len() as u32))
        .filter(|&(t, done)| {
            done < config.study.reevaluate_episodes && !evaluation::reeval_unsafe(t)
        })
        .collect()
}

fn count_finished(trials: &[FrozenTrial]) -> u64 {
    trials
        .iter()
        .filter(|t| {
            matches!(
                t.state,
                TrialState::Complete | TrialState::Pruned | TrialState::Fail
            )
        })
        .count() as u64
}

/// Refuses a search space that leaves the firmware's declared limits, naming the parameter
/// and both ranges.
pub fn check_space_against_firmware(
    space: &SearchSpace,
    info: &RobotInfo,
    config: &Config,
) -> Result<()> {
    let declared: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    for name in space.names() {
        let Some(decl) = info.params.iter().find(|p| p.name == name) else {
            bail!(
                "{}: space.{name}: the robot '{}' declares no parameter '{name}' (it declares: {}); rename or remove it",
                config.path.display(),
                info.robot_id,
                declared.join(", ")
            );
        };
        let (low, high) = space.firmware_range(name);
        // The firmware's limits travel as f32: allow for that rounding.
        let slack = |x: f64| 1e-6 * x.abs().max(1.0);
        if low < decl.min - slack(decl.min) || high > decl.max + slack(decl.max) {
            bail!(
                "{}: space.{name} = [{low}, {high}] leaves the robot's declared limits [{}, {}] for '{name}'; narrow the range to fit inside them",
                config.path.display(),
                decl.min,
                decl.max
            );
        }
    }
    Ok(())
}

/// The firmware's default parameter set, expressed in the search space (for the baseline
/// trial); an error names the first default the space cannot express.
pub fn baseline_params(space: &SearchSpace, info: &RobotInfo) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, dist) in space.iter() {
        let decl = info
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("the robot declares no '{name}'"))?;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0);
        let internal = match dist {
            crate::space::Distribution::Categorical { choices } => (0..choices.len())
                .map(|i| i as f64)
                .find(|&i| close(dist.firmware_value(i), decl.default)),
            _ => Some(dist.snap(decl.default)).filter(|&x| close(x, decl.default)),
        };
        let internal = internal.ok_or_else(|| {
            format!(
                "the firmware default of '{name}' ({}) is not a value of space.{name}",
                decl.default
            )
        })?;
        params.insert(name.to_string(), internal);
    }
    Ok(params)
}

struct TrialRunner<'a> {
    config: &'a Config,
    info: &'a RobotInfo,
    link: &'a mut RobotLink,
    interrupts: Interrupts,
    release_latch: bool,
    failpoint: Failpoint,
    pruner: Option<Box<dyn Pruner>>,
}

/// A deliberate fault for tests of the safety paths: `GAITTUNE_FAILPOINT=panic-at-step:N`
/// panics the daemon when step N of an episode arrives.
#[derive(Debug, Clone, Copy, Default)]
struct Failpoint {
    panic_at_step: Option<u32>,
}

impl Failpoint {
    fn from_env() -> Self {
        let spec = std::env::var("GAITTUNE_FAILPOINT").unwrap_or_default();
        Self {
            panic_at_step: spec
                .strip_prefix("panic-at-step:")
                .and_then(|n| n.parse().ok()),
        }
    }
}

/// What the trial loop decides after each safe step of an episode.
enum StepVerdict {
    /// Keep going.
    Continue,
    /// The pruner judged the trial poor: abort the episode.
    Prune,
}

/// How one episode ended.
enum EpisodeOutcome {
    /// Ran all its steps.
    Completed { episode_return: f64 },
    /// Aborted by us because the pruner judged the trial poor (the robot resets, unlatched).
    Pruned,
    /// Stopped for safety (the envelope or the firmware's own limits); the robot is latched.
    Unsafe {
        detail: serde_json::Value,
        summary: String,
    },
}

/// Checks one telemetry step against the envelope; on a violation, writes EStop to the robot
/// at once, before anything else happens. This is the whole reaction path, shared by the trial
/// loop and the latency benchmark.
pub fn guard_step(
    envelope: &crate::safety::SafetyEnvelope,
    sender: &crate::robot::Sender,
    step: &Step,
) -> std::io::Result<Option<Violation>> {
    match envelope.check(step) {
        Some(v) => {
            sender.estop()?;
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

/// How one trial ended, for the progress line.
enum TrialEnd {
    Complete(f64),
    Unsafe(String),
    Poor { step: u64, value: f64 },
}

/// The trial loop's reasons to stop early.
enum Stop {
    Interrupted,
    Link(LinkError),
    Other(anyhow::Error),
}

impl From<LinkError> for Stop {
    fn from(e: LinkError) -> Self {
        Stop::Link(e)
    }
}

impl From<crate::study::StudyError> for Stop {
    fn from(e: crate::study::StudyError) -> Self {
        Stop::Other(e.into())
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

impl TrialRunner<'_> {
    async fn run_all(&mut self, study: &mut Study) -> Result<RunOutcome> {
        let size = self.config.study.trials;
        loop {
            let finished = count_finished(&study.trials()?);
            if finished >= size {
                return match self.reevaluate(study).await {
                    Ok(()) => Ok(RunOutcome::Finished),
                    Err(Stop::Interrupted) => self.stop_interrupted(study, None).await,
                    Err(Stop::Link(e)) => {
                        global_slot().fire();
                        Err(anyhow!(e).context(
                            "re-evaluation stopped; what ran is saved — rerun to finish it",
                        ))
                    }
                    Err(Stop::Other(e)) => {
                        global_slot().fire();
                        Err(e.context("re-evaluation stopped; what ran is saved"))
                    }
                };
            }
            if self.interrupts.requested() {
                return self.stop_interrupted(study, None).await;
            }
            let trial = study.ask()?;
            if trial.resumed {
                // Whatever an interrupted attempt recorded is not this run's measurement.
                study.clear_progress(trial.number)?;
            }
            let started = Instant::now();
            outln!(
                "trial {:>4} [{}/{}] {}",
                trial.number,
                finished + 1,
                size,
                format_params(study.space(), &trial.params)
            );
            match self.run_trial(study, trial.number, &trial.params).await {
                Ok(end) => self.print_end(study, trial.number, &end, started)?,
                Err(Stop::Interrupted) => {
                    return self.stop_interrupted(study, Some(trial.number)).await
                }
                Err(Stop::Link(e)) => {
                    // The robot may still be moving if only our side of the line failed.
                    global_slot().fire();
                    study.mark_waiting(trial.number)?;
                    return Err(anyhow!(e).context(format!(
                        "trial {} stopped and re-queued; the study is saved — fix the link and rerun to continue",
                        trial.number
                    )));
                }
                Err(Stop::Other(e)) => {
                    global_slot().fire();
                    study.mark_waiting(trial.number)?;
                    return Err(e.context(format!("trial {} re-queued", trial.number)));
                }
            }
        }
    }

    async fn stop_interrupted(
        &mut self,
        study: &mut Study,
        in_flight: Option<u64>,
    ) -> Result<RunOutcome> {
        // The handler already sent one EStop; this one waits for the robot's acknowledgement
        // so we exit knowing the motors are stopped.
        match tokio::time::timeout(Duration::from_secs(2), self.link.estop()).await {
            Ok(Ok(())) => outln!("robot acknowledged EStop (latched)"),
            Ok(Err(e)) => eprintln!("gaittune: EStop not acknowledged: {e}"),
            Err(_) => eprintln!("gaittune: EStop not acknowledged within 2 s"),
        }
        if let Some(number) = in_flight {
            study.mark_waiting(number)?;
            outln!("trial {number} re-queued (WAITING): it runs again on the next run");
        }
        outln!("interrupted: study '{}' saved", study.name());
        Ok(RunOutcome::Interrupted)
    }

    fn print_end(
        &self,
        study: &Study,
        number: u64,
        end: &TrialEnd,
        started: Instant,
    ) -> Result<()> {
        let best = study
            .best_trial()?
            .map(|b| format!("best {:.4} (#{})", b.value.unwrap_or(f64::NAN), b.number))
            .unwrap_or_else(|| "best -".into());
        let secs = started.elapsed().as_secs_f64();
        match end {
            TrialEnd::Complete(v) => {
                outln!("trial {number:>4} COMPLETE value {v:.4}  {best}  ({secs:.1} s)")
            }
            TrialEnd::Unsafe(why) => {
                outln!("trial {number:>4} PRUNED(unsafe) {why}  {best}  ({secs:.1} s)")
            }
            TrialEnd::Poor { step, value } => outln!(
                "trial {number:>4} PRUNED(poor) at step {step} (projected {value:.4})  {best}  ({secs:.1} s)"
            ),
        }
        Ok(())
    }

    fn firmware_values(&self, space: &SearchSpace, params: &Params) -> Vec<f64> {
        self.info
            .params
            .iter()
            .map(|decl| match params.get(&decl.name) {
                Some(&internal) => space.firmware_value(&decl.name, internal),
                None => decl.default,
            })
            .collect()
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
    /// `--release-latch`) and records what the firmware clamped.
    async fn apply_params(
        &mut self,
        study: &mut Study,
        number: u64,
        params: &Params,
    ) -> Result<(), Stop> {
        let values = self.firmware_values(study.space(), params);
        let applied = match or_interrupt!(self, self.link.set_params(&values)) {
            Err(LinkError::Nack {
                code: NackCode::EStopLatched,
                ..
            }) => {
                if !self.release_latch {
                    return Err(Stop::Other(anyhow!(
                        "the robot on {} is latched stopped (an EStop, a safety trip or its watchdog). Make sure it is safe to move, then rerun with --release-latch",
                        self.link.device()
                    )));
                }
                outln!("releasing the robot's latched stop (--release-latch)");
                or_interrupt!(self, self.link.clear_estop())?;
                or_interrupt!(self, self.link.set_params(&values))?
            }
            other => other?,
        };
        if !applied.clamped.is_empty() {
            let names: Vec<&str> = applied
                .clamped
                .iter()
                .map(|&i| self.info.params[i].name.as_str())
                .collect();
            tracing::warn!("trial {number}: the firmware clamped {}", names.join(", "));
            study.set_attr(number, "clamped", serde_json::json!(names))?;
        }
        Ok(())
    }

    async fn run_trial(
        &mut self,
        study: &mut Study,
        number: u64,
        params: &Params,
    ) -> Result<TrialEnd, Stop> {
        // The pruner is a pure function of the history; lend it out while episodes borrow us.
        let pruner = self.pruner.take();
        let result = self
            .run_trial_with(study, number, params, pruner.as_deref())
            .await;
        self.pruner = pruner;
        result
    }

    async fn run_trial_with(
        &mut self,
        study: &mut Study,
        number: u64,
        params: &Params,
        pruner: Option<&dyn Pruner>,
    ) -> Result<TrialEnd, Stop> {
        self.apply_params(study, number, params).await?;
        let episodes = self.config.study.episodes_per_trial;
        let max_steps = self.config.episode.max_steps as f64;
        let report_every = self.config.episode.report_every as u64;
        // Other trials do not change while this one runs: one read serves every report.
        let history = if pruner.is_some() {
            study.trials()?
        } else {
            Vec::new()
        };
        let mut current = study.trial(number)?;
        let study_name = study.name().to_string();
        let direction = study.direction();
        let mut returns = Vec::with_capacity(episodes as usize);
        let mut reward_sum = 0.0f64;
        let mut steps_done = 0u64;
        let mut last_report: Option<f64> = None;
        for episode in 0..episodes {
            let mut on_step = |step: &Step| -> Result<StepVerdict, Stop> {
                reward_sum += step.reward as f64;
                steps_done += 1;
                if steps_done % report_every != 0 {
                    return Ok(StepVerdict::Continue);
                }
                let projected = reward_sum / steps_done as f64 * max_steps;
                study.report(number, steps_done, projected)?;
                last_report = Some(projected);
                current.intermediate.insert(steps_done, projected);
                let poor = pruner.is_some_and(|p| {
                    p.prune(&PruneRequest {
                        study_name: &study_name,
                        direction,
                        history: &history,
                        trial: &current,
                        step: steps_done,
                    })
                });
                Ok(if poor {
                    StepVerdict::Prune
                } else {
                    StepVerdict::Continue
                })
            };
            let (end, record) = self.run_episode(number, episode, &mut on_step).await?;
            if let Some(record) = record {
                study.add_episode(number, record)?;
            }
            match end {
                EpisodeOutcome::Completed { episode_return } => returns.push(episode_return),
                EpisodeOutcome::Pruned => {
                    // Aborting first spends no more robot time on a poor gait; the verdict is
                    // committed before the next trial starts.
                    study.set_attr(number, "pruned_at_step", serde_json::json!(steps_done))?;
                    study.prune(number, PRUNE_POOR, last_report)?;
                    return Ok(TrialEnd::Poor {
                        step: steps_done,
                        value: last_report.unwrap_or(f64::NAN),
                    });
                }
                EpisodeOutcome::Unsafe { detail, summary } => {
                    // The robot is stopped and latched: persist the verdict, then release it.
                    study.set_attr(number, "unsafe", detail)?;
                    study.prune(number, PRUNE_UNSAFE, last_report)?;
                    self.release_estop().await?;
                    return Ok(TrialEnd::Unsafe(summary));
                }
            }
        }
        let value = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
        study.tell(number, value)?;
        Ok(TrialEnd::Complete(value))
    }

    /// Re-runs the top trials for more episodes each (persisting every episode's return as it
    /// comes), then reports the likely best by mean return.
    async fn reevaluate(&mut self, study: &mut Study) -> Result<(), Stop> {
        let trials = study.trials()?;
        let pending: Vec<(FrozenTrial, u32)> =
            pending_reevaluation(self.config, study.direction(), &trials)
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
            self.apply_params(study, number, &trial.params).await?;
            let mut returns = evaluation::reeval_returns(&trial);
            for j in done..wanted {
                let episode = self.config.study.episodes_per_trial + j;
                let (end, _) = self
                    .run_episode(number, episode, &mut |_: &Step| Ok(StepVerdict::Continue))
                    .await?;
                match end {
                    EpisodeOutcome::Completed { episode_return } => {
                        returns.push(episode_return);
                        study.set_attr(
                            number,
                            evaluation::REEVAL_ATTR,
                            serde_json::json!({ "returns": returns }),
                        )?;
                    }
                    EpisodeOutcome::Pruned => unreachable!("re-evaluation never prunes"),
                    EpisodeOutcome::Unsafe { detail, summary } => {
                        study.set_attr(
                            number,
                            evaluation::REEVAL_ATTR,
                            serde_json::json!({ "returns": returns, "unsafe": detail }),
                        )?;
                        outln!("trial {number} was unsafe on re-evaluation: {summary}");
                        self.release_estop().await?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs one episode of the applied parameters: waits for Ready, starts it, guards every
    /// Step with the safety envelope (EStop first, bookkeeping after) and hands safe steps to
    /// `on_step`. An unsafe episode returns with the robot stopped and still latched: the
    /// caller persists the verdict, then calls [`Self::release_estop`].
    async fn run_episode(
        &mut self,
        number: u64,
        episode: u32,
        on_step: &mut dyn FnMut(&Step) -> Result<StepVerdict, Stop>,
    ) -> Result<(EpisodeOutcome, Option<EpisodeRecord>), Stop> {
        let ready_timeout = Duration::from_millis(self.config.robot.ready_timeout_ms);
        or_interrupt!(self, self.link.wait_ready(ready_timeout))?;
        let seed = self.episode_seed(number, episode);
        let max_steps = self.config.episode.max_steps;
        or_interrupt!(
            self,
            self.link
                .start_episode(number as u32, episode as u16, max_steps, seed)
        )?;
        let mut firmware_trip: Option<serde_json::Value> = None;
        let mut violation: Option<Violation> = None;
        let mut aborted = false;
        loop {
            let event = or_interrupt!(self, self.link.next_event())?;
            match event {
                RobotEvent::Step(step) => {
                    // Steps that arrive after our Abort are still guarded: the robot moves
                    // until the Abort lands, and the link's guard may already have stopped it.
                    if step.trial != number as u32
                        || step.episode != episode as u16
                        || violation.is_some()
                    {
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
                        // Wait for the robot's acknowledgement (EStop is idempotent), then
                        // drain the stopped episode's end so it cannot leak into the next.
                        or_interrupt!(self, self.link.estop())?;
                        violation = Some(v);
                        continue;
                    }
                    if aborted {
                        continue;
                    }
                    match on_step(&step)? {
                        StepVerdict::Continue => {}
                        StepVerdict::Prune => {
                            or_interrupt!(self, self.link.abort())?;
                            aborted = true;
                        }
                    }
                }
                RobotEvent::SafetyTrip {
                    step,
                    reason,
                    value,
                    ..
                } => {
                    firmware_trip = Some(serde_json::json!({
                        "source": "firmware", "limit": format!("{reason:?}"), "value": value,
                        "episode": episode, "step": step, "excess": 1.0,
                    }));
                }
                RobotEvent::EpisodeEnd {
                    trial,
                    episode: ep,
                    episode_return,
                    steps,
                    status,
                } => {
                    if trial != number as u32 || ep != episode as u16 {
                        continue;
                    }
                    let record = EpisodeRecord {
                        episode,
                        episode_return: episode_return as f64,
                        steps,
                        status: format!("{status:?}"),
                    };
                    if let Some(v) = violation {
                        let summary = v.to_string();
                        let detail = serde_json::json!({
                            "source": "envelope", "limit": v.limit, "value": v.value,
                            "threshold": v.threshold, "excess": v.excess(),
                            "episode": v.episode, "step": v.step,
                        });
                        return Ok((EpisodeOutcome::Unsafe { detail, summary }, Some(record)));
                    }
                    return match status {
                        // Our Abort, or one that raced the episode's last step: the pruner's
                        // verdict stands.
                        EpisodeStatus::Aborted | EpisodeStatus::Completed if aborted => {
                            Ok((EpisodeOutcome::Pruned, Some(record)))
                        }
                        EpisodeStatus::Completed => Ok((
                            EpisodeOutcome::Completed { episode_return: episode_return as f64 },
                            Some(record),
                        )),
                        EpisodeStatus::SafetyTrip => {
                            let detail = firmware_trip.take().unwrap_or_else(|| {
                                serde_json::json!({ "source": "firmware", "episode": episode, "step": steps, "excess": 1.0 })
                            });
                            let summary = format!(
                                "firmware safety trip {} (value {}) at episode {episode} step {}",
                                detail["limit"].as_str().unwrap_or("?"),
                                detail["value"],
                                detail["step"]
                            );
                            Ok((EpisodeOutcome::Unsafe { detail, summary }, Some(record)))
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

    async fn release_estop(&mut self) -> Result<(), Stop> {
        or_interrupt!(self, self.link.clear_estop())?;
        Ok(())
    }
}

fn format_params(space: &SearchSpace, params: &Params) -> String {
    params
        .iter()
        .map(|(k, &v)| format!("{k}={}", short(&space.external(k, v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parameter value for a progress line: floats at four significant digits.
fn short(value: &serde_json::Value) -> String {
    match value.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if !value.is_i64() && !value.is_u64() => {
            let digits = (4 - 1 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
            format!("{x:.digits$}")
        }
        _ => value.to_string(),
    }
}

fn print_summary(study: &Study) -> Result<()> {
    let trials = study.trials()?;
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    let unsafe_trials = trials
        .iter()
        .filter(|t| crate::pruner::is_unsafe(t))
        .count();
    outln!(
        "study '{}': {} complete, {} pruned ({} unsafe), {} failed, {} waiting",
        study.name(),
        count(TrialState::Complete),
        count(TrialState::Pruned),
        unsafe_trials,
        count(TrialState::Fail),
        count(TrialState::Waiting)
    );
    let baseline = trials
        .iter()
        .find(|t| t.attrs.contains_key("baseline") && t.state == TrialState::Complete);
    match study.best_trial()? {
        Some(best) => {
            let versus = match baseline.and_then(|b| b.value.map(|v| (b.number, v))) {
                Some((number, v)) if number != best.number => {
                    format!(" (baseline trial {number}: {v:.4})")
                }
                _ => String::new(),
            };
            outln!(
                "best trial {}: value {:.4}{versus}",
                best.number,
                best.value.unwrap_or(f64::NAN)
            );
            for (name, &v) in &best.params {
                outln!("  {name} = {}", study.space().external(name, v));
            }
        }
        None => outln!("no complete trial yet"),
    }
    if let Some((trial, stats)) = evaluation::likely_best(&trials, study.direction()) {
        outln!(
            "likely best (mean over {} episodes): trial {} mean {:.4} ± {:.4} (sd {:.4})",
            stats.n,
            trial.number,
            stats.mean,
            stats.sem,
            stats.sd
        );
        for (name, &v) in &trial.params {
            outln!("  {name} = {}", study.space().external(name, v));
        }
    }
    Ok(())
}

/// The simulated robot started as a child process on its own pseudo-terminal.
struct SimProcess {
    child: Child,
    device: String,
}

impl SimProcess {
    fn spawn(config: &Config) -> Result<SimProcess> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .context("finding the gaittune executable to start the simulated robot")?;
        let sim = &config.sim;
        let mut cmd = Command::new(exe);
        cmd.arg("sim")
            .args(["--seed", &sim.seed.to_string()])
            .args(["--noise", &sim.noise.to_string()])
            .args(["--step-delay-ms", &sim.step_delay_ms.to_string()])
            .args(["--reset-delay-ms", &sim.reset_delay_ms.to_string()])
            .args(["--watchdog-ms", &sim.watchdog_ms.to_string()])
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C reaches the daemon, which stops the
            // robot properly, not the robot itself.
            .process_group(0);
        if let Some(log) = &sim.event_log {
            cmd.arg("--event-log").arg(log);
        }
        if sim.model != "synthetic" {
            cmd.args(["--model", &sim.model]);
        }
        cmd.args(&sim.extra_args);
        let mut child = cmd
            .spawn()
            .context("starting the simulated robot (gaittune sim)")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                bail!("the simulated robot did not announce its pseudo-terminal (got {other:?})");
            }
        };
        let device = line
            .strip_prefix("PTY ")
            .ok_or_else(|| anyhow!("the simulated robot printed {line:?}, expected 'PTY <path>'"))?
            .trim()
            .to_string();
        outln!("simulated robot started on {device}");
        Ok(SimProcess { child, device })
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SampleRequest;
    use crate::trial::Direction;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn cmaes_warm_start_reads_the_source_study_and_starts_near_its_best() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("old.db").display());
        let base = format!(
            "[study]\nname = \"new\"\nstorage = \"{url}\"\n[robot]\ndevice = \"sim\"\n\
             [space.x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n\
             [space.y]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n"
        );
        // The source study: the best trials are all near (0.9, 0.1).
        let cfg = config(&base);
        let mut old = Study::create_or_load(
            storage::open(&url).unwrap(),
            "old",
            Direction::Maximize,
            cfg.space.clone(),
            Box::new(sampler::RandomSampler::new(3)),
        )
        .unwrap();
        for _ in 0..60 {
            let t = old.ask().unwrap();
            let (x, y) = (t.params["x"], t.params["y"]);
            old.tell(t.number, -((x - 0.9).powi(2) + (y - 0.1).powi(2)))
                .unwrap();
        }
        drop(old);
        let warm = config(&format!(
            "{base}[sampler]\nkind = \"cmaes\"\n[sampler.cmaes]\nwarm_start = {{ storage = \"{url}\", study = \"old\" }}\n"
        ));
        let cold = config(&format!("{base}[sampler]\nkind = \"cmaes\"\n"));
        let distance = |cfg: &Config| {
            let mut s = build_sampler(cfg).unwrap();
            let mut total = 0.0;
            for n in 0..10 {
                let p = s.sample(&SampleRequest {
                    space: &cfg.space,
                    history: &[],
                    direction: Direction::Maximize,
                    trial_number: n,
                });
                total += ((p["x"] - 0.9).powi(2) + (p["y"] - 0.1).powi(2)).sqrt();
            }
            total / 10.0
        };
        let (w, c) = (distance(&warm), distance(&cold));
        assert!(w < 0.25 && w < c / 2.0, "warm {w} vs cold {c}");
        // A missing source study is an error naming it, not a silent cold start.
        let missing = config(&format!(
            "{base}[sampler]\nkind = \"cmaes\"\n[sampler.cmaes]\nwarm_start = {{ storage = \"{url}\", study = \"nope\" }}\n"
        ));
        let e = format!("{:#}", build_sampler(&missing).err().unwrap());
        assert!(e.contains("nope") && e.contains("warm_start"), "{e}");
    }

    #[test]
    fn the_constraints_key_parses_defaults_on_and_keeps_the_sampler_kind() {
        let text = "[study]\nname = \"t\"\n[robot]\ndevice = \"sim\"\n[sampler]\nkind = \"tpe\"\nconstraints = false\n[space.x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n";
        let cfg = config(text);
        assert!(!cfg.sampler.constraints);
        assert_eq!(build_sampler(&cfg).unwrap().name(), "tpe");
        assert!(
            config(&text.replace("constraints = false\n", ""))
                .sampler
                .constraints
        );
    }
}
