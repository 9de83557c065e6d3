//! The robot link: the protocol session over a serial device or pseudo-terminal. It knows
//! the firmware protocol and nothing about samplers or studies.
//!
//! - [`session`]: the session state machine (no I/O): readiness, which frames belong to the
//!   episode in flight, lost ends, reboots;
//! - `link`: the I/O around it: handshake, commands with retries, heartbeats, recoveries;
//! - `port`: opening the device.

mod claim;
mod link;
mod port;
pub mod session;

pub use link::{
    Applied, Incident, LinkError, LinkSettings, ParamDecl, RobotEvent, RobotInfo, RobotLink,
    RobotSnapshot, Sender, StepGuard,
};
pub use port::{Port, READ_POLL};

#[cfg(test)]
mod tests;
