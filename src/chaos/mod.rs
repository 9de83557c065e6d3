//! `gaittune chaos`: a fault-injecting proxy between a host and a robot, for testing how the
//! daemon survives a bad serial line and a robot that reboots.
//!
//! ```text
//! gaittune chaos [--seed N] [--fault SPEC]... [--log FILE] -- ROBOT_COMMAND [ARGS...]
//! gaittune chaos [--seed N] [--fault SPEC]... [--log FILE] --device PATH
//! ```
//!
//! It starts ROBOT_COMMAND (e.g. `gaittune sim --event-log robot.jsonl`), reads its first
//! stdout line `PTY <path>`, opens that pseudo-terminal as the robot's side, creates its own,
//! prints `PTY <its slave path>` as its own first stdout line, and forwards bytes both ways,
//! injecting the faults of its `--fault` specs ([`faults`] has the syntax). Hosts may close
//! and reopen its pty as they may the simulator's ([`proxy`]). It exits when the robot
//! process exits, and stops the robot process when it gets SIGTERM or SIGINT, or when it
//! dies itself (the robot gets SIGTERM from the kernel then).
//!
//! The proxy is frame-aware: it cuts each direction at the 0x00 delimiters and decodes the
//! frames (for `type=` filters and the log) but forwards the original bytes unless a fault
//! applies. `reboot` sends SIGUSR2 to the robot process: `gaittune sim` reboots its firmware
//! in place on it. With `--log FILE` every injected fault is one JSON line: `t_unix_ms`
//! (wall clock, ms since the Unix epoch), `fault`, `dir` (`up` = host → robot, `down`),
//! `type` (the frame's message type or null), `trial`, `episode`, `step` (when the frame
//! carries them; EpisodeEnd's `step` is its step count), `detail` and `spec`.

pub mod faults;
pub mod proxy;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use faults::{FaultEngine, FaultKind, FaultSpec};
use proxy::{FaultLog, HostPty, Proxy, RobotPort};

/// How long the robot command may take to print its `PTY <path>` line.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped robot process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The fault syntax, for `gaittune chaos --help`.
pub const FAULT_HELP: &str = "\
Faults (--fault KIND[:key=value]..., repeatable; up = host -> robot, down = robot -> host):
  drop      drop matching frames
  dup       send matching frames twice
  corrupt   flip one bit of one byte of a matching frame (with type=), or of each
            matching byte (without type=: p is per byte, e.g. corrupt:p=1e-3)
  delay     hold a matching frame, and everything after it, ms=MS
  swap      swap two adjacent bytes inside a matching frame
  reboot    SIGUSR2 to the robot process, steps=K (10) Step frames into the episode of
            the Nth StartEpisode: at-start=N, or every-starts=N
  stall     stop forwarding dir for ms=MS once after-steps=N Step frames went down
Frame filters: dir=up|down|both, type=NAME (Step, EpisodeEnd, SafetyTrip, Ready,
  Heartbeat, Ack, Nack, ParamsApplied, Info, ParamInfo, Status, Hello, GetParamInfo,
  SetParams, StartEpisode, Abort, EStop, ClearEStop, GetStatus), after=N (skip the first N).
Triggers: p=PROB, count=N (the first N), every=N (every Nth); none = every match.
Examples: drop:type=EpisodeEnd:count=1   dup:type=Step:p=0.05   corrupt:p=1e-3
  delay:dir=down:p=0.01:ms=300   reboot:every-starts=20   stall:ms=1500:after-steps=50";

/// Options of `gaittune chaos`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChaosOptions {
    /// Seed of the one random generator every fault decision comes from.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A fault to inject, KIND[:key=value]... (see below); repeatable, applied in order.
    #[arg(long = "fault", value_name = "KIND[:key=value]...")]
    pub faults: Vec<String>,
    /// Append one JSON line per injected fault to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Proxy this existing device instead of starting a robot command (no reboot fault).
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Exit, stopping the robot, when the parent process goes away.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// The robot: a command that prints `PTY <path>` as its first stdout line, e.g.
    /// `-- gaittune sim --event-log robot.jsonl`.
    #[arg(last = true, value_name = "ROBOT_COMMAND")]
    pub command: Vec<String>,
}

impl ChaosOptions {
    /// The parsed fault specs, checked against where the robot comes from.
    pub fn specs(&self) -> anyhow::Result<Vec<FaultSpec>> {
        match (&self.device, self.command.is_empty()) {
            (Some(_), false) => {
                bail!("give either --device PATH or -- ROBOT_COMMAND, not both")
            }
            (None, true) => {
                bail!("no robot: give -- ROBOT_COMMAND (e.g. -- gaittune sim) or --device PATH")
            }
            _ => {}
        }
        let specs: Vec<FaultSpec> = self
            .faults
            .iter()
            .map(|s| FaultSpec::parse(s).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
        if let (Some(device), Some(reboot)) = (
            &self.device,
            specs.iter().find(|s| s.kind == FaultKind::Reboot),
        ) {
            bail!(
                "--fault {:?}: a reboot signals the robot's process, and with --device {} there is none; start the robot through chaos instead: gaittune chaos --fault {} -- gaittune sim ...",
                reboot.text,
                device.display(),
                reboot.text
            );
        }
        Ok(specs)
    }
}

/// Set by SIGTERM and SIGINT: stop the robot and exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing the {signal} handler"))?;
    }
    Ok(())
}

/// The robot command, started by the proxy.
struct RobotProcess {
    child: Child,
}

impl RobotProcess {
    /// Starts `command` and waits for its `PTY <path>` line; returns the path.
    fn spawn(command: &[String]) -> anyhow::Result<(RobotProcess, PathBuf)> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| anyhow!("the robot command is empty"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the robot command {program:?}"))?;
        let stdout = child.stdout.take().context("the robot's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut robot = RobotProcess { child };
        let line = match rx.recv_timeout(ANNOUNCE_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => {
                robot.stop();
                bail!(
                    "the robot command {program:?} did not print 'PTY <path>' within {} s (got {other:?})",
                    ANNOUNCE_TIMEOUT.as_secs()
                );
            }
        };
        let Some(path) = line.strip_prefix("PTY ") else {
            robot.stop();
            bail!("the robot command {program:?} printed {line:?}, expected 'PTY <path>'");
        };
        Ok((robot, PathBuf::from(path.trim())))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Its exit status, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it is still there after a grace period.
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = kill(self.pid(), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RobotProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why the proxy stopped.
enum Ending {
    Signal,
    ParentGone,
    RobotExited(ExitStatus),
}

/// Runs `gaittune chaos` (see the [module docs](self)) until the robot exits or a signal
/// stops it.
pub fn run(opts: &ChaosOptions) -> anyhow::Result<()> {
    let specs = opts.specs()?;
    let log = opts.log.as_deref().map(FaultLog::create).transpose()?;
    install_stop_signals()?;
    let parent = opts.exit_with_parent.then(nix::unistd::getppid);
    let (mut robot_process, robot_path) = match &opts.device {
        Some(path) => (None, path.clone()),
        None => {
            let (p, path) = RobotProcess::spawn(&opts.command)?;
            (Some(p), path)
        }
    };
    let robot = RobotPort::open(&robot_path)?;
    let host = HostPty::create()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "PTY {}", host.slave_path().display())
            .and_then(|_| stdout.flush())
            .context("printing the pseudo-terminal path to stdout")?;
    }
    tracing::info!(
        "chaos proxy: host side {}, robot side {}, {} fault(s), seed {}",
        host.slave_path().display(),
        robot_path.display(),
        specs.len(),
        opts.seed
    );
    let reboot = robot_process.as_ref().map(|p| {
        let pid = p.pid();
        Box::new(move || {
            kill(pid, Signal::SIGUSR2).context("sending SIGUSR2 (reboot) to the robot")
        }) as Box<dyn FnMut() -> anyhow::Result<()>>
    });
    let mut proxy = Proxy::new(host, robot, FaultEngine::new(specs, opts.seed), log, reboot);
    let mut ending = None;
    let mut checked = Instant::now();
    proxy.run(|| {
        if STOP.load(Ordering::SeqCst) {
            ending = Some(Ending::Signal);
        } else if let Some(status) = robot_process.as_mut().and_then(|p| p.exited()) {
            ending = Some(Ending::RobotExited(status));
        } else if let Some(pid) = parent.filter(|_| checked.elapsed() >= Duration::from_millis(50))
        {
            checked = Instant::now();
            if nix::unistd::getppid() != pid {
                ending = Some(Ending::ParentGone);
            }
        }
        ending.is_none()
    })?;
    let injected: Vec<String> = proxy
        .counts()
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    eprintln!(
        "gaittune chaos: faults injected: {}",
        if injected.is_empty() {
            "none".to_string()
        } else {
            injected.join(", ")
        }
    );
    if let Some(p) = robot_process.as_mut() {
        p.stop();
    }
    match ending {
        Some(Ending::RobotExited(status)) if !status.success() => {
            bail!("the robot process exited ({status})")
        }
        Some(Ending::ParentGone) => {
            tracing::info!("parent process gone: the chaos proxy stops");
            Ok(())
        }
        _ => Ok(()),
    }
}
