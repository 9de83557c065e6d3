//! Opening the byte stream to a robot: a real serial device (through `serialport`) or a
//! pseudo-terminal opened by path (where `serialport`'s baud-rate ioctls can fail with
//! "Not a typewriter", so we fall back to plain raw termios).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

/// A bidirectional byte stream to the robot; `try_clone` gives the writer half.
pub enum Port {
    /// A serial device opened and configured by `serialport`.
    Serial(serialport::TTYPort),
    /// A tty (usually a pty) opened as a file and set raw with termios.
    Tty(File),
}

/// How long one blocking read waits before returning `TimedOut`, so reader threads can notice
/// a shutdown request.
pub const READ_POLL: Duration = Duration::from_millis(100);

impl Port {
    /// Opens `device` at `baud`, 8N1, raw, no flow control.
    pub fn open(device: &str, baud: u32) -> io::Result<Port> {
        match serialport::new(device, baud)
            .timeout(READ_POLL)
            .open_native()
        {
            Ok(mut port) => {
                // Exclusive access is advisory; a pty may refuse it.
                let _ = port.set_exclusive(false);
                Ok(Port::Serial(port))
            }
            Err(serial_err) => Self::open_raw_tty(device).map_err(|tty_err| {
                io::Error::new(
                    tty_err.kind(),
                    format!("{serial_err}; opening it as a raw tty failed too: {tty_err}"),
                )
            }),
        }
    }

    fn open_raw_tty(device: &str) -> io::Result<Port> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let file = OpenOptions::new().read(true).write(true).open(device)?;
        let mut tio = tcgetattr(file.as_fd()).map_err(io::Error::from)?;
        cfmakeraw(&mut tio);
        tcsetattr(file.as_fd(), SetArg::TCSANOW, &tio).map_err(io::Error::from)?;
        Ok(Port::Tty(file))
    }

    /// A second handle on the same device (for a writer while a thread reads).
    pub fn try_clone(&self) -> io::Result<Port> {
        match self {
            Port::Serial(p) => Ok(Port::Serial(p.try_clone_native()?)),
            Port::Tty(f) => Ok(Port::Tty(f.try_clone()?)),
        }
    }

    /// Reads what is available, waiting at most [`READ_POLL`]; returns `TimedOut` if nothing
    /// came.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Port::Serial(p) => p.read(buf),
            Port::Tty(f) => {
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
        match self {
            Port::Serial(p) => p.write(buf),
            Port::Tty(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Port::Serial(p) => p.flush(),
            Port::Tty(f) => f.flush(),
        }
    }
}
