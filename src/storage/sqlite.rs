//! The embedded SQLite storage: one file, WAL journal, `synchronous=FULL` (no committed
//! transaction is lost on power loss), foreign keys on, a busy timeout so a second process
//! (an export, a dashboard) can read while the daemon writes.
//!
//! Schema version 3 (table `schema_version`): version 1 plus each trial's worker and lease
//! (`trials.worker`, `trials.lease_until_ms`, Unix ms; version 2), plus each episode's seed
//! (`episodes.seed`, the `u64` stored bit for bit as an INTEGER; version 3). An older file is
//! migrated when opened for writing and read through views when opened read-only; a file
//! written by a newer schema is refused rather than misread.
//!
//! Leases use this machine's clock: workers sharing one SQLite file run on one machine.
//!
//! Parameters live in their own table (`trial_params`, one REAL per parameter) rather than
//! in a JSON column: SQLite REALs give back the exact `f64`, while a JSON round trip through
//! `serde_json` (without its `float_roundtrip` feature) can move a 17-digit value by one ulp.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use super::common::{check_finite, check_verdict, corrupt, invalid, parse_attrs, to_i64};
use super::{Lease, StorageError, StudyId, StudyRecord};
use crate::space::Params;
use crate::trial::{now_utc, Direction, EpisodeRecord, FrozenTrial, TrialState};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 3;

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = r#"
CREATE TABLE studies (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    direction   TEXT NOT NULL,
    space_json  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    attrs_json  TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE trials (
    id           INTEGER PRIMARY KEY,
    study_id     INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    state        TEXT NOT NULL,
    value        REAL,
    prune_reason TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    attrs_json   TEXT NOT NULL DEFAULT '{}',
    worker       TEXT,
    lease_until_ms INTEGER,
    UNIQUE (study_id, number)
);
CREATE INDEX trials_by_state ON trials (study_id, state, number);
CREATE TABLE trial_params (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    value    REAL NOT NULL,
    PRIMARY KEY (trial_id, name)
) WITHOUT ROWID;
CREATE TABLE intermediate (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    step     INTEGER NOT NULL,
    value    REAL NOT NULL,
    PRIMARY KEY (trial_id, step)
) WITHOUT ROWID;
CREATE TABLE episodes (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    episode  INTEGER NOT NULL,
    "return" REAL NOT NULL,
    steps    INTEGER NOT NULL,
    status   TEXT NOT NULL,
    seed     INTEGER,
    PRIMARY KEY (trial_id, episode)
) WITHOUT ROWID;
"#;

/// Schema version 1 → 2: each trial's worker and lease.
const MIGRATE_1_TO_2: &str = r#"
ALTER TABLE trials ADD COLUMN worker TEXT;
ALTER TABLE trials ADD COLUMN lease_until_ms INTEGER;
"#;

/// Schema version 2 → 3: each episode's seed.
const MIGRATE_2_TO_3: &str = r#"
ALTER TABLE episodes ADD COLUMN seed INTEGER;
"#;

/// A [`super::Storage`] in one SQLite file.
pub struct SqliteStorage {
    conn: Connection,
    location: String,
    lease: Option<Lease>,
}

/// Now, in Unix milliseconds (the lease clock).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("location", &self.location)
            .finish()
    }
}

/// Turns a rusqlite error into a [`StorageError`] naming the location and the operation.
fn backend(location: &str, op: &str, e: rusqlite::Error) -> StorageError {
    let hint = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            "; the file is not a gaittune SQLite database or is corrupt: point the storage URL at another file (nothing was written to this one)"
        }
        Some(rusqlite::ErrorCode::CannotOpen) => {
            "; check that the directory exists and is writable"
        }
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::PermissionDenied) => {
            "; the database (or its directory, for the -wal file) is not writable"
        }
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            "; another process holds the database lock for too long"
        }
        _ => "",
    };
    StorageError::Backend {
        location: location.into(),
        message: format!("{op}: {e}{hint}"),
    }
}

trait Ctx<T> {
    fn ctx(self, location: &str, op: &str) -> Result<T, StorageError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, location: &str, op: &str) -> Result<T, StorageError> {
        self.map_err(|e| backend(location, op, e))
    }
}

/// The id, state and study name of a trial, or NotFound.
fn find_trial(
    tx: &Transaction<'_>,
    location: &str,
    study: StudyId,
    number: u64,
) -> Result<(i64, TrialState, String), StorageError> {
    let row: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT t.id, t.state, s.name FROM trials t JOIN studies s ON s.id = t.study_id
             WHERE t.study_id = ?1 AND t.number = ?2",
            params![study.0, to_i64(location, "trial number", number)?],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .ctx(location, "find trial")?;
    let (id, state, name) = row.ok_or_else(|| StorageError::NotFound {
        location: location.into(),
        what: format!("trial {number} of study id {}", study.0),
    })?;
    let state = TrialState::parse(&state).ok_or_else(|| {
        corrupt(
            location,
            format!("trial {number} of study {name:?} has state {state:?}"),
        )
    })?;
    Ok((id, state, name))
}

/// Like [`find_trial`], but refuses a finished trial.
fn find_unfinished(
    tx: &Transaction<'_>,
    location: &str,
    study: StudyId,
    number: u64,
    action: &str,
) -> Result<(i64, TrialState), StorageError> {
    let (id, state, name) = find_trial(tx, location, study, number)?;
    if state.is_finished() {
        return Err(invalid(
            location,
            format!("cannot {action}: trial {number} of study {name:?} is already {state}, and a finished trial cannot change"),
        ));
    }
    Ok((id, state))
}

/// Like [`find_unfinished`], and refuses a RUNNING trial another worker holds: a worker
/// whose lease was taken over never writes into the trial again.
fn find_owned(
    tx: &Transaction<'_>,
    location: &str,
    study: StudyId,
    number: u64,
    action: &str,
    lease: Option<&Lease>,
) -> Result<(i64, TrialState), StorageError> {
    let (id, state) = find_unfinished(tx, location, study, number, action)?;
    if let (TrialState::Running, Some(lease)) = (state, lease) {
        let holder: Option<String> = tx
            .query_row("SELECT worker FROM trials WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .ctx(location, "read the trial's worker")?;
        if let Some(holder) = holder.filter(|h| *h != lease.worker) {
            return Err(StorageError::LeaseLost {
                location: location.into(),
                number,
                holder,
            });
        }
    }
    Ok((id, state))
}

fn study_exists(tx: &Transaction<'_>, location: &str, study: StudyId) -> Result<(), StorageError> {
    let found: Option<i64> = tx
        .query_row("SELECT id FROM studies WHERE id = ?1", [study.0], |r| {
            r.get(0)
        })
        .optional()
        .ctx(location, "find study")?;
    found.map(|_| ()).ok_or_else(|| StorageError::NotFound {
        location: location.into(),
        what: format!("study id {}", study.0),
    })
}

const TRIAL_COLUMNS: &str =
    "id, number, state, value, prune_reason, started_at, finished_at, attrs_json, worker";

struct TrialRow {
    id: i64,
    trial: FrozenTrial,
}

fn trial_from_row(
    location: &str,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<TrialRow, StorageError>> {
    let id: i64 = r.get(0)?;
    let number: i64 = r.get(1)?;
    let state: String = r.get(2)?;
    let value: Option<f64> = r.get(3)?;
    let prune_reason: Option<String> = r.get(4)?;
    let started_at: Option<String> = r.get(5)?;
    let finished_at: Option<String> = r.get(6)?;
    let attrs_json: String = r.get(7)?;
    let worker: Option<String> = r.get(8)?;
    Ok((|| {
        let state = TrialState::parse(&state)
            .ok_or_else(|| corrupt(location, format!("trial {number} has state {state:?}")))?;
        let attrs = parse_attrs(location, &format!("trial {number}"), &attrs_json)?;
        Ok(TrialRow {
            id,
            trial: FrozenTrial {
                number: number as u64,
                state,
                params: Params::new(),
                value,
                intermediate: BTreeMap::new(),
                prune_reason,
                episodes: Vec::new(),
                started_at,
                finished_at,
                attrs,
                worker,
            },
        })
    })())
}

/// Condition selecting the trials of study ?1, all of them if ?2 is NULL, else trial
/// number ?2.
const TRIAL_FILTER: &str = "t.study_id = ?1 AND (?2 IS NULL OR t.number = ?2)";

/// Reads the trials of `study` (only trial `number` if given) with their intermediate
/// values and episodes.
fn read_trials(
    conn: &Connection,
    location: &str,
    study: StudyId,
    number: Option<i64>,
) -> Result<Vec<FrozenTrial>, StorageError> {
    let op = "read trials";
    let arg = number;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {TRIAL_COLUMNS} FROM trials t WHERE {TRIAL_FILTER} ORDER BY t.number"
        ))
        .ctx(location, op)?;
    let rows = stmt
        .query_map(params![study.0, arg], |r| trial_from_row(location, r))
        .ctx(location, op)?;
    let mut trials = Vec::new();
    let mut index = BTreeMap::new();
    for row in rows {
        let row = row.ctx(location, op)??;
        index.insert(row.id, trials.len());
        trials.push(row.trial);
    }
    if trials.is_empty() {
        return Ok(trials);
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT p.trial_id, p.name, p.value FROM trial_params p JOIN trials t ON t.id = p.trial_id
             WHERE {TRIAL_FILTER}"
        ))
        .ctx(location, op)?;
    let rows = stmt
        .query_map(params![study.0, arg], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })
        .ctx(location, op)?;
    for row in rows {
        let (tid, name, value) = row.ctx(location, op)?;
        if let Some(&i) = index.get(&tid) {
            trials[i].params.insert(name, value);
        }
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT i.trial_id, i.step, i.value FROM intermediate i JOIN trials t ON t.id = i.trial_id
             WHERE {TRIAL_FILTER} ORDER BY i.trial_id, i.step"
        ))
        .ctx(location, op)?;
    let rows = stmt
        .query_map(params![study.0, arg], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })
        .ctx(location, op)?;
    for row in rows {
        let (tid, step, value) = row.ctx(location, op)?;
        if let Some(&i) = index.get(&tid) {
            trials[i].intermediate.insert(step as u64, value);
        }
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT e.trial_id, e.episode, e.\"return\", e.steps, e.status, e.seed FROM episodes e
             JOIN trials t ON t.id = e.trial_id
             WHERE {TRIAL_FILTER} ORDER BY e.trial_id, e.episode"
        ))
        .ctx(location, op)?;
    let rows = stmt
        .query_map(params![study.0, arg], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                EpisodeRecord {
                    episode: r.get(1)?,
                    episode_return: r.get(2)?,
                    steps: r.get(3)?,
                    status: r.get(4)?,
                    seed: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
                },
            ))
        })
        .ctx(location, op)?;
    for row in rows {
        let (tid, ep) = row.ctx(location, op)?;
        if let Some(&i) = index.get(&tid) {
            trials[i].episodes.push(ep);
        }
    }
    Ok(trials)
}

fn read_one(
    conn: &Connection,
    location: &str,
    study: StudyId,
    number: u64,
) -> Result<Option<FrozenTrial>, StorageError> {
    let n = to_i64(location, "trial number", number)?;
    Ok(read_trials(conn, location, study, Some(n))?.pop())
}

fn study_from_row(
    location: &str,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<StudyRecord, StorageError>> {
    let id: i64 = r.get(0)?;
    let name: String = r.get(1)?;
    let direction: String = r.get(2)?;
    let space_json: String = r.get(3)?;
    let created_at: String = r.get(4)?;
    let attrs_json: String = r.get(5)?;
    Ok((|| {
        let direction = Direction::parse(&direction).ok_or_else(|| {
            corrupt(
                location,
                format!("study {name:?} has direction {direction:?}"),
            )
        })?;
        let attrs = parse_attrs(location, &format!("study {name:?}"), &attrs_json)?;
        Ok(StudyRecord {
            id: StudyId(id),
            name,
            direction,
            space_json,
            created_at,
            attrs,
        })
    })())
}

const STUDY_COLUMNS: &str = "id, name, direction, space_json, created_at, attrs_json";

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path` and brings its schema up.
    pub fn open(path: &str) -> Result<SqliteStorage, StorageError> {
        let location = format!("sqlite:{path}");
        let loc = location.as_str();
        let conn =
            Connection::open(path).map_err(|e| backend(loc, "cannot open the database file", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx(loc, "set busy_timeout")?;
        // Switching a new file to WAL needs an exclusive lock, and SQLite does not wait for it
        // through the busy timeout: two processes opening a new file at once retry here.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.ctx(loc, "set journal_mode=WAL")?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Backend {
                location: location.clone(),
                message: format!(
                    "the database refused WAL journal mode (got {mode:?}); use a file on a local disk"
                ),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx(loc, "set synchronous=FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx(loc, "set foreign_keys=ON")?;
        let storage = SqliteStorage {
            conn,
            location,
            lease: None,
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// Opens an existing database file for reading only: it is never created, migrated or
    /// switched to WAL, and every write is refused (for exports and listings, which must not
    /// change a file). A file of an older schema is read through views that add the newer
    /// columns (as NULL).
    pub fn open_read_only(path: &str) -> Result<SqliteStorage, StorageError> {
        use rusqlite::OpenFlags;
        let location = format!("sqlite:{path}");
        let loc = location.as_str();
        if !std::path::Path::new(path).is_file() {
            return Err(StorageError::Backend {
                location: location.clone(),
                message: "no such database file (reading never creates one); check the path".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| backend(loc, "cannot open the database file", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx(loc, "set busy_timeout")?;
        let has_version: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| backend(loc, "read the schema", e))?
            > 0;
        if !has_version {
            return Err(invalid(
                loc,
                "the file is not a gaittune database (no schema_version table); check the path"
                    .into(),
            ));
        }
        let version: Option<i64> = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .ctx(loc, "read schema_version")?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v @ (1 | 2)) => {
                // The temp schema is writable even when the file is not, and is searched first.
                if v == 1 {
                    conn.execute_batch(
                        "CREATE TEMP VIEW trials AS
                         SELECT *, NULL AS worker, NULL AS lease_until_ms FROM main.trials;",
                    )
                    .ctx(loc, "read a version-1 file")?;
                }
                conn.execute_batch(
                    "CREATE TEMP VIEW episodes AS SELECT *, NULL AS seed FROM main.episodes;",
                )
                .ctx(loc, &format!("read a version-{v} file"))?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(invalid(
                    loc,
                    format!("the database has schema version {v}, newer than this gaittune's {SCHEMA_VERSION}; upgrade gaittune"),
                ))
            }
            other => return Err(corrupt(loc, format!("unknown schema version {other:?}"))),
        }
        Ok(SqliteStorage {
            conn,
            location,
            lease: None,
        })
    }

    fn migrate(&self) -> Result<(), StorageError> {
        self.write("create the schema", |tx, loc| {
            let has_version: bool = tx
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .ctx(loc, "read the schema")?
                > 0;
            if !has_version {
                let tables: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                        [],
                        |r| r.get(0),
                    )
                    .ctx(loc, "read the schema")?;
                if tables > 0 {
                    return Err(invalid(
                        loc,
                        "the file is an SQLite database of another program (it has tables but no gaittune schema_version); use another file".into(),
                    ));
                }
                tx.execute_batch(SCHEMA).ctx(loc, "create tables")?;
                tx.execute_batch(
                    "CREATE TABLE schema_version (version INTEGER NOT NULL);",
                )
                .ctx(loc, "create schema_version")?;
                tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])
                    .ctx(loc, "write schema_version")?;
                return Ok(());
            }
            let version: Option<i64> = tx
                .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
                .ctx(loc, "read schema_version")?;
            match version {
                Some(SCHEMA_VERSION) => Ok(()),
                Some(v @ (1 | 2)) => {
                    if v == 1 {
                        tx.execute_batch(MIGRATE_1_TO_2)
                            .ctx(loc, "migrate the schema from version 1 to 2")?;
                    }
                    tx.execute_batch(MIGRATE_2_TO_3)
                        .ctx(loc, "migrate the schema from version 2 to 3")?;
                    tx.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])
                        .ctx(loc, "write schema_version")?;
                    Ok(())
                }
                Some(v) if v > SCHEMA_VERSION => Err(invalid(
                    loc,
                    format!("the database has schema version {v}, newer than this gaittune's {SCHEMA_VERSION}; upgrade gaittune"),
                )),
                other => Err(corrupt(loc, format!("unknown schema version {other:?}"))),
            }
        })
    }

    /// Runs `f` in an IMMEDIATE transaction (takes the write lock up front, so
    /// read-modify-write sequences are atomic across processes) and commits.
    fn write<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Transaction<'_>, &str) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let SqliteStorage { conn, location, .. } = self;
        // `&self` methods never nest transactions (each opens and ends its own), which is
        // what `new_unchecked` asks of its caller.
        let tx =
            Transaction::new_unchecked(conn, TransactionBehavior::Immediate).ctx(location, op)?;
        let out = f(&tx, location)?;
        tx.commit().ctx(location, op)?;
        Ok(out)
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Transaction<'_>, &str) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let SqliteStorage { conn, location, .. } = self;
        let tx =
            Transaction::new_unchecked(conn, TransactionBehavior::Deferred).ctx(location, op)?;
        let out = f(&tx, location)?;
        tx.commit().ctx(location, op)?;
        Ok(out)
    }
}

fn update_attrs(
    tx: &Transaction<'_>,
    loc: &str,
    table: &str,
    id: i64,
    what: &str,
    key: &str,
    value: &Value,
) -> Result<(), StorageError> {
    let text: String = tx
        .query_row(
            &format!("SELECT attrs_json FROM {table} WHERE id = ?1"),
            [id],
            |r| r.get(0),
        )
        .ctx(loc, "read attributes")?;
    let mut attrs = parse_attrs(loc, what, &text)?;
    attrs.insert(key.into(), value.clone());
    let text = serde_json::to_string(&attrs).expect("JSON map serialises");
    tx.execute(
        &format!("UPDATE {table} SET attrs_json = ?1 WHERE id = ?2"),
        params![text, id],
    )
    .ctx(loc, "write attributes")?;
    Ok(())
}

/// Inserts a trial with the next number (RUNNING ones under `lease`, if any).
fn insert_trial(
    tx: &Transaction<'_>,
    loc: &str,
    study: StudyId,
    state: TrialState,
    params: &Params,
    lease: Option<&Lease>,
) -> Result<u64, StorageError> {
    for (k, &v) in params {
        check_finite(loc, &format!("parameter {k}"), v)?;
    }
    let number: i64 = tx
        .query_row(
            "SELECT coalesce(max(number) + 1, 0) FROM trials WHERE study_id = ?1",
            [study.0],
            |r| r.get(0),
        )
        .ctx(loc, "allocate trial number")?;
    let running = state == TrialState::Running;
    let lease = lease.filter(|_| running);
    tx.execute(
        "INSERT INTO trials (study_id, number, state, started_at, attrs_json, worker, lease_until_ms)
         VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6)",
        params![
            study.0,
            number,
            state.as_str(),
            running.then(now_utc),
            lease.map(|l| l.worker.as_str()),
            lease.map(|l| now_ms() + l.duration.as_millis() as i64)
        ],
    )
    .ctx(loc, "create trial")?;
    write_params(tx, loc, tx.last_insert_rowid(), params)?;
    Ok(number as u64)
}

/// Replaces the parameters of trial row `id`.
fn write_params(
    tx: &Transaction<'_>,
    loc: &str,
    id: i64,
    params: &Params,
) -> Result<(), StorageError> {
    for (k, &v) in params {
        check_finite(loc, &format!("parameter {k}"), v)?;
    }
    let op = "write trial parameters";
    tx.execute("DELETE FROM trial_params WHERE trial_id = ?1", [id])
        .ctx(loc, op)?;
    let mut stmt = tx
        .prepare_cached("INSERT INTO trial_params (trial_id, name, value) VALUES (?1, ?2, ?3)")
        .ctx(loc, op)?;
    for (k, &v) in params {
        stmt.execute(params![id, k, v]).ctx(loc, op)?;
    }
    Ok(())
}

impl super::Storage for SqliteStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn bind_worker(&mut self, lease: Option<Lease>) {
        self.lease = lease;
    }

    fn delete_study(&self, study: StudyId) -> Result<(), StorageError> {
        self.write("delete study", |tx, loc| {
            study_exists(tx, loc, study)?;
            tx.execute("DELETE FROM studies WHERE id = ?1", [study.0])
                .ctx(loc, "delete study")?;
            Ok(())
        })
    }

    fn create_running_within(
        &self,
        study: StudyId,
        params: &Params,
        limit: u64,
    ) -> Result<Option<u64>, StorageError> {
        self.write("create trial", |tx, loc| {
            study_exists(tx, loc, study)?;
            let count: i64 = tx
                .query_row(
                    "SELECT count(*) FROM trials WHERE study_id = ?1",
                    [study.0],
                    |r| r.get(0),
                )
                .ctx(loc, "count trials")?;
            if count as u64 >= limit {
                return Ok(None);
            }
            insert_trial(
                tx,
                loc,
                study,
                TrialState::Running,
                params,
                self.lease.as_ref(),
            )
            .map(Some)
        })
    }

    fn renew_lease(&self, study: StudyId, number: u64) -> Result<bool, StorageError> {
        let Some(lease) = &self.lease else {
            return Ok(true);
        };
        self.write("renew lease", |tx, loc| {
            let changed = tx
                .execute(
                    "UPDATE trials SET lease_until_ms = ?1
                     WHERE study_id = ?2 AND number = ?3 AND state = 'RUNNING' AND worker = ?4",
                    params![
                        now_ms() + lease.duration.as_millis() as i64,
                        study.0,
                        to_i64(loc, "trial number", number)?,
                        lease.worker
                    ],
                )
                .ctx(loc, "renew lease")?;
            Ok(changed == 1)
        })
    }

    fn create_study(
        &self,
        name: &str,
        direction: Direction,
        space_json: &str,
    ) -> Result<StudyRecord, StorageError> {
        let created_at = now_utc();
        self.write("create study", |tx, loc| {
            let exists: Option<i64> = tx
                .query_row("SELECT id FROM studies WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .ctx(loc, "find study")?;
            if exists.is_some() {
                return Err(StorageError::StudyExists {
                    location: loc.into(),
                    name: name.into(),
                });
            }
            tx.execute(
                "INSERT INTO studies (name, direction, space_json, created_at, attrs_json)
                 VALUES (?1, ?2, ?3, ?4, '{}')",
                params![name, direction.as_str(), space_json, created_at],
            )
            .ctx(loc, "create study")?;
            Ok(StudyRecord {
                id: StudyId(tx.last_insert_rowid()),
                name: name.into(),
                direction,
                space_json: space_json.into(),
                created_at,
                attrs: Map::new(),
            })
        })
    }

    fn load_study(&self, name: &str) -> Result<Option<StudyRecord>, StorageError> {
        self.read("load study", |tx, loc| {
            let row = tx
                .query_row(
                    &format!("SELECT {STUDY_COLUMNS} FROM studies WHERE name = ?1"),
                    [name],
                    |r| study_from_row(loc, r),
                )
                .optional()
                .ctx(loc, "load study")?;
            row.transpose()
        })
    }

    fn list_studies(&self) -> Result<Vec<StudyRecord>, StorageError> {
        self.read("list studies", |tx, loc| {
            let mut stmt = tx
                .prepare(&format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY id"))
                .ctx(loc, "list studies")?;
            let rows = stmt
                .query_map([], |r| study_from_row(loc, r))
                .ctx(loc, "list studies")?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.ctx(loc, "list studies")??);
            }
            Ok(out)
        })
    }

    fn create_trial(
        &self,
        study: StudyId,
        state: TrialState,
        params: &Params,
    ) -> Result<u64, StorageError> {
        self.write("create trial", |tx, loc| {
            study_exists(tx, loc, study)?;
            if state.is_finished() {
                return Err(invalid(
                    loc,
                    format!("a new trial must be RUNNING or WAITING, not {state}"),
                ));
            }
            insert_trial(tx, loc, study, state, params, self.lease.as_ref())
        })
    }

    fn set_trial_state(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<(), StorageError> {
        self.write("set trial state", |tx, loc| {
            let (id, _) = find_owned(
                tx,
                loc,
                study,
                number,
                &format!("set it {state}"),
                self.lease.as_ref(),
            )?;
            match (state, value) {
                (TrialState::Complete, None) => {
                    return Err(invalid(loc, format!("trial {number}: COMPLETE needs a value")))
                }
                (TrialState::Complete | TrialState::Pruned, Some(v)) => {
                    check_finite(loc, &format!("the value of trial {number}"), v)?
                }
                (TrialState::Pruned, None) => {}
                (_, Some(v)) => {
                    return Err(invalid(
                        loc,
                        format!("trial {number}: a {state} trial has no value (got {v})"),
                    ))
                }
                (_, None) => {}
            }
            let mut prune_reason = None;
            match (state, reason) {
                (TrialState::Pruned, r) => prune_reason = r,
                (TrialState::Fail, Some(r)) => update_attrs(
                    tx,
                    loc,
                    "trials",
                    id,
                    &format!("trial {number}"),
                    "fail_reason",
                    &Value::String(r.into()),
                )?,
                (TrialState::Fail, None) => {}
                (_, Some(r)) => {
                    return Err(invalid(
                        loc,
                        format!("trial {number}: a reason ({r:?}) is only kept for PRUNED and FAIL, not {state}"),
                    ))
                }
                (_, None) => {}
            }
            let now = now_utc();
            let op = "set trial state";
            if state.is_finished() {
                tx.execute(
                    "UPDATE trials SET state = ?1, value = ?2, prune_reason = ?3, finished_at = ?4,
                     lease_until_ms = NULL WHERE id = ?5",
                    params![state.as_str(), value, prune_reason, now, id],
                )
                .ctx(loc, op)?;
            } else if state == TrialState::Running {
                let lease = self.lease.as_ref();
                tx.execute(
                    "UPDATE trials SET state = ?1, started_at = ?2, worker = ?3, lease_until_ms = ?4
                     WHERE id = ?5",
                    params![
                        state.as_str(),
                        now,
                        lease.map(|l| l.worker.as_str()),
                        lease.map(|l| now_ms() + l.duration.as_millis() as i64),
                        id
                    ],
                )
                .ctx(loc, op)?;
            } else {
                tx.execute(
                    "UPDATE trials SET state = ?1, worker = NULL, lease_until_ms = NULL WHERE id = ?2",
                    params![state.as_str(), id],
                )
                .ctx(loc, op)?;
            }
            Ok(())
        })
    }

    fn set_verdict(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        reason: &str,
    ) -> Result<(), StorageError> {
        self.write("set the operator's verdict", |tx, loc| {
            let (id, was, name) = find_trial(tx, loc, study, number)?;
            check_verdict(loc, number, &name, was, state)?;
            let op = "set the operator's verdict";
            if state == TrialState::Fail {
                tx.execute(
                    "UPDATE trials SET state = 'FAIL', value = NULL, prune_reason = NULL WHERE id = ?1",
                    [id],
                )
                .ctx(loc, op)?;
                update_attrs(
                    tx,
                    loc,
                    "trials",
                    id,
                    &format!("trial {number}"),
                    "fail_reason",
                    &Value::String(reason.into()),
                )
            } else {
                tx.execute(
                    "UPDATE trials SET state = 'PRUNED', prune_reason = ?1 WHERE id = ?2",
                    params![reason, id],
                )
                .ctx(loc, op)?;
                Ok(())
            }
        })
    }

    fn set_trial_params(
        &self,
        study: StudyId,
        number: u64,
        params: &Params,
    ) -> Result<(), StorageError> {
        self.write("set trial params", |tx, loc| {
            let (id, _) = find_owned(
                tx,
                loc,
                study,
                number,
                "change its parameters",
                self.lease.as_ref(),
            )?;
            write_params(tx, loc, id, params)
        })
    }

    fn report_intermediates(
        &self,
        study: StudyId,
        number: u64,
        values: &[(u64, f64)],
    ) -> Result<(), StorageError> {
        if values.is_empty() {
            return Ok(());
        }
        self.write("report intermediate values", |tx, loc| {
            let (id, _) = find_owned(tx, loc, study, number, "report intermediate values", self.lease.as_ref())?;
            for &(step, value) in values {
                check_finite(
                    loc,
                    &format!("the intermediate value of trial {number} at step {step}"),
                    value,
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO intermediate (trial_id, step, value) VALUES (?1, ?2, ?3)",
                    params![id, to_i64(loc, "step", step)?, value],
                )
                .ctx(loc, "report intermediate values")?;
            }
            Ok(())
        })
    }

    fn add_episode(
        &self,
        study: StudyId,
        number: u64,
        episode: &EpisodeRecord,
    ) -> Result<(), StorageError> {
        self.write("add episode", |tx, loc| {
            let (id, _) = find_owned(
                tx,
                loc,
                study,
                number,
                "add an episode",
                self.lease.as_ref(),
            )?;
            check_finite(
                loc,
                &format!(
                    "the return of episode {} of trial {number}",
                    episode.episode
                ),
                episode.episode_return,
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO episodes (trial_id, episode, \"return\", steps, status, seed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    episode.episode,
                    episode.episode_return,
                    episode.steps,
                    episode.status,
                    // Bit for bit: SQLite's INTEGER is an i64.
                    episode.seed.map(|s| s as i64)
                ],
            )
            .ctx(loc, "add episode")?;
            Ok(())
        })
    }

    fn clear_trial_progress(&self, study: StudyId, number: u64) -> Result<(), StorageError> {
        self.write("clear trial progress", |tx, loc| {
            let (id, _) = find_owned(
                tx,
                loc,
                study,
                number,
                "clear its progress",
                self.lease.as_ref(),
            )?;
            tx.execute("DELETE FROM intermediate WHERE trial_id = ?1", [id])
                .ctx(loc, "clear intermediate values")?;
            tx.execute("DELETE FROM episodes WHERE trial_id = ?1", [id])
                .ctx(loc, "clear episodes")?;
            Ok(())
        })
    }

    fn set_trial_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: &Value,
    ) -> Result<(), StorageError> {
        self.write("set trial attribute", |tx, loc| {
            let (id, state, _) = find_trial(tx, loc, study, number)?;
            if state == TrialState::Running {
                find_owned(
                    tx,
                    loc,
                    study,
                    number,
                    "set an attribute",
                    self.lease.as_ref(),
                )?;
            }
            update_attrs(
                tx,
                loc,
                "trials",
                id,
                &format!("trial {number}"),
                key,
                value,
            )
        })
    }

    fn get_trial(&self, study: StudyId, number: u64) -> Result<Option<FrozenTrial>, StorageError> {
        self.read("get trial", |tx, loc| read_one(tx, loc, study, number))
    }

    fn list_trials(&self, study: StudyId) -> Result<Vec<FrozenTrial>, StorageError> {
        self.read("list trials", |tx, loc| read_trials(tx, loc, study, None))
    }

    fn requeue_running(&self, study: StudyId) -> Result<Vec<u64>, StorageError> {
        self.write("re-queue running trials", |tx, loc| {
            let op = "re-queue running trials";
            if let Some(lease) = &self.lease {
                // Trials this worker's earlier process left: their lease need not run out.
                let mut stmt = tx
                    .prepare(
                        "SELECT id, worker FROM trials
                         WHERE study_id = ?1 AND state = 'RUNNING' AND worker IS NOT NULL",
                    )
                    .ctx(loc, op)?;
                let held: Vec<(i64, String)> = stmt
                    .query_map([study.0], |r| Ok((r.get(0)?, r.get(1)?)))
                    .ctx(loc, op)?
                    .collect::<Result<_, _>>()
                    .ctx(loc, op)?;
                for (id, worker) in held {
                    if lease.is_earlier_self(&worker) {
                        tx.execute("UPDATE trials SET lease_until_ms = 0 WHERE id = ?1", [id])
                            .ctx(loc, op)?;
                    }
                }
            }
            let mut stmt = tx
                .prepare(
                    "UPDATE trials SET state = 'WAITING', worker = NULL, lease_until_ms = NULL
                     WHERE study_id = ?1 AND state = 'RUNNING'
                       AND (lease_until_ms IS NULL OR lease_until_ms < ?2)
                     RETURNING number",
                )
                .ctx(loc, op)?;
            let rows = stmt
                .query_map(params![study.0, now_ms()], |r| r.get::<_, i64>(0))
                .ctx(loc, op)?;
            let mut numbers = Vec::new();
            for n in rows {
                numbers.push(n.ctx(loc, op)? as u64);
            }
            numbers.sort_unstable();
            Ok(numbers)
        })
    }

    fn claim_waiting(&self, study: StudyId) -> Result<Option<FrozenTrial>, StorageError> {
        self.write("claim waiting trial", |tx, loc| {
            let op = "claim waiting trial";
            let now = now_ms();
            let first: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, number FROM trials WHERE study_id = ?1
                       AND (state = 'WAITING'
                            OR (state = 'RUNNING' AND lease_until_ms IS NOT NULL AND lease_until_ms < ?2))
                     ORDER BY number LIMIT 1",
                    params![study.0, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx(loc, op)?;
            let Some((id, number)) = first else {
                return Ok(None);
            };
            let lease = self.lease.as_ref();
            tx.execute(
                "UPDATE trials SET state = 'RUNNING', started_at = ?1, worker = ?2, lease_until_ms = ?3
                 WHERE id = ?4",
                params![
                    now_utc(),
                    lease.map(|l| l.worker.as_str()),
                    lease.map(|l| now + l.duration.as_millis() as i64),
                    id
                ],
            )
            .ctx(loc, op)?;
            read_one(tx, loc, study, number as u64)
        })
    }

    fn set_study_attr(&self, study: StudyId, key: &str, value: &Value) -> Result<(), StorageError> {
        self.write("set study attribute", |tx, loc| {
            study_exists(tx, loc, study)?;
            update_attrs(
                tx,
                loc,
                "studies",
                study.0,
                &format!("study id {}", study.0),
                key,
                value,
            )
        })
    }

    fn get_study_attr(&self, study: StudyId, key: &str) -> Result<Option<Value>, StorageError> {
        self.read("get study attribute", |tx, loc| {
            study_exists(tx, loc, study)?;
            let text: String = tx
                .query_row(
                    "SELECT attrs_json FROM studies WHERE id = ?1",
                    [study.0],
                    |r| r.get(0),
                )
                .ctx(loc, "read attributes")?;
            let mut attrs = parse_attrs(loc, &format!("study id {}", study.0), &text)?;
            Ok(attrs.remove(key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use serde_json::json;

    fn temp() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db").display().to_string();
        (dir, path)
    }

    fn p(pairs: &[(&str, f64)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn workers_share_a_file_safely() {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        crate::storage::conformance::run_all(Box::new(move || {
            let path = dir
                .path()
                .join(format!("w{}.db", rand::random::<u32>()))
                .display()
                .to_string();
            let a = SqliteStorage::open(&path).unwrap();
            let b = SqliteStorage::open(&path).unwrap();
            (Box::new(a), Box::new(b))
        }));
    }

    #[test]
    fn a_version_1_file_is_migrated() {
        let (_dir, path) = temp();
        let conn = Connection::open(&path).unwrap();
        let v1 = SCHEMA
            .replace("    worker       TEXT,\n", "")
            .replace("    lease_until_ms INTEGER,\n", "")
            .replace("    seed     INTEGER,\n", "");
        assert!(!v1.contains("lease_until_ms") && !v1.contains("seed"));
        conn.execute_batch(&v1).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO studies (name, direction, space_json, created_at) VALUES ('old', 'maximize', '{}', 'x');
             INSERT INTO trials (study_id, number, state) VALUES (1, 0, 'RUNNING');
             INSERT INTO episodes VALUES (1, 0, 1.5, 10, 'Completed');",
        )
        .unwrap();
        drop(conn);
        let s = SqliteStorage::open(&path).unwrap();
        let version: i64 = s
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let id = s.load_study("old").unwrap().unwrap().id;
        assert_eq!(s.list_trials(id).unwrap()[0].episodes[0].seed, None);
        assert_eq!(s.requeue_running(id).unwrap(), vec![0]);
    }

    #[test]
    fn reading_never_creates_or_changes_a_file() {
        let (dir, path) = temp();
        let err = SqliteStorage::open_read_only(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such database file"), "{err}");
        assert!(!std::path::Path::new(&path).exists());
        // A file of another program is refused, untouched.
        let foreign = dir.path().join("foreign.db");
        let c = Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
        drop(c);
        let before = std::fs::read(&foreign).unwrap();
        let err = SqliteStorage::open_read_only(&foreign.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a gaittune database"), "{err}");
        assert_eq!(std::fs::read(&foreign).unwrap(), before);
        let mode: String = Connection::open(&foreign)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "not switched to WAL");
        // A study written normally reads back; writes are refused.
        let s = SqliteStorage::open(&path).unwrap();
        let id = s.create_study("r", Direction::Maximize, "{}").unwrap().id;
        s.create_trial(id, TrialState::Waiting, &p(&[("x", 1.0)]))
            .unwrap();
        drop(s);
        let r = SqliteStorage::open_read_only(&path).unwrap();
        assert_eq!(r.list_trials(id).unwrap().len(), 1);
        assert!(r.create_study("w", Direction::Maximize, "{}").is_err());
    }

    #[test]
    fn a_version_1_file_reads_without_being_migrated() {
        let (_dir, path) = temp();
        let conn = Connection::open(&path).unwrap();
        let v1 = SCHEMA
            .replace("    worker       TEXT,\n", "")
            .replace("    lease_until_ms INTEGER,\n", "")
            .replace("    seed     INTEGER,\n", "");
        conn.execute_batch(&v1).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO studies (name, direction, space_json, created_at) VALUES ('old', 'maximize', '{}', 'x');
             INSERT INTO trials (study_id, number, state) VALUES (1, 0, 'WAITING');
             INSERT INTO episodes VALUES (1, 0, 1.5, 10, 'Completed');",
        )
        .unwrap();
        drop(conn);
        let r = SqliteStorage::open_read_only(&path).unwrap();
        let id = r.load_study("old").unwrap().unwrap().id;
        let t = &r.list_trials(id).unwrap()[0];
        assert_eq!((&t.worker, t.episodes[0].seed), (&None, None));
        drop(r);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "reading does not migrate");
    }

    #[test]
    fn a_new_file_opened_by_many_at_once_opens_for_all() {
        let (_dir, path) = temp();
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStorage::open(&path).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }

    #[test]
    fn pragmas_are_set() {
        let (_dir, path) = temp();
        let s = SqliteStorage::open(&path).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL (2)");
        let fk: i64 = s
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = s
            .conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
        let version: i64 = s
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn round_trip_survives_reopen() {
        let (_dir, path) = temp();
        let id;
        {
            let s = SqliteStorage::open(&path).unwrap();
            let st = s
                .create_study("demo", Direction::Minimize, "{\"x\":1}")
                .unwrap();
            id = st.id;
            assert!(matches!(
                s.create_study("demo", Direction::Minimize, "{}"),
                Err(StorageError::StudyExists { .. })
            ));
            // 17 significant digits: must come back bit-exact.
            let exact = p(&[("a", 1.5), ("b", 1.029_956_882_790_602_5), ("c", 0.1 + 0.2)]);
            let n0 = s.create_trial(id, TrialState::Running, &exact).unwrap();
            let n1 = s
                .create_trial(id, TrialState::Waiting, &p(&[("a", 2.0)]))
                .unwrap();
            assert_eq!((n0, n1), (0, 1));
            s.report_intermediate(id, 0, 10, 0.5).unwrap();
            s.report_intermediate(id, 0, 20, 0.75).unwrap();
            s.report_intermediate(id, 0, 10, 0.25).unwrap(); // replaces
            s.add_episode(
                id,
                0,
                &EpisodeRecord {
                    episode: 0,
                    episode_return: 3.5,
                    steps: 200,
                    status: "done".into(),
                    seed: Some(u64::MAX - 3),
                },
            )
            .unwrap();
            s.set_trial_attr(id, 0, "unsafe_detail", &json!({"roll": 0.2}))
                .unwrap();
            s.set_trial_state(id, 0, TrialState::Complete, Some(3.5), None)
                .unwrap();
            s.set_trial_state(id, 1, TrialState::Running, None, None)
                .unwrap();
            s.set_trial_state(id, 1, TrialState::Pruned, Some(-1.0), Some("poor"))
                .unwrap();
            s.set_study_attr(id, "schema_hash", &json!(12345)).unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        let st = s.load_study("demo").unwrap().unwrap();
        assert_eq!(st.id, id);
        assert_eq!(st.direction, Direction::Minimize);
        assert_eq!(st.space_json, "{\"x\":1}");
        assert_eq!(st.attrs["schema_hash"], json!(12345));
        assert!(s.load_study("other").unwrap().is_none());
        assert_eq!(s.list_studies().unwrap().len(), 1);
        assert_eq!(
            s.get_study_attr(id, "schema_hash").unwrap(),
            Some(json!(12345))
        );
        assert_eq!(s.get_study_attr(id, "nope").unwrap(), None);

        let trials = s.list_trials(id).unwrap();
        assert_eq!(trials.len(), 2);
        let t0 = &trials[0];
        assert_eq!(t0.number, 0);
        assert_eq!(t0.state, TrialState::Complete);
        assert_eq!(t0.value, Some(3.5));
        assert_eq!(
            t0.params,
            p(&[("a", 1.5), ("b", 1.029_956_882_790_602_5), ("c", 0.1 + 0.2)])
        );
        assert_eq!(t0.params["c"].to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(
            t0.intermediate.iter().collect::<Vec<_>>(),
            [(&10, &0.25), (&20, &0.75)]
        );
        assert_eq!(t0.episodes.len(), 1);
        assert_eq!(t0.episodes[0].status, "done");
        assert_eq!(t0.episodes[0].seed, Some(u64::MAX - 3));
        assert_eq!(t0.attrs["unsafe_detail"], json!({"roll": 0.2}));
        assert!(t0.started_at.is_some() && t0.finished_at.is_some());
        let t1 = &trials[1];
        assert_eq!(t1.state, TrialState::Pruned);
        assert_eq!(t1.prune_reason.as_deref(), Some("poor"));
        assert_eq!(t1.value, Some(-1.0));
        assert!(t1.intermediate.is_empty() && t1.episodes.is_empty());
        assert_eq!(s.get_trial(id, 1).unwrap().as_ref(), Some(t1));
        assert_eq!(s.get_trial(id, 7).unwrap(), None);
    }

    #[test]
    fn finished_trials_do_not_change_and_values_are_checked() {
        let (_dir, path) = temp();
        let s = SqliteStorage::open(&path).unwrap();
        let id = s.create_study("s", Direction::Maximize, "{}").unwrap().id;
        s.create_trial(id, TrialState::Running, &p(&[("a", 1.0)]))
            .unwrap();
        let e = s
            .set_trial_state(id, 0, TrialState::Complete, None, None)
            .unwrap_err();
        assert!(e.to_string().contains("COMPLETE needs a value"), "{e}");
        let e = s
            .set_trial_state(id, 0, TrialState::Complete, Some(f64::NAN), None)
            .unwrap_err();
        assert!(e.to_string().contains("only finite values"), "{e}");
        let e = s.report_intermediate(id, 0, 1, f64::INFINITY).unwrap_err();
        assert!(e.to_string().contains("only finite values"), "{e}");
        let e = s
            .set_trial_state(id, 0, TrialState::Waiting, None, Some("why"))
            .unwrap_err();
        assert!(
            e.to_string().contains("only kept for PRUNED and FAIL"),
            "{e}"
        );
        s.set_trial_state(id, 0, TrialState::Fail, None, Some("link lost"))
            .unwrap();
        let t = s.get_trial(id, 0).unwrap().unwrap();
        assert_eq!(t.attrs["fail_reason"], json!("link lost"));
        assert_eq!(t.value, None);
        let e = s
            .set_trial_state(id, 0, TrialState::Complete, Some(1.0), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already FAIL") && e.contains(&path), "{e}");
        assert!(s.report_intermediate(id, 0, 1, 1.0).is_err());
        // Attributes of finished trials may still be set.
        s.set_trial_attr(id, 0, "note", &json!("ok")).unwrap();
        let e = s
            .set_trial_state(id, 5, TrialState::Fail, None, None)
            .unwrap_err();
        assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
        let e = s
            .create_trial(StudyId(99), TrialState::Running, &Params::new())
            .unwrap_err();
        assert!(e.to_string().contains("study id 99 does not exist"), "{e}");
        let e = s
            .create_trial(id, TrialState::Complete, &Params::new())
            .unwrap_err();
        assert!(e.to_string().contains("must be RUNNING or WAITING"), "{e}");
    }

    #[test]
    fn requeue_and_claim_order() {
        let (_dir, path) = temp();
        let s = SqliteStorage::open(&path).unwrap();
        let id = s.create_study("s", Direction::Maximize, "{}").unwrap().id;
        let other = s.create_study("o", Direction::Maximize, "{}").unwrap().id;
        for i in 0..4 {
            s.create_trial(id, TrialState::Running, &p(&[("a", i as f64)]))
                .unwrap();
        }
        s.create_trial(other, TrialState::Running, &p(&[("a", 9.0)]))
            .unwrap();
        s.set_trial_state(id, 1, TrialState::Complete, Some(1.0), None)
            .unwrap();
        s.report_intermediate(id, 2, 5, 1.0).unwrap();
        s.set_trial_params(id, 3, &p(&[("a", 7.0), ("z", 8.0)]))
            .unwrap();
        assert_eq!(
            s.get_trial(id, 3).unwrap().unwrap().params,
            p(&[("a", 7.0), ("z", 8.0)])
        );
        assert!(
            s.set_trial_params(id, 1, &p(&[("a", 0.0)])).is_err(),
            "finished"
        );
        assert_eq!(s.requeue_running(id).unwrap(), vec![0, 2, 3]);
        assert_eq!(s.requeue_running(id).unwrap(), Vec::<u64>::new());
        // The other study's trial is untouched.
        assert_eq!(
            s.get_trial(other, 0).unwrap().unwrap().state,
            TrialState::Running
        );

        let c = s.claim_waiting(id).unwrap().unwrap();
        assert_eq!((c.number, c.state), (0, TrialState::Running));
        let c = s.claim_waiting(id).unwrap().unwrap();
        assert_eq!(c.number, 2);
        assert_eq!(
            c.intermediate.get(&5),
            Some(&1.0),
            "progress is kept until cleared"
        );
        s.clear_trial_progress(id, 2).unwrap();
        assert!(s.get_trial(id, 2).unwrap().unwrap().intermediate.is_empty());
        assert_eq!(s.claim_waiting(id).unwrap().unwrap().number, 3);
        assert!(s.claim_waiting(id).unwrap().is_none());
        // Numbers continue after the maximum.
        assert_eq!(
            s.create_trial(id, TrialState::Waiting, &Params::new())
                .unwrap(),
            4
        );
        assert_eq!(
            s.create_trial(other, TrialState::Waiting, &Params::new())
                .unwrap(),
            1
        );
    }

    #[test]
    fn two_connections_allocate_distinct_numbers() {
        let (_dir, path) = temp();
        let a = SqliteStorage::open(&path).unwrap();
        let id = a.create_study("s", Direction::Maximize, "{}").unwrap().id;
        let b = SqliteStorage::open(&path).unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(
                a.create_trial(id, TrialState::Running, &Params::new())
                    .unwrap(),
            );
            seen.push(
                b.create_trial(id, TrialState::Running, &Params::new())
                    .unwrap(),
            );
        }
        assert_eq!(seen, (0..10).collect::<Vec<u64>>());
        assert_eq!(b.list_trials(id).unwrap().len(), 10);
    }

    #[test]
    fn corrupt_and_unwritable_files_are_named() {
        let (dir, _) = temp();
        let bad = dir.path().join("junk.db");
        std::fs::write(&bad, vec![0x42u8; 8192]).unwrap();
        let e = SqliteStorage::open(&bad.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&bad.display().to_string()), "{e}");
        assert!(e.contains("not a gaittune SQLite database"), "{e}");
        assert_eq!(
            std::fs::read(&bad).unwrap(),
            vec![0x42u8; 8192],
            "untouched"
        );

        let missing = dir.path().join("no/such/dir/x.db");
        let e = SqliteStorage::open(&missing.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("cannot open"), "{e}");

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE notes (x TEXT);")
            .unwrap();
        let e = SqliteStorage::open(&foreign.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("another program"), "{e}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_dir, path) = temp();
        drop(SqliteStorage::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 7", [])
            .unwrap();
        let e = SqliteStorage::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("schema version 7") && e.contains("upgrade gaittune"),
            "{e}"
        );
    }
}
