//! The plumbing of `gaittune chaos`: the host's pseudo-terminal, the robot's device, one poll
//! loop that moves bytes both ways through the [`FaultEngine`], and the fault log.
//!
//! The host side is a pseudo-terminal the proxy creates and serves the way the simulator
//! serves its own (`src/sim/pty.rs`): raw, master kept, slave handle closed so that POLLHUP
//! on the master means "no host has the slave open". While no host is connected, the robot's
//! output is discarded (not queued as stale frames); when a host (re)opens the slave, what
//! is left in the pty is flushed and a lone 0x00 greets it (SPEC §2.5).
//!
//! Each direction is a lane: a [`FrameSplitter`], then the engine's [`Verdict`](super::faults::Verdict) per chunk,
//! then a first-in first-out queue of byte runs, each with the instant it may go. A held run
//! holds everything behind it, as a serial line keeps order. Writes never block the loop: a
//! run a peer is not reading stays queued until the peer's fd is writable.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcflush, tcgetattr, tcsetattr, FlushArg, SetArg};
use serde_json::json;

use super::faults::{Dir, FaultEngine, FrameSplitter, Injection};

/// Longest the loop sleeps without checking whether it should stop.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Poll interval while no host has the pty open, or after the robot's side hung up.
const DISCONNECTED_POLL: Duration = Duration::from_millis(5);
/// Most bytes queued in one lane; beyond it the oldest runs are dropped (a peer that stopped
/// reading, as a UART's receiver overruns).
const MAX_QUEUED: usize = 1 << 20;

fn set_raw(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let mut tio = tcgetattr(fd)?;
    cfmakeraw(&mut tio);
    tcsetattr(fd, SetArg::TCSANOW, &tio)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000).min(u16::MAX as u128) as u16;
    PollTimeout::from(ms)
}

/// The pseudo-terminal hosts connect to: the proxy keeps the master, hosts open the slave by
/// path (see the [module docs](self)).
pub struct HostPty {
    master: OwnedFd,
    slave_path: PathBuf,
    connected: bool,
}

impl HostPty {
    /// Creates a raw pseudo-terminal pair and keeps the master.
    pub fn create() -> anyhow::Result<HostPty> {
        let pair = nix::pty::openpty(None, None).context("creating a pseudo-terminal (openpty)")?;
        let slave_path = nix::unistd::ttyname(pair.slave.as_fd())
            .context("finding the path of the pseudo-terminal's slave side")?;
        set_raw(pair.slave.as_fd()).context("setting the pseudo-terminal raw (cfmakeraw)")?;
        set_nonblocking(pair.master.as_fd())
            .context("making the pseudo-terminal master non-blocking")?;
        drop(pair.slave);
        Ok(HostPty {
            master: pair.master,
            slave_path,
            connected: false,
        })
    }

    /// The slave path hosts open (e.g. `/dev/pts/4`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Records a change of connection: flushes stale output, greets a new host.
    fn set_connected(&mut self, connected: bool) {
        if connected == self.connected {
            return;
        }
        self.connected = connected;
        let _ = tcflush(self.master.as_fd(), FlushArg::TCOFLUSH);
        if connected {
            tracing::info!("host opened {}", self.slave_path.display());
            let _ = nix::unistd::write(&self.master, &[0]);
        } else {
            tracing::info!(
                "host closed {}; waiting for it to reopen",
                self.slave_path.display()
            );
        }
    }

    /// While disconnected: whether a host has opened the slave since (no POLLHUP).
    fn probe(&mut self) {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO).is_ok() {
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if !revents.contains(PollFlags::POLLHUP) {
                self.set_connected(true);
            }
        }
    }
}

/// The robot's side: the robot's pseudo-terminal slave or a device, opened by path.
pub struct RobotPort {
    file: File,
    path: PathBuf,
}

impl RobotPort {
    /// Opens `path` read/write, non-blocking, never as a controlling terminal; a tty is set
    /// raw.
    pub fn open(path: &Path) -> anyhow::Result<RobotPort> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)
            .with_context(|| {
                format!(
                    "opening the robot's device {} (check the path and permissions)",
                    path.display()
                )
            })?;
        match set_raw(file.as_fd()) {
            Ok(()) | Err(Errno::ENOTTY) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e).with_context(|| format!("setting {} raw", path.display())),
        }
        Ok(RobotPort {
            file,
            path: path.to_path_buf(),
        })
    }
}

/// Appends one JSON line per injected fault (and per reboot sent), flushed.
pub struct FaultLog {
    file: File,
    path: PathBuf,
}

impl FaultLog {
    /// A log appending to `path` (created if missing).
    pub fn create(path: &Path) -> anyhow::Result<FaultLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the fault log {} (--log)", path.display()))?;
        Ok(FaultLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one injection, stamped with the wall clock (ms since the Unix epoch, so other
    /// processes' logs can be correlated).
    pub fn write(&mut self, i: &Injection) {
        let t_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        let line = json!({
            "t_unix_ms": (t_unix_ms * 1e3).round() / 1e3,
            "fault": i.kind.as_str(),
            "dir": i.dir.as_str(),
            "type": i.frame.msg_type,
            "trial": i.frame.trial,
            "episode": i.frame.episode,
            "step": i.frame.step,
            "detail": i.detail,
            "spec": i.spec,
        });
        if let Err(e) = writeln!(self.file, "{line}").and_then(|_| self.file.flush()) {
            tracing::warn!("cannot write the fault log {}: {e}", self.path.display());
        }
    }
}

/// A run of bytes waiting to go.
struct Queued {
    due: Instant,
    bytes: Vec<u8>,
    sent: usize,
}

/// One direction: its splitter and its queue.
#[derive(Default)]
struct Lane {
    splitter: FrameSplitter,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// A stall: nothing accepted before this instant goes before it.
    hold_until: Option<Instant>,
}

/// How a write went.
enum Flushed {
    /// Nothing due is left.
    Done,
    /// The peer is not reading: wait until its fd is writable.
    Blocked,
    /// The peer is gone.
    Gone,
}

impl Lane {
    fn push(&mut self, due: Instant, bytes: Vec<u8>) {
        let due = self.hold_until.map_or(due, |h| due.max(h));
        self.queued_bytes += bytes.len();
        self.queue.push_back(Queued {
            due,
            bytes,
            sent: 0,
        });
        while self.queued_bytes > MAX_QUEUED {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= old.bytes.len();
            tracing::warn!(
                "a peer stopped reading: {} queued bytes dropped",
                old.bytes.len()
            );
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.splitter.clear();
    }

    /// When the head run is due, if there is one.
    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|q| q.due)
    }

    /// Writes every due run to `fd`, in order.
    fn flush(&mut self, fd: BorrowedFd<'_>, now: Instant) -> Flushed {
        while let Some(head) = self.queue.front_mut() {
            if head.due > now {
                return Flushed::Done;
            }
            match nix::unistd::write(fd, &head.bytes[head.sent..]) {
                Ok(n) => head.sent += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Flushed::Blocked,
                Err(e) => {
                    tracing::debug!("write failed ({e}): peer gone");
                    return Flushed::Gone;
                }
            }
            if head.sent == head.bytes.len() {
                self.queued_bytes -= head.bytes.len();
                self.queue.pop_front();
            }
        }
        Flushed::Done
    }
}

/// The fault-injecting proxy between a host pty and a robot device.
pub struct Proxy {
    host: HostPty,
    robot: RobotPort,
    engine: FaultEngine,
    log: Option<FaultLog>,
    reboot: Option<Box<dyn FnMut() -> anyhow::Result<()>>>,
    lanes: [Lane; 2],
    counts: BTreeMap<&'static str, u64>,
    robot_quiet_until: Option<Instant>,
}

/// The index of `dir`'s lane.
fn lane_of(dir: Dir) -> usize {
    match dir {
        Dir::Up => 0,
        Dir::Down => 1,
    }
}

impl Proxy {
    /// A proxy serving `host`, talking to `robot`, deciding with `engine`, logging to `log`;
    /// `reboot` sends the robot its reboot signal (`None`: a device, nothing to signal).
    pub fn new(
        host: HostPty,
        robot: RobotPort,
        engine: FaultEngine,
        log: Option<FaultLog>,
        reboot: Option<Box<dyn FnMut() -> anyhow::Result<()>>>,
    ) -> Proxy {
        Proxy {
            host,
            robot,
            engine,
            log,
            reboot,
            lanes: [Lane::default(), Lane::default()],
            counts: BTreeMap::new(),
            robot_quiet_until: None,
        }
    }

    /// Injected faults so far, by kind.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Forwards both ways until `keep_going` says stop (asked at least every 50 ms).
    pub fn run(&mut self, mut keep_going: impl FnMut() -> bool) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        while keep_going() {
            let now = Instant::now();
            if !self.host.connected {
                self.host.probe();
            }
            let robot_readable = self.robot_quiet_until.map_or(true, |t| now >= t);
            let mut wait = MAX_WAIT;
            if !self.host.connected || !robot_readable {
                wait = wait.min(DISCONNECTED_POLL);
            }
            let mut robot_events = PollFlags::empty();
            let mut host_events = PollFlags::empty();
            for (i, lane) in self.lanes.iter().enumerate() {
                let Some(due) = lane.next_due() else { continue };
                if due > now {
                    wait = wait.min(due - now);
                } else if i == lane_of(Dir::Up) {
                    robot_events |= PollFlags::POLLOUT;
                } else {
                    host_events |= PollFlags::POLLOUT;
                }
            }
            if robot_readable {
                robot_events |= PollFlags::POLLIN;
            }
            let mut fds = Vec::with_capacity(2);
            if !robot_events.is_empty() {
                fds.push(PollFd::new(self.robot.file.as_fd(), robot_events));
            }
            let host_polled = self.host.connected;
            if host_polled {
                fds.push(PollFd::new(
                    self.host.master.as_fd(),
                    host_events | PollFlags::POLLIN,
                ));
            }
            match poll(&mut fds, poll_timeout(wait)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("waiting for the host or the robot (poll)"),
            }
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            let mut k = 0;
            if !robot_events.is_empty() {
                self.on_robot_events(revents[0], &mut buf);
                k = 1;
            }
            if host_polled {
                self.on_host_events(revents[k], &mut buf);
            }
            self.flush();
        }
        Ok(())
    }

    fn on_robot_events(&mut self, revents: PollFlags, buf: &mut [u8]) {
        if revents.contains(PollFlags::POLLIN) {
            match nix::unistd::read(self.robot.file.as_raw_fd(), buf) {
                Ok(n) if n > 0 => {
                    if self.host.connected {
                        self.accept(Dir::Down, n, buf);
                    }
                    return;
                }
                Ok(_) | Err(Errno::EIO) => {}
                Err(Errno::EAGAIN | Errno::EINTR) => return,
                Err(e) => tracing::debug!("reading {} failed: {e}", self.robot.path.display()),
            }
        } else if !revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        // Hung up (the robot is gone or restarting): do not spin on it.
        self.robot_quiet_until = Some(Instant::now() + DISCONNECTED_POLL);
    }

    fn on_host_events(&mut self, revents: PollFlags, buf: &mut [u8]) {
        if revents.contains(PollFlags::POLLIN) {
            match nix::unistd::read(self.host.master.as_raw_fd(), buf) {
                Ok(n) if n > 0 => {
                    self.accept(Dir::Up, n, buf);
                    return;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => return,
                _ => {}
            }
        } else if !revents.contains(PollFlags::POLLHUP) {
            return;
        }
        self.host.set_connected(false);
        self.lanes[lane_of(Dir::Down)].clear();
    }

    /// Runs `n` received bytes of direction `dir` through the engine into their lane.
    fn accept(&mut self, dir: Dir, n: usize, buf: &[u8]) {
        let mut chunks = Vec::new();
        self.lanes[lane_of(dir)]
            .splitter
            .push(&buf[..n], &mut chunks);
        for chunk in chunks {
            let now = Instant::now();
            let verdict = self.engine.on_chunk(dir, &chunk);
            for i in &verdict.injected {
                *self.counts.entry(i.kind.as_str()).or_default() += 1;
                tracing::debug!(
                    "{} {} {:?}: {}",
                    i.kind.as_str(),
                    i.dir,
                    i.frame.msg_type,
                    i.detail
                );
                if let Some(log) = &mut self.log {
                    log.write(i);
                }
            }
            let lane = &mut self.lanes[lane_of(dir)];
            for copy in verdict.copies {
                lane.push(now + verdict.delay, copy);
            }
            for (d, hold) in verdict.stalls {
                let l = &mut self.lanes[lane_of(d)];
                l.hold_until = Some(l.hold_until.map_or(now + hold, |h| h.max(now + hold)));
            }
            if verdict.reboot {
                match self.reboot.as_mut() {
                    Some(send) => {
                        if let Err(e) = send() {
                            tracing::warn!("could not reboot the robot: {e:#}");
                        }
                    }
                    None => tracing::warn!("a reboot fault fired but there is no robot process"),
                }
            }
        }
    }

    /// Writes what is due in both lanes.
    fn flush(&mut self) {
        let now = Instant::now();
        let up = lane_of(Dir::Up);
        if let Flushed::Gone = self.lanes[up].flush(self.robot.file.as_fd(), now) {
            self.lanes[up].queue.clear();
            self.lanes[up].queued_bytes = 0;
            self.robot_quiet_until = Some(now + DISCONNECTED_POLL);
        }
        if self.host.connected {
            let down = lane_of(Dir::Down);
            if let Flushed::Gone = self.lanes[down].flush(self.host.master.as_fd(), now) {
                self.host.set_connected(false);
                self.lanes[down].clear();
            }
        }
    }
}
