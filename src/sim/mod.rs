//! Simulated robots that run the firmware side of the protocol: `gaittune sim`.
//!
//! The simulated robot is a real program speaking the real protocol over a real
//! pseudo-terminal, so the daemon, its serial code and every integration test run exactly as
//! against hardware. It is three parts:
//!
//! - [`firmware`]: the firmware state machine (Idle → Resetting → Ready ↔ Running, latched
//!   Stopped), written as microcontroller firmware would use the `firmware-protocol` crate;
//! - the robot behind it, chosen with `--model`: [`synthetic`] (the default), an analytic
//!   noisy gait-reward landscape with a known optimum and a known unsafe region, fast and
//!   exact for tests; or [`physics`], a rigid-body quadruped in rapier3d walking with an
//!   open-loop oscillator gait;
//! - [`pty`]: the pseudo-terminal (or device) it serves on.
//!
//! [`run`] prints `PTY <slave path>` as the first and only line on stdout, then logs to stderr.
//! Time: episodes advance the firmware clock by 20 ms per step whatever the wall clock does;
//! `--step-delay-ms` only paces them in wall time. The watchdog, heartbeats and reset delay
//! use wall time. `--realtime` paces steps at the firmware's 20 ms period.
//!
//! # Operator's go (`--require-go`)
//!
//! As on a real robot, the reset between episodes can wait for a person: with
//! `--require-go` the firmware stays Resetting after the reset routine until the operator's
//! go arrives, then reports Ready. The go is `SIGUSR1` to the simulated robot's process
//! (`kill -USR1 <pid>`; the prompt on stderr names the pid) or, when its stdin is a
//! terminal, a line (Enter) typed on it. A go given before the prompt does not count.
//!
//! # Reboots and quirks
//!
//! `SIGUSR2` reboots the simulated firmware in place, as a power cycle would (a new boot id,
//! uptime from zero, state Idle, no parameter set, a running episode dropped without its
//! EpisodeEnd): `gaittune chaos` sends it for its `reboot` fault. `--quirk NAME[=VALUE]`
//! makes the firmware misbehave on purpose ([`quirks`]): a version-1 firmware, run-time
//! limits narrower than declared, a reboot or a trip on cue, stale output kept for the next
//! host, and one quirk for each SPEC rule `gaittune probe` checks.
//!
//! # Replay (`--replay PARAMS.json [--plot OUT.svg]`, physics model)
//!
//! Runs one episode offline (no pseudo-terminal) with the parameters of `PARAMS.json` — an
//! object name → value, such as a trial's `params` in `gaittune export --format json`
//! output (a whole trial object is accepted too); missing parameters take their defaults —
//! and prints a JSON summary on stdout: `steps`, `mean_forward_speed` (m/s), `return`,
//! `max_joint_temp`, `trip` (null or `{reason, value, step}`). `--plot` also draws the trunk
//! path, its height and the joint angles to an SVG file. `--replay --storage URL --study
//! NAME --trial N` replays a stored trial exactly ([`replay`]).

pub mod firmware;
pub mod physics;
pub mod pty;
pub mod quirks;
pub mod replay;
pub mod synthetic;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use firmware::{EventLog, Firmware, FirmwareOptions, ParamSpec, RobotModel, Telemetry};
use physics::PhysicsQuadruped;
use pty::{DeviceTransport, PtyServer, Transport};
use quirks::Quirks;
use synthetic::SyntheticQuadruped;

/// Control period of the simulated firmware, µs (announced in Info).
pub const STEP_PERIOD_US: u32 = 20_000;
/// Robot identifier announced by the simulated firmware.
pub const ROBOT_ID: &str = "sim-quadruped";
/// The longest episode `--replay` runs, in control steps (its trace is kept in memory for
/// the plot and the summary).
pub const MAX_REPLAY_STEPS: u32 = 1_000_000;
/// Longest the serve loop sleeps without checking on its parent process.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);

/// Which simulated robot `gaittune sim` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimModel {
    /// The analytic reward landscape (src/sim/synthetic.rs): fast, exact, for tests.
    #[default]
    Synthetic,
    /// The rigid-body quadruped in rapier3d (src/sim/physics/): 10 or 26 gait parameters.
    Physics,
}

/// Options of `gaittune sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimOptions {
    /// The robot behind the firmware.
    #[arg(long, value_enum, default_value_t = SimModel::Synthetic)]
    pub model: SimModel,
    /// Physics model: declare every joint's amplitude, offset and phase (26 parameters)
    /// instead of the 10 tied by leg symmetry.
    #[arg(long)]
    pub full_params: bool,
    /// Pace control steps at wall-clock speed (the 20 ms period; overrides --step-delay-ms).
    #[arg(long)]
    pub realtime: bool,
    /// Wait for an operator's go (SIGUSR1, or Enter on an interactive stdin) at the end of
    /// every reset before reporting Ready.
    #[arg(long)]
    pub require_go: bool,
    /// Physics model: run one episode offline with the parameters in this JSON file (name →
    /// value) and print a summary, instead of serving the protocol. Without a file, with
    /// --storage, --study and --trial: replay what that trial ran (its parameters, episode
    /// seed and robot), and say whether the return is the stored one.
    #[arg(long, value_name = "PARAMS.json", num_args = 0..=1)]
    pub replay: Option<Option<PathBuf>>,
    /// With --replay and no file: the storage URL of the study.
    #[arg(long, requires = "replay")]
    pub storage: Option<String>,
    /// With --replay and no file: the study's name.
    #[arg(long, requires = "replay")]
    pub study: Option<String>,
    /// With --replay and no file: the trial's number.
    #[arg(long, requires = "replay")]
    pub trial: Option<u64>,
    /// With --replay --trial: which of the trial's episodes.
    #[arg(long, default_value_t = 0, requires = "trial")]
    pub episode: u32,
    /// With --replay: draw the episode (trunk path, height, joint angles) to this SVG file.
    #[arg(long, value_name = "OUT.svg", requires = "replay")]
    pub plot: Option<PathBuf>,
    /// With --replay: episode length in control steps (at most 1000000: 5.6 hours of
    /// robot time).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=MAX_REPLAY_STEPS as i64))]
    pub replay_steps: u32,
    /// With --replay: the episode seed (StartEpisode's seed).
    #[arg(long, default_value_t = 1)]
    pub replay_seed: u64,
    /// Serve on this existing device path instead of creating a pseudo-terminal.
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// Robot seed: offsets every episode's noise (per-robot variation).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Wall-clock time per control step in ms (0 = as fast as possible). Firmware time still
    /// advances by the step period.
    #[arg(long, default_value_t = 0.0)]
    pub step_delay_ms: f64,
    /// Wall-clock time of the reset routine between episodes, ms.
    #[arg(long, default_value_t = 5.0)]
    pub reset_delay_ms: f64,
    /// Observation/reward noise scale (1.0 = default realism, 0 = noiseless).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f64,
    /// Host heartbeat watchdog timeout the firmware declares and enforces, ms.
    #[arg(long, default_value_t = 1000)]
    pub watchdog_ms: u16,
    /// Append a JSON line per protocol event to this file (tests read it).
    #[arg(long)]
    pub event_log: Option<PathBuf>,
    /// Exit when the parent process goes away (set by the daemon when it spawns the sim).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// Misbehave on purpose, as a firmware that breaks a rule of SPEC.md or a robot that
    /// reboots on cue (for tests and `gaittune probe` demonstrations); repeatable. See
    /// src/sim/quirks.rs for the list, e.g. `--quirk v1-only --quirk limit=kp:10:20`.
    #[arg(long = "quirk", value_name = "NAME[=VALUE]")]
    pub quirks: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            model: SimModel::Synthetic,
            full_params: false,
            realtime: false,
            require_go: false,
            replay: None,
            storage: None,
            study: None,
            trial: None,
            episode: 0,
            plot: None,
            replay_steps: 500,
            replay_seed: 1,
            device: None,
            seed: 1,
            step_delay_ms: 0.0,
            reset_delay_ms: 5.0,
            noise: 1.0,
            watchdog_ms: 1000,
            event_log: None,
            exit_with_parent: false,
            quirks: Vec::new(),
        }
    }
}

impl SimOptions {
    /// Checks the numbers; the error names the option and what it accepts.
    pub fn validate(&self) -> anyhow::Result<()> {
        let ms = |name: &str, v: f64| -> anyhow::Result<Duration> {
            if !(0.0..=3_600_000.0).contains(&v) {
                bail!("--{name} must be a number of milliseconds between 0 and 3600000, got {v}");
            }
            Ok(Duration::from_secs_f64(v / 1e3))
        };
        ms("step-delay-ms", self.step_delay_ms)?;
        ms("reset-delay-ms", self.reset_delay_ms)?;
        if !self.noise.is_finite() || self.noise < 0.0 {
            bail!(
                "--noise must be a finite number >= 0 (1 = default realism, 0 = noiseless), got {}",
                self.noise
            );
        }
        if self.watchdog_ms == 0 {
            bail!("--watchdog-ms must be at least 1 (the protocol recommends 200 to 5000)");
        }
        let from_storage = matches!(self.replay, Some(None));
        if self.model != SimModel::Physics {
            if self.full_params {
                bail!("--full-params applies to the physics robot only: add --model physics");
            }
            if self.replay.is_some() && !from_storage {
                bail!("--replay runs the physics robot only: add --model physics");
            }
        }
        if from_storage && (self.storage.is_none() || self.study.is_none() || self.trial.is_none())
        {
            bail!("--replay without a parameter file replays a stored trial: give --storage URL --study NAME --trial N (or --replay PARAMS.json)");
        }
        if self.replay_steps == 0 || self.replay_steps > MAX_REPLAY_STEPS {
            bail!(
                "--replay-steps must be between 1 and {MAX_REPLAY_STEPS}, got {}",
                self.replay_steps
            );
        }
        if self.plot.is_some() && self.replay.is_none() {
            bail!("--plot draws a replayed episode: add --replay PARAMS.json");
        }
        Quirks::parse(&self.quirks).map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The firmware configuration these options describe, with the given boot id. The
    /// quirks must have passed [`SimOptions::validate`].
    pub fn firmware_options(&self, boot_id: u32) -> FirmwareOptions {
        FirmwareOptions {
            robot_id: ROBOT_ID.into(),
            boot_id,
            watchdog_ms: self.watchdog_ms,
            // A robot never runs slower than the period it declares (SPEC §9.2): paced
            // slower than 20 ms, the simulated robot declares its pace.
            step_period_us: STEP_PERIOD_US.max((self.step_delay_ms.max(0.0) * 1e3) as u32),
            step_delay: if self.realtime {
                Duration::from_micros(STEP_PERIOD_US as u64)
            } else {
                Duration::from_secs_f64(self.step_delay_ms.max(0.0) / 1e3)
            },
            reset_delay: Duration::from_secs_f64(self.reset_delay_ms.max(0.0) / 1e3),
            quirks: Quirks::parse(&self.quirks).unwrap_or_default(),
        }
    }
}

/// A boot id that differs between process starts (time and pid, never 0); independent of
/// `--seed`, as a real robot's is of its configuration.
pub fn fresh_boot_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos ^ ((std::process::id() as u64) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let id = (z ^ (z >> 31)) as u32;
    id.max(1)
}

/// Runs the simulated robot until killed (or, with `--exit-with-parent`, until the parent
/// process is gone). Creates a pseudo-terminal unless `--device` is given. With `--replay`,
/// runs one offline episode instead ([module docs](self)).
pub fn run(opts: &SimOptions) -> anyhow::Result<()> {
    opts.validate()?;
    if opts.replay.is_some() {
        return replay::run(opts);
    }
    match opts.model {
        SimModel::Synthetic => {
            let model = SyntheticQuadruped::new(opts.seed, opts.noise);
            if opts.require_go {
                run_model(OperatorGo::new(model)?, opts)
            } else {
                run_model(model, opts)
            }
        }
        SimModel::Physics => {
            let model = PhysicsQuadruped::new(opts.seed, opts.noise, opts.full_params);
            let result = if opts.require_go {
                run_model(OperatorGo::new(model)?, opts)
            } else {
                run_model(model, opts)
            };
            let (steps, compute) = physics::totals();
            if steps > 0 {
                tracing::info!(
                    "physics robot: {steps} control steps ({:.1} s simulated) in {:.2} s of compute: real-time factor {:.1}",
                    steps as f64 * 0.02,
                    compute.as_secs_f64(),
                    steps as f64 * 0.02 / compute.as_secs_f64().max(1e-9)
                );
            }
            result
        }
    }
}

/// Serves the protocol for `model` (see [`run`]).
fn run_model<M: RobotModel>(model: M, opts: &SimOptions) -> anyhow::Result<()> {
    let boot = Instant::now();
    let parent = opts.exit_with_parent.then(nix::unistd::getppid);
    let firmware_options = opts.firmware_options(fresh_boot_id());
    firmware::check_quirks(model.params(), &firmware_options.quirks).map_err(anyhow::Error::msg)?;
    let keep_output = firmware_options.quirks.keep_output_when_closed;
    install_reboot_signal()?;
    let mut fw = Firmware::new(model, firmware_options);
    if let Some(path) = &opts.event_log {
        let log = EventLog::create(path)
            .with_context(|| format!("opening the event log {} (--event-log)", path.display()))?;
        fw = fw.with_event_log(log);
    }
    let mut transport: Box<dyn Transport> = match &opts.device {
        Some(path) => {
            let t = DeviceTransport::open(path)?;
            tracing::info!("simulated robot serving on {}", path.display());
            Box::new(t)
        }
        None => {
            let mut pty = PtyServer::create()?;
            if keep_output {
                pty = pty.keep_output_when_closed();
            }
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "PTY {}", pty.slave_path().display())
                .and_then(|_| stdout.flush())
                .context("printing the pseudo-terminal path to stdout")?;
            tracing::info!("simulated robot serving on {}", pty.slave_path().display());
            Box::new(pty)
        }
    };
    let mut parent_checked = Instant::now();
    serve(&mut fw, transport.as_mut(), boot, || {
        let Some(pid) = parent else { return true };
        if parent_checked.elapsed() < MAX_IDLE_WAIT {
            return true;
        }
        parent_checked = Instant::now();
        if nix::unistd::getppid() != pid {
            tracing::info!("parent process gone: the simulated robot stops");
            return false;
        }
        true
    })
}

/// Set by `SIGUSR2`: reboot the simulated firmware now (a power cycle on cue, for tests and
/// `gaittune chaos`).
static REBOOT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr2(_: nix::libc::c_int) {
    REBOOT.store(true, Ordering::SeqCst);
}

fn install_reboot_signal() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigusr2),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR2, &action) }
        .context("installing the SIGUSR2 (reboot) handler")?;
    Ok(())
}

/// Set by `SIGUSR1` and by lines typed on an interactive stdin: the operator's go.
static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: nix::libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

/// A robot whose reset waits for an operator's go (`--require-go`, [module docs](self)).
pub struct OperatorGo<M> {
    inner: M,
    waiting: bool,
}

impl<M> OperatorGo<M> {
    /// Wraps `inner`; installs the SIGUSR1 handler and, when stdin is a terminal, a thread
    /// reading go lines from it.
    pub fn new(inner: M) -> anyhow::Result<Self> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let action = SigAction::new(
            SigHandler::Handler(on_sigusr1),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR1, &action) }
            .context("installing the SIGUSR1 handler for --require-go")?;
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            std::thread::spawn(|| {
                for line in std::io::stdin().lines() {
                    if line.is_err() {
                        break;
                    }
                    GO.store(true, Ordering::SeqCst);
                }
            });
        }
        Ok(Self {
            inner,
            waiting: false,
        })
    }
}

impl<M: RobotModel> RobotModel for OperatorGo<M> {
    type Episode = M::Episode;

    fn params(&self) -> &[ParamSpec] {
        self.inner.params()
    }

    fn start_episode(&self, values: &[f32], seed: u64) -> M::Episode {
        self.inner.start_episode(values, seed)
    }

    fn step(&self, episode: &mut M::Episode, step: u32) -> Telemetry {
        self.inner.step(episode, step)
    }

    fn reset_may_finish(&mut self) -> bool {
        if !self.waiting {
            GO.store(false, Ordering::SeqCst);
            self.waiting = true;
            eprintln!(
                "simulated robot: reset done, waiting for the operator's go (kill -USR1 {}{})",
                std::process::id(),
                if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    ", or Enter here"
                } else {
                    ""
                }
            );
            return false;
        }
        if GO.swap(false, Ordering::SeqCst) {
            self.waiting = false;
            return true;
        }
        false
    }
}

/// The firmware main loop: wait for input or the next deadline, feed every pending byte,
/// then tick the firmware (at most one control step per tick). Returns when `keep_going`
/// says so (it is asked at least every 50 ms).
fn serve<M: RobotModel>(
    fw: &mut Firmware<M>,
    transport: &mut dyn Transport,
    boot: Instant,
    mut keep_going: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut buf = [0u8; 1024];
    while keep_going() {
        if REBOOT.swap(false, Ordering::SeqCst) {
            fw.reboot(boot.elapsed(), fresh_boot_id());
        }
        let now = boot.elapsed();
        let wait = fw.next_deadline().saturating_sub(now).min(MAX_IDLE_WAIT);
        let mut n = transport
            .recv(&mut buf, wait)
            .context("reading from the host")?;
        while n > 0 {
            let t = boot.elapsed();
            for &b in &buf[..n] {
                fw.on_byte(b, t, &mut |frame: &[u8]| transport.send(frame));
            }
            n = transport
                .recv(&mut buf, Duration::ZERO)
                .context("reading from the host")?;
        }
        fw.poll(boot.elapsed(), &mut |frame: &[u8]| transport.send(frame));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
