//! The daemon: the one place that knows both the study (samplers, storage) and the robot
//! link. It opens both, reconciles the robot's state at start, and runs the trial loop
//! (`trial_loop`); the study lives on a thread of its own ([`worker`]) so that no storage
//! call ever delays the host's heartbeats or an EStop.
//!
//! Rooms: [`firmware`] (the search space against the robot's declarations), [`progress`]
//! (one trial's intermediate values), `trial_loop`, `worker`, `summary`, `sim_process`.

pub mod firmware;
pub mod fleet;
pub mod operator;
pub mod progress;
mod sim_process;
mod summary;
mod trial_loop;
pub mod worker;

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use firmware_protocol::{RobotState, Step};

use crate::config::Config;
use crate::control::{global_slot, Interrupts};
use crate::evaluation;
use crate::robot::{LinkSettings, RobotLink};
use crate::safety::Violation;
use crate::sampler;
use crate::storage;
use crate::storage::Lease;
use crate::study::Study;
use crate::trial::{FrozenTrial, TrialState};

pub use firmware::{baseline_params, check_space_against_firmware};
pub use operator::ControlOptions;
pub use trial_loop::{INCIDENTS_ATTR, MAX_FAILED_IN_A_ROW, MAX_FAULTS_PER_TRIAL};

use operator::DaemonActions;
use sim_process::SimProcess;
use summary::print_summary;
use trial_loop::{Failpoint, TrialRunner};
use worker::{LeaseKeeper, StudyWorker};

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
    /// This daemon is worker `i` of `gaittune run --workers N`: its simulated robot's seed
    /// is `sim.seed + i`, its event log `NAME.w<i>.EXT`, and only worker 0 re-evaluates.
    pub worker_index: Option<u32>,
    /// The operator's controls: the control socket, the event stream.
    pub control: ControlOptions,
}

/// How a run ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The study reached its size.
    Finished,
    /// An operator interrupt stopped it; the trial in flight was re-queued.
    Interrupted,
}

/// Reason recorded on trials the pruner stopped for poor performance.
pub use crate::pruner::POOR_REASON as PRUNE_POOR;
/// Reason recorded on trials the safety envelope or the firmware's own limits stopped.
pub use crate::trial::UNSAFE_REASON as PRUNE_UNSAFE;

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
    let mut control = overrides.control;
    if let Some(i) = overrides.worker_index {
        control.socket = control.socket.map(|p| worker_path(&p, i));
        control.events = control.events.map(|p| worker_path(&p, i));
        // Worker i's dashboard on the next ports (port 0: any free one).
        control.dashboard = control.dashboard.map(|mut a| {
            if a.port() != 0 {
                a.set_port(a.port() + i as u16);
            }
            a
        });
        config.sim.seed = config.sim.seed.wrapping_add(i as u64);
        if let Some(log) = &config.sim.event_log {
            config.sim.event_log = Some(worker_path(log, i));
        }
        if i > 0 {
            config.study.reevaluate_top = 0;
        }
    }
    // One thread for the trial loop and the heartbeats: if the loop ever hangs, host
    // heartbeats stop too, and the firmware's watchdog stops the robot. Storage runs on its
    // own thread (`worker`), so a slow disk or a locked database cannot stop them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(
        config,
        interrupts,
        release_latch,
        control,
        overrides.worker_index,
    ))
}

/// `events.jsonl` → `events.w2.jsonl`: worker `i`'s own event log.
fn worker_path(path: &std::path::Path, i: u32) -> std::path::PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, path.extension()) {
        (Some(stem), Some(ext)) => format!("{stem}.w{i}.{}", ext.to_string_lossy()),
        (Some(stem), None) => format!("{stem}.w{i}"),
        _ => format!("w{i}"),
    };
    path.with_file_name(name)
}

/// Opens the study with this worker's lease, if it exists yet (a run creates its study only
/// once the config, the space and the firmware's limits have all passed).
fn open_study(config: &Config, lease: &Lease) -> Result<Option<Study>> {
    let mut storage = storage::open(&config.study.storage).with_context(|| {
        format!(
            "opening storage {}",
            storage::shown_url(&config.study.storage)
        )
    })?;
    storage.bind_worker(Some(lease.clone()));
    if storage.load_study(&config.study.name)?.is_none() {
        return Ok(None);
    }
    Ok(Some(create_or_load(config, storage)?))
}

fn create_or_load(config: &Config, storage: Box<dyn storage::Storage>) -> Result<Study> {
    Ok(Study::create_or_load(
        storage,
        &config.study.name,
        config.study.direction,
        config.space.clone(),
        build_sampler(config)?,
    )?)
}

async fn run_async(
    config: Config,
    interrupts: Interrupts,
    release_latch: bool,
    control: ControlOptions,
    worker_index: Option<u32>,
) -> Result<RunOutcome> {
    // The worker is named after its robot: a device, or a simulated robot by its seed (which
    // --workers varies), so that a restart on the same robot recognises its earlier trials.
    let robot_name = if config.uses_sim() {
        format!("sim-seed-{}", config.sim.seed)
    } else {
        config.robot.device.clone()
    };
    let lease = Lease::for_robot(&robot_name, Duration::from_millis(config.study.lease_ms));
    let mut existing = open_study(&config, &lease)?;
    if let Some(study) = &mut existing {
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
            print_summary(study)?;
            return Ok(RunOutcome::Finished);
        }
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
        episode_margin: Duration::from_millis(config.robot.episode_margin_ms),
    };
    let mut link = RobotLink::open(&device, config.robot.baud, settings).await?;
    global_slot().arm(link.sender());
    let envelope = config.safety.clone();
    link.set_step_guard(Box::new(move |step| envelope.check(step).is_some()));
    let info = link.handshake().await?;
    outln!(
        "robot '{}' firmware {} on {} — protocol v{}, {} parameters, schema {:#010x}, watchdog {} ms",
        info.robot_id,
        info.firmware_version,
        device,
        info.protocol_version,
        info.params.len(),
        info.schema_hash,
        info.watchdog_ms
    );
    check_space_against_firmware(&config.space, &info, &config)?;
    reconcile_at_start(&mut link).await?;
    let mut study = match existing {
        Some(mut study) => {
            study.bind_worker(Some(lease.clone()));
            study
        }
        None => {
            let mut storage = storage::open(&config.study.storage).with_context(|| {
                format!(
                    "opening storage {}",
                    storage::shown_url(&config.study.storage)
                )
            })?;
            storage.bind_worker(Some(lease.clone()));
            create_or_load(&config, storage)?
        }
    };
    outln!("worker {}", lease.worker);
    study.set_study_attr("robot", serde_json::to_value(&info)?)?;
    if config.uses_sim() {
        // What a replay needs to run this robot again (`gaittune report`'s gait plot).
        study.set_study_attr(
            "sim",
            serde_json::json!({
                "model": config.sim.model, "seed": config.sim.seed, "noise": config.sim.noise,
                "extra_args": config.sim.extra_args,
            }),
        )?;
    }
    let mut first = None;
    if config.study.baseline {
        match baseline_params(study.space(), &info) {
            Ok(params) => {
                if let Some(trial) = study.ask_first(params)? {
                    study.set_attr(trial.number, "baseline", serde_json::Value::Bool(true))?;
                    outln!(
                        "trial {} is the baseline: the firmware's default gait",
                        trial.number
                    );
                    first = Some(trial);
                }
            }
            Err(why) => outln!("no baseline trial: {why}"),
        }
    }

    let space = study.space().clone();
    let study_name = study.name().to_string();
    let direction = study.direction();
    let worker = StudyWorker::spawn(study).context("starting the storage thread")?;
    let controls = operator::Controls::open(
        &config,
        &control,
        worker_index,
        &study_name,
        DaemonActions {
            study: worker.handle(),
            space: space.clone(),
            info: info.clone(),
        },
    )?;
    let mut runner = TrialRunner {
        config: &config,
        info,
        link: &mut link,
        study: &worker,
        space,
        study_name,
        direction,
        interrupts,
        release_latch,
        failpoint: Failpoint::from_env(),
        pruner: crate::pruner::build(&config.pruner.kind, config.pruner_options())
            .map_err(|e| anyhow!("{}: {e}", config.path.display()))?,
        failed_in_a_row: 0,
        last_progress: std::time::Instant::now(),
        recovering: None,
        first,
        lease: LeaseKeeper::start(worker.handle(), lease.duration),
        waiting_noted: false,
        desk: controls.desk.clone(),
        gos_used: 0,
        operator_latched: false,
        waiting_for: None,
    };
    let outcome = runner.run_all().await;
    drop(runner);
    // The dashboard's server winds down its connections: not on this runtime's thread,
    // which still sends the robot's heartbeats.
    let _ = tokio::task::spawn_blocking(move || drop(controls)).await;
    global_slot().disarm();
    drop(link);
    drop(sim);
    let study = worker.into_study();
    let outcome = outcome?;
    print_summary(&study)?;
    Ok(outcome)
}

/// Brings a robot found busy with an earlier session's work back to a known state: an
/// episode still running (a daemon killed a moment ago, its robot fed by our heartbeats now)
/// is aborted. A latched robot is left latched: releasing it is the operator's word
/// (`--release-latch`).
async fn reconcile_at_start(link: &mut RobotLink) -> Result<()> {
    let snapshot = link.snapshot().await?;
    match snapshot.state {
        RobotState::Running => {
            let which = snapshot
                .status
                .map(|s| format!(" (trial {}, episode {})", s.trial, s.episode))
                .unwrap_or_default();
            outln!(
                "the robot is running an episode this daemon did not start{which}, left from an earlier session: aborting it"
            );
            link.abort().await?;
        }
        RobotState::Stopped => {
            let why = snapshot
                .status
                .map(|s| match s.stop_cause.trip_reason() {
                    Some(r) => format!(" by its {r:?} limit"),
                    None => " by an EStop".to_string(),
                })
                .unwrap_or_default();
            outln!("the robot is latched stopped{why}");
        }
        _ => {}
    }
    Ok(())
}

/// The sampler the config describes, with what needs I/O done here (samplers never do
/// any): a CMA-ES warm start (`[sampler.cmaes] warm_start = { storage, study }`) reads the
/// source study's trials and starts the search from the distribution of its best ones; a GP
/// prior (`[sampler.gp] prior = { storage, study }`) reads the source study's trials and
/// hands them to [`sampler::GpSampler::with_prior`].
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
                        format!(
                            "{}: warm_start: opening storage {}",
                            place(),
                            storage::shown_url(&src.storage)
                        )
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
        ("gp", options) => {
            let o: sampler::GpOptions =
                sampler::parse_options("gp", options).map_err(|e| anyhow!("{}: {e}", place()))?;
            let source = match &o.prior {
                None => None,
                Some(src) => {
                    let storage = storage::open(&src.storage).with_context(|| {
                        format!(
                            "{}: prior: opening storage {}",
                            place(),
                            storage::shown_url(&src.storage)
                        )
                    })?;
                    let study = Study::load(
                        storage,
                        &src.study,
                        Box::new(sampler::RandomSampler::new(0)),
                    )
                    .with_context(|| format!("{}: prior", place()))?;
                    let trials = study.trials()?;
                    outln!(
                        "GP prior mean from study '{}' in {} ({} trials)",
                        src.study,
                        storage::shown_url(&src.storage),
                        trials.len()
                    );
                    Some(trials)
                }
            };
            let gp = sampler::GpSampler::with_options(seed, o)
                .map_err(|e| anyhow!("{}: {e}", place()))?;
            Box::new(match source {
                Some(trials) => gp
                    .with_prior(&trials, &config.space, config.study.direction)
                    .map_err(|e| anyhow!("{}: {e}", place()))?,
                None => gp,
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
pub(crate) fn pending_reevaluation<'t>(
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

pub(crate) fn count_finished(trials: &[FrozenTrial]) -> u64 {
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
    fn gp_prior_reads_the_source_study_and_the_first_trial_goes_where_it_pointed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("sim.db").display());
        let base = format!(
            "[study]\nname = \"robot\"\nstorage = \"{url}\"\n[robot]\ndevice = \"sim\"\n\
             [space.x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n\
             [space.y]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n"
        );
        let cfg = config(&base);
        let mut sim = Study::create_or_load(
            storage::open(&url).unwrap(),
            "sim",
            Direction::Maximize,
            cfg.space.clone(),
            Box::new(sampler::RandomSampler::new(3)),
        )
        .unwrap();
        for _ in 0..40 {
            let t = sim.ask().unwrap();
            let (x, y) = (t.params["x"], t.params["y"]);
            sim.tell(t.number, -((x - 0.9).powi(2) + (y - 0.1).powi(2)))
                .unwrap();
        }
        drop(sim);
        let with = |study: &str| {
            config(&format!(
                "{base}[sampler]\nkind = \"gp\"\n[sampler.gp]\nn_preliminary_samples = 256\n\
                 prior = {{ storage = \"{url}\", study = \"{study}\" }}\n"
            ))
        };
        let warm = with("sim");
        let mut s = build_sampler(&warm).unwrap();
        let p = s.sample(&SampleRequest {
            space: &warm.space,
            history: &[],
            direction: Direction::Maximize,
            trial_number: 0,
        });
        let dist = ((p["x"] - 0.9).powi(2) + (p["y"] - 0.1).powi(2)).sqrt();
        assert!(dist < 0.1, "first trial {p:?}");
        let e = format!("{:#}", build_sampler(&with("nope")).err().unwrap());
        assert!(e.contains("nope") && e.contains("prior"), "{e}");
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
