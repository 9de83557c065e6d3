//! The patient pruner (Optuna 5.0's `PatientPruner`): lets a trial go on while it still
//! improves; once it has not improved by more than `min_delta` for `patience` consecutive
//! steps, the wrapped pruner decides (or, without one, the trial is pruned).

use serde::{Deserialize, Serialize};

use super::{check, nan_best, PruneRequest, Pruner, PrunerError};

/// Options of the `patient` pruner (`[pruner.patient]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatientOptions {
    /// Steps without improvement before the wrapped pruner is asked. Required.
    pub patience: Option<u64>,
    /// Improvement smaller than this does not count. Non-negative.
    pub min_delta: f64,
    /// The wrapped pruner: a table with its `kind` and its options, e.g.
    /// `inner = { kind = "median", n_warmup_steps = 10 }`. Absent or `kind = "none"`: the
    /// patient pruner alone (early stopping on the trial's own curve).
    pub inner: Option<toml::Table>,
}

impl Default for PatientOptions {
    fn default() -> Self {
        PatientOptions {
            patience: None,
            min_delta: 0.0,
            inner: None,
        }
    }
}

/// Wraps another pruner with patience.
pub struct PatientPruner {
    inner: Option<Box<dyn Pruner>>,
    patience: u64,
    min_delta: f64,
}

impl std::fmt::Debug for PatientPruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientPruner")
            .field("inner", &self.inner.as_ref().map(|p| p.name().to_string()))
            .field("patience", &self.patience)
            .field("min_delta", &self.min_delta)
            .finish()
    }
}

impl PatientPruner {
    /// Builds the pruner and its wrapped pruner from the options; errors name the key.
    pub fn new(o: PatientOptions) -> Result<PatientPruner, PrunerError> {
        let Some(patience) = o.patience else {
            return Err(PrunerError::invalid(
                "patient",
                Some("patience"),
                "is required (e.g. patience = 5)",
            ));
        };
        check(o.min_delta >= 0.0, "patient", "min_delta", || {
            format!("must be non-negative (got {})", o.min_delta)
        })?;
        let inner = match o.inner {
            None => None,
            Some(mut t) => {
                let kind = match t.remove("kind") {
                    Some(toml::Value::String(k)) => k,
                    Some(other) => {
                        return Err(PrunerError::invalid(
                            "patient",
                            Some("inner.kind"),
                            format!("must be a string such as \"median\" (got {other})"),
                        ))
                    }
                    None => {
                        return Err(PrunerError::invalid(
                            "patient",
                            Some("inner"),
                            "needs a kind, e.g. inner = { kind = \"median\" }",
                        ))
                    }
                };
                super::build(&kind, Some(&t)).map_err(|e| PrunerError::Inner(Box::new(e)))?
            }
        };
        Ok(PatientPruner::wrap(inner, patience, o.min_delta))
    }

    /// Wraps `inner` (or nothing) with the given patience and tolerance.
    pub fn wrap(inner: Option<Box<dyn Pruner>>, patience: u64, min_delta: f64) -> PatientPruner {
        PatientPruner {
            inner,
            patience,
            min_delta,
        }
    }
}

impl Pruner for PatientPruner {
    fn name(&self) -> &str {
        "patient"
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let values: Vec<f64> = req.trial.intermediate.values().copied().collect();
        let window = self.patience.saturating_add(1);
        if values.len() as u64 <= window {
            return false;
        }
        let split = values.len() - window as usize;
        let (before, after) = values.split_at(split);
        let best_before = nan_best(before.iter().copied(), req.direction);
        let best_after = nan_best(after.iter().copied(), req.direction);
        // NaN on either side compares false: not pruned.
        let stalled = match req.direction {
            crate::trial::Direction::Minimize => best_before + self.min_delta < best_after,
            crate::trial::Direction::Maximize => best_before - self.min_delta > best_after,
        };
        stalled && self.inner.as_ref().map_or(true, |p| p.prune(req))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::trial;
    use super::*;
    use crate::trial::{Direction, FrozenTrial, TrialState};

    fn run(p: &PatientPruner, history: &[FrozenTrial], values: &[f64], d: Direction) -> bool {
        let t = trial(99, TrialState::Running, values);
        p.prune(&PruneRequest {
            study_name: "s",
            direction: d,
            history,
            trial: &t,
            step: values.len() as u64,
        })
    }

    #[test]
    fn prunes_after_patience_without_improvement() {
        let p = PatientPruner::wrap(None, 2, 0.0);
        let max = Direction::Maximize;
        // Needs more than patience + 1 values.
        assert!(!run(&p, &[], &[1.0, 0.0, 0.0], max));
        // Best before the window 1.0 > best in the last 3 (0.5): pruned.
        assert!(run(&p, &[], &[1.0, 0.5, 0.5, 0.5], max));
        // An improvement inside the window keeps it.
        assert!(!run(&p, &[], &[1.0, 0.5, 0.5, 1.5], max));
        // Equal is not worse.
        assert!(!run(&p, &[], &[1.0, 0.5, 0.5, 1.0], max));
        // Minimisation mirrors it.
        let min = Direction::Minimize;
        assert!(run(&p, &[], &[1.0, 2.0, 2.0, 2.0], min));
        assert!(!run(&p, &[], &[1.0, 2.0, 2.0, 0.5], min));
        // min_delta: a drop smaller than it does not count as stalling... for maximise,
        // before - delta > after is needed.
        let tol = PatientPruner::wrap(None, 2, 0.6);
        assert!(!run(&tol, &[], &[1.0, 0.5, 0.5, 0.5], max));
        assert!(run(&tol, &[], &[1.0, 0.3, 0.3, 0.3], max));
        // All-NaN side: not pruned.
        assert!(!run(&p, &[], &[f64::NAN, 0.5, 0.5, 0.5], max));
        // NaNs are ignored otherwise.
        assert!(run(&p, &[], &[1.0, f64::NAN, 0.5, 0.5, 0.5], max));
    }

    #[test]
    fn the_wrapped_pruner_decides_once_stalled() {
        let t: toml::Table =
            toml::from_str("patience = 1\ninner = { kind = \"median\", n_startup_trials = 1 }")
                .unwrap();
        let p = super::super::build("patient", Some(&t)).unwrap().unwrap();
        let min = Direction::Minimize;
        let history = vec![trial(0, TrialState::Complete, &[0.5, 0.5, 0.5])];
        let t = |v: &[f64]| {
            let tr = trial(1, TrialState::Running, v);
            p.prune(&PruneRequest {
                study_name: "s",
                direction: min,
                history: &history,
                trial: &tr,
                step: v.len() as u64,
            })
        };
        // Stalled and worse than the median: pruned.
        assert!(t(&[1.0, 2.0, 2.0]));
        // Stalled but better than the median: the median pruner keeps it.
        assert!(!t(&[0.1, 0.2, 0.2]));
        // Worse than the median but still improving: patience keeps it.
        assert!(!t(&[3.0, 2.5, 2.0]));
    }

    #[test]
    fn options_are_validated() {
        let e = PatientPruner::new(PatientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pruner.patient.patience"), "{e}");
        let t: toml::Table = toml::from_str("patience = 1\nmin_delta = -1.0").unwrap();
        let e = super::super::build("patient", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("pruner.patient.min_delta"), "{e}");
        let t: toml::Table =
            toml::from_str("patience = 1\ninner = { n_warmup_steps = 3 }").unwrap();
        let e = super::super::build("patient", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pruner.patient.inner") && e.contains("kind"),
            "{e}"
        );
        let t: toml::Table =
            toml::from_str("patience = 1\ninner = { kind = \"median\", warmup = 3 }").unwrap();
        let e = super::super::build("patient", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pruner.patient.inner") && e.contains("warmup"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("patience = 1\ninner = { kind = \"none\" }").unwrap();
        assert!(super::super::build("patient", Some(&t)).is_ok());
    }
}
