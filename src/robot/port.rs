//! Opening the byte stream to a robot: a real serial device (through `serialport`) or a
//! pseudo-terminal opened by path (where `serialport`'s baud-rate ioctls can fail with
//! "Not a typewriter", so we fall back to plain raw termios). Either way the device is
//! claimed for this process alone (see [`super::claim`]): a second daemon is refused, naming
//! the first.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
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
        Ok(Port {
            io,
            _claim: Arc::new(claim),
        })
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

    /// Reads what is available, waiting at most [`READ_POLL`]; returns `TimedOut` if nothing
    /// came.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Serial(p) => p.read(buf),
            Io::Tty(f) => {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
                let ms = READ_POLL.as_millis() as u16;
                let ready = poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)?;
                if ready == 0 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                f.read(buf)
            }
        }
    }
}

impl Write for Port {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Serial(p) => p.write(buf),
            Io::Tty(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.io {
            Io::Serial(p) => p.flush(),
            Io::Tty(f) => f.flush(),
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
