//! A study: the ask/tell API over a [`Storage`], usable without the daemon.
//!
//! Every call that changes a trial is committed to storage before it returns, so with a
//! persistent storage a process that dies between two calls loses nothing it was told
//! about (the `memory:` storage keeps nothing past the process); at the next start,
//! [`Study::requeue_running`] puts the trials that were in flight back in the queue, and the
//! next [`Study::ask`] hands them out again before sampling anything new.
//!
//! With the SQLite storage (feature `sqlite`); `memory:` works the same within one process
//! (see the [crate-level example](crate#library-use) for a pruned, constrained study):
//!
//! ```
//! # #[cfg(feature = "sqlite")] {
//! use gaittune::sampler::RandomSampler;
//! use gaittune::space::{Distribution, SearchSpace};
//! use gaittune::study::Study;
//! use gaittune::trial::Direction;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite:{}", dir.path().join("demo.db").display());
//! let space = SearchSpace::new([(
//!     "freq_hz".to_string(),
//!     Distribution::Float { low: 0.5, high: 4.0, log: false, step: None },
//! )])?;
//!
//! let storage = gaittune::storage::open(&url)?;
//! let mut study = Study::create_or_load(
//!     storage, "demo", Direction::Maximize, space.clone(), Box::new(RandomSampler::new(1)),
//! )?;
//! study.requeue_running()?; // after a crash: trials in flight go back to the queue
//! for _ in 0..5 {
//!     let trial = study.ask()?;
//!     let f = trial.params["freq_hz"];
//!     study.report(trial.number, 10, -f)?; // intermediate value at step 10
//!     study.tell(trial.number, -(f - 2.0).powi(2))?;
//! }
//! let best = study.best_trial()?.expect("five complete trials");
//! assert!(best.value.unwrap() <= 0.0);
//! drop(study);
//!
//! // Reopening continues the same study.
//! let mut study = Study::create_or_load(
//!     gaittune::storage::open(&url)?, "demo", Direction::Maximize, space,
//!     Box::new(RandomSampler::new(1)),
//! )?;
//! assert_eq!(study.counts()?.complete, 5);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::pruner::{PruneRequest, Pruner};
use crate::sampler::{SampleRequest, Sampler};
use crate::space::{Params, SearchSpace};
use crate::storage::{Storage, StorageError, StudyId, StudyRecord};
use crate::trial::{
    ConstraintViolation, Direction, EpisodeRecord, FrozenTrial, TrialState, UNSAFE_ATTR,
    UNSAFE_REASON,
};

/// What went wrong in a study operation.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored study does not match what the caller asked for.
    #[error("study {name:?} in {location} {problem}; resume it with the same settings, or start a new study under another name (--study NAME or [study] name)")]
    Mismatch {
        /// Study name.
        name: String,
        /// Storage location.
        location: String,
        /// What differs.
        problem: String,
    },
    /// No study of that name exists.
    #[error("no study {name:?} in {location}{known}")]
    NoSuchStudy {
        /// Study name.
        name: String,
        /// Storage location.
        location: String,
        /// The studies that do exist, as text.
        known: String,
    },
    /// The call is not valid (unknown trial, bad parameters, non-finite value, ...).
    #[error("study {name:?}: {message}")]
    Invalid {
        /// Study name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A trial handed out by [`Study::ask`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrialHandle {
    /// The trial number.
    pub number: u64,
    /// Parameters to evaluate (internal representation).
    pub params: Params,
    /// Whether this trial was WAITING (enqueued, or re-queued after an interruption) rather
    /// than freshly sampled.
    pub resumed: bool,
    /// Episodes the trial already recorded before it was re-queued (empty for new trials).
    /// Call [`Study::clear_progress`] to re-run it from scratch instead.
    pub episodes: Vec<EpisodeRecord>,
}

/// How many trials are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    /// RUNNING trials.
    pub running: u64,
    /// COMPLETE trials.
    pub complete: u64,
    /// PRUNED trials.
    pub pruned: u64,
    /// FAIL trials.
    pub fail: u64,
    /// WAITING trials.
    pub waiting: u64,
}

impl StateCounts {
    /// Counts the states of `trials`.
    pub fn of(trials: &[FrozenTrial]) -> StateCounts {
        let mut c = StateCounts::default();
        for t in trials {
            match t.state {
                TrialState::Running => c.running += 1,
                TrialState::Complete => c.complete += 1,
                TrialState::Pruned => c.pruned += 1,
                TrialState::Fail => c.fail += 1,
                TrialState::Waiting => c.waiting += 1,
            }
        }
        c
    }

    /// Finished trials (complete + pruned + failed).
    pub fn finished(&self) -> u64 {
        self.complete + self.pruned + self.fail
    }

    /// All trials.
    pub fn total(&self) -> u64 {
        self.finished() + self.running + self.waiting
    }
}

/// The best COMPLETE trial of `trials` in `direction` (lowest number on ties).
pub fn best_of(trials: &[FrozenTrial], direction: Direction) -> Option<&FrozenTrial> {
    let mut best: Option<(&FrozenTrial, f64)> = None;
    for t in trials {
        if t.state != TrialState::Complete {
            continue;
        }
        let Some(v) = t.value else { continue };
        let replace = match best {
            None => true,
            Some((b, bv)) => direction.is_better(v, bv) || (v == bv && t.number < b.number),
        };
        if replace {
            best = Some((t, v));
        }
    }
    best.map(|(t, _)| t)
}

/// Loads study `name` and its stored space; a missing study is an error listing the
/// studies that exist.
pub fn load_record(
    storage: &dyn Storage,
    name: &str,
) -> Result<(StudyRecord, SearchSpace), StudyError> {
    let Some(rec) = storage.load_study(name)? else {
        let names: Vec<String> = storage
            .list_studies()?
            .into_iter()
            .map(|s| format!("{:?}", s.name))
            .collect();
        let known = if names.is_empty() {
            " (the storage has no studies yet)".to_string()
        } else {
            format!("; existing studies: {}", names.join(", "))
        };
        return Err(StudyError::NoSuchStudy {
            name: name.into(),
            location: storage.location(),
            known,
        });
    };
    let space = SearchSpace::from_json(&rec.space_json).map_err(|e| StorageError::Corrupt {
        location: storage.location(),
        message: format!("study {name:?}: stored {e}"),
    })?;
    Ok((rec, space))
}

/// A study opened on a storage, with its sampler and optionally a pruner.
pub struct Study {
    storage: Box<dyn Storage>,
    id: StudyId,
    name: String,
    direction: Direction,
    space: SearchSpace,
    sampler: Box<dyn Sampler>,
    /// Judges reported values in [`Study::should_prune`].
    pruner: Option<Box<dyn Pruner>>,
    /// The sampler state last stored (to write only changes).
    saved_state: Option<serde_json::Value>,
}

/// The study attribute holding the sampler's persisted state:
/// `{"kind": <sampler name>, "state": <Sampler::save_state>}`.
pub const SAMPLER_STATE_ATTR: &str = "sampler_state";

impl std::fmt::Debug for Study {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Study")
            .field("storage", &self.storage.location())
            .field("name", &self.name)
            .field("direction", &self.direction)
            .field("sampler", &self.sampler.name())
            .field("pruner", &self.pruner_name())
            .finish()
    }
}

impl Study {
    /// Creates the study `name`, or continues it if it exists. An existing study must have
    /// the same direction and search space.
    pub fn create_or_load(
        storage: Box<dyn Storage>,
        name: &str,
        direction: Direction,
        space: SearchSpace,
        sampler: Box<dyn Sampler>,
    ) -> Result<Study, StudyError> {
        if name.trim().is_empty() {
            return Err(StudyError::Invalid {
                name: name.into(),
                message: "a study name must not be empty".into(),
            });
        }
        let mismatch = |storage: &dyn Storage, problem: String| StudyError::Mismatch {
            name: name.into(),
            location: storage.location(),
            problem,
        };
        let record = match storage.load_study(name)? {
            Some(rec) => {
                if rec.direction != direction {
                    return Err(mismatch(
                        &*storage,
                        format!(
                            "was created to {} but the config says {}",
                            rec.direction, direction
                        ),
                    ));
                }
                let stored =
                    SearchSpace::from_json(&rec.space_json).map_err(|e| StorageError::Corrupt {
                        location: storage.location(),
                        message: format!("study {name:?}: stored {e}"),
                    })?;
                // Compare what the stored text and the new space read back as through the
                // same JSON parser, so a float's last-digit parsing cannot fake a change.
                let given =
                    SearchSpace::from_json(&space.to_json()).map_err(|e| StudyError::Invalid {
                        name: name.into(),
                        message: format!("the search space does not survive storage: {e}"),
                    })?;
                let diff = stored.diff(&given);
                if !diff.is_empty() {
                    return Err(mismatch(
                        &*storage,
                        format!(
                            "was created with a different search space: {}",
                            diff.join("; ")
                        ),
                    ));
                }
                rec
            }
            None => match storage.create_study(name, direction, &space.to_json()) {
                Ok(rec) => rec,
                // Another process created it between our load and create: load theirs.
                Err(StorageError::StudyExists { .. }) => {
                    return Study::create_or_load(storage, name, direction, space, sampler)
                }
                Err(e) => return Err(e.into()),
            },
        };
        let mut study = Study {
            storage,
            id: record.id,
            name: record.name,
            direction,
            space,
            sampler,
            pruner: None,
            saved_state: None,
        };
        study.restore_sampler_state()?;
        Ok(study)
    }

    /// Loads the sampler's stored state if it was written by a sampler of the same kind
    /// (another kind's state is left alone and replaced at the next save).
    fn restore_sampler_state(&mut self) -> Result<(), StudyError> {
        let Some(stored) = self.storage.get_study_attr(self.id, SAMPLER_STATE_ATTR)? else {
            return Ok(());
        };
        let kind = stored.get("kind").and_then(serde_json::Value::as_str);
        if kind != Some(self.sampler.name()) {
            return Ok(());
        }
        let state = stored.get("state").unwrap_or(&serde_json::Value::Null);
        self.sampler.load_state(state).map_err(|e| {
            self.invalid(format!(
                "the stored {} sampler state (study attribute {SAMPLER_STATE_ATTR:?} in {}) is unreadable: {e}; \
                 to start the sampler fresh from the trial history, delete that attribute, or start a new study under another name",
                self.sampler.name(),
                self.storage.location()
            ))
        })?;
        self.saved_state = Some(state.clone());
        Ok(())
    }

    /// Stores the sampler's state if it has one and it changed since the last save.
    fn save_sampler_state(&mut self) -> Result<(), StudyError> {
        let Some(state) = self.sampler.save_state() else {
            return Ok(());
        };
        if self.saved_state.as_ref() == Some(&state) {
            return Ok(());
        }
        let value = serde_json::json!({ "kind": self.sampler.name(), "state": state });
        self.storage
            .set_study_attr(self.id, SAMPLER_STATE_ATTR, &value)?;
        self.saved_state = Some(state);
        Ok(())
    }

    /// Opens an existing study with its stored direction and space (e.g. to export it).
    pub fn load(
        storage: Box<dyn Storage>,
        name: &str,
        sampler: Box<dyn Sampler>,
    ) -> Result<Study, StudyError> {
        let (rec, space) = load_record(&*storage, name)?;
        Ok(Study {
            storage,
            id: rec.id,
            name: rec.name,
            direction: rec.direction,
            space,
            sampler,
            pruner: None,
            saved_state: None,
        })
    }

    /// The same study, judged by `pruner` in [`Study::should_prune`].
    pub fn with_pruner(mut self, pruner: Box<dyn Pruner>) -> Study {
        self.pruner = Some(pruner);
        self
    }

    /// Sets the pruner of [`Study::should_prune`] (`None`: never prune), e.g. to what
    /// [`crate::pruner::build`] returns.
    pub fn set_pruner(&mut self, pruner: Option<Box<dyn Pruner>>) {
        self.pruner = pruner;
    }

    /// The pruner's name, if the study has one.
    pub fn pruner_name(&self) -> Option<&str> {
        self.pruner.as_deref().map(Pruner::name)
    }

    fn invalid(&self, message: String) -> StudyError {
        StudyError::Invalid {
            name: self.name.clone(),
            message,
        }
    }

    /// The study's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The optimisation direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// The sampler's name.
    pub fn sampler_name(&self) -> &str {
        self.sampler.name()
    }

    /// The storage location (for messages).
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// The next trial to evaluate: the lowest-numbered WAITING trial if any (now RUNNING),
    /// else a new RUNNING trial with parameters from the sampler, which sees the whole
    /// history. Committed before it returns.
    pub fn ask(&mut self) -> Result<TrialHandle, StudyError> {
        Ok(self
            .ask_within(u64::MAX)?
            .expect("no limit: a trial is always created"))
    }

    /// Like [`Study::ask`] for one of several workers sharing the study: a WAITING trial, or
    /// a RUNNING one whose worker's lease expired, is claimed first; a new trial is created
    /// only while the study has fewer than `limit` trials (atomically, so workers together
    /// never exceed it). `None` when there is nothing to do now (the last trials are running
    /// on other workers).
    pub fn ask_within(&mut self, limit: u64) -> Result<Option<TrialHandle>, StudyError> {
        while let Some(t) = self.storage.claim_waiting(self.id)? {
            if let Err(e) = self.space.check_params(&t.params) {
                // Only possible if the row was written behind our back: never evaluate it.
                self.storage.set_trial_state(
                    self.id,
                    t.number,
                    TrialState::Fail,
                    None,
                    Some(&format!(
                        "queued parameters do not fit the search space: {e}"
                    )),
                )?;
                continue;
            }
            return Ok(Some(TrialHandle {
                number: t.number,
                params: t.params,
                resumed: true,
                episodes: t.episodes,
            }));
        }

        let history = self.storage.list_trials(self.id)?;
        if history.len() as u64 >= limit {
            return Ok(None);
        }
        let next = history.last().map_or(0, |t| t.number + 1);
        let params = self.sampler.sample(&SampleRequest {
            space: &self.space,
            history: &history,
            direction: self.direction,
            trial_number: next,
        });
        self.space.check_params(&params).map_err(|e| {
            self.invalid(format!(
                "sampler {} proposed invalid parameters for trial {next}: {e} (a sampler bug; please report it)",
                self.sampler.name()
            ))
        })?;
        let Some(number) = self
            .storage
            .create_running_within(self.id, &params, limit)?
        else {
            return Ok(None);
        };
        self.save_sampler_state()?;
        Ok(Some(TrialHandle {
            number,
            params,
            resumed: false,
            episodes: Vec::new(),
        }))
    }

    /// Makes the study claim trials for a worker (see [`crate::storage::Lease`]).
    pub fn bind_worker(&mut self, lease: Option<crate::storage::Lease>) {
        self.storage.bind_worker(lease);
    }

    /// Starts `params` as the study's first trial (RUNNING, numbered 0) if the study has no
    /// trial yet; `None` if it has (another worker was first). Atomic: of several workers
    /// starting one study together, exactly one runs its first trial, e.g. a baseline.
    pub fn ask_first(&mut self, params: Params) -> Result<Option<TrialHandle>, StudyError> {
        self.space
            .check_params(&params)
            .map_err(|e| self.invalid(format!("cannot start the first trial: {e}")))?;
        Ok(self
            .storage
            .create_running_within(self.id, &params, 1)?
            .map(|number| TrialHandle {
                number,
                params,
                resumed: false,
                episodes: Vec::new(),
            }))
    }

    /// Extends this worker's lease on RUNNING trial `number` (see
    /// [`crate::storage::Lease`]); `false` if another worker has taken it over.
    pub fn renew_lease(&mut self, number: u64) -> Result<bool, StudyError> {
        Ok(self.storage.renew_lease(self.id, number)?)
    }

    /// Deletes the study and all its trials from its storage.
    pub fn delete(self) -> Result<(), StudyError> {
        Ok(self.storage.delete_study(self.id)?)
    }

    /// Queues a parameter set (e.g. a hand-tuned baseline) as a WAITING trial; the next
    /// `ask` returns it. Returns its number.
    pub fn enqueue(&mut self, params: Params) -> Result<u64, StudyError> {
        self.space
            .check_params(&params)
            .map_err(|e| self.invalid(format!("cannot enqueue: {e}")))?;
        Ok(self
            .storage
            .create_trial(self.id, TrialState::Waiting, &params)?)
    }

    /// Records an intermediate value of a running trial at `step`.
    pub fn report(&mut self, number: u64, step: u64, value: f64) -> Result<(), StudyError> {
        Ok(self
            .storage
            .report_intermediate(self.id, number, step, value)?)
    }

    /// Records the intermediate value of a running trial at `step` (as [`Study::report`]),
    /// then asks the study's pruner whether to stop the trial now, given every trial of the
    /// study; `false` without a pruner. On `true`, stop evaluating and record the verdict,
    /// e.g. `study.prune(number, pruner::POOR_REASON, Some(value))`.
    ///
    /// [`crate::pruner`]'s module docs say what the pruners compare (unsafe trials are
    /// never a reference).
    pub fn should_prune(&mut self, number: u64, step: u64, value: f64) -> Result<bool, StudyError> {
        self.report(number, step, value)?;
        let Some(pruner) = self.pruner.as_deref() else {
            return Ok(false);
        };
        let history = self.storage.list_trials(self.id)?;
        let trial = history
            .iter()
            .find(|t| t.number == number)
            .ok_or_else(|| self.invalid(format!("trial {number} does not exist")))?;
        Ok(pruner.prune(&PruneRequest {
            study_name: &self.name,
            direction: self.direction,
            history: &history,
            trial,
            step,
        }))
    }

    /// Records several intermediate values of a running trial in one transaction.
    pub fn report_many(&mut self, number: u64, values: &[(u64, f64)]) -> Result<(), StudyError> {
        Ok(self.storage.report_intermediates(self.id, number, values)?)
    }

    /// Replaces the parameters of an unfinished trial (e.g. with the values the robot
    /// actually applied after clamping); they must be values of the search space.
    pub fn set_params(&mut self, number: u64, params: &Params) -> Result<(), StudyError> {
        self.space
            .check_params(params)
            .map_err(|e| self.invalid(format!("trial {number}: cannot record parameters: {e}")))?;
        Ok(self.storage.set_trial_params(self.id, number, params)?)
    }

    /// Puts a trial back in the queue if it is still RUNNING; returns whether it was.
    pub fn requeue_if_running(&mut self, number: u64) -> Result<bool, StudyError> {
        match self.storage.get_trial(self.id, number)? {
            Some(t) if t.state == TrialState::Running => {
                self.mark_waiting(number)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Records a finished episode of a running trial.
    pub fn add_episode(&mut self, number: u64, episode: EpisodeRecord) -> Result<(), StudyError> {
        Ok(self.storage.add_episode(self.id, number, &episode)?)
    }

    /// Forgets a trial's intermediate values and episodes, to re-run it from the start.
    pub fn clear_progress(&mut self, number: u64) -> Result<(), StudyError> {
        Ok(self.storage.clear_trial_progress(self.id, number)?)
    }

    fn finish(
        &mut self,
        number: u64,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<(), StudyError> {
        self.storage
            .set_trial_state(self.id, number, state, value, reason)?;
        if let Some(t) = self.storage.get_trial(self.id, number)? {
            self.sampler.tell(&t);
        }
        self.save_sampler_state()
    }

    /// Completes a trial with its value. A non-finite value marks the trial FAIL instead
    /// (as Optuna does) and returns an error saying so.
    pub fn tell(&mut self, number: u64, value: f64) -> Result<(), StudyError> {
        if !value.is_finite() {
            let reason = format!("the objective value is {value}");
            self.finish(number, TrialState::Fail, None, Some(&reason))?;
            return Err(self.invalid(format!(
                "trial {number}: {reason}, not a finite number; the trial was marked FAIL"
            )));
        }
        self.finish(number, TrialState::Complete, Some(value), None)
    }

    /// Prunes a trial (stopped early: poor performance, or unsafe), with the reason and
    /// optionally the value reached so far.
    pub fn prune(
        &mut self,
        number: u64,
        reason: &str,
        value: Option<f64>,
    ) -> Result<(), StudyError> {
        let value = value.filter(|v| v.is_finite());
        self.finish(number, TrialState::Pruned, value, Some(reason))
    }

    /// Prunes a trial as unsafe: it broke a limit. Records `violation` as the trial's
    /// [`UNSAFE_ATTR`] attribute and prunes it with reason [`UNSAFE_REASON`] and its last
    /// intermediate value, exactly as the daemon records a safety stop: the samplers then
    /// treat it as a constraint violation (steering away from it, the larger its
    /// `excess` the more) and the pruners never compare other trials with it.
    pub fn tell_unsafe(
        &mut self,
        number: u64,
        violation: &ConstraintViolation,
    ) -> Result<(), StudyError> {
        let value = self.trial(number)?.last_intermediate().map(|(_, v)| v);
        self.set_attr(number, UNSAFE_ATTR, violation.to_attr())?;
        self.prune(number, UNSAFE_REASON, value)
    }

    /// The operator's verdict on a finished trial, whatever it was: `FAIL` with `note` as its
    /// reason, or (`violation`) unsafe: PRUNED for the reason `unsafe`, a constraint
    /// violation the samplers learn from as they do from the robot's safety stops.
    pub fn judge(
        &mut self,
        number: u64,
        violation: Option<&ConstraintViolation>,
        note: &str,
    ) -> Result<(), StudyError> {
        match violation {
            Some(v) => {
                // The verdict first: refused for an unfinished trial, which must not keep an
                // `unsafe` attribute it would finish with.
                self.storage
                    .set_verdict(self.id, number, TrialState::Pruned, UNSAFE_REASON)?;
                self.set_attr(number, UNSAFE_ATTR, v.to_attr())?;
            }
            None => self
                .storage
                .set_verdict(self.id, number, TrialState::Fail, note)?,
        }
        if let Some(t) = self.storage.get_trial(self.id, number)? {
            self.sampler.tell(&t);
        }
        self.save_sampler_state()
    }

    /// Marks a trial FAIL with a reason (kept as the trial attribute `fail_reason`).
    pub fn fail(&mut self, number: u64, reason: &str) -> Result<(), StudyError> {
        self.finish(number, TrialState::Fail, None, Some(reason))
    }

    /// Puts a running trial back in the queue (the trial in flight when the operator
    /// stops the run); the next `ask` returns it.
    pub fn mark_waiting(&mut self, number: u64) -> Result<(), StudyError> {
        Ok(self
            .storage
            .set_trial_state(self.id, number, TrialState::Waiting, None, None)?)
    }

    /// Puts every RUNNING trial back in the queue (call at startup: after a crash they are
    /// not running any more). Returns their numbers.
    pub fn requeue_running(&mut self) -> Result<Vec<u64>, StudyError> {
        Ok(self.storage.requeue_running(self.id)?)
    }

    /// Sets a trial attribute (e.g. `unsafe_detail`, the firmware's clamp report).
    pub fn set_attr(
        &mut self,
        number: u64,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StudyError> {
        Ok(self.storage.set_trial_attr(self.id, number, key, &value)?)
    }

    /// Sets a study attribute (e.g. the firmware's schema hash).
    pub fn set_study_attr(
        &mut self,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StudyError> {
        Ok(self.storage.set_study_attr(self.id, key, &value)?)
    }

    /// Reads a study attribute.
    pub fn study_attr(&self, key: &str) -> Result<Option<serde_json::Value>, StudyError> {
        Ok(self.storage.get_study_attr(self.id, key)?)
    }

    /// All trials, by number.
    pub fn trials(&self) -> Result<Vec<FrozenTrial>, StudyError> {
        Ok(self.storage.list_trials(self.id)?)
    }

    /// One trial; an error if it does not exist.
    pub fn trial(&self, number: u64) -> Result<FrozenTrial, StudyError> {
        self.storage
            .get_trial(self.id, number)?
            .ok_or_else(|| self.invalid(format!("trial {number} does not exist")))
    }

    /// The best COMPLETE trial by the study's direction (lowest number on ties).
    pub fn best_trial(&self) -> Result<Option<FrozenTrial>, StudyError> {
        let trials = self.trials()?;
        Ok(best_of(&trials, self.direction).cloned())
    }

    /// How many trials are in each state.
    pub fn counts(&self) -> Result<StateCounts, StudyError> {
        Ok(StateCounts::of(&self.trials()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::RandomSampler;
    use crate::space::{Choice, Distribution};
    use crate::storage::MemoryStorage;
    use serde_json::json;

    fn space() -> SearchSpace {
        SearchSpace::new([
            (
                "x".to_string(),
                Distribution::Float {
                    low: -2.0,
                    high: 2.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "mode".to_string(),
                Distribution::Categorical {
                    choices: vec![Choice::Text("a".into()), Choice::Text("b".into())],
                },
            ),
        ])
        .unwrap()
    }

    /// Opens another handle on one store (a process reopening it).
    type Reopen = Box<dyn Fn() -> Box<dyn Storage>>;

    /// A fresh in-memory store.
    fn memory() -> Reopen {
        let store = MemoryStorage::new();
        Box::new(move || Box::new(store.share()))
    }

    /// Fresh stores to run a test on: in memory, and in an SQLite file when built in.
    fn stores() -> Vec<Reopen> {
        #[allow(unused_mut)]
        let mut stores = vec![memory()];
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().unwrap();
            stores.push(Box::new(move || {
                let url = format!("sqlite:{}", dir.path().join("s.db").display());
                crate::storage::open(&url).unwrap()
            }));
        }
        stores
    }

    fn open(store: &Reopen, direction: Direction, space: SearchSpace) -> Result<Study, StudyError> {
        Study::create_or_load(
            store(),
            "s",
            direction,
            space,
            Box::new(RandomSampler::new(7)),
        )
    }

    #[test]
    fn an_unsafe_verdict_refused_for_a_running_trial_leaves_no_trace() {
        for store in stores() {
            let mut st = open(&store, Direction::Minimize, space()).unwrap();
            let t = st.ask().unwrap();
            let v = ConstraintViolation::new("operator", 1.0, 0.0);
            assert!(st.judge(t.number, Some(&v), "scraped a leg").is_err());
            let running = st.trial(t.number).unwrap();
            assert_eq!(running.state, TrialState::Running);
            assert!(
                !running.attrs.contains_key(UNSAFE_ATTR),
                "{:?}",
                running.attrs
            );
            st.tell(t.number, 1.0).unwrap();
            st.judge(t.number, Some(&v), "scraped a leg").unwrap();
            assert!(st.trial(t.number).unwrap().is_unsafe());
            assert!(st.trial(t.number).unwrap().attrs.contains_key(UNSAFE_ATTR));
        }
    }

    #[test]
    fn ask_tell_best_and_counts() {
        for store in stores() {
            let mut st = open(&store, Direction::Minimize, space()).unwrap();
            assert_eq!(st.name(), "s");
            assert_eq!(st.direction(), Direction::Minimize);
            assert_eq!(st.sampler_name(), "random");
            assert!(st.best_trial().unwrap().is_none());
            let mut values = Vec::new();
            for i in 0..6 {
                let t = st.ask().unwrap();
                assert_eq!(t.number, i);
                assert!(!t.resumed);
                st.space().check_params(&t.params).unwrap();
                let v = t.params["x"].powi(2);
                st.report(t.number, 1, v + 1.0).unwrap();
                match i {
                    4 => st.prune(t.number, "poor", Some(-100.0)).unwrap(),
                    5 => st.fail(t.number, "link lost").unwrap(),
                    _ => {
                        st.tell(t.number, v).unwrap();
                        values.push(v);
                    }
                }
            }
            let best = st.best_trial().unwrap().unwrap();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(
                best.value,
                Some(min),
                "a pruned trial's lower value does not count"
            );
            assert_eq!(
                st.counts().unwrap(),
                StateCounts {
                    running: 0,
                    complete: 4,
                    pruned: 1,
                    fail: 1,
                    waiting: 0
                }
            );
            let t5 = st.trial(5).unwrap();
            assert_eq!(t5.attrs["fail_reason"], json!("link lost"));
            assert_eq!(st.trial(4).unwrap().prune_reason.as_deref(), Some("poor"));
            let e = st.tell(0, 1.0).unwrap_err().to_string();
            assert!(e.contains("already COMPLETE"), "{e}");
            assert!(st
                .trial(99)
                .unwrap_err()
                .to_string()
                .contains("trial 99 does not exist"));
        }
    }

    #[test]
    fn non_finite_value_fails_the_trial() {
        for store in stores() {
            let mut st = open(&store, Direction::Maximize, space()).unwrap();
            let t = st.ask().unwrap();
            let e = st.tell(t.number, f64::NAN).unwrap_err().to_string();
            assert!(e.contains("NaN") && e.contains("marked FAIL"), "{e}");
            assert_eq!(st.trial(t.number).unwrap().state, TrialState::Fail);
        }
    }

    #[test]
    fn enqueue_waits_and_is_asked_first() {
        for store in stores() {
            let mut st = open(&store, Direction::Maximize, space()).unwrap();
            let fresh = st.ask().unwrap();
            let baseline: Params = [("x".to_string(), 0.5), ("mode".to_string(), 1.0)].into();
            let n = st.enqueue(baseline.clone()).unwrap();
            assert_eq!(n, 1);
            let t = st.ask().unwrap();
            assert_eq!((t.number, &t.params, t.resumed), (1, &baseline, true));
            let next = st.ask().unwrap();
            assert_eq!(next.number, 2);
            assert!(!next.resumed);
            assert_ne!(next.params, fresh.params);

            let bad: Params = [("x".to_string(), 5.0), ("mode".to_string(), 1.0)].into();
            let e = st.enqueue(bad).unwrap_err().to_string();
            assert!(
                e.contains("cannot enqueue") && e.contains("parameter x"),
                "{e}"
            );
        }
    }

    #[test]
    fn resume_after_crash_requeues_and_keeps_progress() {
        for store in stores() {
            let (p0, p1);
            {
                let mut st = open(&store, Direction::Maximize, space()).unwrap();
                let t0 = st.ask().unwrap();
                st.tell(t0.number, 1.0).unwrap();
                let t1 = st.ask().unwrap();
                st.add_episode(
                    t1.number,
                    EpisodeRecord {
                        episode: 0,
                        episode_return: 4.0,
                        steps: 10,
                        status: "done".into(),
                        seed: None,
                    },
                )
                .unwrap();
                p0 = t0.params;
                p1 = t1.params;
                // The process "crashes" here with trial 1 RUNNING.
            }
            let mut st = open(&store, Direction::Maximize, space()).unwrap();
            assert_eq!(st.requeue_running().unwrap(), vec![1]);
            let t = st.ask().unwrap();
            assert_eq!((t.number, &t.params, t.resumed), (1, &p1, true));
            assert_eq!(t.episodes.len(), 1);
            st.clear_progress(1).unwrap();
            assert!(st.trial(1).unwrap().episodes.is_empty());
            // Operator stop: the trial in flight goes back to the queue.
            st.mark_waiting(1).unwrap();
            assert_eq!(st.counts().unwrap().waiting, 1);
            assert_eq!(st.ask().unwrap().number, 1);
            st.tell(1, 2.0).unwrap();
            // New trials continue the numbering, and the sampler is reproducible: a fresh study
            // with the same seed proposes the same trial 0.
            assert_eq!(st.ask().unwrap().number, 2);
            assert_eq!(st.best_trial().unwrap().unwrap().number, 1);
            let mut other = open(&memory(), Direction::Maximize, space()).unwrap();
            assert_eq!(other.ask().unwrap().params, p0);
        }
    }

    #[test]
    fn mismatched_direction_or_space_is_refused() {
        for store in stores() {
            drop(open(&store, Direction::Maximize, space()).unwrap());
            let e = open(&store, Direction::Minimize, space())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("maximize") && e.contains("minimize") && e.contains("--study"),
                "{e}"
            );
            let changed = SearchSpace::new([(
                "x".to_string(),
                Distribution::Float {
                    low: -2.0,
                    high: 3.0,
                    log: false,
                    step: None,
                },
            )])
            .unwrap();
            let e = open(&store, Direction::Maximize, changed)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("x was float [-2, 2] and is now float [-2, 3]"),
                "{e}"
            );
            assert!(
                e.contains("mode (categorical [\"a\", \"b\"]) is gone"),
                "{e}"
            );
            // The stored study is intact.
            let mut st = Study::load(store(), "s", Box::new(RandomSampler::new(0))).unwrap();
            assert_eq!(st.space(), &space());
            assert_eq!(st.direction(), Direction::Maximize);
            st.set_study_attr("schema_hash", json!("abc")).unwrap();
            assert_eq!(st.study_attr("schema_hash").unwrap(), Some(json!("abc")));
            let e = Study::load(store(), "nope", Box::new(RandomSampler::new(0)))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("no study \"nope\"") && e.contains("existing studies: \"s\""),
                "{e}"
            );
        }
    }

    #[test]
    fn reopening_with_17_digit_bounds_is_not_a_change() {
        for store in stores() {
            let odd = || {
                SearchSpace::new([(
                    "x".to_string(),
                    Distribution::Float {
                        low: 0.1 + 0.2,
                        high: 1.029_956_882_790_602_5,
                        log: true,
                        step: None,
                    },
                )])
                .unwrap()
            };
            drop(open(&store, Direction::Maximize, odd()).unwrap());
            let st = open(&store, Direction::Maximize, odd()).unwrap();
            assert_eq!(st.space(), &odd(), "the caller's exact space is used");
        }
    }

    #[test]
    fn resumed_study_continues_the_cmaes_state() {
        for store in stores() {
            use crate::sampler::CmaesSampler;
            let space = || {
                SearchSpace::new((0..4).map(|i| {
                    (
                        format!("x{i}"),
                        Distribution::Float {
                            low: -5.0,
                            high: 5.0,
                            log: false,
                            step: None,
                        },
                    )
                }))
                .unwrap()
            };
            let f = |p: &Params| p.values().map(|x| (x - 1.0).powi(2)).sum::<f64>();
            let cma = |store: &Reopen| {
                Study::create_or_load(
                    store(),
                    "c",
                    Direction::Minimize,
                    space(),
                    Box::new(CmaesSampler::new(5)),
                )
            };
            let steps = |st: &mut Study, n: usize| {
                for _ in 0..n {
                    let t = st.ask().unwrap();
                    st.tell(t.number, f(&t.params)).unwrap();
                }
            };
            // A: one process, 23 trials then the 24th ask.
            let mut a = cma(&memory()).unwrap();
            steps(&mut a, 23);
            let next = a.ask().unwrap().params;
            // B: the same 23 trials, the daemon restarts, the 24th ask continues the state.
            let mut b = cma(&store).unwrap();
            steps(&mut b, 23);
            let stored = b.study_attr(SAMPLER_STATE_ATTR).unwrap().unwrap();
            assert_eq!(stored["kind"], json!("cmaes"));
            assert!(
                stored["state"]["updates"].as_u64().unwrap() >= 2,
                "{stored}"
            );
            drop(b);
            let mut b = cma(&store).unwrap();
            assert_eq!(b.ask().unwrap().params, next);
            drop(b);
            // The stored state is what the resumed sampler uses (not a replay of the history):
            // the same run with the stored mean moved proposes something else.
            let uc = memory();
            let mut c = cma(&uc).unwrap();
            steps(&mut c, 23);
            let mut moved = c.study_attr(SAMPLER_STATE_ATTR).unwrap().unwrap();
            assert_eq!(moved, stored);
            moved["state"]["mean"] = json!([0.2, 0.2, 0.2, 0.2]);
            c.set_study_attr(SAMPLER_STATE_ATTR, moved).unwrap();
            drop(c);
            let mut c = cma(&uc).unwrap();
            assert_ne!(c.ask().unwrap().params, next);
            // An unreadable state is a clear error saying how to start fresh.
            c.set_study_attr(
                SAMPLER_STATE_ATTR,
                json!({"kind": "cmaes", "state": {"mean": [0.2, 0.2, 0.2, 0.2]}}),
            )
            .unwrap();
            drop(c);
            let e = cma(&uc).unwrap_err().to_string();
            assert!(
                e.contains("sampler state")
                    && e.contains("unreadable")
                    && e.contains("delete that attribute"),
                "{e}"
            );
            // Another sampler kind ignores it (and replaces it only if it has state).
            let mut rnd = Study::create_or_load(
                uc(),
                "c",
                Direction::Minimize,
                space(),
                Box::new(RandomSampler::new(0)),
            )
            .unwrap();
            rnd.ask().unwrap();
        }
    }

    #[test]
    fn tell_unsafe_records_a_constraint_violation() {
        for store in stores() {
            let mut st = open(&store, Direction::Maximize, space()).unwrap();
            let t = st.ask().unwrap();
            st.report_many(t.number, &[(1, 0.5), (2, 0.25)]).unwrap();
            let v = ConstraintViolation::new("max_roll_deg", 41.0, 35.0).at(0, 2);
            st.tell_unsafe(t.number, &v).unwrap();
            let stored = st.trial(t.number).unwrap();
            assert_eq!(stored.state, TrialState::Pruned);
            assert_eq!(stored.prune_reason.as_deref(), Some(UNSAFE_REASON));
            assert_eq!(stored.value, Some(0.25), "the last reported value");
            assert_eq!(stored.attrs[UNSAFE_ATTR], v.to_attr());
            assert!(crate::pruner::is_unsafe(&stored));
            assert_eq!(stored.violation_excess(), Some(6.0));
            // Without reports there is no value; a finished trial cannot be told again.
            let t = st.ask().unwrap();
            st.tell_unsafe(t.number, &v).unwrap();
            assert_eq!(st.trial(t.number).unwrap().value, None);
            let e = st.tell_unsafe(t.number, &v).unwrap_err().to_string();
            assert!(e.contains("already PRUNED"), "{e}");
            assert_eq!(st.counts().unwrap().pruned, 2);
        }
    }

    #[test]
    fn should_prune_asks_the_pruner_with_the_history() {
        use crate::pruner::{MedianOptions, PercentilePruner};
        for store in stores() {
            let mut st = open(&store, Direction::Maximize, space()).unwrap();
            assert_eq!(st.pruner_name(), None);
            let t = st.ask().unwrap();
            assert!(!st.should_prune(t.number, 1, -100.0).unwrap(), "no pruner");
            assert_eq!(st.trial(t.number).unwrap().intermediate[&1], -100.0);
            st.fail(t.number, "setup").unwrap();
            let median = PercentilePruner::median(MedianOptions {
                n_startup_trials: 2,
                ..MedianOptions::default()
            })
            .unwrap();
            let mut st = st.with_pruner(Box::new(median));
            assert_eq!(st.pruner_name(), Some("median"));
            for _ in 0..2 {
                let t = st.ask().unwrap();
                for step in 1..=3 {
                    assert!(!st.should_prune(t.number, step, 1.0).unwrap(), "startup");
                }
                st.tell(t.number, 1.0).unwrap();
            }
            let good = st.ask().unwrap();
            assert!(!st.should_prune(good.number, 1, 2.0).unwrap());
            let poor = st.ask().unwrap();
            assert!(st.should_prune(poor.number, 1, 0.5).unwrap());
            assert_eq!(st.trial(poor.number).unwrap().intermediate[&1], 0.5);
            let e = st.should_prune(99, 1, 0.5).unwrap_err();
            assert!(
                matches!(e, StudyError::Storage(StorageError::NotFound { .. })),
                "{e}"
            );
            st.set_pruner(None);
            assert!(!st.should_prune(poor.number, 2, 0.5).unwrap());
        }
    }

    #[test]
    fn best_of_breaks_ties_by_number() {
        let mk = |number, state, value| FrozenTrial {
            number,
            state,
            params: Params::new(),
            value,
            intermediate: Default::default(),
            prune_reason: None,
            episodes: vec![],
            started_at: None,
            finished_at: None,
            attrs: Default::default(),
            worker: None,
        };
        let ts = [
            mk(0, TrialState::Complete, Some(1.0)),
            mk(1, TrialState::Complete, Some(3.0)),
            mk(2, TrialState::Complete, Some(3.0)),
            mk(3, TrialState::Pruned, Some(9.0)),
            mk(4, TrialState::Running, None),
        ];
        assert_eq!(best_of(&ts, Direction::Maximize).unwrap().number, 1);
        assert_eq!(best_of(&ts, Direction::Minimize).unwrap().number, 0);
        assert!(best_of(&ts[3..], Direction::Maximize).is_none());
    }
}
