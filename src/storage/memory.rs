//! The in-memory storage, `memory:` (see [`MemoryStorage`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::{Map, Value};

use super::{Lease, Storage, StorageError, StudyId, StudyRecord};
use crate::space::Params;
use crate::trial::{now_utc, Direction, EpisodeRecord, FrozenTrial, TrialState};

/// The URL of a fresh in-memory store in [`super::open`].
pub const MEMORY_URL: &str = "memory:";

/// A [`Storage`] in this process's memory (`memory:`), for library users who drive their
/// own evaluation loop and for tests. It never touches the disk, and nothing survives the
/// process.
///
/// It keeps the [`Storage`] contract otherwise: every call is done (and visible to every
/// handle) when it returns, trial numbers are allocated atomically, finished trials never
/// change, and leases work as in the persistent backends. Handles made with
/// [`MemoryStorage::share`] act as separate connections to one store, each with its own
/// bound worker, so several threads can share a study as several daemons share a file.
/// Leases use this process's monotonic clock.
#[derive(Debug)]
pub struct MemoryStorage {
    store: Arc<Mutex<Store>>,
    lease: Option<Lease>,
}

/// Everything one store holds.
#[derive(Debug, Default)]
struct Store {
    studies: BTreeMap<i64, StoredStudy>,
    last_id: i64,
}

#[derive(Debug)]
struct StoredStudy {
    record: StudyRecord,
    trials: BTreeMap<u64, StoredTrial>,
}

#[derive(Debug)]
struct StoredTrial {
    trial: FrozenTrial,
    /// When the worker's claim ends; `None`: not leased.
    lease_until: Option<Instant>,
}

impl StoredTrial {
    fn lease_expired(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| until < now)
    }
}

fn invalid(message: String) -> StorageError {
    super::common::invalid(MEMORY_URL, message)
}

fn not_found(what: String) -> StorageError {
    StorageError::NotFound {
        location: MEMORY_URL.into(),
        what,
    }
}

fn check_finite(what: &str, x: f64) -> Result<(), StorageError> {
    super::common::check_finite(MEMORY_URL, what, x)
}

fn check_params(params: &Params) -> Result<(), StorageError> {
    params
        .iter()
        .try_for_each(|(k, &v)| check_finite(&format!("parameter {k}"), v))
}

impl Store {
    fn study(&self, study: StudyId) -> Result<&StoredStudy, StorageError> {
        self.studies
            .get(&study.0)
            .ok_or_else(|| not_found(format!("study id {}", study.0)))
    }

    fn study_mut(&mut self, study: StudyId) -> Result<&mut StoredStudy, StorageError> {
        self.studies
            .get_mut(&study.0)
            .ok_or_else(|| not_found(format!("study id {}", study.0)))
    }

    /// The trial, or NotFound.
    fn trial_mut(&mut self, study: StudyId, number: u64) -> Result<&mut StoredTrial, StorageError> {
        self.studies
            .get_mut(&study.0)
            .and_then(|s| s.trials.get_mut(&number))
            .ok_or_else(|| not_found(format!("trial {number} of study id {}", study.0)))
    }

    /// The trial if it may still change and is not RUNNING under another worker's lease:
    /// a worker whose lease was taken over never writes into the trial again.
    fn owned_mut(
        &mut self,
        study: StudyId,
        number: u64,
        action: &str,
        lease: Option<&Lease>,
    ) -> Result<&mut StoredTrial, StorageError> {
        let state = self.trial_mut(study, number)?.trial.state;
        if state.is_finished() {
            let name = &self.study(study)?.record.name;
            return Err(invalid(format!(
                "cannot {action}: trial {number} of study {name:?} is already {state}, and a finished trial cannot change"
            )));
        }
        let t = self.trial_mut(study, number)?;
        if let (TrialState::Running, Some(lease), Some(holder)) =
            (state, lease, t.trial.worker.as_ref())
        {
            if *holder != lease.worker {
                return Err(StorageError::LeaseLost {
                    location: MEMORY_URL.into(),
                    number,
                    holder: holder.clone(),
                });
            }
        }
        Ok(t)
    }
}

impl StoredStudy {
    /// Adds a trial with the next number (a RUNNING one under `lease`, if any).
    fn insert(&mut self, state: TrialState, params: &Params, lease: Option<&Lease>) -> u64 {
        let number = self.trials.keys().next_back().map_or(0, |n| n + 1);
        let mut trial = FrozenTrial::new(number, state, params.clone(), None);
        let mut lease_until = None;
        if state == TrialState::Running {
            trial.started_at = Some(now_utc());
            if let Some(l) = lease {
                trial.worker = Some(l.worker.clone());
                lease_until = Some(Instant::now() + l.duration);
            }
        }
        self.trials
            .insert(number, StoredTrial { trial, lease_until });
        number
    }
}

/// Makes `t` RUNNING for the worker holding `lease` (or for no one).
fn start(t: &mut StoredTrial, lease: Option<&Lease>) {
    t.trial.state = TrialState::Running;
    t.trial.started_at = Some(now_utc());
    t.trial.worker = lease.map(|l| l.worker.clone());
    t.lease_until = lease.map(|l| Instant::now() + l.duration);
}

impl MemoryStorage {
    /// A new, empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage {
            store: Arc::default(),
            lease: None,
        }
    }

    /// Another handle on the same store, bound to no worker: what a second connection to a
    /// database file is for the persistent backends.
    pub fn share(&self) -> MemoryStorage {
        MemoryStorage {
            store: Arc::clone(&self.store),
            lease: None,
        }
    }

    /// The store, locked for one call. A panic in another handle's call cannot leave it
    /// half-changed (every change is checked before it is made), so a poisoned lock is
    /// still usable.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        MemoryStorage::new()
    }
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        MEMORY_URL.into()
    }

    fn bind_worker(&mut self, lease: Option<Lease>) {
        self.lease = lease;
    }

    fn create_study(
        &self,
        name: &str,
        direction: Direction,
        space_json: &str,
    ) -> Result<StudyRecord, StorageError> {
        let mut store = self.lock();
        if store.studies.values().any(|s| s.record.name == name) {
            return Err(StorageError::StudyExists {
                location: MEMORY_URL.into(),
                name: name.into(),
            });
        }
        store.last_id += 1;
        let record = StudyRecord {
            id: StudyId(store.last_id),
            name: name.into(),
            direction,
            space_json: space_json.into(),
            created_at: now_utc(),
            attrs: Map::new(),
        };
        store.studies.insert(
            record.id.0,
            StoredStudy {
                record: record.clone(),
                trials: BTreeMap::new(),
            },
        );
        Ok(record)
    }

    fn load_study(&self, name: &str) -> Result<Option<StudyRecord>, StorageError> {
        Ok(self
            .lock()
            .studies
            .values()
            .find(|s| s.record.name == name)
            .map(|s| s.record.clone()))
    }

    fn list_studies(&self) -> Result<Vec<StudyRecord>, StorageError> {
        Ok(self
            .lock()
            .studies
            .values()
            .map(|s| s.record.clone())
            .collect())
    }

    fn delete_study(&self, study: StudyId) -> Result<(), StorageError> {
        let mut store = self.lock();
        store.study(study)?;
        store.studies.remove(&study.0);
        Ok(())
    }

    fn create_trial(
        &self,
        study: StudyId,
        state: TrialState,
        params: &Params,
    ) -> Result<u64, StorageError> {
        let mut store = self.lock();
        let s = store.study_mut(study)?;
        if state.is_finished() {
            return Err(invalid(format!(
                "a new trial must be RUNNING or WAITING, not {state}"
            )));
        }
        check_params(params)?;
        Ok(s.insert(state, params, self.lease.as_ref()))
    }

    fn create_running_within(
        &self,
        study: StudyId,
        params: &Params,
        limit: u64,
    ) -> Result<Option<u64>, StorageError> {
        let mut store = self.lock();
        let s = store.study_mut(study)?;
        if s.trials.len() as u64 >= limit {
            return Ok(None);
        }
        check_params(params)?;
        Ok(Some(s.insert(
            TrialState::Running,
            params,
            self.lease.as_ref(),
        )))
    }

    fn renew_lease(&self, study: StudyId, number: u64) -> Result<bool, StorageError> {
        let Some(lease) = &self.lease else {
            return Ok(true);
        };
        let mut store = self.lock();
        match store.trial_mut(study, number) {
            Ok(t)
                if t.trial.state == TrialState::Running
                    && t.trial.worker.as_ref() == Some(&lease.worker) =>
            {
                t.lease_until = Some(Instant::now() + lease.duration);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn set_verdict(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut store = self.lock();
        let name = store.study(study)?.record.name.clone();
        let t = store.trial_mut(study, number)?;
        super::common::check_verdict(MEMORY_URL, number, &name, t.trial.state, state)?;
        t.trial.state = state;
        if state == TrialState::Fail {
            t.trial.value = None;
            t.trial.prune_reason = None;
            t.trial
                .attrs
                .insert("fail_reason".into(), Value::String(reason.into()));
        } else {
            t.trial.prune_reason = Some(reason.into());
        }
        Ok(())
    }

    fn set_trial_state(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<(), StorageError> {
        let mut store = self.lock();
        let t = store.owned_mut(
            study,
            number,
            &format!("set it {state}"),
            self.lease.as_ref(),
        )?;
        match (state, value) {
            (TrialState::Complete, None) => {
                return Err(invalid(format!("trial {number}: COMPLETE needs a value")))
            }
            (TrialState::Complete | TrialState::Pruned, Some(v)) => {
                check_finite(&format!("the value of trial {number}"), v)?
            }
            (TrialState::Pruned, None) => {}
            (_, Some(v)) => {
                return Err(invalid(format!(
                    "trial {number}: a {state} trial has no value (got {v})"
                )))
            }
            (_, None) => {}
        }
        match (state, reason) {
            (TrialState::Pruned | TrialState::Fail, _) | (_, None) => {}
            (_, Some(r)) => {
                return Err(invalid(format!(
                    "trial {number}: a reason ({r:?}) is only kept for PRUNED and FAIL, not {state}"
                )))
            }
        }
        if state.is_finished() {
            t.trial.state = state;
            t.trial.value = value;
            t.trial.prune_reason = (state == TrialState::Pruned)
                .then(|| reason.map(str::to_string))
                .flatten();
            if let (TrialState::Fail, Some(r)) = (state, reason) {
                t.trial.attrs.insert("fail_reason".into(), r.into());
            }
            t.trial.finished_at = Some(now_utc());
            t.lease_until = None;
        } else if state == TrialState::Running {
            start(t, self.lease.as_ref());
        } else {
            t.trial.state = state;
            t.trial.worker = None;
            t.lease_until = None;
        }
        Ok(())
    }

    fn set_trial_params(
        &self,
        study: StudyId,
        number: u64,
        params: &Params,
    ) -> Result<(), StorageError> {
        let mut store = self.lock();
        let t = store.owned_mut(study, number, "change its parameters", self.lease.as_ref())?;
        check_params(params)?;
        t.trial.params = params.clone();
        Ok(())
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
        let mut store = self.lock();
        let t = store.owned_mut(
            study,
            number,
            "report intermediate values",
            self.lease.as_ref(),
        )?;
        for &(step, value) in values {
            check_finite(
                &format!("the intermediate value of trial {number} at step {step}"),
                value,
            )?;
        }
        t.trial.intermediate.extend(values.iter().copied());
        Ok(())
    }

    fn add_episode(
        &self,
        study: StudyId,
        number: u64,
        episode: &EpisodeRecord,
    ) -> Result<(), StorageError> {
        let mut store = self.lock();
        let t = store.owned_mut(study, number, "add an episode", self.lease.as_ref())?;
        check_finite(
            &format!(
                "the return of episode {} of trial {number}",
                episode.episode
            ),
            episode.episode_return,
        )?;
        let episodes = &mut t.trial.episodes;
        match episodes.binary_search_by_key(&episode.episode, |e| e.episode) {
            Ok(i) => episodes[i] = episode.clone(),
            Err(i) => episodes.insert(i, episode.clone()),
        }
        Ok(())
    }

    fn clear_trial_progress(&self, study: StudyId, number: u64) -> Result<(), StorageError> {
        let mut store = self.lock();
        let t = store.owned_mut(study, number, "clear its progress", self.lease.as_ref())?;
        t.trial.intermediate.clear();
        t.trial.episodes.clear();
        Ok(())
    }

    fn set_trial_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: &Value,
    ) -> Result<(), StorageError> {
        let mut store = self.lock();
        let t = if store.trial_mut(study, number)?.trial.state == TrialState::Running {
            store.owned_mut(study, number, "set an attribute", self.lease.as_ref())?
        } else {
            store.trial_mut(study, number)?
        };
        t.trial.attrs.insert(key.into(), value.clone());
        Ok(())
    }

    fn get_trial(&self, study: StudyId, number: u64) -> Result<Option<FrozenTrial>, StorageError> {
        Ok(self
            .lock()
            .studies
            .get(&study.0)
            .and_then(|s| s.trials.get(&number))
            .map(|t| t.trial.clone()))
    }

    fn list_trials(&self, study: StudyId) -> Result<Vec<FrozenTrial>, StorageError> {
        Ok(self
            .lock()
            .studies
            .get(&study.0)
            .map_or_else(Vec::new, |s| {
                s.trials.values().map(|t| t.trial.clone()).collect()
            }))
    }

    fn requeue_running(&self, study: StudyId) -> Result<Vec<u64>, StorageError> {
        let mut store = self.lock();
        let Some(s) = store.studies.get_mut(&study.0) else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        let lease = self.lease.as_ref();
        let mut numbers = Vec::new();
        for (&n, t) in &mut s.trials {
            // Trials this worker's earlier process left need not wait out their lease.
            let earlier_self = t
                .trial
                .worker
                .as_deref()
                .is_some_and(|w| lease.is_some_and(|l| l.is_earlier_self(w)));
            if t.trial.state == TrialState::Running
                && (t.lease_until.is_none() || t.lease_expired(now) || earlier_self)
            {
                t.trial.state = TrialState::Waiting;
                t.trial.worker = None;
                t.lease_until = None;
                numbers.push(n);
            }
        }
        Ok(numbers)
    }

    fn claim_waiting(&self, study: StudyId) -> Result<Option<FrozenTrial>, StorageError> {
        let mut store = self.lock();
        let Some(s) = store.studies.get_mut(&study.0) else {
            return Ok(None);
        };
        let now = Instant::now();
        let claimable = s.trials.values_mut().find(|t| {
            t.trial.state == TrialState::Waiting
                || (t.trial.state == TrialState::Running && t.lease_expired(now))
        });
        Ok(claimable.map(|t| {
            start(t, self.lease.as_ref());
            t.trial.clone()
        }))
    }

    fn set_study_attr(&self, study: StudyId, key: &str, value: &Value) -> Result<(), StorageError> {
        let mut store = self.lock();
        let s = store.study_mut(study)?;
        s.record.attrs.insert(key.into(), value.clone());
        Ok(())
    }

    fn get_study_attr(&self, study: StudyId, key: &str) -> Result<Option<Value>, StorageError> {
        Ok(self.lock().study(study)?.record.attrs.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(pairs: &[(&str, f64)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn workers_share_a_store_safely() {
        crate::storage::conformance::run_all(Box::new(|| {
            let a = MemoryStorage::new();
            let b = a.share();
            (Box::new(a), Box::new(b))
        }));
    }

    #[test]
    fn round_trip_through_another_handle() {
        let s = MemoryStorage::new();
        let id = s
            .create_study("demo", Direction::Minimize, "{\"x\":1}")
            .unwrap()
            .id;
        assert!(matches!(
            s.create_study("demo", Direction::Minimize, "{}"),
            Err(StorageError::StudyExists { .. })
        ));
        let exact = p(&[("a", 1.5), ("b", 1.029_956_882_790_602_5), ("c", 0.1 + 0.2)]);
        assert_eq!(s.create_trial(id, TrialState::Running, &exact).unwrap(), 0);
        assert_eq!(
            s.create_trial(id, TrialState::Waiting, &p(&[("a", 2.0)]))
                .unwrap(),
            1
        );
        s.report_intermediate(id, 0, 20, 0.75).unwrap();
        s.report_intermediates(id, 0, &[(10, 0.5), (10, 0.25)])
            .unwrap();
        for i in [1, 0, 1] {
            s.add_episode(
                id,
                0,
                &EpisodeRecord {
                    episode: i,
                    episode_return: 3.5,
                    steps: 200,
                    status: format!("ep{i}"),
                    seed: None,
                },
            )
            .unwrap();
        }
        s.set_trial_attr(id, 0, "k", &json!({"roll": 0.2})).unwrap();
        s.set_trial_state(id, 0, TrialState::Complete, Some(3.5), None)
            .unwrap();
        s.set_trial_state(id, 1, TrialState::Running, None, None)
            .unwrap();
        s.set_trial_state(id, 1, TrialState::Pruned, Some(-1.0), Some("poor"))
            .unwrap();
        s.set_study_attr(id, "schema_hash", &json!(12345)).unwrap();

        let other = s.share();
        let st = other.load_study("demo").unwrap().unwrap();
        assert_eq!(
            (st.id, st.direction, st.space_json.as_str()),
            (id, Direction::Minimize, "{\"x\":1}")
        );
        assert_eq!(st.attrs["schema_hash"], json!(12345));
        assert_eq!(other.get_study_attr(id, "nope").unwrap(), None);
        let trials = other.list_trials(id).unwrap();
        let t0 = &trials[0];
        assert_eq!((t0.state, t0.value), (TrialState::Complete, Some(3.5)));
        assert_eq!(t0.params, exact);
        assert_eq!(
            t0.intermediate.iter().collect::<Vec<_>>(),
            [(&10, &0.25), (&20, &0.75)]
        );
        let statuses: Vec<&str> = t0.episodes.iter().map(|e| e.status.as_str()).collect();
        assert_eq!(statuses, ["ep0", "ep1"], "by index, the last one kept");
        assert_eq!(t0.attrs["k"], json!({"roll": 0.2}));
        assert!(t0.started_at.is_some() && t0.finished_at.is_some());
        let t1 = &trials[1];
        assert_eq!(
            (t1.state, t1.prune_reason.as_deref(), t1.value),
            (TrialState::Pruned, Some("poor"), Some(-1.0))
        );
        assert_eq!(other.get_trial(id, 1).unwrap().as_ref(), Some(t1));
        assert_eq!(other.get_trial(id, 7).unwrap(), None);
        assert!(MemoryStorage::new().list_studies().unwrap().is_empty());
    }

    #[test]
    fn refusals_match_the_contract() {
        let s = MemoryStorage::new();
        let id = s.create_study("s", Direction::Maximize, "{}").unwrap().id;
        s.create_trial(id, TrialState::Running, &p(&[("a", 1.0)]))
            .unwrap();
        let err = |r: Result<(), StorageError>| r.unwrap_err().to_string();
        let e = err(s.set_trial_state(id, 0, TrialState::Complete, None, None));
        assert!(e.contains("COMPLETE needs a value"), "{e}");
        let e = err(s.set_trial_state(id, 0, TrialState::Complete, Some(f64::NAN), None));
        assert!(e.contains("only finite values"), "{e}");
        let e = err(s.report_intermediates(id, 0, &[(1, 1.0), (2, f64::INFINITY)]));
        assert!(e.contains("only finite values"), "{e}");
        assert!(
            s.get_trial(id, 0).unwrap().unwrap().intermediate.is_empty(),
            "all or nothing"
        );
        let e = err(s.set_trial_state(id, 0, TrialState::Waiting, None, Some("why")));
        assert!(e.contains("only kept for PRUNED and FAIL"), "{e}");
        s.set_trial_state(id, 0, TrialState::Fail, None, Some("link lost"))
            .unwrap();
        let t = s.get_trial(id, 0).unwrap().unwrap();
        assert_eq!(
            (t.attrs["fail_reason"].clone(), t.value),
            (json!("link lost"), None)
        );
        let e = err(s.set_trial_state(id, 0, TrialState::Complete, Some(1.0), None));
        assert!(e.contains("already FAIL") && e.contains("memory:"), "{e}");
        assert!(s.report_intermediate(id, 0, 1, 1.0).is_err());
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
        let e = s
            .create_trial(id, TrialState::Waiting, &p(&[("a", f64::NAN)]))
            .unwrap_err();
        assert!(e.to_string().contains("parameter a is NaN"), "{e}");
    }

    #[test]
    fn requeue_and_claim_order() {
        let s = MemoryStorage::new();
        let id = s.create_study("s", Direction::Maximize, "{}").unwrap().id;
        let other = s.create_study("o", Direction::Maximize, "{}").unwrap().id;
        for i in 0..4 {
            s.create_trial(id, TrialState::Running, &p(&[("a", i as f64)]))
                .unwrap();
        }
        s.create_trial(other, TrialState::Running, &Params::new())
            .unwrap();
        s.set_trial_state(id, 1, TrialState::Complete, Some(1.0), None)
            .unwrap();
        s.report_intermediate(id, 2, 5, 1.0).unwrap();
        assert_eq!(s.requeue_running(id).unwrap(), vec![0, 2, 3]);
        assert!(s.requeue_running(id).unwrap().is_empty());
        assert_eq!(
            s.get_trial(other, 0).unwrap().unwrap().state,
            TrialState::Running
        );
        assert_eq!(s.claim_waiting(id).unwrap().unwrap().number, 0);
        let c = s.claim_waiting(id).unwrap().unwrap();
        assert_eq!((c.number, c.intermediate.get(&5)), (2, Some(&1.0)));
        assert_eq!(s.claim_waiting(id).unwrap().unwrap().number, 3);
        assert!(s.claim_waiting(id).unwrap().is_none());
        assert_eq!(
            s.create_trial(id, TrialState::Waiting, &Params::new())
                .unwrap(),
            4
        );
    }

    #[test]
    fn threads_allocate_distinct_numbers() {
        let s = MemoryStorage::new();
        let id = s.create_study("s", Direction::Maximize, "{}").unwrap().id;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let h = s.share();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| h.create_running_within(id, &Params::new(), 60).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut numbers: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .flatten()
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..60).collect::<Vec<u64>>());
    }
}
