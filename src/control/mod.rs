//! Operator control: stop signals and panics end with the robot's motors stopped.
//!
//! SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT are blocked in every thread ([`install`] runs
//! before any other thread exists, and threads inherit the mask) and taken by one dedicated
//! thread waiting in `sigwait`: an ordinary thread, so it may lock and write freely. The first
//! signal sends EStop from that thread at once (no async runtime in the way), then tells the
//! trial loop, which persists, re-queues the trial in flight and exits with status 128 + the
//! signal's number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP, 131 for SIGQUIT). A
//! second signal of any kind sends EStop again and exits at once, with the same status. A
//! panic anywhere sends EStop from the panic hook before unwinding.

pub mod commands;
pub mod ctl;
pub mod dashboard;
pub mod desk;
pub mod events;
pub mod socket;
pub mod terminal;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::signal::{SigSet, Signal};
use tokio::sync::watch;

use crate::robot::Sender;

/// Something that can stop a robot's motors from any thread, at once: a link's sender, the
/// probe's writer. What the signal thread and the panic hook fire.
pub trait EmergencyStop: Send + Sync {
    /// Writes EStop to the robot now.
    fn estop(&self) -> std::io::Result<()>;
}

impl EmergencyStop for Sender {
    fn estop(&self) -> std::io::Result<()> {
        Sender::estop(self)
    }
}

/// Exit status after an operator interrupt (128 + SIGINT), as shells expect.
pub const EXIT_INTERRUPTED: i32 = 130;

/// The signals that stop a run: SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal went away) and
/// SIGQUIT (Ctrl-\).
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The exit status after a run stopped by `signal`: 128 + its number, as shells expect.
pub fn exit_status(signal: Signal) -> i32 {
    128 + signal as i32
}

fn stop_signals() -> SigSet {
    STOP_SIGNALS.into_iter().collect()
}

/// Unblocks [`STOP_SIGNALS`] in the calling thread. A process started by the daemon inherits
/// its blocked mask across fork and exec; the simulated robot calls this first so that it
/// still dies on SIGTERM or SIGINT.
pub fn unblock_stop_signals() -> nix::Result<()> {
    stop_signals().thread_unblock()
}

/// Where the signal thread and the panic hook find the robot, once a link is open.
#[derive(Clone, Default)]
pub struct EStopSlot(Arc<Mutex<Option<Arc<dyn EmergencyStop>>>>);

impl EStopSlot {
    /// Points the slot at a robot (a link's sender, the probe's writer).
    pub fn arm(&self, robot: impl EmergencyStop + 'static) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(robot));
    }

    /// Forgets the link (it is closed).
    pub fn disarm(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Sends EStop if a link is armed; returns whether a frame went out.
    pub fn fire(&self) -> bool {
        let slot = match self.0.try_lock() {
            Ok(guard) => guard.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
            // Someone is arming/disarming right now; wait for them.
            Err(std::sync::TryLockError::WouldBlock) => {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
            }
        };
        match slot {
            Some(sender) => match sender.estop() {
                Ok(()) => true,
                Err(e) => {
                    notice(&format!("gaittune: EStop could not be written: {e}"));
                    false
                }
            },
            None => false,
        }
    }
}

/// The process-wide slot used by the signal thread and the panic hook.
pub fn global_slot() -> &'static EStopSlot {
    static SLOT: OnceLock<EStopSlot> = OnceLock::new();
    SLOT.get_or_init(EStopSlot::default)
}

/// The operator's stop request, as the trial loop sees it: the first stop signal received.
#[derive(Clone)]
pub struct Interrupts {
    rx: watch::Receiver<Option<Signal>>,
}

impl Interrupts {
    /// An interrupt source that never fires (library use, tests).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(None);
        std::mem::forget(tx);
        Self { rx }
    }

    /// Whether an interrupt has arrived.
    pub fn requested(&self) -> bool {
        self.signal().is_some()
    }

    /// The first stop signal received, if any.
    pub fn signal(&self) -> Option<Signal> {
        *self.rx.borrow()
    }

    /// The exit status for a run this interrupt stopped: 128 + the first signal's number, or
    /// [`EXIT_INTERRUPTED`] if none was recorded.
    pub fn exit_code(&self) -> i32 {
        self.signal().map_or(EXIT_INTERRUPTED, exit_status)
    }

    /// Resolves when an interrupt arrives (at once if one already has).
    pub async fn wait(&mut self) {
        while self.rx.borrow_and_update().is_none() {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Blocks [`STOP_SIGNALS`], starts the thread that takes them, and installs the panic hook.
/// Call once per process, first thing in `main`, while no other thread exists: threads
/// started later inherit the blocked mask, so only the signal thread ever sees these signals.
///
/// `then` says what happens after the first signal's EStop, for the operator's notice (e.g.
/// "saving the study and re-queueing the trial in flight").
pub fn install(then: &'static str) -> std::io::Result<Interrupts> {
    let signals = stop_signals();
    signals.thread_block().map_err(std::io::Error::from)?;
    let (tx, rx) = watch::channel(None);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || take_signals(&signals, &tx, then))?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if global_slot().fire() {
            notice("gaittune: internal error — EStop sent to the robot");
        }
        previous(info);
    }));
    Ok(Interrupts { rx })
}

/// The signal thread: every stop signal sends EStop at once; the first one then asks the
/// trial loop to wind down, any later one exits the process.
fn take_signals(signals: &SigSet, tx: &watch::Sender<Option<Signal>>, then: &str) {
    loop {
        let signal = match signals.wait() {
            Ok(signal) => signal,
            Err(e) => {
                notice(&format!(
                    "gaittune: waiting for signals failed ({e}); Ctrl-C will not stop the robot"
                ));
                return;
            }
        };
        let sent = global_slot().fire();
        let first = *tx.borrow();
        match first {
            None => {
                // The notice first: the trial loop may exit as soon as it hears.
                notice(&first_notice(signal, sent, then));
                tx.send_replace(Some(signal));
            }
            Some(first) => {
                notice(&format!(
                    "gaittune: second signal ({}) — exiting now",
                    signal.as_str()
                ));
                std::process::exit(exit_status(first));
            }
        }
    }
}

/// What the operator reads after the first stop signal.
fn first_notice(signal: Signal, sent: bool, saving: &str) -> String {
    let estop = if sent {
        "EStop sent to the robot"
    } else {
        "no robot connected"
    };
    match signal {
        Signal::SIGINT => {
            format!("\ngaittune: interrupt — {estop}; {saving} (Ctrl-C again to quit at once)")
        }
        other => format!("gaittune: {} — {estop}; {saving}", other.as_str()),
    }
}

/// Writes a line to stderr, never panicking: after SIGHUP the terminal may be gone.
fn notice(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
