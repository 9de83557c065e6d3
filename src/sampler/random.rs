//! Uniform random search: the baseline every other sampler must beat, and the start-up
//! phase of model-based samplers.

use super::{SampleRequest, Sampler, TrialRng};
use crate::space::{Distribution, Params};

/// Samples every parameter independently and uniformly in its internal space: log-uniform
/// for log scales, uniformly over the grid points for stepped floats and ints, a uniform
/// choice index for categoricals. Trial `n`'s parameters depend only on the seed and `n`.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    seed: u64,
}

impl RandomSampler {
    /// A random sampler with the given seed.
    pub fn new(seed: u64) -> RandomSampler {
        RandomSampler { seed }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Draws one value of `dist` from `rng` (shared with other samplers for their random
/// start-up trials and for parameters they do not model).
pub fn sample_distribution(dist: &Distribution, rng: &mut TrialRng) -> f64 {
    match *dist {
        Distribution::Float {
            low,
            high,
            log,
            step,
        } => {
            if let Some(step) = step {
                let n = ((high - low) / step).round() as u64;
                let k = rng.below(n + 1);
                return dist.snap(low + k as f64 * step);
            }
            let x = if log {
                rng.uniform(low.ln(), high.ln()).exp()
            } else {
                rng.uniform(low, high)
            };
            x.clamp(low, high)
        }
        Distribution::Int {
            low,
            high,
            step,
            log,
        } => {
            if log {
                // As Optuna: log-uniform over [low - 0.5, high + 0.5], rounded, so every
                // integer gets the mass of its rounding interval.
                let lo = (low as f64 - 0.5).ln();
                let hi = (high as f64 + 0.5).ln();
                dist.snap(rng.uniform(lo, hi).exp())
            } else {
                let n = ((high as i128 - low as i128) / step as i128) as u64;
                let k = rng.below(n + 1);
                (low as i128 + k as i128 * step as i128) as f64
            }
        }
        Distribution::Categorical { ref choices } => rng.below(choices.len() as u64) as f64,
    }
}

impl Sampler for RandomSampler {
    fn name(&self) -> &str {
        "random"
    }

    fn sample(&mut self, request: &SampleRequest<'_>) -> Params {
        let mut rng = TrialRng::for_trial(self.seed, request.trial_number, 0);
        request
            .space
            .iter()
            .map(|(name, dist)| (name.to_string(), sample_distribution(dist, &mut rng)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;
    use crate::trial::Direction;

    fn req(space: &SearchSpace, trial_number: u64) -> SampleRequest<'_> {
        SampleRequest {
            space,
            history: &[],
            direction: Direction::Maximize,
            trial_number,
        }
    }
    use crate::space::Choice;

    fn space() -> SearchSpace {
        SearchSpace::new([
            (
                "f".to_string(),
                Distribution::Float {
                    low: -1.0,
                    high: 2.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "flog".to_string(),
                Distribution::Float {
                    low: 1e-3,
                    high: 10.0,
                    log: true,
                    step: None,
                },
            ),
            (
                "fstep".to_string(),
                Distribution::Float {
                    low: 0.5,
                    high: 4.0,
                    log: false,
                    step: Some(0.1),
                },
            ),
            (
                "i".to_string(),
                Distribution::Int {
                    low: -3,
                    high: 9,
                    step: 3,
                    log: false,
                },
            ),
            (
                "ilog".to_string(),
                Distribution::Int {
                    low: 1,
                    high: 1000,
                    step: 1,
                    log: true,
                },
            ),
            (
                "c".to_string(),
                Distribution::Categorical {
                    choices: vec![
                        Choice::Text("a".into()),
                        Choice::Text("b".into()),
                        Choice::Text("c".into()),
                    ],
                },
            ),
        ])
        .unwrap()
    }

    #[test]
    fn draws_are_valid_and_cover_the_space() {
        let s = space();
        let mut sampler = RandomSampler::new(42);
        let n = 3000;
        let draws: Vec<Params> = (0..n).map(|t| sampler.sample(&req(&s, t))).collect();
        for p in &draws {
            s.check_params(p).unwrap();
        }
        let col = |name: &str| draws.iter().map(|p| p[name]).collect::<Vec<f64>>();

        // Int grid: all 5 points (-3, 0, 3, 6, 9) appear.
        let mut ints = col("i");
        ints.sort_by(f64::total_cmp);
        ints.dedup();
        assert_eq!(ints, [-3.0, 0.0, 3.0, 6.0, 9.0]);
        // Both ends of the float step grid are reachable.
        let fs = col("fstep");
        assert!(fs.contains(&0.5) && fs.iter().any(|&x| (x - 4.0).abs() < 1e-12));
        // Categorical: every index.
        for k in 0..3 {
            assert!(col("c").contains(&(k as f64)));
        }
        // Log-uniform: about half the mass below the geometric midpoint sqrt(1e-3 * 10) = 0.1.
        let below = col("flog").iter().filter(|&&x| x < 0.1).count() as f64 / n as f64;
        assert!((below - 0.5).abs() < 0.05, "{below}");
        // Uniform float: about a third below 0.
        let neg = col("f").iter().filter(|&&x| x < 0.0).count() as f64 / n as f64;
        assert!((neg - 1.0 / 3.0).abs() < 0.05, "{neg}");
        // Int log: P(x <= 22) = ln(22.5 / 0.5) / ln(1000.5 / 0.5) = 0.50.
        let small = col("ilog").iter().filter(|&&x| x <= 22.0).count() as f64 / n as f64;
        assert!((small - 0.5).abs() < 0.05, "{small}");
    }

    #[test]
    fn deterministic_per_seed_and_trial_regardless_of_history_and_order() {
        let s = space();
        let mut a = RandomSampler::new(1);
        let mut b = RandomSampler::new(1);
        let forward: Vec<Params> = (0..20).map(|t| a.sample(&req(&s, t))).collect();
        let backward: Vec<Params> = (0..20).rev().map(|t| b.sample(&req(&s, t))).collect();
        assert_eq!(forward, backward.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(forward[0], forward[1]);
        let other = RandomSampler::new(2).sample(&req(&s, 0));
        assert_ne!(forward[0], other);
    }

    #[test]
    fn degenerate_ranges_give_the_single_value() {
        let s = SearchSpace::new([
            (
                "a".to_string(),
                Distribution::Float {
                    low: 2.0,
                    high: 2.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "b".to_string(),
                Distribution::Int {
                    low: 5,
                    high: 5,
                    step: 1,
                    log: true,
                },
            ),
        ])
        .unwrap();
        let p = RandomSampler::new(0).sample(&req(&s, 3));
        assert_eq!((p["a"], p["b"]), (2.0, 5.0));
    }
}
