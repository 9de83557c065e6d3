//! Opening the byte stream to a robot: a real serial device (through `serialport`) or a
//! pseudo-terminal opened by path (where `serialport`'s baud-rate ioctls can fail with
//! "Not a typewriter", so we fall back to plain raw termios). Either way the device is
//! claimed for this process alone (see [`super::claim`]): a second daemon is refused, naming
//! the first.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use super::claim::{self, Claim};

/// A bidirectional byte stream to the robot; `try_clone` gives the writer half. The device
/// stays claimed until the port and all its clones are dropped.
pub struct Port {
    io: Io,
    _claim: Arc<Claim>,
}

enum Io {
    /// A serial device opened and configured by `serialport`.
    Serial(serialport::TTYPort),
    /// A tty (usually a pty) opened as a file and set raw with termios.
    Tty(File),
}

/// How long one blocking read waits before returning `TimedOut`, so reader threads can notice
/// a shutdown request.
pub const READ_POLL: Duration = Duration::from_millis(100);

impl Port {
    /// Opens `device` at `baud`, 8N1, raw, no flow control, and claims it. A device another
    /// process holds is refused with an error of kind `WouldBlock` naming that process.
    pub fn open(device: &str, baud: u32) -> io::Result<Port> {
        // Refuse before touching the device: serialport, failing to lock it, would take the
        // holder's tty out of exclusive mode on its way out.
        if claim::holder(device).is_some() {
            return Err(claim::in_use(device));
        }
        let (io, claim) = match serialport::new(device, baud)
            .timeout(READ_POLL)
            .open_native()
        {
            // serialport locked the device before configuring it; the claim keeps the lock.
            Ok(port) => {
                // SAFETY: `port` owns this descriptor and outlives the borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
                let claim = Claim::take(device, fd)?;
                (Io::Serial(port), claim)
            }
            Err(serial_err) => Self::open_raw_tty(device).map_err(|tty_err| {
                if tty_err.kind() == io::ErrorKind::WouldBlock {
                    return tty_err;
                }
                io::Error::new(
                    tty_err.kind(),
                    format!("{serial_err}; opening it as a raw tty failed too: {tty_err}"),
                )
            })?,
        };
        let port = Port {
            io,
            _claim: Arc::new(claim),
        };
        port.set_nonblocking()?;
        Ok(port)
    }

    /// Non-blocking I/O on the descriptor (shared by every clone): a write the line cannot
    /// take waits at most [`WRITE_TIMEOUT`] instead of for ever (`serialport` clears the
    /// flag after opening; a raw tty never had it).
    fn set_nonblocking(&self) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fd = self.fd().as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(())
    }

    fn open_raw_tty(device: &str) -> io::Result<(Io, Claim)> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|e| match e.raw_os_error() {
                // Another process put the tty in exclusive mode.
                Some(nix::libc::EBUSY) => claim::in_use(device),
                _ => e,
            })?;
        let claim = Claim::take(device, file.as_fd())?;
        let mut tio = tcgetattr(file.as_fd()).map_err(io::Error::from)?;
        cfmakeraw(&mut tio);
        tcsetattr(file.as_fd(), SetArg::TCSANOW, &tio).map_err(io::Error::from)?;
        Ok((Io::Tty(file), claim))
    }

    /// A second handle on the same device (for a writer while a thread reads).
    pub fn try_clone(&self) -> io::Result<Port> {
        let io = match &self.io {
            Io::Serial(p) => Io::Serial(p.try_clone_native()?),
            Io::Tty(f) => Io::Tty(f.try_clone()?),
        };
        Ok(Port {
            io,
            _claim: Arc::clone(&self._claim),
        })
    }

    /// The descriptor every read and write goes through. `serialport`'s own `read`/`write`
    /// wait in `ppoll` with an *empty* signal mask, which unblocks Ctrl-C and SIGTERM in that
    /// thread for the wait: a stop signal landing there would kill the process by its default
    /// action, bypassing the signal thread and its EStop. Plain `poll` keeps the mask.
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.io {
            Io::Serial(p) => {
                // SAFETY: `p` owns this descriptor and outlives the borrow.
                unsafe { BorrowedFd::borrow_raw(p.as_raw_fd()) }
            }
            Io::Tty(f) => f.as_fd(),
        }
    }

    /// Waits at most `timeout` for `events` on the descriptor; `TimedOut` if none came.
    fn wait_for(&self, events: nix::poll::PollFlags, timeout: Duration) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollTimeout};
        let fd = self.fd();
        let mut fds = [PollFd::new(fd, events)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => Err(io::ErrorKind::TimedOut.into()),
            Ok(_) => Ok(()),
            Err(nix::errno::Errno::EINTR) => Err(io::ErrorKind::Interrupted.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what is available, waiting at most [`READ_POLL`]; returns `TimedOut` if nothing
    /// came.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait_for(nix::poll::PollFlags::POLLIN, READ_POLL)?;
        match nix::unistd::read(self.fd().as_raw_fd(), buf) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EAGAIN) => Err(io::ErrorKind::TimedOut.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// How long a write waits for room in the device's output buffer.
const WRITE_TIMEOUT: Duration = Duration::from_millis(1000);

impl Write for Port {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::write(self.fd(), buf) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EAGAIN) => {
                    self.wait_for(nix::poll::PollFlags::POLLOUT, WRITE_TIMEOUT)?
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    /// Waits until the device has sent what was written (`tcdrain`, as `serialport` does); a
    /// pseudo-terminal has no line to drain.
    fn flush(&mut self) -> io::Result<()> {
        match &self.io {
            Io::Serial(_) => Ok(nix::sys::termios::tcdrain(self.fd())?),
            Io::Tty(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal whose slave path a port can open; both ends stay open.
    fn pty() -> (nix::pty::OpenptyResult, String) {
        let pair = nix::pty::openpty(None, None).unwrap();
        let path = nix::unistd::ttyname(pair.slave.as_fd()).unwrap();
        (pair, path.to_string_lossy().into_owned())
    }

    fn refusal(device: &str) -> io::Error {
        match Port::open(device, 115_200) {
            Ok(_) => panic!("{device} opened twice"),
            Err(e) => e,
        }
    }

    fn assert_refused<T>(opened: io::Result<T>) {
        match opened {
            Ok(_) => panic!("a claimed device opened again"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
        }
    }

    #[test]
    fn a_claimed_device_is_refused_naming_the_holder_until_it_is_let_go() {
        let (_pair, device) = pty();
        let port = Port::open(&device, 115_200).unwrap();
        let e = refusal(&device);
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains(&device)
                && text.contains("one robot, one daemon"),
            "{text}"
        );
        drop(port);
        Port::open(&device, 115_200).unwrap();
    }

    #[test]
    fn serialport_and_the_raw_tty_fallback_take_the_same_lock() {
        let (_pair, device) = pty();
        // Past the /proc/locks check: the lock itself refuses.
        let port = Port::open(&device, 115_200).unwrap();
        assert_refused(Port::open_raw_tty(&device));
        drop(port);
        let raw = Port::open_raw_tty(&device).unwrap();
        assert_refused(Port::open_raw_tty(&device));
        refusal(&device);
        drop(raw);
        Port::open(&device, 115_200).unwrap();
    }

    #[test]
    fn the_claim_lasts_while_any_clone_of_the_port_lives() {
        let (_pair, device) = pty();
        let port = Port::open(&device, 115_200).unwrap();
        let reader = port.try_clone().unwrap();
        let writer = port.try_clone().unwrap();
        drop(port);
        drop(reader);
        refusal(&device);
        drop(writer);
        Port::open(&device, 115_200).unwrap();
    }

    /// The signal mask of thread `tid` of this process, as /proc shows it (during a syscall
    /// that swaps the mask, the swapped-in one).
    fn blocked_signals(tid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
        u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap()
    }

    #[test]
    fn waiting_for_bytes_keeps_the_stop_signals_blocked() {
        use nix::sys::signal::{SigSet, Signal};
        let (_pair, device) = pty();
        let mut port = Port::open(&device, 115_200).unwrap();
        assert!(
            matches!(port.io, Io::Serial(_)),
            "the serialport path is the one to test"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut set = SigSet::empty();
            set.add(Signal::SIGINT);
            set.thread_block().unwrap();
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let mut buf = [0u8; 16];
            for _ in 0..4 {
                let e = port.read_some(&mut buf).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            }
        });
        let tid = rx.recv().unwrap();
        let sigint = 1u64 << (Signal::SIGINT as i32 - 1);
        for _ in 0..30 {
            // A thread that unblocks SIGINT while it waits would take a Ctrl-C meant for the
            // signal thread and die by the default action: no EStop.
            assert_ne!(
                blocked_signals(tid) & sigint,
                0,
                "SIGINT unblocked while reading"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        reader.join().unwrap();
    }

    #[test]
    fn a_write_the_line_never_takes_times_out_instead_of_blocking() {
        // Nobody reads the other end: the pty's buffer fills, then writes must fail with
        // TimedOut (an EStop behind them must not wait for ever on the writer's lock).
        let (_pair, device) = pty();
        let mut port = Port::open(&device, 115_200).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let chunk = [0x55u8; 4096];
            let result = (0..10_000).find_map(|_| port.write_all(&chunk).err());
            let _ = tx.send(result.map(|e| e.kind()));
        });
        let kind = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a write blocked with the line full");
        assert_eq!(kind, Some(io::ErrorKind::TimedOut));
    }

    #[test]
    fn a_pseudo_terminal_is_not_left_in_exclusive_mode() {
        let (pair, device) = pty();
        let exclusive = || {
            let mut on: nix::libc::c_int = -1;
            // SAFETY: TIOCGEXCL writes one int.
            let r =
                unsafe { nix::libc::ioctl(pair.slave.as_raw_fd(), nix::libc::TIOCGEXCL, &mut on) };
            assert_eq!(r, 0, "TIOCGEXCL: {}", io::Error::last_os_error());
            on != 0
        };
        let port = Port::open(&device, 115_200).unwrap();
        assert!(!exclusive(), "while open");
        drop(port);
        assert!(!exclusive(), "after close");
    }
}
