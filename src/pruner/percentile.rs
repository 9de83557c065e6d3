//! The percentile pruner and its special case, the median stopping rule: prune a trial
//! whose best value so far is worse than the given percentile of the COMPLETE trials'
//! values at exactly the same step (Optuna 5.0's `PercentilePruner` / `MedianPruner`).

use serde::{Deserialize, Serialize};

use super::{check, is_first_in_interval_step, nan_best, PruneRequest, Pruner, PrunerError};
use crate::trial::{Direction, FrozenTrial};

/// Options of the `median` pruner (`[pruner.median]`), with Optuna's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MedianOptions {
    /// Pruning is disabled until this many trials have COMPLETEd.
    pub n_startup_trials: u64,
    /// No performance pruning before this step (the warmup guard); the earliest a trial
    /// can be pruned is at `step == n_warmup_steps`. Never delays a safety stop.
    pub n_warmup_steps: u64,
    /// Interval between pruning checks, offset by the warmup steps; a check with no report
    /// at its step is postponed to the next report. At least 1.
    pub interval_steps: u64,
    /// Minimum number of COMPLETE trials with a value at the step for a decision
    /// (fewer: not pruned). At least 1.
    pub n_min_trials: u64,
}

impl Default for MedianOptions {
    fn default() -> Self {
        MedianOptions {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
            n_min_trials: 1,
        }
    }
}

/// Options of the `percentile` pruner (`[pruner.percentile]`): the median's options plus
/// the percentile, which is required (Optuna has no default for it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PercentileOptions {
    /// The percentile in [0, 100]: with 25, trials in the top 25 % are kept.
    pub percentile: Option<f64>,
    /// See [`MedianOptions::n_startup_trials`].
    pub n_startup_trials: u64,
    /// See [`MedianOptions::n_warmup_steps`].
    pub n_warmup_steps: u64,
    /// See [`MedianOptions::interval_steps`].
    pub interval_steps: u64,
    /// See [`MedianOptions::n_min_trials`].
    pub n_min_trials: u64,
}

impl Default for PercentileOptions {
    fn default() -> Self {
        let m = MedianOptions::default();
        PercentileOptions {
            percentile: None,
            n_startup_trials: m.n_startup_trials,
            n_warmup_steps: m.n_warmup_steps,
            interval_steps: m.interval_steps,
            n_min_trials: m.n_min_trials,
        }
    }
}

/// Prunes a trial whose best intermediate value so far is worse than the percentile of the
/// COMPLETE trials' values at the same step.
#[derive(Debug, Clone)]
pub struct PercentilePruner {
    name: &'static str,
    percentile: f64,
    opts: MedianOptions,
}

impl PercentilePruner {
    /// The `percentile` pruner; errors name the bad option.
    pub fn new(o: PercentileOptions) -> Result<PercentilePruner, PrunerError> {
        let Some(percentile) = o.percentile else {
            return Err(PrunerError::invalid(
                "percentile",
                Some("percentile"),
                "is required (e.g. percentile = 25.0 keeps the top 25 % of trials)",
            ));
        };
        check(
            (0.0..=100.0).contains(&percentile),
            "percentile",
            "percentile",
            || format!("must be between 0 and 100 inclusive (got {percentile})"),
        )?;
        let opts = MedianOptions {
            n_startup_trials: o.n_startup_trials,
            n_warmup_steps: o.n_warmup_steps,
            interval_steps: o.interval_steps,
            n_min_trials: o.n_min_trials,
        };
        Self::build("percentile", percentile, opts)
    }

    /// The `median` pruner (percentile 50); errors name the bad option.
    pub fn median(opts: MedianOptions) -> Result<PercentilePruner, PrunerError> {
        Self::build("median", 50.0, opts)
    }

    fn build(
        name: &'static str,
        percentile: f64,
        opts: MedianOptions,
    ) -> Result<PercentilePruner, PrunerError> {
        check(opts.interval_steps >= 1, name, "interval_steps", || {
            "must be at least 1 (got 0)".into()
        })?;
        check(opts.n_min_trials >= 1, name, "n_min_trials", || {
            "must be at least 1 (got 0)".into()
        })?;
        Ok(PercentilePruner {
            name,
            percentile,
            opts,
        })
    }
}

impl Pruner for PercentilePruner {
    fn name(&self) -> &str {
        self.name
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let completed: Vec<&FrozenTrial> = req.complete_trials().collect();
        if completed.is_empty() || (completed.len() as u64) < self.opts.n_startup_trials {
            return false;
        }
        let Some((step, _)) = req.trial.last_intermediate() else {
            return false;
        };
        let warmup = self.opts.n_warmup_steps;
        if step < warmup {
            return false;
        }
        if !is_first_in_interval_step(req.trial, step, warmup, self.opts.interval_steps) {
            return false;
        }
        let best = nan_best(req.trial.intermediate.values().copied(), req.direction);
        if best.is_nan() {
            // Every value the trial reported is NaN.
            return true;
        }
        let p = percentile_at_step(
            &completed,
            req.direction,
            step,
            self.percentile,
            self.opts.n_min_trials,
        );
        if p.is_nan() {
            return false;
        }
        match req.direction {
            Direction::Maximize => best < p,
            Direction::Minimize => best > p,
        }
    }
}

/// The `percentile` of the trials' values at exactly `step` (NaN values ignored), flipped
/// for maximisation (`100 - percentile`); NaN if fewer than `n_min_trials` trials reported
/// that step.
fn percentile_at_step(
    trials: &[&FrozenTrial],
    direction: Direction,
    step: u64,
    percentile: f64,
    n_min_trials: u64,
) -> f64 {
    let values: Vec<f64> = trials
        .iter()
        .filter_map(|t| t.intermediate.get(&step).copied())
        .collect();
    if (values.len() as u64) < n_min_trials {
        return f64::NAN;
    }
    let percentile = match direction {
        Direction::Maximize => 100.0 - percentile,
        Direction::Minimize => percentile,
    };
    nan_percentile(values, percentile)
}

/// numpy's `nanpercentile` with its default `linear` method (Hyndman & Fan type 7),
/// computed exactly as numpy does it: virtual index `(n - 1) * q`, then a two-sided lerp.
pub(crate) fn nan_percentile(mut values: Vec<f64>, percentile: f64) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let q = percentile / 100.0;
    let virtual_index = (n as f64 - 1.0) * q;
    if virtual_index >= (n - 1) as f64 {
        return values[n - 1];
    }
    if virtual_index < 0.0 {
        return values[0];
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let a = values[prev as usize];
    let b = values[prev as usize + 1];
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{trial, trial_at};
    use super::*;
    use crate::trial::TrialState;

    fn req<'a>(
        history: &'a [FrozenTrial],
        trial: &'a FrozenTrial,
        direction: Direction,
    ) -> PruneRequest<'a> {
        PruneRequest {
            study_name: "s",
            direction,
            history,
            trial,
            step: trial.last_intermediate().map_or(0, |(s, _)| s),
        }
    }

    fn median(n_startup_trials: u64, n_warmup_steps: u64, interval_steps: u64) -> PercentilePruner {
        PercentilePruner::median(MedianOptions {
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials: 1,
        })
        .unwrap()
    }

    #[test]
    fn numpy_percentile_values() {
        // np.nanpercentile([1, 2, 3, 4], q) for q = 50, 25, 10, 100, 0 and with a NaN.
        let v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(nan_percentile(v.clone(), 50.0), 2.5);
        assert_eq!(nan_percentile(v.clone(), 25.0), 1.75);
        assert_eq!(nan_percentile(v.clone(), 10.0), 1.3);
        assert_eq!(nan_percentile(v.clone(), 100.0), 4.0);
        assert_eq!(nan_percentile(v.clone(), 0.0), 1.0);
        assert_eq!(nan_percentile(vec![f64::NAN, 5.0, 1.0], 50.0), 3.0);
        assert!(nan_percentile(vec![f64::NAN], 50.0).is_nan());
        assert_eq!(nan_percentile(vec![7.0], 30.0), 7.0);
    }

    #[test]
    fn median_prunes_worse_than_median_of_complete_trials() {
        let history = vec![
            trial(0, TrialState::Complete, &[1.0, 1.0]),
            trial(1, TrialState::Complete, &[2.0, 2.0]),
            trial(2, TrialState::Complete, &[3.0, 3.0]),
            // A pruned trial is not a reference even with very good values.
            trial(3, TrialState::Pruned, &[-9.0, -9.0]),
        ];
        let p = median(1, 0, 1);
        let bad = trial(4, TrialState::Running, &[2.5]);
        assert!(p.prune(&req(&history, &bad, Direction::Minimize)));
        let ok = trial(4, TrialState::Running, &[2.0]);
        assert!(!p.prune(&req(&history, &ok, Direction::Minimize)));
        // Best so far counts, not the latest value.
        let recovered = trial(4, TrialState::Running, &[1.5, 2.5]);
        assert!(!p.prune(&req(&history, &recovered, Direction::Minimize)));
        // Maximisation: 2.5 beats the median 2.
        assert!(!p.prune(&req(&history, &bad, Direction::Maximize)));
        let low = trial(4, TrialState::Running, &[1.5]);
        assert!(p.prune(&req(&history, &low, Direction::Maximize)));
        // All values NaN: pruned.
        let nan = trial(4, TrialState::Running, &[f64::NAN]);
        assert!(p.prune(&req(&history, &nan, Direction::Minimize)));
        // No complete trial reported this step: no decision.
        let far = trial_at(4, TrialState::Running, &[(9, 100.0)]);
        assert!(!p.prune(&req(&history, &far, Direction::Minimize)));
    }

    #[test]
    fn startup_trials_count_complete_trials_only() {
        let history = vec![
            trial(0, TrialState::Complete, &[1.0]),
            trial(1, TrialState::Pruned, &[1.0]),
            trial(2, TrialState::Fail, &[1.0]),
        ];
        let bad = trial(3, TrialState::Running, &[5.0]);
        assert!(!median(2, 0, 1).prune(&req(&history, &bad, Direction::Minimize)));
        assert!(median(1, 0, 1).prune(&req(&history, &bad, Direction::Minimize)));
        // No complete trial at all: never pruned, even with n_startup_trials = 0.
        let none: Vec<FrozenTrial> = vec![trial(1, TrialState::Pruned, &[1.0])];
        assert!(!median(0, 0, 1).prune(&req(&none, &bad, Direction::Minimize)));
    }

    #[test]
    fn unsafe_trials_do_not_poison_the_percentile() {
        // Two trials stopped by the safety envelope with awful partial curves, one with a
        // (wrongly) stored value: they neither count as startup trials nor move the median.
        let mut history = vec![
            trial(0, TrialState::Complete, &[1.0, 1.0]),
            trial(1, TrialState::Pruned, &[100.0]),
            trial(2, TrialState::Pruned, &[100.0]),
            trial(3, TrialState::Complete, &[3.0, 3.0]),
        ];
        for t in &mut history[1..3] {
            t.prune_reason = Some("unsafe: roll 0.9 rad > 0.6".into());
            t.value = Some(100.0);
        }
        let bad = trial(4, TrialState::Running, &[2.5]);
        assert!(!median(3, 0, 1).prune(&req(&history, &bad, Direction::Minimize)));
        assert!(median(2, 0, 1).prune(&req(&history, &bad, Direction::Minimize)));
    }

    #[test]
    fn warmup_and_interval() {
        let history = vec![trial(0, TrialState::Complete, &[1.0; 10])];
        let p = median(1, 3, 2); // checks at steps 3, 5, 7, ...
        let decisions: Vec<bool> = (1..=8)
            .map(|n| {
                let t = trial(1, TrialState::Running, &vec![5.0; n]);
                p.prune(&req(&history, &t, Direction::Minimize))
            })
            .collect();
        assert_eq!(
            decisions,
            vec![false, false, true, false, true, false, true, false]
        );
        // The current trial in the history is ignored (it is not COMPLETE anyway).
        let t = trial(1, TrialState::Running, &[5.0; 3]);
        let mut with_me = history.clone();
        with_me.push(t.clone());
        assert!(p.prune(&req(&with_me, &t, Direction::Minimize)));
    }

    #[test]
    fn n_min_trials_needs_enough_values_at_the_step() {
        let history = vec![
            trial(0, TrialState::Complete, &[1.0, 1.0]),
            trial(1, TrialState::Complete, &[1.0]),
        ];
        let p = |n_min_trials| {
            PercentilePruner::median(MedianOptions {
                n_startup_trials: 0,
                n_min_trials,
                ..MedianOptions::default()
            })
            .unwrap()
        };
        let t = trial(2, TrialState::Running, &[5.0, 5.0]);
        assert!(p(1).prune(&req(&history, &t, Direction::Minimize)));
        assert!(!p(2).prune(&req(&history, &t, Direction::Minimize)));
        let t1 = trial(2, TrialState::Running, &[5.0]);
        assert!(p(2).prune(&req(&history, &t1, Direction::Minimize)));
    }

    #[test]
    fn percentile_direction_and_validation() {
        let history: Vec<FrozenTrial> = (0..5)
            .map(|i| trial(i, TrialState::Complete, &[i as f64]))
            .collect();
        let p25 = PercentilePruner::new(PercentileOptions {
            percentile: Some(25.0),
            n_startup_trials: 0,
            ..PercentileOptions::default()
        })
        .unwrap();
        // Minimise: keep the best 25 %: threshold = 25th percentile = 1.0.
        let t = trial(9, TrialState::Running, &[1.5]);
        assert!(p25.prune(&req(&history, &t, Direction::Minimize)));
        // Maximise: threshold = 75th percentile = 3.0.
        let t = trial(9, TrialState::Running, &[2.9]);
        assert!(p25.prune(&req(&history, &t, Direction::Maximize)));
        let t = trial(9, TrialState::Running, &[3.0]);
        assert!(!p25.prune(&req(&history, &t, Direction::Maximize)));
        let e = PercentilePruner::new(PercentileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pruner.percentile.percentile"), "{e}");
        let e = PercentilePruner::new(PercentileOptions {
            percentile: Some(101.0),
            ..PercentileOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pruner.percentile.percentile") && e.contains("101"),
            "{e}"
        );
    }
}
