//! gaittune: tunes a quadruped's gait controller on the robot itself.
//!
//! The crate is split the way a tuning run flows (see DESIGN.md):
//! - [`space`], [`trial`], [`study`], [`storage`], [`sampler`], [`pruner`], [`evaluation`],
//!   [`export`]: the study room — pure, synchronous, usable without the daemon through the
//!   ask/tell API of [`study::Study`];
//! - [`safety`]: the safety envelope checked on every telemetry frame;
#![cfg_attr(
    feature = "daemon",
    doc = r#"- [`robot`]: the protocol session with a robot over a serial line; knows no sampler;
- [`sim`]: simulated robots that run the firmware side of the protocol;
- [`probe`]: `gaittune probe`, a frame-by-frame conformance check of a firmware;
- [`chaos`]: a fault-injecting proxy between a host and a robot (`gaittune chaos`);
- [`daemon`], [`control`], [`config`]: the trial loop that joins them, operator control,
  and the TOML configuration; [`console`]: progress output that survives a closed stdout."#
)]
#![cfg_attr(
    not(feature = "daemon"),
    doc = r#"- `robot`, `sim`, `probe`, `chaos`, `daemon`, `control`, `config`, `console`: the
  daemon side (robot link, simulators, trial loop, configuration), built with the `daemon`
  feature, which this build leaves out."#
)]
//!
//! # Features
//!
//! - `daemon` (default): everything above and the `gaittune` command; pulls in tokio,
//!   serialport, nix, clap, rapier3d and tracing. Implies `sqlite`.
//! - `sqlite`: the embedded SQLite storage (`sqlite:PATH`), through rusqlite.
//!
//! Without default features the crate is the study room alone: the in-memory storage
//! (`memory:`, see [`storage::MemoryStorage`]) is always there.

#[cfg(feature = "daemon")]
#[macro_use]
pub mod console;
#[cfg(feature = "daemon")]
pub mod chaos;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod evaluation;
// src/export.rs's storage test opens an SQLite file: the module is left out of test builds
// without SQLite (move this onto that test when export.rs is next edited).
#[cfg(any(feature = "sqlite", not(test)))]
pub mod export;
#[cfg(feature = "daemon")]
pub mod probe;
pub mod pruner;
#[cfg(feature = "daemon")]
pub mod robot;
pub mod safety;
pub mod sampler;
#[cfg(feature = "daemon")]
pub mod sim;
pub mod space;
pub mod storage;
pub mod study;
pub mod trial;

/// The JSON crate of the attribute values in this crate's signatures (trial and study
/// attributes, sampler state), so callers need not depend on the same version themselves.
pub use serde_json;
/// The TOML crate of the options tables [`sampler::build`] and [`pruner::build`] take.
pub use toml;
