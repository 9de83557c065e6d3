//! gaittune: tunes a quadruped's gait controller on the robot itself.
//!
//! The crate is split the way a tuning run flows (see DESIGN.md):
//! - [`space`], [`trial`], [`study`], [`storage`], [`sampler`], [`pruner`], [`evaluation`],
//!   [`export`]: the study room — pure, synchronous, usable without the daemon through the
//!   ask/tell API of [`study::Study`] (see [Library use](#library-use)); [`admin`]: listing,
//!   deleting and copying studies (`gaittune studies`);
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
//! - `postgres`: the PostgreSQL storage (`postgresql://user@host/db`) for fleets, through the
//!   `postgres` crate. Implied by `daemon`.
//!
//! Without default features the crate is the study room alone: the in-memory storage
//! (`memory:`, see [`storage::MemoryStorage`]) is always there.
//!
//! # Library use
//!
//! Depend on the study room alone with
//! `gaittune = { version = "0.1", default-features = false, features = ["sqlite"] }` (or no
//! features for the in-memory storage only). A study with a TPE sampler, a median pruner and
//! a constraint, on the in-memory storage: each trial reports its learning curve and stops
//! early when the pruner says so, and a trial that breaks a limit is recorded as unsafe, a
//! constraint violation the sampler learns from, exactly as the daemon records the robot's
//! safety stops.
//!
//! ```
//! use gaittune::pruner::{MedianOptions, PercentilePruner, POOR_REASON};
//! use gaittune::sampler::TpeSampler;
//! use gaittune::space::{Distribution, SearchSpace};
//! use gaittune::study::Study;
//! use gaittune::trial::{ConstraintViolation, Direction};
//!
//! let space = SearchSpace::new([(
//!     "freq_hz".to_string(),
//!     Distribution::Float { low: 0.5, high: 4.0, log: false, step: None },
//! )])?;
//! let median = PercentilePruner::median(MedianOptions {
//!     n_startup_trials: 5,
//!     ..MedianOptions::default()
//! })?;
//! let mut study = Study::create_or_load(
//!     gaittune::storage::open("memory:")?,
//!     "walk",
//!     Direction::Maximize,
//!     space,
//!     Box::new(TpeSampler::new(7)),
//! )?
//! .with_pruner(Box::new(median));
//!
//! 'trials: for _ in 0..30 {
//!     let trial = study.ask()?;
//!     let f = trial.params["freq_hz"];
//!     // Your simulator. Above 3.5 Hz the robot rolls past its 35° limit.
//!     let roll_deg = 10.0 * f;
//!     if roll_deg > 35.0 {
//!         let violation = ConstraintViolation::new("max_roll_deg", roll_deg, 35.0);
//!         study.tell_unsafe(trial.number, &violation)?;
//!         continue;
//!     }
//!     let mut speed = 0.0;
//!     for step in 1..=10 {
//!         speed = (1.0 - (-(step as f64) / 3.0).exp()) * (1.0 - (f - 2.0).powi(2) / 4.0);
//!         if study.should_prune(trial.number, step, speed)? {
//!             study.prune(trial.number, POOR_REASON, Some(speed))?;
//!             continue 'trials;
//!         }
//!     }
//!     study.tell(trial.number, speed)?;
//! }
//!
//! let best = study.best_trial()?.expect("some trials completed");
//! assert!((best.params["freq_hz"] - 2.0).abs() < 0.1);
//! let unsafe_trials = study.trials()?.iter().filter(|t| t.is_unsafe()).count() as u64;
//! let counts = study.counts()?;
//! assert!(unsafe_trials > 0 && counts.pruned > unsafe_trials);
//! assert_eq!(counts.complete + counts.pruned, 30);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "daemon")]
#[macro_use]
pub mod console;
pub mod admin;
#[cfg(feature = "daemon")]
pub mod chaos;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod evaluation;
pub mod export;
pub mod optuna;
#[cfg(feature = "daemon")]
pub mod probe;
pub mod pruner;
pub mod report;
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
