//! One robot, one daemon: a process claims the device it drives for as long as it holds it
//! open, and any other process is refused with the holder's pid.
//!
//! The claim is an exclusive `flock` on the open device. A POSIX record lock
//! (`fcntl(F_SETLK)`) would not do: it belongs to the process and goes away as soon as the
//! process closes *any* descriptor of the file, such as the reader thread's clone of the port.
//! A `flock` belongs to the open file description, which every `dup` of it shares: it lasts
//! until the last handle closes or the process dies, and it binds root too. The holder's pid
//! comes from /proc/locks, which also answers when the kernel refused to open the device at
//! all (it is in exclusive mode), so that no descriptor exists to ask `F_GETLK` with.
//!
//! On a real serial device the claim also sets the tty's exclusive mode (TIOCEXCL): programs
//! that take no lock (a terminal emulator) then cannot open it either, root excepted. Not on
//! a pseudo-terminal: the kernel keeps that mode after the last close while the other side
//! stays open, so a daemon killed by SIGKILL would shut every user but root out of a
//! simulated robot until it restarts.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::libc;

/// Unix 98 pseudo-terminal slaves (/dev/pts/N) have these device majors.
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// Exclusive use of a device by this process, for as long as the claim lives.
pub(super) struct Claim {
    /// A descriptor of the claimed open device, so the lock outlives every other handle.
    fd: OwnedFd,
    /// Whether the claim put the tty in exclusive mode (and so takes it out again).
    exclusive_mode: bool,
}

impl Claim {
    /// Claims the device `device` open as `fd`, or says who holds it.
    pub(super) fn take(device: &str, fd: BorrowedFd<'_>) -> io::Result<Claim> {
        // SAFETY: flock on a descriptor that is open for the duration of the call.
        let locked = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        match Errno::result(locked) {
            Ok(_) => {}
            Err(Errno::EWOULDBLOCK) => return Err(in_use(device)),
            Err(e) => return Err(e.into()),
        }
        let fd = fd.try_clone_to_owned()?;
        let exclusive_mode = !is_pseudo_terminal(&fd);
        // serialport opens every tty in exclusive mode: take it back off a pseudo-terminal.
        set_exclusive_mode(&fd, exclusive_mode);
        Ok(Claim { fd, exclusive_mode })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.exclusive_mode {
            set_exclusive_mode(&self.fd, false);
        }
        // Closing `fd` releases the lock once no other handle of the open device is left.
    }
}

/// TIOCEXCL or TIOCNXCL, best effort: a device that is no tty refuses both, and the lock is
/// what keeps other daemons out.
fn set_exclusive_mode(fd: &OwnedFd, on: bool) {
    let request = if on { libc::TIOCEXCL } else { libc::TIOCNXCL };
    // SAFETY: both requests take no argument.
    unsafe { libc::ioctl(fd.as_raw_fd(), request) };
}

fn is_pseudo_terminal(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .is_ok_and(|st| PTY_SLAVE_MAJORS.contains(&libc::major(st.st_rdev)))
}

/// The refusal for a device another process holds, naming that process when /proc/locks
/// can.
pub(super) fn in_use(device: &str) -> io::Error {
    let who = match holder(device) {
        Some(pid) => match command_line(pid) {
            Some(command) => format!(" (pid {pid}, {command})"),
            None => format!(" (pid {pid})"),
        },
        None => String::new(),
    };
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!(
            "robot device {device} is in use by another process{who}; one robot, one daemon: \
             stop that process or point this config at another device"
        ),
    )
}

/// The pid of a process holding a lock on `device`, from /proc/locks.
pub(super) fn holder(device: &str) -> Option<u32> {
    let meta = std::fs::metadata(device).ok()?;
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    lock_holder(&std::fs::read_to_string("/proc/locks").ok()?, &file)
}

/// In the text of /proc/locks, the pid holding a lock on `file` ("major:minor:inode", major
/// and minor in hex), e.g. from `1: FLOCK  ADVISORY  WRITE 4242 00:1a:3 0 EOF`. Waiters
/// (`->`) hold nothing; open file description locks show no pid (-1).
fn lock_holder(locks: &str, file: &str) -> Option<u32> {
    locks
        .lines()
        .filter(|line| !line.contains("->"))
        .find_map(|line| {
            let mut fields = line.split_whitespace().skip(4);
            let pid = fields.next()?;
            if fields.next()? == file {
                pid.parse().ok()
            } else {
                None
            }
        })
}

/// The command line of process `pid`, its program by file name: "gaittune run study.toml".
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned());
    let program = args.next()?;
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    Some(
        std::iter::once(program)
            .chain(args)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_the_pid_of_a_granted_lock_on_that_file() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 3795 fe:00:770190 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 00:1a:3 0 EOF
2: -> FLOCK  ADVISORY  WRITE 5151 00:1a:3 0 EOF
3: OFDLCK ADVISORY  WRITE -1 00:1a:7 0 EOF
";
        assert_eq!(lock_holder(locks, "00:1a:3"), Some(4242));
        assert_eq!(lock_holder(locks, "fe:00:770190"), Some(3795));
        assert_eq!(
            lock_holder(locks, "00:1a:7"),
            None,
            "an OFD lock names no pid"
        );
        assert_eq!(lock_holder(locks, "00:1a:30"), None);
        assert_eq!(lock_holder("", "00:1a:3"), None);
    }

    #[test]
    fn a_command_line_names_the_program_by_file_name() {
        let me = command_line(std::process::id()).unwrap();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy();
        assert!(me.starts_with(name.as_ref()), "{me}");
    }
}
