//! Asynchronous successive halving (ASHA), as Optuna 5.0's `SuccessiveHalvingPruner`: a
//! trial that reaches a rung's promotion step (`min_resource * reduction_factor^(rate +
//! rung)`) goes on only if its value there is in the top `1 / reduction_factor` of every
//! trial's value at that rung.
//!
//! Optuna writes each trial's rung values into its system attributes as it runs; this
//! pruner reconstructs them from the intermediate values in the history (see the module
//! docs of [`crate::pruner`] for where that can differ).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{check, PruneRequest, Pruner, PrunerError};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// A resource (a step count) that may be estimated from the first COMPLETE trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Estimated from the first COMPLETE trial (see the pruner's docs).
    Auto,
    /// This many steps.
    Steps(u64),
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::Auto => s.serialize_str("auto"),
            Resource::Steps(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Resource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a step count >= 1")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Resource, E> {
                if v == "auto" {
                    Ok(Resource::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Resource, E> {
                if v >= 1 {
                    Ok(Resource::Steps(v as u64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Signed(v), &self))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Resource, E> {
                if v >= 1 {
                    Ok(Resource::Steps(v))
                } else {
                    Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Options of the `successive_halving` pruner (`[pruner.successive_halving]`), with
/// Optuna's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuccessiveHalvingOptions {
    /// The first rung's resource `r`; `auto`: the last step of the first COMPLETE trial
    /// divided by 100 (at least 1). Until a trial completes, `auto` prunes nothing.
    pub min_resource: Resource,
    /// `eta`: about `1 / reduction_factor` of the trials reaching a rung go on. At least 2.
    pub reduction_factor: u64,
    /// `s`: the first rung is at `min_resource * reduction_factor^s`.
    pub min_early_stopping_rate: u64,
    /// A trial reaching a rung is pruned unless more than this many trials (itself
    /// included) have a value at that rung. Needs a fixed `min_resource`.
    pub bootstrap_count: u64,
}

impl Default for SuccessiveHalvingOptions {
    fn default() -> Self {
        SuccessiveHalvingOptions {
            min_resource: Resource::Auto,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
            bootstrap_count: 0,
        }
    }
}

/// The successive-halving pruner.
#[derive(Debug, Clone)]
pub struct SuccessiveHalvingPruner {
    opts: SuccessiveHalvingOptions,
}

impl SuccessiveHalvingPruner {
    /// Validates the options; errors name the bad option.
    pub fn new(opts: SuccessiveHalvingOptions) -> Result<SuccessiveHalvingPruner, PrunerError> {
        const K: &str = "successive_halving";
        check(opts.reduction_factor >= 2, K, "reduction_factor", || {
            format!("must be at least 2 (got {})", opts.reduction_factor)
        })?;
        check(
            !(opts.bootstrap_count > 0 && opts.min_resource == Resource::Auto),
            K,
            "bootstrap_count",
            || {
                format!(
                    "= {} needs a fixed min_resource (min_resource = \"auto\" cannot be combined \
                     with bootstrap_count > 0)",
                    opts.bootstrap_count
                )
            },
        )?;
        Ok(SuccessiveHalvingPruner { opts })
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn name(&self) -> &str {
        "successive_halving"
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let (min_resource, first) = match self.opts.min_resource {
            Resource::Steps(r) => (r, None),
            Resource::Auto => {
                let Some(first) = first_complete(req) else {
                    return false;
                };
                let last = first.last_intermediate().map_or(0, |(s, _)| s);
                ((last / 100).max(1), Some(first))
            }
        };
        let rungs = Rungs {
            min_resource,
            reduction_factor: self.opts.reduction_factor,
            min_early_stopping_rate: self.opts.min_early_stopping_rate,
            bootstrap_count: self.opts.bootstrap_count,
        };
        let competitors: Vec<&FrozenTrial> = req
            .reference_trials()
            .filter(|t| has_rung_values(first, t))
            .collect();
        rungs.decide(req.direction, req.trial, &competitors)
    }
}

/// The COMPLETE reference trial with intermediate values that finished first (earliest
/// `finished_at`, then lowest number): the trial `auto` resources are estimated from.
pub(crate) fn first_complete<'a>(req: &PruneRequest<'a>) -> Option<&'a FrozenTrial> {
    req.complete_trials()
        .filter(|t| !t.intermediate.is_empty())
        .min_by(|a, b| finish_key(a).cmp(&finish_key(b)))
}

/// Orders trials by when they finished: finished ones by time, then unfinished ones; ties
/// and missing times by number.
fn finish_key(t: &FrozenTrial) -> (bool, Option<&str>, u64) {
    (t.finished_at.is_none(), t.finished_at.as_deref(), t.number)
}

/// Whether trial `t` carries rung values. With an `auto` resource (`first` is the trial it
/// was estimated from) only trials still running when that trial finished do: before that,
/// Optuna's pruner records nothing. With a fixed resource every trial does.
pub(crate) fn has_rung_values(first: Option<&FrozenTrial>, t: &FrozenTrial) -> bool {
    first.map_or(true, |first| finish_key(t) > finish_key(first))
}

/// One successive-halving bracket's rung geometry and the promotion rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rungs {
    pub min_resource: u64,
    pub reduction_factor: u64,
    pub min_early_stopping_rate: u64,
    pub bootstrap_count: u64,
}

impl Rungs {
    /// The step at which `rung` is completed; `None` if it overflows (never reached).
    fn promotion_step(&self, rung: u64) -> Option<u64> {
        let exp = u32::try_from(self.min_early_stopping_rate.checked_add(rung)?).ok()?;
        self.reduction_factor
            .checked_pow(exp)?
            .checked_mul(self.min_resource)
    }

    /// The value trial `t` recorded at `rung`, reconstructed from its intermediate values:
    /// its value at the first reported step at or after each rung's promotion step, as long
    /// as it was not pruned (or NaN) at an earlier rung.
    fn recorded(&self, t: &FrozenTrial, rung: u64) -> Option<f64> {
        let last = t.last_intermediate()?.0;
        let mut value = None;
        for k in 0..=rung {
            let ps = self.promotion_step(k)?;
            let (&s, &v) = t.intermediate.range(ps..).next()?;
            if v.is_nan() {
                return None;
            }
            // A pruned trial stopped at the first rung its last report reached.
            if k < rung && t.state == TrialState::Pruned && s == last {
                return None;
            }
            value = Some(v);
        }
        value
    }

    /// Whether the trial must stop at its latest report.
    pub fn decide(
        &self,
        direction: Direction,
        trial: &FrozenTrial,
        competitors: &[&FrozenTrial],
    ) -> bool {
        let Some((step, value)) = trial.last_intermediate() else {
            return false;
        };
        let prev = trial
            .intermediate
            .range(..step)
            .next_back()
            .map(|(&s, _)| s);
        let mut rung = 0u64;
        loop {
            let Some(ps) = self.promotion_step(rung) else {
                return false;
            };
            if step < ps {
                return false;
            }
            // Rungs reached at an earlier report were passed then (the trial still runs).
            let reached_now = prev.map_or(true, |p| p < ps);
            if reached_now {
                if value.is_nan() {
                    return true;
                }
                let mut competing: Vec<f64> = competitors
                    .iter()
                    .filter_map(|t| self.recorded(t, rung))
                    .collect();
                competing.push(value);
                if competing.len() as u64 <= self.bootstrap_count {
                    return true;
                }
                if !promotable(value, competing, self.reduction_factor, direction) {
                    return true;
                }
            }
            rung += 1;
        }
    }
}

/// Optuna's `_is_trial_promotable_to_next_rung`: in the top `1 / reduction_factor` of the
/// competing values (itself included), or the best of them while there are fewer than
/// `reduction_factor`.
fn promotable(
    value: f64,
    mut competing: Vec<f64>,
    reduction_factor: u64,
    direction: Direction,
) -> bool {
    let n = competing.len();
    let idx = (n as u64 / reduction_factor).max(1) as usize - 1;
    competing.sort_by(f64::total_cmp);
    match direction {
        Direction::Maximize => value >= competing[n - 1 - idx],
        Direction::Minimize => value <= competing[idx],
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{trial, trial_at};
    use super::*;

    fn sh(min_resource: Resource, rf: u64, rate: u64, bootstrap: u64) -> SuccessiveHalvingPruner {
        SuccessiveHalvingPruner::new(SuccessiveHalvingOptions {
            min_resource,
            reduction_factor: rf,
            min_early_stopping_rate: rate,
            bootstrap_count: bootstrap,
        })
        .unwrap()
    }

    fn decide(p: &SuccessiveHalvingPruner, history: &[FrozenTrial], t: &FrozenTrial) -> bool {
        p.prune(&PruneRequest {
            study_name: "s",
            direction: Direction::Minimize,
            history,
            trial: t,
            step: t.last_intermediate().unwrap().0,
        })
    }

    #[test]
    fn promotion_rule() {
        // 8 competitors, eta 4: the best 2 are promoted.
        let c: Vec<f64> = (1..=8).map(f64::from).collect();
        assert!(promotable(2.0, c.clone(), 4, Direction::Minimize));
        assert!(!promotable(3.0, c.clone(), 4, Direction::Minimize));
        assert!(promotable(7.0, c.clone(), 4, Direction::Maximize));
        assert!(!promotable(6.0, c, 4, Direction::Maximize));
        // Fewer than eta: only the best goes on.
        assert!(promotable(1.0, vec![1.0, 2.0], 4, Direction::Minimize));
        assert!(!promotable(2.0, vec![1.0, 2.0], 4, Direction::Minimize));
    }

    #[test]
    fn rungs_are_at_geometric_steps() {
        let p = sh(Resource::Steps(2), 3, 1, 0);
        // Rungs at 6, 18, 54. A worse trial is pruned exactly at a rung step.
        let history = vec![trial(0, TrialState::Complete, &[1.0; 60])];
        for n in 1..=5 {
            assert!(!decide(
                &p,
                &history,
                &trial(1, TrialState::Running, &vec![5.0; n])
            ));
        }
        assert!(decide(
            &p,
            &history,
            &trial(1, TrialState::Running, &[5.0; 6])
        ));
        // A better one passes rung 6, then meets trial 0 again at 18.
        let mut v = vec![0.5; 6];
        assert!(!decide(&p, &history, &trial(1, TrialState::Running, &v)));
        v.resize(17, 2.0);
        assert!(!decide(&p, &history, &trial(1, TrialState::Running, &v)));
        v.push(2.0);
        assert!(decide(&p, &history, &trial(1, TrialState::Running, &v)));
        // A report that jumps over the rung step is judged at that report.
        let jump = trial_at(1, TrialState::Running, &[(5, 0.0), (9, 5.0)]);
        assert!(decide(&p, &history, &jump));
    }

    #[test]
    fn auto_min_resource_waits_for_a_complete_trial() {
        let p = sh(Resource::Auto, 2, 0, 0);
        // No COMPLETE trial: nothing is pruned.
        let history = vec![trial(0, TrialState::Running, &[0.0; 3])];
        assert!(!decide(
            &p,
            &history,
            &trial(1, TrialState::Running, &[9.0; 3])
        ));
        // Trial 0 completed with 300 steps: min_resource = 3; rungs at 3, 6, 12, ...
        // Trial 0 itself ran before the estimate, so it has no rung values; trial 1 (the
        // first after it) is alone at its rungs and goes on.
        let history = vec![trial(0, TrialState::Complete, &[0.0; 300])];
        assert!(!decide(
            &p,
            &history,
            &trial(1, TrialState::Running, &[9.0; 3])
        ));
        // Trial 2 meets trial 1's value at rung 3.
        let history = vec![
            trial(0, TrialState::Complete, &[0.0; 300]),
            trial(1, TrialState::Complete, &[1.0; 300]),
        ];
        assert!(!decide(
            &p,
            &history,
            &trial(2, TrialState::Running, &[0.5; 2])
        ));
        assert!(decide(
            &p,
            &history,
            &trial(2, TrialState::Running, &[2.0; 3])
        ));
        assert!(!decide(
            &p,
            &history,
            &trial(2, TrialState::Running, &[1.0; 3])
        ));
    }

    #[test]
    fn pruned_trials_compete_up_to_the_rung_they_were_pruned_at() {
        let p = sh(Resource::Steps(1), 2, 0, 0); // rungs at 1, 2, 4, 8
        let history = vec![
            trial(0, TrialState::Pruned, &[0.1, 0.1]), // values at rungs 1, 2
            trial(1, TrialState::Complete, &[3.0; 8]),
        ];
        // Rung 4: only trial 1 (3.0) competes: 2.0 wins.
        let t = trial(2, TrialState::Running, &[0.0, 0.0, 2.0, 2.0]);
        assert!(!decide(&p, &history, &t));
        // Rung 2: trial 0 (0.1), trial 1 (3.0), itself 0.5: idx 0 -> must beat 0.1.
        let t = trial(2, TrialState::Running, &[0.0, 0.5]);
        assert!(decide(&p, &history, &t));
        // An unsafe trial never competes.
        let mut history = history;
        history[0].prune_reason = Some("unsafe".into());
        assert!(!decide(&p, &history, &t));
    }

    #[test]
    fn nan_and_bootstrap() {
        let p = sh(Resource::Steps(1), 2, 0, 0);
        let t = trial(0, TrialState::Running, &[f64::NAN]);
        assert!(decide(&p, &[], &t));
        let p = sh(Resource::Steps(1), 2, 0, 2);
        let history = vec![trial(0, TrialState::Complete, &[5.0; 4])];
        // Rung 1 has trial 0 and itself: 2 <= bootstrap_count 2, pruned.
        assert!(decide(&p, &history, &trial(1, TrialState::Running, &[0.0])));
        let history = vec![
            trial(0, TrialState::Complete, &[5.0; 4]),
            trial(1, TrialState::Complete, &[5.0; 4]),
        ];
        assert!(!decide(
            &p,
            &history,
            &trial(2, TrialState::Running, &[0.0])
        ));
    }

    #[test]
    fn options() {
        let o: SuccessiveHalvingOptions = toml::from_str("min_resource = 5").unwrap();
        assert_eq!(o.min_resource, Resource::Steps(5));
        assert_eq!(o.reduction_factor, 4);
        let o: SuccessiveHalvingOptions = toml::from_str("min_resource = \"auto\"").unwrap();
        assert_eq!(o.min_resource, Resource::Auto);
        for bad in [
            "min_resource = 0",
            "min_resource = \"max\"",
            "min_resource = -1",
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            let e = super::super::build("successive_halving", Some(&t))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("min_resource") && e.contains("auto"),
                "{bad}: {e}"
            );
        }
        let t: toml::Table = toml::from_str("reduction_factor = 1").unwrap();
        let e = super::super::build("successive_halving", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pruner.successive_halving.reduction_factor"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("bootstrap_count = 1").unwrap();
        let e = super::super::build("successive_halving", Some(&t))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("bootstrap_count") && e.contains("min_resource"),
            "{e}"
        );
    }
}
