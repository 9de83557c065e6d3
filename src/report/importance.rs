//! Parameter importances by PED-ANOVA (Watanabe et al., "PED-ANOVA: Efficiently Quantifying
//! Hyperparameter Importance in Arbitrary Subspaces", IJCAI 2023), as Optuna's
//! `PedAnovaImportanceEvaluator` defines them: for each parameter, how far the distribution of
//! its values among the top trials (the best `TOP_QUANTILE` of the COMPLETE ones) is from its
//! distribution among all of them, measured by the Pearson χ² divergence on a grid. A
//! parameter whose good values are spread like all values matters little; one whose good
//! values crowd in a corner matters. Importances are normalised to sum to 1.
//!
//! Densities: numeric parameters on a grid of `GRID` points over the [0, 1]-normalised range
//! (log parameters in log space), each a Gaussian kernel density (Scott's bandwidth, never
//! narrower than one grid cell) mixed with a uniform prior of one observation's weight;
//! categorical parameters by counts, with the same prior. Pure: no I/O.

use crate::space::{Distribution, Params, SearchSpace};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// The share of COMPLETE trials that counts as "top".
pub const TOP_QUANTILE: f64 = 0.1;
/// Grid points of a numeric parameter's density.
const GRID: usize = 50;
/// Fewest COMPLETE trials before importances are computed.
pub const MIN_TRIALS: usize = 10;

/// One parameter's importance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Importance {
    /// The parameter's name.
    pub name: String,
    /// Its share of the total divergence (the importances sum to 1).
    pub importance: f64,
}

/// The importances of the space's parameters from the COMPLETE trials of `trials`, largest
/// first; empty with fewer than [`MIN_TRIALS`] of them.
pub fn ped_anova(
    space: &SearchSpace,
    trials: &[FrozenTrial],
    direction: Direction,
) -> Vec<Importance> {
    let mut done: Vec<&FrozenTrial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite))
        .collect();
    if done.len() < MIN_TRIALS {
        return Vec::new();
    }
    let sign = match direction {
        Direction::Minimize => 1.0,
        Direction::Maximize => -1.0,
    };
    done.sort_by(|a, b| (sign * a.value.unwrap()).total_cmp(&(sign * b.value.unwrap())));
    let top_n = ((done.len() as f64 * TOP_QUANTILE).ceil() as usize).max(2);
    let top: Vec<&Params> = done[..top_n].iter().map(|t| &t.params).collect();
    let all: Vec<&Params> = done.iter().map(|t| &t.params).collect();
    let mut out: Vec<Importance> = space
        .iter()
        .map(|(name, dist)| Importance {
            name: name.to_string(),
            importance: divergence(&density(dist, name, &top), &density(dist, name, &all)),
        })
        .collect();
    let total: f64 = out.iter().map(|i| i.importance).sum();
    if total > 0.0 {
        for i in &mut out {
            i.importance /= total;
        }
    }
    out.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    out
}

/// Pearson χ² divergence of `p` from `q` (both on the same grid, each summing to 1).
fn divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&p, &q)| {
            if q > 0.0 {
                q * (p / q - 1.0).powi(2)
            } else {
                0.0
            }
        })
        .sum()
}

/// The density of parameter `name`'s values in `params` on its grid (sums to 1).
fn density(dist: &Distribution, name: &str, params: &[&Params]) -> Vec<f64> {
    let values: Vec<f64> = params.iter().filter_map(|p| p.get(name).copied()).collect();
    let n = values.len() as f64;
    let mut grid = match dist {
        Distribution::Categorical { choices } => {
            let mut counts = vec![0.0; choices.len()];
            for &v in &values {
                if let Some(c) = counts.get_mut(v.round().max(0.0) as usize) {
                    *c += 1.0;
                }
            }
            counts
        }
        _ => {
            let xs: Vec<f64> = values.iter().map(|&v| unit(dist, v)).collect();
            let mean = xs.iter().sum::<f64>() / n.max(1.0);
            let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.max(1.0)).sqrt();
            let cell = 1.0 / (GRID - 1) as f64;
            let h = (1.06 * sd * n.max(1.0).powf(-0.2)).max(cell);
            (0..GRID)
                .map(|g| {
                    let at = g as f64 * cell;
                    xs.iter()
                        .map(|x| (-0.5 * ((at - x) / h).powi(2)).exp())
                        .sum::<f64>()
                })
                .collect()
        }
    };
    // Each observation's kernel weighs 1 on the grid; the prior weighs one observation.
    let mass: f64 = grid.iter().sum();
    let k = grid.len() as f64;
    for g in &mut grid {
        *g = (if mass > 0.0 { *g / mass * n } else { 0.0 } + 1.0 / k) / (n + 1.0);
    }
    grid
}

/// A numeric value on [0, 1] over its range (log parameters in log space).
fn unit(dist: &Distribution, v: f64) -> f64 {
    let (lo, hi, log) = match *dist {
        Distribution::Float { low, high, log, .. } => (low, high, log),
        Distribution::Int { low, high, log, .. } => (low as f64, high as f64, log),
        Distribution::Categorical { .. } => return v,
    };
    let (lo, hi, v) = if log {
        (lo.ln(), hi.ln(), v.max(f64::MIN_POSITIVE).ln())
    } else {
        (lo, hi, v)
    };
    if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Choice;

    #[test]
    fn the_parameter_that_decides_the_value_is_the_important_one() {
        let space = SearchSpace::new(vec![
            (
                "matters".into(),
                Distribution::Float {
                    low: 0.0,
                    high: 1.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "noise".into(),
                Distribution::Float {
                    low: 1e-3,
                    high: 1.0,
                    log: true,
                    step: None,
                },
            ),
            (
                "mode".into(),
                Distribution::Categorical {
                    choices: vec![Choice::Text("a".into()), Choice::Text("b".into())],
                },
            ),
        ])
        .unwrap();
        // A deterministic spread of points: `matters` alone sets the value.
        let trials: Vec<FrozenTrial> = (0..60)
            .map(|i| {
                let m = (i as f64 * 0.618_033_988_7) % 1.0;
                let z = (i as f64 * 0.414_213_562_3) % 1.0;
                let mut p = Params::new();
                p.insert("matters".into(), m);
                p.insert("noise".into(), 1e-3f64.powf(1.0 - z));
                p.insert("mode".into(), (i % 2) as f64);
                FrozenTrial::new(i, TrialState::Complete, p, Some((m - 0.8).powi(2)))
            })
            .collect();
        let imp = ped_anova(&space, &trials, Direction::Minimize);
        assert_eq!(imp[0].name, "matters", "{imp:?}");
        assert!(imp[0].importance > 0.8, "{imp:?}");
        let total: f64 = imp.iter().map(|i| i.importance).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // Maximising the same values makes the far end of `matters` the top: still it.
        assert_eq!(
            ped_anova(&space, &trials, Direction::Maximize)[0].name,
            "matters"
        );
        assert!(ped_anova(&space, &trials[..5], Direction::Minimize).is_empty());
    }
}
