//! Where studies and trials live. Every method of [`Storage`] is one transaction, committed
//! before it returns: every state change is persisted before the daemon acts on it.
//!
//! Open a storage from a URL with [`open`]: `sqlite:PATH` (or `sqlite://PATH`) is the
//! embedded default; other backends (postgres for fleets) can implement the same trait.
//!
//! Values must be finite: SQLite turns NaN into NULL, and JSON has no infinities, so
//! non-finite values are refused with [`StorageError::Invalid`].

mod sqlite;

pub use sqlite::SqliteStorage;

use crate::space::Params;
use crate::trial::{Direction, EpisodeRecord, FrozenTrial, TrialState};

/// The storage's own identifier of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StudyId(pub i64);

/// A stored study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRecord {
    /// Storage identifier.
    pub id: StudyId,
    /// Unique study name.
    pub name: String,
    /// Optimisation direction.
    pub direction: Direction,
    /// The search space's canonical JSON ([`crate::space::SearchSpace::to_json`]).
    pub space_json: String,
    /// Creation time (UTC, RFC 3339).
    pub created_at: String,
    /// Study attributes (sampler state, firmware schema hash, ...).
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// What went wrong in a storage; every message names the storage location.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL's scheme is not supported.
    #[error("unsupported storage URL {url:?}: supported are sqlite:PATH and sqlite://PATH (e.g. sqlite:gaittune.db)")]
    UnsupportedUrl {
        /// The URL given.
        url: String,
    },
    /// The database could not be opened, read or written (corrupt, unwritable, locked...).
    #[error("storage {location}: {message}")]
    Backend {
        /// The storage location (file path).
        location: String,
        /// What failed.
        message: String,
    },
    /// Stored data could not be decoded.
    #[error("storage {location}: corrupt data: {message}")]
    Corrupt {
        /// The storage location.
        location: String,
        /// What is corrupt.
        message: String,
    },
    /// A study with that name already exists.
    #[error("storage {location}: study {name:?} already exists")]
    StudyExists {
        /// The storage location.
        location: String,
        /// The study name.
        name: String,
    },
    /// The study or trial does not exist.
    #[error("storage {location}: {what} does not exist")]
    NotFound {
        /// The storage location.
        location: String,
        /// What was looked for, e.g. `trial 3 of study 1`.
        what: String,
    },
    /// The request is not allowed (finished trial changed, non-finite value, ...).
    #[error("storage {location}: {message}")]
    Invalid {
        /// The storage location.
        location: String,
        /// Why it is refused.
        message: String,
    },
}

/// A persistent store of studies and their trials.
///
/// Methods take `&self`: a backend serialises access itself (SQLite through its connection
/// and file locks), so readers such as summaries need no exclusive borrow.
///
/// Trial numbers are 0, 1, 2, ... per study and are allocated atomically. A finished trial
/// (COMPLETE, PRUNED, FAIL) can no longer change state, values or episodes; attributes can
/// still be set.
pub trait Storage: Send {
    /// A human-readable location for messages (e.g. `sqlite:/data/gaittune.db`).
    fn location(&self) -> String;

    /// Creates a study; fails with [`StorageError::StudyExists`] if the name is taken.
    fn create_study(
        &self,
        name: &str,
        direction: Direction,
        space_json: &str,
    ) -> Result<StudyRecord, StorageError>;

    /// Loads a study by name.
    fn load_study(&self, name: &str) -> Result<Option<StudyRecord>, StorageError>;

    /// All studies, oldest first.
    fn list_studies(&self) -> Result<Vec<StudyRecord>, StorageError>;

    /// Creates a trial with the next number; `started_at` is set if `state` is RUNNING.
    fn create_trial(
        &self,
        study: StudyId,
        state: TrialState,
        params: &Params,
    ) -> Result<u64, StorageError>;

    /// Moves a trial to `state`.
    ///
    /// `value` is required (finite) for COMPLETE, optional for PRUNED, refused otherwise.
    /// `reason` is kept as the prune reason for PRUNED and as the `fail_reason` attribute for
    /// FAIL, refused otherwise. Finishing sets `finished_at`; RUNNING sets `started_at`.
    fn set_trial_state(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<(), StorageError>;

    /// Replaces the parameters of an unfinished trial.
    fn set_trial_params(
        &self,
        study: StudyId,
        number: u64,
        params: &Params,
    ) -> Result<(), StorageError>;

    /// Records an intermediate value at `step` (replacing one already there).
    fn report_intermediate(
        &self,
        study: StudyId,
        number: u64,
        step: u64,
        value: f64,
    ) -> Result<(), StorageError>;

    /// Records several intermediate values in one transaction (the values of one episode,
    /// persisted when it ends: a crash re-runs the whole trial anyway).
    fn report_intermediates(
        &self,
        study: StudyId,
        number: u64,
        values: &[(u64, f64)],
    ) -> Result<(), StorageError> {
        for &(step, value) in values {
            self.report_intermediate(study, number, step, value)?;
        }
        Ok(())
    }

    /// Records a finished episode (replacing one with the same index).
    fn add_episode(
        &self,
        study: StudyId,
        number: u64,
        episode: &EpisodeRecord,
    ) -> Result<(), StorageError>;

    /// Removes the intermediate values and episodes of an unfinished trial (to re-run it
    /// from the start).
    fn clear_trial_progress(&self, study: StudyId, number: u64) -> Result<(), StorageError>;

    /// Sets one trial attribute.
    fn set_trial_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StorageError>;

    /// One trial.
    fn get_trial(&self, study: StudyId, number: u64) -> Result<Option<FrozenTrial>, StorageError>;

    /// All trials of the study, by number.
    fn list_trials(&self, study: StudyId) -> Result<Vec<FrozenTrial>, StorageError>;

    /// Moves every RUNNING trial back to WAITING (at startup after a crash); returns their
    /// numbers.
    fn requeue_running(&self, study: StudyId) -> Result<Vec<u64>, StorageError>;

    /// Atomically takes the lowest-numbered WAITING trial and makes it RUNNING.
    fn claim_waiting(&self, study: StudyId) -> Result<Option<FrozenTrial>, StorageError>;

    /// Sets one study attribute.
    fn set_study_attr(
        &self,
        study: StudyId,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StorageError>;

    /// Reads one study attribute.
    fn get_study_attr(
        &self,
        study: StudyId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StorageError>;
}

/// Opens a storage from a URL: `sqlite:PATH` or `sqlite://PATH` (the database file is
/// created if missing).
pub fn open(url: &str) -> Result<Box<dyn Storage>, StorageError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"));
    match path {
        Some(path) if !path.is_empty() => Ok(Box::new(SqliteStorage::open(path)?)),
        _ => Err(StorageError::UnsupportedUrl { url: url.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_parses_urls() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let s = open(&format!("sqlite:{}", a.display())).unwrap();
        assert_eq!(s.location(), format!("sqlite:{}", a.display()));
        let b = dir.path().join("b.db");
        open(&format!("sqlite://{}", b.display())).unwrap();
        assert!(a.exists() && b.exists());

        for bad in ["postgres://host/db", "gaittune.db", "sqlite:", ""] {
            let e = open(bad).err().expect(bad).to_string();
            assert!(
                e.contains("sqlite:PATH") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }
}
