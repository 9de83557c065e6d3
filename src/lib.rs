//! gaittune: tunes a quadruped's gait controller on the robot itself.
//!
//! The crate is split the way a tuning run flows (see DESIGN.md):
//! - [`space`], [`trial`], [`study`], [`storage`], [`sampler`]: the study room — pure,
//!   synchronous, usable without the daemon through the ask/tell API of [`study::Study`];
//! - [`robot`]: the protocol session with a robot over a serial line; knows no sampler;
//! - [`safety`]: the safety envelope checked on every telemetry frame;
//! - [`sim`]: simulated robots that run the firmware side of the protocol;
//! - [`probe`]: `gaittune probe`, a frame-by-frame conformance check of a firmware;
//! - [`chaos`]: a fault-injecting proxy between a host and a robot (`gaittune chaos`);
//! - [`admin`]: `gaittune studies`: listing, deleting and copying studies;
//! - [`daemon`], [`control`], [`config`]: the trial loop that joins them, operator control,
//!   and the TOML configuration; [`console`]: progress output that survives a closed stdout.

#[macro_use]
pub mod console;
pub mod admin;
pub mod chaos;
pub mod config;
pub mod control;
pub mod daemon;
pub mod evaluation;
pub mod export;
pub mod probe;
pub mod pruner;
pub mod robot;
pub mod safety;
pub mod sampler;
pub mod sim;
pub mod space;
pub mod storage;
pub mod study;
pub mod trial;
