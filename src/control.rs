//! Operator control: Ctrl-C and panics end with the robot's motors stopped.
//!
//! The first Ctrl-C sends EStop straight from the signal-handling thread (no async runtime in
//! the way), then tells the trial loop, which persists, re-queues the trial in flight and
//! exits with status 130. A second Ctrl-C sends EStop again and exits at once. A panic anywhere
//! sends EStop from the panic hook before unwinding.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::robot::Sender;

/// Exit status after an operator interrupt (128 + SIGINT), as shells expect.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Where the signal handler and the panic hook find the robot, once a link is open.
#[derive(Clone, Default)]
pub struct EStopSlot(Arc<Mutex<Option<Sender>>>);

impl EStopSlot {
    /// Points the slot at a link's sender.
    pub fn arm(&self, sender: Sender) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
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
                    eprintln!("gaittune: EStop could not be written: {e}");
                    false
                }
            },
            None => false,
        }
    }
}

/// The process-wide slot used by the Ctrl-C handler and the panic hook.
pub fn global_slot() -> &'static EStopSlot {
    static SLOT: OnceLock<EStopSlot> = OnceLock::new();
    SLOT.get_or_init(EStopSlot::default)
}

/// Counts operator interrupts; the trial loop watches it.
#[derive(Clone)]
pub struct Interrupts {
    rx: watch::Receiver<u32>,
}

impl Interrupts {
    /// An interrupt source that never fires (library use, tests).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(0);
        std::mem::forget(tx);
        Self { rx }
    }

    /// Whether an interrupt has arrived.
    pub fn requested(&self) -> bool {
        *self.rx.borrow() > 0
    }

    /// Resolves when an interrupt arrives (at once if one already has).
    pub async fn wait(&mut self) {
        while *self.rx.borrow_and_update() == 0 {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Installs the Ctrl-C (SIGINT, SIGTERM) handler and the panic hook. Call once per process.
pub fn install() -> Result<Interrupts, ctrlc::Error> {
    let (tx, rx) = watch::channel(0u32);
    ctrlc::set_handler(move || {
        let count = {
            let mut n = 0;
            tx.send_modify(|c| {
                *c += 1;
                n = *c;
            });
            n
        };
        let sent = global_slot().fire();
        if count == 1 {
            eprintln!(
                "\ngaittune: interrupt — {}; saving the study and re-queueing the trial in flight (Ctrl-C again to quit at once)",
                if sent { "EStop sent to the robot" } else { "no robot connected" }
            );
        } else {
            eprintln!("gaittune: second interrupt — exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
    })?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if global_slot().fire() {
            eprintln!("gaittune: internal error — EStop sent to the robot");
        }
        previous(info);
    }));
    Ok(Interrupts { rx })
}
