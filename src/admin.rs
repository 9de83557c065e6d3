//! `gaittune studies`: what a storage holds, deleting a study, copying one to another
//! storage. Listing opens the storage read-only; deleting and copying change only what they
//! name.

use std::fmt::Write as _;

use crate::storage::{self, Storage, StorageError, StudyRecord};
use crate::study::{best_of, load_record, StateCounts, StudyError};
use crate::trial::{FrozenTrial, TrialState};

/// One study of a storage, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySummary {
    /// The study's name.
    pub name: String,
    /// `maximize` or `minimize`.
    pub direction: String,
    /// Trials in each state.
    pub counts: StateCounts,
    /// Trials pruned as unsafe.
    pub unsafe_trials: u64,
    /// The best complete trial's value.
    pub best: Option<f64>,
    /// The latest start or finish of any trial (or the study's creation), RFC 3339 UTC.
    pub last_activity: String,
}

/// Summaries of every study in the storage at `url`, oldest first (read-only).
pub fn list(url: &str) -> Result<Vec<StudySummary>, StudyError> {
    let storage = storage::open_read_only(url)?;
    storage
        .list_studies()?
        .into_iter()
        .map(|rec| summarise(&*storage, rec))
        .collect()
}

fn summarise(storage: &dyn Storage, rec: StudyRecord) -> Result<StudySummary, StudyError> {
    let trials = storage.list_trials(rec.id)?;
    let last_activity = trials
        .iter()
        .flat_map(|t| [t.started_at.as_deref(), t.finished_at.as_deref()])
        .flatten()
        .chain([rec.created_at.as_str()])
        .max()
        .unwrap_or_default()
        .to_string();
    Ok(StudySummary {
        direction: rec.direction.as_str().to_string(),
        counts: StateCounts::of(&trials),
        unsafe_trials: trials
            .iter()
            .filter(|t| crate::pruner::is_unsafe(t))
            .count() as u64,
        best: best_of(&trials, rec.direction).and_then(|t| t.value),
        last_activity,
        name: rec.name,
    })
}

/// The summaries as a table for a terminal.
pub fn table(studies: &[StudySummary]) -> String {
    if studies.is_empty() {
        return "no studies\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<9} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>12}  last activity",
        "study",
        "direction",
        "complete",
        "pruned",
        "unsafe",
        "failed",
        "running",
        "waiting",
        "best"
    );
    for s in studies {
        let best = s.best.map_or("-".to_string(), |b| format!("{b:.4}"));
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>12}  {}",
            s.name,
            s.direction,
            s.counts.complete,
            s.counts.pruned,
            s.unsafe_trials,
            s.counts.fail,
            s.counts.running,
            s.counts.waiting,
            best,
            s.last_activity
        );
    }
    out
}

/// Deletes study `name` and all its trials from the storage at `url`; returns how many
/// trials it had.
pub fn delete(url: &str, name: &str) -> Result<usize, StudyError> {
    let storage = storage::open(url)?;
    let (rec, _) = load_record(&*storage, name)?;
    let n = storage.list_trials(rec.id)?.len();
    storage.delete_study(rec.id)?;
    Ok(n)
}

/// Copies study `name` from the storage at `from` to the one at `to` (as `new_name`, or
/// under its own name): direction, space, study attributes, and every trial with its state,
/// parameters, value, intermediate values, episodes, attributes and prune or fail reason.
/// Trials that were running are copied as WAITING; start and finish times are not copied.
/// Returns how many trials were copied.
pub fn copy(from: &str, name: &str, to: &str, new_name: Option<&str>) -> Result<usize, StudyError> {
    let source = storage::open_read_only(from)?;
    let (rec, _) = load_record(&*source, name)?;
    let trials = source.list_trials(rec.id)?;
    let target = storage::open(to)?;
    let target_name = new_name.unwrap_or(name);
    let copy = target.create_study(target_name, rec.direction, &rec.space_json)?;
    for (key, value) in &rec.attrs {
        target.set_study_attr(copy.id, key, value)?;
    }
    for t in &trials {
        copy_trial(&*target, copy.id, t)?;
    }
    Ok(trials.len())
}

fn copy_trial(
    target: &dyn Storage,
    study: storage::StudyId,
    t: &FrozenTrial,
) -> Result<(), StorageError> {
    let number = target.create_trial(study, TrialState::Waiting, &t.params)?;
    debug_assert_eq!(number, t.number, "trials are copied in order");
    let steps: Vec<(u64, f64)> = t.intermediate.iter().map(|(&s, &v)| (s, v)).collect();
    target.report_intermediates(study, number, &steps)?;
    for e in &t.episodes {
        target.add_episode(study, number, e)?;
    }
    for (key, value) in &t.attrs {
        if key != "fail_reason" {
            target.set_trial_attr(study, number, key, value)?;
        }
    }
    let reason = match t.state {
        TrialState::Pruned => t.prune_reason.clone(),
        TrialState::Fail => t
            .attrs
            .get("fail_reason")
            .and_then(|r| r.as_str())
            .map(str::to_string),
        _ => None,
    };
    match t.state {
        TrialState::Waiting | TrialState::Running => Ok(()),
        state => target.set_trial_state(study, number, state, t.value, reason.as_deref()),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::sampler::RandomSampler;
    use crate::space::{Distribution, SearchSpace};
    use crate::study::Study;
    use crate::trial::{Direction, EpisodeRecord};

    fn study_at(url: &str) -> Study {
        let space = SearchSpace::new([(
            "x".to_string(),
            Distribution::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: None,
            },
        )])
        .unwrap();
        Study::create_or_load(
            storage::open(url).unwrap(),
            "s",
            Direction::Maximize,
            space,
            Box::new(RandomSampler::new(2)),
        )
        .unwrap()
    }

    #[test]
    fn list_copy_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let a = format!("sqlite:{}", dir.path().join("a.db").display());
        let b = format!("sqlite:{}", dir.path().join("b.db").display());
        let mut s = study_at(&a);
        for i in 0..4 {
            let t = s.ask().unwrap();
            s.report(t.number, 10, i as f64).unwrap();
            s.add_episode(
                t.number,
                EpisodeRecord {
                    episode: 0,
                    episode_return: i as f64,
                    steps: 10,
                    status: "Completed".into(),
                    seed: Some(7),
                },
            )
            .unwrap();
            match i {
                1 => s.prune(t.number, "unsafe", Some(0.5)).unwrap(),
                2 => s.fail(t.number, "link faults").unwrap(),
                _ => s.tell(t.number, i as f64).unwrap(),
            }
        }
        s.ask().unwrap(); // left running
        drop(s);
        let listed = list(&a).unwrap();
        assert_eq!(listed.len(), 1);
        let l = &listed[0];
        assert_eq!(
            (
                l.counts.complete,
                l.counts.pruned,
                l.unsafe_trials,
                l.counts.fail,
                l.counts.running
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(l.best, Some(3.0));
        assert!(table(&listed).contains("unsafe"));

        assert_eq!(copy(&a, "s", &b, Some("s2")).unwrap(), 5);
        let src = storage::open(&a).unwrap();
        let dst = storage::open(&b).unwrap();
        let (ra, _) = load_record(&*src, "s").unwrap();
        let (rb, _) = load_record(&*dst, "s2").unwrap();
        let (ta, tb) = (
            src.list_trials(ra.id).unwrap(),
            dst.list_trials(rb.id).unwrap(),
        );
        for (x, y) in ta.iter().zip(&tb) {
            assert_eq!(
                (
                    &x.params,
                    x.value,
                    &x.intermediate,
                    &x.episodes,
                    &x.prune_reason,
                    &x.attrs
                ),
                (
                    &y.params,
                    y.value,
                    &y.intermediate,
                    &y.episodes,
                    &y.prune_reason,
                    &y.attrs
                )
            );
            let want = if x.state == TrialState::Running {
                TrialState::Waiting
            } else {
                x.state
            };
            assert_eq!(y.state, want);
        }
        assert!(matches!(
            copy(&a, "s", &b, Some("s2")),
            Err(StudyError::Storage(StorageError::StudyExists { .. }))
        ));

        assert_eq!(delete(&b, "s2").unwrap(), 5);
        assert!(list(&b).unwrap().is_empty());
        assert!(delete(&b, "s2").unwrap_err().to_string().contains("s2"));
    }
}
