//! Progress on standard output that never panics: [`outln!`](crate::outln) and
//! [`out!`](crate::out) write like `println!` and `print!`, but when standard output fails
//! (`gaittune run … | head -1` closed the pipe, the terminal hung up) they warn once on
//! stderr and write nothing more to it for the rest of the process. A run goes on: its
//! progress is on the robot and in storage.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output has failed.
static CLOSED: AtomicBool = AtomicBool::new(false);

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
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if written.is_err() && !CLOSED.swap(true, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "{CLOSED_NOTICE}");
    }
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
