//! Byte transports the simulated firmware serves on: a pseudo-terminal it creates
//! ([`PtyServer`]), or an existing device path ([`DeviceTransport`]).
//!
//! The pty is made raw (`cfmakeraw`: no echo, no byte translated — 0x0A, 0x0D, 0x03 pass
//! unchanged). The simulator keeps the master side open and closes its own handle on the
//! slave, so it can tell whether a host has the slave open: with no slave open the master
//! reports POLLHUP. While no host is connected the firmware keeps running but its output is
//! discarded (as a UART's bytes are when nothing listens) instead of piling up in the pty
//! buffer for the next host to read as stale frames; when a host (re)opens the slave path the
//! simulator flushes what is left and carries on. Hosts can therefore close and reopen the
//! slave path as often as they like (a rerun of the daemon against a hand-started sim).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcflush, tcgetattr, tcsetattr, FlushArg, SetArg};

/// Longest wait for a connected host to drain a full pty buffer before output is dropped.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(1);
/// Poll interval while no host has the pty open (the master reports POLLHUP continuously,
/// so poll() cannot be used to wait for a connection).
const DISCONNECTED_POLL: Duration = Duration::from_millis(5);

/// A byte stream the firmware serves on.
pub trait Transport {
    /// Waits up to `timeout` for received bytes and reads what is available into `buf`.
    /// Returns 0 when nothing arrived in time.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Sends one whole frame (or drops it if no host is listening).
    fn send(&mut self, frame: &[u8]);
}

fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000).min(u16::MAX as u128) as u16;
    PollTimeout::from(ms)
}

fn set_raw(fd: impl AsFd) -> nix::Result<()> {
    let mut tio = tcgetattr(fd.as_fd())?;
    cfmakeraw(&mut tio);
    tcsetattr(fd.as_fd(), SetArg::TCSANOW, &tio)
}

fn set_nonblocking(fd: &impl AsRawFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A pseudo-terminal created by the simulator: it holds the master, hosts open the slave by
/// path (see the module docs for reconnection).
pub struct PtyServer {
    master: OwnedFd,
    slave_path: PathBuf,
    connected: bool,
    dropped_frames: u64,
    keep_output: bool,
}

impl PtyServer {
    /// Creates a raw pseudo-terminal pair and keeps the master.
    pub fn create() -> anyhow::Result<PtyServer> {
        let pair = nix::pty::openpty(None, None).context("creating a pseudo-terminal (openpty)")?;
        let slave_path = nix::unistd::ttyname(pair.slave.as_fd())
            .context("finding the path of the pseudo-terminal's slave side")?;
        set_raw(pair.slave.as_fd()).context("setting the pseudo-terminal raw (cfmakeraw)")?;
        set_nonblocking(&pair.master).context("making the pseudo-terminal master non-blocking")?;
        // Close our slave handle: from now on POLLHUP on the master means "no host".
        drop(pair.slave);
        Ok(PtyServer {
            master: pair.master,
            slave_path,
            connected: false,
            dropped_frames: 0,
            keep_output: false,
        })
    }

    /// Keeps output written while no host has the slave open queued in the pty for the next
    /// host to read (as some USB serial bridges do), instead of discarding it: stale frames
    /// from the robot's point of view (quirk `keep-output-when-closed`).
    pub fn keep_output_when_closed(mut self) -> PtyServer {
        self.keep_output = true;
        self
    }

    /// The slave device path hosts open (e.g. `/dev/pts/3`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Whether a host had the slave open at the last check.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Frames discarded because no host was listening or it stopped reading.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    fn set_connected(&mut self, connected: bool) {
        if connected == self.connected {
            return;
        }
        self.connected = connected;
        // Anything still queued towards the slave is stale: for a host that left, or from
        // before a new host arrived.
        if !self.keep_output {
            let _ = tcflush(self.master.as_fd(), FlushArg::TCOFLUSH);
        }
        if connected {
            tracing::info!("host opened {}", self.slave_path.display());
            // SPEC §2.5: terminate any stale bytes the host's receiver may hold.
            self.send(&[0]);
        } else {
            tracing::info!(
                "host closed {}; waiting for it to reopen",
                self.slave_path.display()
            );
        }
    }
}

impl Transport for PtyServer {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, poll_timeout(timeout)) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if ready > 0 && revents.contains(PollFlags::POLLIN) {
            match nix::unistd::read(self.master.as_raw_fd(), buf) {
                Ok(n) => {
                    self.set_connected(true);
                    return Ok(n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
                Err(Errno::EIO) => {
                    self.set_connected(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if revents.contains(PollFlags::POLLHUP) {
            self.set_connected(false);
            std::thread::sleep(timeout.min(DISCONNECTED_POLL));
            Ok(0)
        } else {
            self.set_connected(true);
            Ok(0)
        }
    }

    fn send(&mut self, frame: &[u8]) {
        if !self.connected && !self.keep_output {
            self.dropped_frames += 1;
            return;
        }
        let mut rest = frame;
        while !rest.is_empty() {
            match nix::unistd::write(&self.master, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLOUT)];
                    let ready = poll(&mut fds, poll_timeout(WRITE_STALL_LIMIT)).unwrap_or(0);
                    if ready == 0 {
                        tracing::warn!(
                            "the host stopped reading {}; frame dropped",
                            self.slave_path.display()
                        );
                        self.dropped_frames += 1;
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("write to the pty failed ({e}); host gone");
                    self.dropped_frames += 1;
                    self.set_connected(false);
                    return;
                }
            }
        }
    }
}

/// An existing device (a serial port, one end of a socat pair…) opened by path.
pub struct DeviceTransport {
    file: File,
    path: PathBuf,
}

impl DeviceTransport {
    /// Opens `path` read/write; a tty is set raw.
    pub fn open(path: &Path) -> anyhow::Result<DeviceTransport> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| {
                format!(
                    "opening {} for the simulated robot (check the path and permissions)",
                    path.display()
                )
            })?;
        match set_raw(file.as_fd()) {
            Ok(()) | Err(Errno::ENOTTY) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e).with_context(|| format!("setting {} raw", path.display())),
        }
        Ok(DeviceTransport {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl Transport for DeviceTransport {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, poll_timeout(timeout)) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if ready == 0 {
            return Ok(0);
        }
        if revents.contains(PollFlags::POLLIN) {
            match self.file.read(buf) {
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    return Ok(0)
                }
                Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => {}
                Err(e) => return Err(e),
            }
        }
        // End of file or hang-up: the peer is gone for now; do not spin.
        std::thread::sleep(timeout.min(DISCONNECTED_POLL));
        Ok(0)
    }

    fn send(&mut self, frame: &[u8]) {
        if let Err(e) = self.file.write_all(frame) {
            tracing::debug!("write to {} failed: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// Reads from the pty until `want` bytes came from the host side.
    fn recv_exact(pty: &mut PtyServer, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < want && start.elapsed() < Duration::from_secs(5) {
            let mut buf = [0u8; 64];
            let n = pty.recv(&mut buf, Duration::from_millis(5)).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// Reads what the sim sent until `want` bytes arrived at the host.
    fn host_read(f: &mut File, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            let mut buf = [0u8; 64];
            let n = f.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn pty_is_raw_and_survives_reopening() {
        let mut pty = PtyServer::create().unwrap();
        let mut buf = [0u8; 16];
        // No host yet: nothing to read, output dropped.
        assert_eq!(pty.recv(&mut buf, Duration::ZERO).unwrap(), 0);
        assert!(!pty.is_connected());
        pty.send(b"stale");

        let special = [0x0A, 0x0D, 0x03, 0x04, 0x11, 0x13, 0x1A, 0x7F, 0xFF, 0x00];
        for round in 0..3 {
            let mut host = open(pty.slave_path());
            let tio = tcgetattr(host.as_fd()).unwrap();
            assert!(!tio
                .local_flags
                .contains(nix::sys::termios::LocalFlags::ECHO));
            assert!(!tio
                .local_flags
                .contains(nix::sys::termios::LocalFlags::ICANON));
            host.write_all(&special).unwrap();
            assert_eq!(
                recv_exact(&mut pty, special.len()),
                special,
                "round {round}"
            );
            assert!(pty.is_connected());
            pty.send(&special);
            // The connection greeting (a lone 0x00) first, never the stale bytes.
            let got = host_read(&mut host, special.len() + 1);
            assert_eq!(got[0], 0, "round {round}: {got:?}");
            assert_eq!(&got[1..], &special, "round {round}");
            drop(host);
            // The simulator notices the host left and keeps serving.
            let start = Instant::now();
            while pty.is_connected() && start.elapsed() < Duration::from_secs(5) {
                pty.recv(&mut buf, Duration::from_millis(1)).unwrap();
            }
            assert!(!pty.is_connected());
            pty.send(b"nobody listens");
        }
    }
}
