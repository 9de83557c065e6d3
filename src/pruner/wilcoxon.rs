//! The Wilcoxon pruner (Optuna 5.0's `WilcoxonPruner`), for noisy episodes: pairs the
//! current trial's values with the best trial's by step (e.g. the same terrain or start
//! pose) and prunes when a one-sided Wilcoxon signed-rank test says the current trial is
//! worse with p below the threshold, unless its average is not worse than the best's.
//!
//! [`signed_rank_p_value`] is scipy's `wilcoxon(d, alternative=..., zero_method="zsplit")`
//! with the defaults Optuna relies on (`method="auto"`, no continuity correction), as of
//! scipy 1.17: an exact null distribution for n <= 50 without ties or zeros; otherwise an
//! exact sign-flip permutation test for n <= 13 and the normal approximation with tie
//! correction beyond.

use serde::{Deserialize, Serialize};

use super::{check, PruneRequest, Pruner, PrunerError};
use crate::trial::{Direction, FrozenTrial};

/// Options of the `wilcoxon` pruner (`[pruner.wilcoxon]`), with Optuna's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WilcoxonOptions {
    /// Prune when the test's p-value is below this, in [0, 1].
    pub p_threshold: f64,
    /// No pruning before this many steps can be paired with the best trial (at least 2
    /// are always needed).
    pub n_startup_steps: u64,
}

impl Default for WilcoxonOptions {
    fn default() -> Self {
        WilcoxonOptions {
            p_threshold: 0.1,
            n_startup_steps: 2,
        }
    }
}

/// Prunes a trial significantly worse than the best trial, paired by step.
#[derive(Debug, Clone)]
pub struct WilcoxonPruner {
    opts: WilcoxonOptions,
}

impl WilcoxonPruner {
    /// Validates the options; errors name the bad option.
    pub fn new(opts: WilcoxonOptions) -> Result<WilcoxonPruner, PrunerError> {
        check(
            (0.0..=1.0).contains(&opts.p_threshold),
            "wilcoxon",
            "p_threshold",
            || format!("must be between 0 and 1 (got {})", opts.p_threshold),
        )?;
        Ok(WilcoxonPruner { opts })
    }
}

/// The best COMPLETE reference trial (earliest on ties, as Optuna keeps the first best).
fn best_trial<'a>(req: &PruneRequest<'a>) -> Option<&'a FrozenTrial> {
    let mut best: Option<&FrozenTrial> = None;
    let mut complete: Vec<&FrozenTrial> = req
        .complete_trials()
        .filter(|t| t.value.is_some_and(|v| !v.is_nan()))
        .collect();
    complete.sort_by_key(|t| t.number);
    for t in complete {
        let v = t.value.unwrap_or(f64::NAN);
        if best.map_or(true, |b| {
            req.direction.is_better(v, b.value.unwrap_or(f64::NAN))
        }) {
            best = Some(t);
        }
    }
    best
}

impl Pruner for WilcoxonPruner {
    fn name(&self) -> &str {
        "wilcoxon"
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let cur = &req.trial.intermediate;
        if cur.is_empty() || cur.values().any(|v| !v.is_finite()) {
            return false;
        }
        let Some(best) = best_trial(req) else {
            return false;
        };
        let theirs = &best.intermediate;
        if theirs.is_empty() || theirs.values().any(|v| !v.is_finite()) {
            return false;
        }
        let diffs: Vec<f64> = cur
            .iter()
            .filter_map(|(s, v)| theirs.get(s).map(|b| v - b))
            .collect();
        if (diffs.len() as u64) < self.opts.n_startup_steps.max(2) {
            return false;
        }
        let mean = |m: &std::collections::BTreeMap<u64, f64>| {
            m.values().fold(0.0, |a, v| a + v) / m.len() as f64
        };
        let (alternative, average_is_best) = match req.direction {
            Direction::Maximize => (Alternative::Less, mean(theirs) <= mean(cur)),
            Direction::Minimize => (Alternative::Greater, mean(theirs) >= mean(cur)),
        };
        let p = signed_rank_p_value(&diffs, alternative);
        // Significantly worse by the test, but not worse on average: Optuna keeps it for
        // safety.
        p < self.opts.p_threshold && !average_is_best
    }
}

/// The alternative hypothesis of a one-sided signed-rank test on differences `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// The differences tend to be positive.
    Greater,
    /// The differences tend to be negative.
    Less,
}

/// The p-value of the one-sided Wilcoxon signed-rank test on the paired differences `d`,
/// as `scipy.stats.wilcoxon(d, alternative=..., zero_method="zsplit")` computes it (scipy
/// 1.17, `method="auto"`, no continuity correction). Zeros are kept and split half/half
/// between the positive and negative rank sums. NaN for an empty `d`; `d` must be finite.
pub fn signed_rank_p_value(d: &[f64], alternative: Alternative) -> f64 {
    let n = d.len();
    if n == 0 {
        return f64::NAN;
    }
    let (ranks, tie_sizes) = average_ranks(d);
    let r_plus = rank_sum_plus(d, &ranks, |i| d[i] > 0.0);
    let has_zero = d.contains(&0.0);
    let has_ties = tie_sizes.iter().any(|&t| t > 1);
    if n <= 50 && !has_ties && !has_zero {
        exact_p(n, r_plus, alternative)
    } else if n <= 13 {
        permutation_p(d, &ranks, r_plus, alternative)
    } else {
        let nf = n as f64;
        let mn = nf * (nf + 1.0) * 0.25;
        let tie_correct: f64 = tie_sizes.iter().map(|&t| (t * t * t - t) as f64).sum();
        let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_correct / 2.0) / 24.0).sqrt();
        let z = (r_plus - mn) / se;
        match alternative {
            Alternative::Greater => normal_cdf(-z),
            Alternative::Less => normal_cdf(z),
        }
    }
}

/// Ranks of `|d|` (1-based, ties get their average rank) and the sizes of the tie groups.
fn average_ranks(d: &[f64]) -> (Vec<f64>, Vec<u64>) {
    let mut order: Vec<usize> = (0..d.len()).collect();
    order.sort_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()));
    let mut ranks = vec![0.0; d.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && d[order[j]].abs() == d[order[i]].abs() {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let avg = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = avg;
        }
        ties.push((j - i) as u64);
        i = j;
    }
    (ranks, ties)
}

/// The positive rank sum with zero-split: ranks of entries where `positive(i)`, plus half
/// the ranks of the zeros.
fn rank_sum_plus(d: &[f64], ranks: &[f64], positive: impl Fn(usize) -> bool) -> f64 {
    let mut plus = 0.0;
    let mut zeros = 0.0;
    for i in 0..d.len() {
        if d[i] == 0.0 {
            zeros += ranks[i];
        } else if positive(i) {
            plus += ranks[i];
        }
    }
    plus + zeros / 2.0
}

/// Exact p-value from the null distribution of the rank sum over `1..=n` (no ties, no
/// zeros): `P(T >= floor(r))` for `Greater`, `P(T <= ceil(r))` for `Less`.
fn exact_p(n: usize, r_plus: f64, alternative: Alternative) -> f64 {
    let max = n * (n + 1) / 2;
    // counts[k]: subsets of {1..n} summing to k (at most 2^50, fits u64).
    let mut counts = vec![0u64; max + 1];
    counts[0] = 1;
    for i in 1..=n {
        for k in (i..=max).rev() {
            counts[k] += counts[k - i];
        }
    }
    let total = (1u64 << n) as f64;
    let tail: u64 = match alternative {
        Alternative::Greater => {
            let k = r_plus.floor().max(0.0) as usize;
            counts.iter().skip(k).sum()
        }
        Alternative::Less => {
            let k = r_plus.ceil();
            if k < 0.0 {
                0
            } else {
                counts.iter().take(k as usize + 1).sum()
            }
        }
    };
    tail as f64 / total
}

/// scipy's exact permutation test for small samples with ties or zeros: the rank sum under
/// all `2^n` sign flips, compared with the observed one with a relative tolerance of
/// `100 * eps`.
fn permutation_p(d: &[f64], ranks: &[f64], observed: f64, alternative: Alternative) -> f64 {
    let n = d.len();
    let gamma = (f64::EPSILON * 100.0 * observed).abs();
    let mut hits = 0u64;
    for mask in 0u64..(1u64 << n) {
        let flipped = |i: usize| (mask >> i) & 1 == 1;
        let stat = rank_sum_plus(d, ranks, |i| (d[i] > 0.0) != flipped(i));
        let hit = match alternative {
            Alternative::Greater => stat >= observed - gamma,
            Alternative::Less => stat <= observed + gamma,
        };
        hits += u64::from(hit);
    }
    hits as f64 / (1u64 << n) as f64
}

/// The standard normal CDF, `0.5 * erfc(-x / sqrt 2)`, accurate to about 1e-15 absolute
/// (1e-13 relative in the far tails).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function, to about 1e-15 relative: for `x < 1.5` one minus the
/// all-positive series `erf(x) = 2/sqrt(pi) exp(-x^2) sum 2^n x^(2n+1) / (2n+1)!!`; beyond,
/// the continued fraction `exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + (2/2)/(x + ...)))`.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 1.5 {
        let mut term = x;
        let mut sum = 0.0;
        for n in 1..200 {
            sum += term;
            term *= 2.0 * x * x / f64::from(2 * n + 1);
            if term <= 1e-17 * sum {
                break;
            }
        }
        1.0 - std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
    } else if x > 27.0 {
        0.0
    } else {
        let mut f = x;
        for k in (1..=200).rev() {
            f = x + (f64::from(k) / 2.0) / f;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{trial, trial_at};
    use super::*;
    use crate::trial::TrialState;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn normal_cdf_reference_values() {
        // scipy.special.ndtr
        let cases = [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, 0.158_655_253_931_457_05),
            (-2.5, 0.006_209_665_325_776_132),
            (-4.0, 3.167_124_183_311_992e-5),
            (-6.0, 9.865_876_450_376_98e-10),
            (2.9, 0.998_134_186_699_616_4),
        ];
        for (x, want) in cases {
            assert!(
                close(normal_cdf(x), want, 1e-12),
                "ndtr({x}) = {}",
                normal_cdf(x)
            );
        }
    }

    #[test]
    fn p_values_match_scipy() {
        use Alternative::*;
        // Each expected value is scipy.stats.wilcoxon(d, alternative=alt,
        // zero_method="zsplit").pvalue with scipy 1.17.1.
        let exact5 = [0.5, 1.5, -0.25, 2.0, 3.0];
        assert!(close(signed_rank_p_value(&exact5, Greater), 0.0625, 1e-12));
        assert!(close(signed_rank_p_value(&exact5, Less), 0.96875, 1e-12));
        for &(label, d, alt, want) in SCIPY_CASES {
            let got = signed_rank_p_value(d, alt);
            assert!(close(got, want, 1e-9), "{label} {alt:?}: {got} != {want}");
        }
        assert!(signed_rank_p_value(&[], Greater).is_nan());
    }

    /// (label, d, alternative, scipy 1.17.1 p-value); generated with
    /// `scipy.stats.wilcoxon(d, alternative=alt, zero_method="zsplit").pvalue`.
    const SCIPY_CASES: &[(&str, &[f64], Alternative, f64)] = &[
        (
            "exact n=8",
            &[0.3, -1.2, 2.5, 0.7, -0.1, 1.9, 3.3, -0.45],
            Alternative::Greater,
            0.125,
        ),
        (
            "exact n=8",
            &[0.3, -1.2, 2.5, 0.7, -0.1, 1.9, 3.3, -0.45],
            Alternative::Less,
            0.90234375,
        ),
        (
            "exact n=20",
            &[
                0.40123, 0.698746, 0.125862, -0.490592, -0.054671, -0.591647, 0.460144, 1.740215,
                -0.092207, -0.220475, 0.889842, 0.756887, 0.505414, -0.530468, 0.370748, 1.095303,
                -0.944215, -0.057616, -1.501223, -0.889538,
            ],
            Alternative::Greater,
            0.35059070587158203,
        ),
        (
            "exact n=20",
            &[
                0.40123, 0.698746, 0.125862, -0.490592, -0.054671, -0.591647, 0.460144, 1.740215,
                -0.092207, -0.220475, 0.889842, 0.756887, 0.505414, -0.530468, 0.370748, 1.095303,
                -0.944215, -0.057616, -1.501223, -0.889538,
            ],
            Alternative::Less,
            0.6628885269165039,
        ),
        (
            "exact n=50",
            &[
                -1.641735, -0.035091, -1.067446, 0.471264, 0.356751, 0.013069, -2.31676, -0.338693,
                0.151499, 0.313309, -1.330136, -0.277753, -0.778519, -0.608837, 1.260899,
                -0.607535, 0.167478, 1.08439, -0.3836, 0.088298, 0.310464, 0.263782, -1.025056,
                0.27614, 1.558823, -1.347145, 1.059383, 0.319354, -0.44147, 2.200417, 0.96226,
                -0.999289, 0.274516, 0.77669, 0.011218, 0.88291, 0.133483, 0.867248, 1.638523,
                -0.475662, 0.403139, -0.263308, 0.327268, -0.987195, -0.379302, 0.003804, 1.098764,
                1.345222, -1.123528, -0.594642,
            ],
            Alternative::Greater,
            0.41290816490509563,
        ),
        (
            "exact n=50",
            &[
                -1.641735, -0.035091, -1.067446, 0.471264, 0.356751, 0.013069, -2.31676, -0.338693,
                0.151499, 0.313309, -1.330136, -0.277753, -0.778519, -0.608837, 1.260899,
                -0.607535, 0.167478, 1.08439, -0.3836, 0.088298, 0.310464, 0.263782, -1.025056,
                0.27614, 1.558823, -1.347145, 1.059383, 0.319354, -0.44147, 2.200417, 0.96226,
                -0.999289, 0.274516, 0.77669, 0.011218, 0.88291, 0.133483, 0.867248, 1.638523,
                -0.475662, 0.403139, -0.263308, 0.327268, -0.987195, -0.379302, 0.003804, 1.098764,
                1.345222, -1.123528, -0.594642,
            ],
            Alternative::Less,
            0.59081486170966,
        ),
        (
            "permutation: zeros",
            &[0.0, 1.0, -2.0, 3.0, 0.5],
            Alternative::Greater,
            0.25,
        ),
        (
            "permutation: zeros",
            &[0.0, 1.0, -2.0, 3.0, 0.5],
            Alternative::Less,
            0.8125,
        ),
        (
            "permutation: ties",
            &[1.0, 1.0, -1.0, 2.0, 3.0, 2.0],
            Alternative::Greater,
            0.0625,
        ),
        (
            "permutation: ties",
            &[1.0, 1.0, -1.0, 2.0, 3.0, 2.0],
            Alternative::Less,
            0.984375,
        ),
        (
            "permutation: all zeros",
            &[0.0, 0.0, 0.0, 0.0],
            Alternative::Greater,
            1.0,
        ),
        (
            "permutation: all zeros",
            &[0.0, 0.0, 0.0, 0.0],
            Alternative::Less,
            1.0,
        ),
        (
            "permutation: n=13 ties",
            &[
                1.0, 2.0, 2.0, -3.0, 4.0, 5.0, -5.0, 6.0, 7.0, 8.0, -9.0, 10.0, 10.0,
            ],
            Alternative::Greater,
            0.049560546875,
        ),
        (
            "permutation: n=13 ties",
            &[
                1.0, 2.0, 2.0, -3.0, 4.0, 5.0, -5.0, 6.0, 7.0, 8.0, -9.0, 10.0, 10.0,
            ],
            Alternative::Less,
            0.95556640625,
        ),
        (
            "asymptotic: n=14 ties",
            &[
                1.0, 2.0, 2.0, -3.0, 4.0, 5.0, -5.0, 6.0, 7.0, 8.0, -9.0, 10.0, 10.0, 11.0,
            ],
            Alternative::Greater,
            0.025736779704270334,
        ),
        (
            "asymptotic: n=14 ties",
            &[
                1.0, 2.0, 2.0, -3.0, 4.0, 5.0, -5.0, 6.0, 7.0, 8.0, -9.0, 10.0, 10.0, 11.0,
            ],
            Alternative::Less,
            0.9742632202957296,
        ),
        (
            "asymptotic: n=30 zeros",
            &[
                0.9, -1.7, -0.2, 0.2, 1.6, 1.0, -0.0, -0.1, 0.0, 1.8, -0.1, -0.0, 0.7, 0.2, 0.1,
                -0.8, 0.3, -0.1, 1.5, 1.0, 0.3, 1.0, -0.0, 1.4, 0.3, 0.9, -1.0, 0.6, -1.4, -1.7,
            ],
            Alternative::Greater,
            0.05412898740692434,
        ),
        (
            "asymptotic: n=30 zeros",
            &[
                0.9, -1.7, -0.2, 0.2, 1.6, 1.0, -0.0, -0.1, 0.0, 1.8, -0.1, -0.0, 0.7, 0.2, 0.1,
                -0.8, 0.3, -0.1, 1.5, 1.0, 0.3, 1.0, -0.0, 1.4, 0.3, 0.9, -1.0, 0.6, -1.4, -1.7,
            ],
            Alternative::Less,
            0.9458710125930757,
        ),
        (
            "asymptotic: n=60",
            &[
                -0.404477, -0.999928, 0.064053, 2.144757, -0.931723, -0.723944, 0.105404, 0.393013,
                -0.276406, -0.30593, 0.602463, 0.419908, -1.133676, -0.179181, -0.064713,
                -1.154485, 0.159839, -0.957956, 0.872067, 0.092746, -0.010694, -0.691028, -0.21861,
                -2.097746, -1.231407, 0.26284, -2.228567, 0.746609, -1.846096, 0.656739, -0.945497,
                0.678991, 0.030951, -1.636835, 1.149149, 1.341707, -0.165805, -0.373916, -0.259867,
                -1.075152, 0.998587, -0.642892, -0.15119, -0.893296, -0.726073, -1.377725,
                1.157069, -0.254088, 0.865922, -0.086675, -0.794404, -0.426685, -0.660231,
                -0.092041, -0.475267, -0.399922, -1.478575, -0.906846, 1.554058, -0.771233,
            ],
            Alternative::Greater,
            0.9916334641961483,
        ),
        (
            "asymptotic: n=60",
            &[
                -0.404477, -0.999928, 0.064053, 2.144757, -0.931723, -0.723944, 0.105404, 0.393013,
                -0.276406, -0.30593, 0.602463, 0.419908, -1.133676, -0.179181, -0.064713,
                -1.154485, 0.159839, -0.957956, 0.872067, 0.092746, -0.010694, -0.691028, -0.21861,
                -2.097746, -1.231407, 0.26284, -2.228567, 0.746609, -1.846096, 0.656739, -0.945497,
                0.678991, 0.030951, -1.636835, 1.149149, 1.341707, -0.165805, -0.373916, -0.259867,
                -1.075152, 0.998587, -0.642892, -0.15119, -0.893296, -0.726073, -1.377725,
                1.157069, -0.254088, 0.865922, -0.086675, -0.794404, -0.426685, -0.660231,
                -0.092041, -0.475267, -0.399922, -1.478575, -0.906846, 1.554058, -0.771233,
            ],
            Alternative::Less,
            0.008366535803851717,
        ),
        (
            "asymptotic: n=120 ties",
            &[
                -1.0, 0.4, 1.5, -1.4, -0.2, -0.6, -1.7, 0.8, 0.0, 0.1, -0.7, 0.5, -0.5, -0.1, -1.1,
                -1.2, 1.4, -0.5, 0.3, 0.0, -0.4, -0.5, 0.7, -0.3, -0.1, 0.1, 1.2, 0.7, 0.4, -0.5,
                -1.3, 1.0, 1.0, -0.1, 0.6, 0.8, 0.9, 1.0, -0.4, 1.6, -1.2, 0.9, 0.5, 0.9, 1.9, 1.5,
                -1.1, -1.6, 0.9, -1.0, 0.0, 0.9, -1.6, -2.1, 0.3, 0.1, -0.2, 0.1, -0.8, -1.5, -0.1,
                -0.9, -1.6, 0.6, -0.0, 0.5, -0.9, -0.6, -0.9, -0.8, 0.2, -0.7, 0.4, 0.4, 2.1, -1.3,
                0.9, -0.0, 0.0, -1.4, -0.4, 0.8, -0.0, 0.1, -0.2, 1.2, 0.0, -2.2, -0.6, -1.9, -3.2,
                -0.5, 1.4, 0.1, -1.1, -0.9, 1.2, 0.2, 0.1, -0.0, 0.1, 0.9, 0.6, 0.3, -1.0, 0.6,
                -0.6, 1.1, -1.2, -0.1, 0.0, -1.3, 1.8, 1.5, -0.4, 0.8, 0.4, -2.6, 0.3, -0.0,
            ],
            Alternative::Greater,
            0.704423513256053,
        ),
        (
            "asymptotic: n=120 ties",
            &[
                -1.0, 0.4, 1.5, -1.4, -0.2, -0.6, -1.7, 0.8, 0.0, 0.1, -0.7, 0.5, -0.5, -0.1, -1.1,
                -1.2, 1.4, -0.5, 0.3, 0.0, -0.4, -0.5, 0.7, -0.3, -0.1, 0.1, 1.2, 0.7, 0.4, -0.5,
                -1.3, 1.0, 1.0, -0.1, 0.6, 0.8, 0.9, 1.0, -0.4, 1.6, -1.2, 0.9, 0.5, 0.9, 1.9, 1.5,
                -1.1, -1.6, 0.9, -1.0, 0.0, 0.9, -1.6, -2.1, 0.3, 0.1, -0.2, 0.1, -0.8, -1.5, -0.1,
                -0.9, -1.6, 0.6, -0.0, 0.5, -0.9, -0.6, -0.9, -0.8, 0.2, -0.7, 0.4, 0.4, 2.1, -1.3,
                0.9, -0.0, 0.0, -1.4, -0.4, 0.8, -0.0, 0.1, -0.2, 1.2, 0.0, -2.2, -0.6, -1.9, -3.2,
                -0.5, 1.4, 0.1, -1.1, -0.9, 1.2, 0.2, 0.1, -0.0, 0.1, 0.9, 0.6, 0.3, -1.0, 0.6,
                -0.6, 1.1, -1.2, -0.1, 0.0, -1.3, 1.8, 1.5, -0.4, 0.8, 0.4, -2.6, 0.3, -0.0,
            ],
            Alternative::Less,
            0.29557648674394704,
        ),
    ];

    fn run(p: &WilcoxonPruner, history: &[FrozenTrial], t: &FrozenTrial, d: Direction) -> bool {
        p.prune(&PruneRequest {
            study_name: "s",
            direction: d,
            history,
            trial: t,
            step: t.last_intermediate().unwrap().0,
        })
    }

    #[test]
    fn prunes_a_trial_consistently_worse_than_the_best() {
        let p = WilcoxonPruner::new(WilcoxonOptions::default()).unwrap();
        let best: Vec<f64> = (0..10).map(|i| (i as f64 * 1.7).sin()).collect();
        let mut history = vec![
            trial(0, TrialState::Complete, &best),
            trial(
                1,
                TrialState::Complete,
                &best.iter().map(|v| v + 5.0).collect::<Vec<_>>(),
            ),
        ];
        history[0].value = Some(0.0);
        history[1].value = Some(5.0);
        // Worse by 1 at every step (minimise): after 4 paired steps p = 1/16 < 0.1.
        let worse = |n: usize| {
            trial(
                2,
                TrialState::Running,
                &best[..n].iter().map(|v| v + 1.0).collect::<Vec<_>>(),
            )
        };
        assert!(!run(&p, &history, &worse(3), Direction::Minimize)); // p = 1/8
        assert!(run(&p, &history, &worse(4), Direction::Minimize));
        // The same trial is better than trial 0 when maximising.
        assert!(!run(&p, &history[..1], &worse(4), Direction::Maximize));
        // ... but significantly worse than trial 1, the best when maximising.
        assert!(run(&p, &history, &worse(4), Direction::Maximize));
        // n_startup_steps delays it.
        let late = WilcoxonPruner::new(WilcoxonOptions {
            n_startup_steps: 6,
            ..WilcoxonOptions::default()
        })
        .unwrap();
        assert!(!run(&late, &history, &worse(5), Direction::Minimize));
        assert!(run(&late, &history, &worse(6), Direction::Minimize));
        // Non-finite values: never pruned.
        let mut nan = worse(6);
        nan.intermediate.insert(99, f64::INFINITY);
        assert!(!run(&p, &history, &nan, Direction::Minimize));
        // No complete trial: no best, no pruning.
        assert!(!run(&p, &[], &worse(6), Direction::Minimize));
    }

    #[test]
    fn pairs_by_step_and_respects_the_average_safety() {
        let p = WilcoxonPruner::new(WilcoxonOptions::default()).unwrap();
        let mut best = trial_at(
            0,
            TrialState::Complete,
            &[(3, 1.0), (7, 2.0), (9, 3.0), (11, 4.0), (20, 0.0)],
        );
        best.value = Some(1.0);
        let history = vec![best];
        // Only steps 3, 7, 9, 11 pair up; each worse by 0.5.
        let t = trial_at(
            1,
            TrialState::Running,
            &[(3, 1.5), (7, 2.5), (9, 3.5), (11, 4.5), (30, 0.0)],
        );
        // Paired diffs all +0.5 -> p = 1/16, and its average over all its steps (2.4) is
        // worse than the best's (2.0): pruned.
        assert!(run(&p, &history, &t, Direction::Minimize));
        // A very good unpaired step makes its average better than the best's: kept.
        let t = trial_at(
            1,
            TrialState::Running,
            &[(3, 1.5), (7, 2.5), (9, 3.5), (11, 4.5), (30, -9.0)],
        );
        assert!(!run(&p, &history, &t, Direction::Minimize));
    }
}
