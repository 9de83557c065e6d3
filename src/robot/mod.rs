//! The robot link: the protocol session over a serial device or pseudo-terminal. It knows
//! the firmware protocol and nothing about samplers or studies.

mod claim;
mod link;
mod port;

pub use link::{
    Applied, LinkError, LinkSettings, ParamDecl, RobotEvent, RobotInfo, RobotLink, Sender,
    StepGuard,
};
pub use port::{Port, READ_POLL};

#[cfg(test)]
mod tests;
