//! Where studies and trials live. Every method of [`Storage`] is one transaction, committed
//! before it returns: every state change is persisted before the daemon acts on it.
//!
//! Open a storage from a URL with [`open`]: `sqlite:PATH` (also `sqlite://PATH`, and as
//! Optuna and SQLAlchemy write them `sqlite:///relative.db` and `sqlite:////absolute.db`; see
//! [`sqlite_path`]) is the embedded default (feature `sqlite`; one machine); `postgresql://user@host[:port]/db` (or
//! `postgres://`, feature `postgres`) is for fleets of workers on several machines; `memory:`
//! is a fresh in-memory store for library users and tests ([`MemoryStorage`], always built).
//!
//! Values must be finite: SQLite turns NaN into NULL, and JSON has no infinities, so
//! non-finite values are refused with [`StorageError::Invalid`].
//!
//! # Workers and leases
//!
//! Several workers (daemons, each driving one robot) may share one study. A storage bound to
//! a [`Lease`] ([`Storage::bind_worker`]) claims trials for that worker: a trial it starts or
//! claims is RUNNING under the worker's name until `lease.duration` from now, the worker
//! renews the lease while it runs the trial ([`Storage::renew_lease`]), and every write to a
//! running trial checks that it is still the writer's: a worker whose lease expired and was
//! taken over gets [`StorageError::LeaseLost`] and never mixes its records into the trial.
//! Only trials whose lease expired are claimed again by others or re-queued
//! ([`Storage::requeue_running`]); a live worker's trial is never touched.

mod common;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStorage;
pub use memory::{MemoryStorage, MEMORY_URL};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStorage;

use std::time::Duration;

use crate::space::Params;
use crate::trial::{Direction, EpisodeRecord, FrozenTrial, TrialState};

/// A worker's claim on the trials it runs (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker's name, unique among live workers, e.g. `lab-pc:4242:/dev/ttyACM0`.
    pub worker: String,
    /// How long a claim holds without renewal: the grace period after which a silent
    /// worker's trial may be taken over.
    pub duration: Duration,
}

impl Lease {
    /// A lease for this process on `robot` (host name, pid and robot in the worker name).
    pub fn for_robot(robot: &str, duration: Duration) -> Lease {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Lease {
            worker: format!("{host}:{}:{robot}", std::process::id()),
            duration,
        }
    }

    /// Whether `worker` is an earlier process of this worker: the same host and robot, another
    /// pid. One robot is driven by one daemon at a time (it holds the device), so such a
    /// worker is gone, and its trials need not wait out their lease.
    pub fn is_earlier_self(&self, worker: &str) -> bool {
        fn host_and_robot(w: &str) -> Option<(&str, &str)> {
            let mut parts = w.splitn(3, ':');
            let host = parts.next()?;
            parts.next()?;
            Some((host, parts.next()?))
        }
        worker != self.worker
            && host_and_robot(worker).is_some()
            && host_and_robot(worker) == host_and_robot(&self.worker)
    }
}

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
    #[error("unsupported storage URL {url:?}: supported are sqlite:PATH (e.g. sqlite:gaittune.db), sqlite:///RELATIVE.db and sqlite:////ABSOLUTE.db as in Optuna, postgresql://USER@HOST[:PORT]/DB or postgres://USER@HOST[:PORT]/DB, and memory: (a fresh store that lives as long as the process)")]
    UnsupportedUrl {
        /// The URL given.
        url: String,
    },
    /// The URL names a backend this build of gaittune leaves out.
    #[error("storage URL {url:?} needs gaittune's {feature:?} feature, which this build leaves out: enable it (features = [{feature:?}]) or use memory:")]
    NotBuilt {
        /// The URL given.
        url: String,
        /// The Cargo feature that brings the backend.
        feature: &'static str,
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
    /// The trial is run by another worker: this worker's lease on it expired and the trial
    /// was taken over (or it never had one).
    #[error("storage {location}: trial {number} is now run by worker {holder:?}: this worker's lease on it expired (a stall longer than the lease?); its results are not recorded")]
    LeaseLost {
        /// The storage location.
        location: String,
        /// The trial number.
        number: u64,
        /// The worker that holds it now.
        holder: String,
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

    /// Makes this storage claim trials for a worker (see [Workers and leases](self)); `None`
    /// (the default) claims without a lease, as a single library user does.
    fn bind_worker(&mut self, lease: Option<Lease>);

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

    /// Deletes a study and all its trials.
    fn delete_study(&self, study: StudyId) -> Result<(), StorageError>;

    /// Creates a trial with the next number; `started_at` is set if `state` is RUNNING (and
    /// the bound worker's lease with it).
    fn create_trial(
        &self,
        study: StudyId,
        state: TrialState,
        params: &Params,
    ) -> Result<u64, StorageError>;

    /// Atomically creates a RUNNING trial for the bound worker with the next number, unless
    /// the study already has `limit` trials (in any state): `None` then. Several workers
    /// sharing a study never create more than `limit` trials together.
    fn create_running_within(
        &self,
        study: StudyId,
        params: &Params,
        limit: u64,
    ) -> Result<Option<u64>, StorageError>;

    /// Extends the bound worker's lease on RUNNING trial `number`; `false` if the trial is no
    /// longer this worker's (its lease expired and another worker took it, or it finished).
    fn renew_lease(&self, study: StudyId, number: u64) -> Result<bool, StorageError>;

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

    /// The operator's verdict on a FINISHED trial: makes it FAIL (its value is dropped) or
    /// PRUNED with `reason` (e.g. `unsafe`; its value stays), whatever it was. The only change
    /// a finished trial accepts; refused for a trial still running or waiting.
    fn set_verdict(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        reason: &str,
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
    ) -> Result<(), StorageError> {
        self.report_intermediates(study, number, &[(step, value)])
    }

    /// Records several intermediate values in one transaction (the values of one episode,
    /// persisted when it ends: a crash re-runs the whole trial anyway).
    fn report_intermediates(
        &self,
        study: StudyId,
        number: u64,
        values: &[(u64, f64)],
    ) -> Result<(), StorageError>;

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

    /// Moves every RUNNING trial whose lease has expired, that was started without one, or
    /// that an earlier process of the bound worker left behind ([`Lease::is_earlier_self`]),
    /// back to WAITING (at startup, after a crash); another live worker's trial is left
    /// alone. Returns their numbers.
    fn requeue_running(&self, study: StudyId) -> Result<Vec<u64>, StorageError>;

    /// Atomically takes the lowest-numbered trial that is WAITING, or RUNNING with an
    /// expired lease (its worker went away), and makes it RUNNING for the bound worker.
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

/// The file a SQLite storage URL names, `None` if `url` is not one: `sqlite:PATH` and
/// `sqlite://PATH` name PATH as written; as in Optuna (SQLAlchemy), three slashes start a
/// relative path and four an absolute one: `sqlite:///study.db` is `study.db` in the working
/// directory, `sqlite:////data/study.db` is `/data/study.db`.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite:///")
        .or_else(|| url.strip_prefix("sqlite://"))
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// Opens a storage from a URL: a SQLite file ([`sqlite_path`]; the database file is
/// created if missing), `postgresql://USER@HOST[:PORT]/DB` or `postgres://...` (the
/// database must exist; its tables are created if missing), or `memory:` (a fresh, empty
/// in-memory store each time).
pub fn open(url: &str) -> Result<Box<dyn Storage>, StorageError> {
    if url == MEMORY_URL {
        return Ok(Box::new(MemoryStorage::new()));
    }
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(PostgresStorage::open(url)?));
        #[cfg(not(feature = "postgres"))]
        return Err(StorageError::NotBuilt {
            url: shown_url(url),
            feature: "postgres",
        });
    }
    let path = sqlite_path(url);
    match path {
        #[cfg(feature = "sqlite")]
        Some(path) if !path.is_empty() => Ok(Box::new(SqliteStorage::open(path)?)),
        #[cfg(not(feature = "sqlite"))]
        Some(path) if !path.is_empty() => Err(StorageError::NotBuilt {
            url: url.into(),
            feature: "sqlite",
        }),
        _ => Err(StorageError::UnsupportedUrl { url: url.into() }),
    }
}

/// A storage URL as it may be shown: a PostgreSQL URL without its password.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some(("postgres" | "postgresql", rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    format!("{}@{host}", user.split(':').next().unwrap_or(""))
                }
                None => authority.to_string(),
            };
            let tail = match tail.split_once('?') {
                Some((path, query)) => {
                    let kept: Vec<&str> = query
                        .split('&')
                        .filter(|kv| !kv.starts_with("password="))
                        .collect();
                    if kept.is_empty() {
                        path.to_string()
                    } else {
                        format!("{path}?{}", kept.join("&"))
                    }
                }
                None => tail.to_string(),
            };
            format!(
                "{}://{authority}{tail}",
                &url[..url.find("://").unwrap_or(0)]
            )
        }
        _ => url.to_string(),
    }
}

/// Opens a storage from a URL for reading only (exports, listings): a SQLite file must
/// exist and is neither created, migrated nor changed.
pub fn open_read_only(url: &str) -> Result<Box<dyn Storage>, StorageError> {
    let path = sqlite_path(url);
    match path {
        #[cfg(feature = "sqlite")]
        Some(path) if !path.is_empty() => Ok(Box::new(SqliteStorage::open_read_only(path)?)),
        _ => open(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_open_fresh_stores() {
        let a = open("memory:").unwrap();
        a.create_study("s", Direction::Maximize, "{}").unwrap();
        assert_eq!(a.location(), "memory:");
        let b = open("memory:").unwrap();
        assert!(
            b.list_studies().unwrap().is_empty(),
            "each open is a new store"
        );
        for bad in ["memory", "memory:x", "memory://"] {
            let e = open(bad).err().expect(bad).to_string();
            assert!(
                e.contains("memory:") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn sqlite_urls_name_the_missing_feature() {
        let e = open("sqlite:x.db").err().unwrap().to_string();
        assert!(
            e.contains("\"sqlite\" feature") && e.contains("memory:"),
            "{e}"
        );
        assert!(!std::path::Path::new("x.db").exists());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn open_parses_urls() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let s = open(&format!("sqlite:{}", a.display())).unwrap();
        assert_eq!(s.location(), format!("sqlite:{}", a.display()));
        // Optuna's forms: four slashes before an absolute path, three before a relative one.
        let b = dir.path().join("b.db");
        let s = open(&format!("sqlite:///{}", b.display())).unwrap();
        assert_eq!(s.location(), format!("sqlite:{}", b.display()));
        assert!(a.exists() && b.exists());
        assert_eq!(sqlite_path("sqlite:///study.db"), Some("study.db"));
        assert_eq!(
            sqlite_path("sqlite:////data/study.db"),
            Some("/data/study.db")
        );
        assert_eq!(sqlite_path("sqlite:///sub/study.db"), Some("sub/study.db"));
        assert_eq!(sqlite_path("sqlite://study.db"), Some("study.db"));
        assert_eq!(sqlite_path("sqlite:/data/study.db"), Some("/data/study.db"));
        assert_eq!(sqlite_path("postgresql://h/db"), None);
        // A relative one lands in the working directory.
        let cwd = std::env::current_dir().unwrap();
        let name = format!("gaittune-url-test-{}.db", std::process::id());
        let s = open(&format!("sqlite:///{name}")).unwrap();
        assert_eq!(s.location(), format!("sqlite:{name}"));
        drop(s);
        assert!(cwd.join(&name).exists());
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(cwd.join(format!("{name}{ext}")));
        }

        for bad in [
            "mysql://host/db",
            "postgresql:db",
            "gaittune.db",
            "sqlite:",
            "sqlite:///",
            "",
        ] {
            let e = open(bad).err().expect(bad).to_string();
            assert!(
                e.contains("sqlite:PATH")
                    && e.contains("postgresql://USER@HOST")
                    && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }
}
