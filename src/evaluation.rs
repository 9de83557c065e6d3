//! Noise-aware evaluation: robot episodes are noisy, so the luckiest trial is not the best
//! gait. The top trials get more episodes (re-evaluation) and the *likely best* is chosen by
//! the mean over all of a trial's episodes, reported with its spread. Pure functions of the
//! stored trials; the daemon runs the episodes.

use serde::Serialize;

use crate::trial::{Direction, FrozenTrial, TrialState};

/// Trial attribute holding re-evaluation results: `{"returns": [..], "unsafe": detail?}`.
pub const REEVAL_ATTR: &str = "reeval";

/// A trial's returns over all its completed episodes, original and re-evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReturnStats {
    /// Number of episodes.
    pub n: usize,
    /// Mean episode return.
    pub mean: f64,
    /// Sample standard deviation (0 for one episode).
    pub sd: f64,
    /// Standard error of the mean (sd / √n).
    pub sem: f64,
}

impl ReturnStats {
    /// Statistics of `returns`; `None` when empty.
    pub fn of(returns: &[f64]) -> Option<ReturnStats> {
        let n = returns.len();
        if n == 0 {
            return None;
        }
        let mean = returns.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(ReturnStats {
            n,
            mean,
            sd,
            sem: sd / (n as f64).sqrt(),
        })
    }
}

/// Every completed episode return of a trial: its own episodes, then re-evaluation ones.
pub fn all_returns(trial: &FrozenTrial) -> Vec<f64> {
    let mut returns: Vec<f64> = trial
        .episodes
        .iter()
        .filter(|e| e.status == "Completed")
        .map(|e| e.episode_return)
        .collect();
    returns.extend(reeval_returns(trial));
    returns
}

/// The re-evaluation returns stored on a trial so far.
pub fn reeval_returns(trial: &FrozenTrial) -> Vec<f64> {
    trial
        .attrs
        .get(REEVAL_ATTR)
        .and_then(|r| r.get("returns"))
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default()
}

/// Whether a re-evaluation episode of this trial was stopped for safety.
pub fn reeval_unsafe(trial: &FrozenTrial) -> bool {
    trial
        .attrs
        .get(REEVAL_ATTR)
        .is_some_and(|r| r.get("unsafe").is_some())
}

/// The `k` best COMPLETE trials by value (ties: lower number first).
pub fn top_k(trials: &[FrozenTrial], direction: Direction, k: usize) -> Vec<&FrozenTrial> {
    let mut complete: Vec<&FrozenTrial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value.is_some())
        .collect();
    complete.sort_by(|a, b| {
        let (va, vb) = (a.value.unwrap(), b.value.unwrap());
        let ord = match direction {
            Direction::Maximize => vb.total_cmp(&va),
            Direction::Minimize => va.total_cmp(&vb),
        };
        ord.then(a.number.cmp(&b.number))
    });
    complete.truncate(k);
    complete
}

/// The likely best trial: among re-evaluated trials (none unsafe on re-evaluation), the best
/// mean return over all episodes. `None` if no trial was re-evaluated.
pub fn likely_best(
    trials: &[FrozenTrial],
    direction: Direction,
) -> Option<(&FrozenTrial, ReturnStats)> {
    trials
        .iter()
        .filter(|t| {
            t.state == TrialState::Complete && !reeval_returns(t).is_empty() && !reeval_unsafe(t)
        })
        .filter_map(|t| ReturnStats::of(&all_returns(t)).map(|s| (t, s)))
        .reduce(|best, cand| {
            let better = match direction {
                Direction::Maximize => cand.1.mean > best.1.mean,
                Direction::Minimize => cand.1.mean < best.1.mean,
            };
            if better {
                cand
            } else {
                best
            }
        })
}

/// How many of the best trials [`likely_best_by_model`] weighs.
pub const MODEL_TOP: usize = 10;

/// The likely best by a Gaussian process fitted to every COMPLETE trial: among the
/// [`MODEL_TOP`] best by their single measured value, the one whose posterior mean (the
/// noise-aware estimate of its true value) is best; with that mean. `None` without COMPLETE
/// trials.
pub fn likely_best_by_model<'a>(
    space: &crate::space::SearchSpace,
    trials: &'a [FrozenTrial],
    direction: Direction,
) -> Option<(&'a FrozenTrial, f64)> {
    let top = top_k(trials, direction, MODEL_TOP);
    let points: Vec<crate::space::Params> = top.iter().map(|t| t.params.clone()).collect();
    let means = crate::sampler::posterior_means(space, trials, &points)?;
    top.into_iter()
        .zip(means)
        .filter_map(|(t, m)| m.map(|m| (t, m)))
        .reduce(|best, cand| {
            let better = match direction {
                Direction::Maximize => cand.1 > best.1,
                Direction::Minimize => cand.1 < best.1,
            };
            if better {
                cand
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::EpisodeRecord;

    fn trial(number: u64, value: f64, episodes: &[f64], reeval: &[f64]) -> FrozenTrial {
        let mut t: FrozenTrial = serde_json::from_value(serde_json::json!({
            "number": number, "state": "COMPLETE", "params": {}, "value": value,
            "intermediate": {}, "prune_reason": null, "episodes": [],
            "started_at": null, "finished_at": null, "attrs": {}
        }))
        .unwrap();
        t.episodes = episodes
            .iter()
            .enumerate()
            .map(|(i, &r)| EpisodeRecord {
                episode: i as u32,
                episode_return: r,
                steps: 100,
                status: "Completed".into(),
                seed: None,
            })
            .collect();
        if !reeval.is_empty() {
            t.attrs
                .insert(REEVAL_ATTR.into(), serde_json::json!({ "returns": reeval }));
        }
        t
    }

    #[test]
    fn stats_are_the_textbook_ones() {
        let s = ReturnStats::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.sem - s.sd / 2.0).abs() < 1e-12);
        assert_eq!(ReturnStats::of(&[7.0]).unwrap().sd, 0.0);
        assert!(ReturnStats::of(&[]).is_none());
    }

    #[test]
    fn the_luckiest_trial_is_not_the_likely_best() {
        // Trial 0 had one lucky episode; trial 1 is consistently good.
        let trials = vec![
            trial(0, 10.0, &[10.0], &[4.0, 5.0, 3.0]),
            trial(1, 8.0, &[8.0], &[7.5, 8.2, 7.9]),
            trial(2, 1.0, &[1.0], &[]),
        ];
        let top: Vec<u64> = top_k(&trials, Direction::Maximize, 2)
            .iter()
            .map(|t| t.number)
            .collect();
        assert_eq!(top, vec![0, 1]);
        let (best, stats) = likely_best(&trials, Direction::Maximize).unwrap();
        assert_eq!(best.number, 1);
        assert_eq!(stats.n, 4);
        assert!((stats.mean - 7.9).abs() < 1e-9);
        let (best, _) = likely_best(&trials, Direction::Minimize).unwrap();
        assert_eq!(best.number, 0);
    }

    #[test]
    fn a_trial_unsafe_on_reevaluation_is_not_the_likely_best() {
        let mut t = trial(0, 10.0, &[10.0], &[9.0]);
        t.attrs.insert(
            REEVAL_ATTR.into(),
            serde_json::json!({ "returns": [9.0], "unsafe": { "limit": "max_roll_deg" } }),
        );
        let trials = vec![t, trial(1, 5.0, &[5.0], &[5.0])];
        assert_eq!(
            likely_best(&trials, Direction::Maximize).unwrap().0.number,
            1
        );
    }

    #[test]
    fn the_model_prefers_the_trial_its_neighbours_vouch_for() {
        use crate::space::{Distribution, Params, SearchSpace};
        let space = SearchSpace::new(vec![(
            "x".to_string(),
            Distribution::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: None,
            },
        )])
        .unwrap();
        // True value -(x - 0.3)²; trial 18 (x = 0.9) got a lucky +0.6 of noise, so it
        // measured best, but the smooth trend of its neighbours says x = 0.3 is better.
        let trials: Vec<FrozenTrial> = (0..21)
            .map(|i| {
                let x = i as f64 / 20.0;
                let noise = if i == 18 { 0.6 } else { 0.0 };
                let mut p = Params::new();
                p.insert("x".into(), x);
                FrozenTrial::new(
                    i,
                    TrialState::Complete,
                    p,
                    Some(-(x - 0.3f64).powi(2) + noise),
                )
            })
            .collect();
        assert_eq!(top_k(&trials, Direction::Maximize, 1)[0].number, 18);
        let (best, mean) = likely_best_by_model(&space, &trials, Direction::Maximize).unwrap();
        assert_ne!(best.number, 18, "the lucky trial is not the likely best");
        assert!((best.params["x"] - 0.3).abs() <= 0.1, "{best:?} {mean}");
    }
}
