//! The threshold pruner (Optuna 5.0's `ThresholdPruner`): prunes a trial whose latest value
//! leaves absolute bounds or is NaN.

use serde::{Deserialize, Serialize};

use super::{check, is_first_in_interval_step, PruneRequest, Pruner, PrunerError};

/// Options of the `threshold` pruner (`[pruner.threshold]`); at least one bound is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdOptions {
    /// Prune when the latest value is below this.
    pub lower: Option<f64>,
    /// Prune when the latest value is above this.
    pub upper: Option<f64>,
    /// No pruning before this step.
    pub n_warmup_steps: u64,
    /// Interval between checks, offset by the warmup steps. At least 1.
    pub interval_steps: u64,
}

impl Default for ThresholdOptions {
    fn default() -> Self {
        ThresholdOptions {
            lower: None,
            upper: None,
            n_warmup_steps: 0,
            interval_steps: 1,
        }
    }
}

/// Prunes a trial whose latest value is outside `[lower, upper]` or NaN.
#[derive(Debug, Clone)]
pub struct ThresholdPruner {
    lower: f64,
    upper: f64,
    n_warmup_steps: u64,
    interval_steps: u64,
}

impl ThresholdPruner {
    /// Validates the options; errors name the bad option.
    pub fn new(o: ThresholdOptions) -> Result<ThresholdPruner, PrunerError> {
        const K: &str = "threshold";
        if o.lower.is_none() && o.upper.is_none() {
            return Err(PrunerError::invalid(
                K,
                None,
                "needs lower, upper or both (e.g. upper = 100.0)",
            ));
        }
        let lower = o.lower.unwrap_or(f64::NEG_INFINITY);
        let upper = o.upper.unwrap_or(f64::INFINITY);
        check(!lower.is_nan(), K, "lower", || {
            "must be a number (got nan)".into()
        })?;
        check(!upper.is_nan(), K, "upper", || {
            "must be a number (got nan)".into()
        })?;
        check(lower <= upper, K, "lower", || {
            format!("= {lower} is above upper = {upper}")
        })?;
        check(o.interval_steps >= 1, K, "interval_steps", || {
            "must be at least 1 (got 0)".into()
        })?;
        Ok(ThresholdPruner {
            lower,
            upper,
            n_warmup_steps: o.n_warmup_steps,
            interval_steps: o.interval_steps,
        })
    }
}

impl Pruner for ThresholdPruner {
    fn name(&self) -> &str {
        "threshold"
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let Some((step, latest)) = req.trial.last_intermediate() else {
            return false;
        };
        if step < self.n_warmup_steps
            || !is_first_in_interval_step(req.trial, step, self.n_warmup_steps, self.interval_steps)
        {
            return false;
        }
        latest.is_nan() || latest < self.lower || latest > self.upper
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::trial;
    use super::*;
    use crate::trial::{Direction, FrozenTrial, TrialState};

    fn run(p: &ThresholdPruner, values: &[f64]) -> bool {
        let t = trial(0, TrialState::Running, values);
        let history: Vec<FrozenTrial> = vec![];
        p.prune(&PruneRequest {
            study_name: "s",
            direction: Direction::Maximize,
            history: &history,
            trial: &t,
            step: values.len() as u64,
        })
    }

    fn pruner(
        lower: Option<f64>,
        upper: Option<f64>,
        warmup: u64,
        interval: u64,
    ) -> ThresholdPruner {
        ThresholdPruner::new(ThresholdOptions {
            lower,
            upper,
            n_warmup_steps: warmup,
            interval_steps: interval,
        })
        .unwrap()
    }

    #[test]
    fn bounds_on_the_latest_value() {
        // Optuna's docstring example: upper 1.0 prunes [0.0, 0.1, 0.2, 0.5, 1.2] at 1.2.
        let up = pruner(None, Some(1.0), 0, 1);
        let ys = [0.0, 0.1, 0.2, 0.5, 1.2];
        let first = (1..=ys.len()).find(|&n| run(&up, &ys[..n]));
        assert_eq!(first, Some(5));
        // lower 0.0 prunes [100, 90, 0.1, 0.0, -1] at -1.
        let low = pruner(Some(0.0), None, 0, 1);
        let ys = [100.0, 90.0, 0.1, 0.0, -1.0];
        assert_eq!((1..=ys.len()).find(|&n| run(&low, &ys[..n])), Some(5));
        // Latest value only: an earlier excursion does not count.
        assert!(!run(&up, &[5.0, 0.5]));
        // Boundaries are inside; NaN is pruned.
        assert!(!run(&pruner(Some(0.0), Some(1.0), 0, 1), &[1.0]));
        assert!(run(&up, &[f64::NAN]));
    }

    #[test]
    fn warmup_and_interval() {
        let p = pruner(None, Some(1.0), 2, 2); // checks at 2, 4, 6
        let decisions: Vec<bool> = (1..=5).map(|n| run(&p, &vec![9.0; n])).collect();
        assert_eq!(decisions, vec![false, true, false, true, false]);
    }

    #[test]
    fn options_are_validated() {
        let e = ThresholdPruner::new(ThresholdOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower") && e.contains("upper"), "{e}");
        let e = ThresholdPruner::new(ThresholdOptions {
            lower: Some(2.0),
            upper: Some(1.0),
            ..ThresholdOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("pruner.threshold.lower"), "{e}");
        let t: toml::Table = toml::from_str("upper = 3\nlimit = 2").unwrap();
        let e = super::super::build("threshold", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("limit"), "{e}");
        // An integer bound is accepted as a float.
        let t: toml::Table = toml::from_str("upper = 3").unwrap();
        assert!(super::super::build("threshold", Some(&t)).is_ok());
    }
}
