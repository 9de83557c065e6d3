//! Simulated robots that run the firmware side of the protocol: `gaittune sim`.
//!
//! The simulated robot is a real program speaking the real protocol over a real
//! pseudo-terminal, so the daemon, its serial code and every integration test run exactly as
//! against hardware. It is three parts:
//!
//! - [`firmware`]: the firmware state machine (Idle → Resetting → Ready ↔ Running, latched
//!   Stopped), written as microcontroller firmware would use the `firmware-protocol` crate;
//! - [`synthetic`]: the robot behind it, an analytic noisy gait-reward landscape with a known
//!   optimum and a known unsafe region;
//! - [`pty`]: the pseudo-terminal (or device) it serves on.
//!
//! [`run`] prints `PTY <slave path>` as the first and only line on stdout, then logs to stderr.
//! Time: episodes advance the firmware clock by 20 ms per step whatever the wall clock does;
//! `--step-delay-ms` only paces them in wall time. The watchdog, heartbeats and reset delay
//! use wall time.

pub mod firmware;
pub mod pty;
pub mod synthetic;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use firmware::{EventLog, Firmware, FirmwareOptions, RobotModel};
use pty::{DeviceTransport, PtyServer, Transport};
use synthetic::SyntheticQuadruped;

/// Control period of the simulated firmware, µs (announced in Info).
pub const STEP_PERIOD_US: u32 = 20_000;
/// Robot identifier announced by the simulated firmware.
pub const ROBOT_ID: &str = "sim-quadruped";
/// Longest the serve loop sleeps without checking on its parent process.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);

/// Options of `gaittune sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimOptions {
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
    #[arg(long)]
    pub exit_with_parent: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            device: None,
            seed: 1,
            step_delay_ms: 0.0,
            reset_delay_ms: 5.0,
            noise: 1.0,
            watchdog_ms: 1000,
            event_log: None,
            exit_with_parent: false,
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
        Ok(())
    }

    /// The firmware configuration these options describe, with the given boot id.
    pub fn firmware_options(&self, boot_id: u32) -> FirmwareOptions {
        FirmwareOptions {
            robot_id: ROBOT_ID.into(),
            boot_id,
            watchdog_ms: self.watchdog_ms,
            step_period_us: STEP_PERIOD_US,
            step_delay: Duration::from_secs_f64(self.step_delay_ms.max(0.0) / 1e3),
            reset_delay: Duration::from_secs_f64(self.reset_delay_ms.max(0.0) / 1e3),
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
/// process is gone). Creates a pseudo-terminal unless `--device` is given.
pub fn run(opts: &SimOptions) -> anyhow::Result<()> {
    opts.validate()?;
    let boot = Instant::now();
    let parent = opts.exit_with_parent.then(nix::unistd::getppid);
    let model = SyntheticQuadruped::new(opts.seed, opts.noise);
    let mut fw = Firmware::new(model, opts.firmware_options(fresh_boot_id()));
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
            let pty = PtyServer::create()?;
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
