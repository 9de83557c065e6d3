//! Progress on standard output that never panics: [`outln!`](crate::outln) and
//! [`out!`](crate::out) write like `println!` and `print!`, but when standard output fails
//! (`gaittune run … | head -1` closed the pipe, the terminal hung up) they warn once on
//! stderr and write nothing more to it for the rest of the process. A run goes on: its
//! progress is on the robot and in storage.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once a write to standard output has failed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The live status line at the bottom of a terminal, if one is shown: progress lines are
/// written above it, and it is drawn again below them.
static STATUS_LINE: Mutex<Option<String>> = Mutex::new(None);

/// Erases the terminal's current line (carriage return, then ANSI "erase line").
const ERASE_LINE: &str = "\r\x1b[2K";

/// What the operator reads when standard output goes away.
const CLOSED_NOTICE: &str =
    "gaittune: standard output closed; progress continues on the robot, see `gaittune export`";

/// Writes `args` (and a newline if `newline`) to standard output unless it has failed before.
/// The macros call this; use them instead.
#[doc(hidden)]
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let status = STATUS_LINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut stdout = std::io::stdout().lock();
    let written = (|| {
        if status.is_some() {
            stdout.write_all(ERASE_LINE.as_bytes())?;
        }
        stdout.write_fmt(args)?;
        if newline {
            stdout.write_all(b"\n")?;
        }
        if let Some(line) = status.as_deref().filter(|_| newline) {
            stdout.write_all(line.as_bytes())?;
            stdout.flush()?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if written.is_err() && !CLOSED.swap(true, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "{CLOSED_NOTICE}");
    }
}

/// Shows `line` as the live status line at the bottom of the terminal (`None` erases it).
/// For a terminal only: the caller checks that standard output is one.
pub fn set_status_line(line: Option<String>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut status = STATUS_LINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut stdout = std::io::stdout().lock();
    let text = format!("{ERASE_LINE}{}", line.as_deref().unwrap_or(""));
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    *status = line;
}

/// Like `println!`, to standard output, but never panics (see [the module](crate::console)).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::console::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::console::write_stdout(format_args!($($arg)*), true)
    };
}

/// Like `print!`, to standard output, but never panics (see [the module](crate::console)).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::write_stdout(format_args!($($arg)*), false)
    };
}
