//! Output warping: the objective values through a power transform fitted to them before the
//! GP sees them, as HEBO does (Cowen-Rivers et al. 2022, the NeurIPS 2020 black-box
//! optimisation challenge's winner).
//!
//! A GP assumes its values are Gaussian around a smooth function. Costs rarely are: a
//! sphere's or a falling robot's bad trials are orders of magnitude worse than the good ones,
//! so after plain standardisation every good trial sits at nearly the same value, the
//! fitted length scales and noise describe the bad region, and the model cannot tell the
//! good trials apart. A Yeo-Johnson transform whose exponent λ maximises the normal
//! likelihood of the transformed values compresses such a tail (λ < 1, `ln(1 + c)` at
//! λ = 0) and leaves near-Gaussian values almost linear (λ ≈ 1). The transform is monotone,
//! so the best trial stays the best; expected improvement is taken in the warped units.
//! The sampler fits λ twice per ask: to independent normal values first (the data the
//! hyperparameters are fitted to), then by the fitted GP's own likelihood ([`warp`] with
//! `quad`).
//!
//! The transform works on costs (values to minimise) centred on their median and scaled by
//! their standard deviation (HEBO only scales), so adding a constant to the objective or
//! scaling it changes nothing, and a maximised objective's low tail is the one compressed
//! (λ < 1 also stretches the good side below the median).

/// The quadratic form `yᵀ K⁻¹ y` of a GP's covariance, for [`warp`].
pub(crate) type Quad<'a> = &'a dyn Fn(&[f64]) -> f64;

/// The exponents λ searched: Yeo-Johnson's usual bracket.
const LAMBDA_RANGE: (f64, f64) = (-2.0, 2.0);

/// `values` (maximised; finite) warped and standardised: mean 0, standard deviation 1, the
/// same order. Returns the fitted λ too (`None` where the values are constant and nothing was
/// fitted).
///
/// `quad`, if given, is the quadratic form `yᵀ K⁻¹ y` of the GP's covariance: λ then
/// maximises the GP's marginal likelihood of the values (a warped GP, Snelson et al. 2004)
/// at the kernel's current hyperparameters; without it, the likelihood of independent
/// normal values (the plain Yeo-Johnson fit).
pub(crate) fn warp(values: &[f64], quad: Option<Quad<'_>>) -> (Vec<f64>, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    if values.len() < 3 || sd.is_nan() || sd <= 1e-10 || sd.is_infinite() {
        return (standardized(values.to_vec()).0, None);
    }
    let mid = super::median(values);
    let cost: Vec<f64> = values.iter().map(|v| (mid - v) / sd).collect();
    let lambda = fit_lambda(&cost, quad);
    let (warped, _) = warped(&cost, lambda);
    if warped.iter().any(|v| !v.is_finite()) {
        return (standardized(values.to_vec()).0, None);
    }
    (warped, Some(lambda))
}

/// The standardised maximised values of the costs `cost` under λ, and their standard
/// deviation before standardising.
fn warped(cost: &[f64], lambda: f64) -> (Vec<f64>, f64) {
    standardized(cost.iter().map(|&c| -yeo_johnson(c, lambda)).collect())
}

/// The Yeo-Johnson transform of `x` with exponent `lambda` (monotone increasing in `x`).
fn yeo_johnson(x: f64, lambda: f64) -> f64 {
    const EPS: f64 = 1e-8;
    if x >= 0.0 {
        if lambda.abs() < EPS {
            x.ln_1p()
        } else {
            ((x + 1.0).powf(lambda) - 1.0) / lambda
        }
    } else if (lambda - 2.0).abs() < EPS {
        -(-x).ln_1p()
    } else {
        -((1.0 - x).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    }
}

/// The log-likelihood of λ (up to a constant): the standardised transformed values' Gaussian
/// likelihood (`quad`, or `n` for independent values), the standardisation's scale and the
/// transform's log-Jacobian `(λ − 1) Σ sign(c) ln(1 + |c|)`.
fn log_likelihood(x: &[f64], lambda: f64, quad: Option<Quad<'_>>) -> f64 {
    let n = x.len() as f64;
    let (y, scale) = warped(x, lambda);
    if scale.is_nan() || scale <= 1e-10 || scale.is_infinite() || y.iter().any(|v| !v.is_finite()) {
        return f64::NEG_INFINITY;
    }
    let q = quad.map_or(n, |f| f(&y));
    let jacobian: f64 = x.iter().map(|&v| v.signum() * v.abs().ln_1p()).sum();
    -0.5 * q - n * scale.ln() + (lambda - 1.0) * jacobian
}

/// The λ in [`LAMBDA_RANGE`] of the largest likelihood: a grid, then golden-section search
/// around its best point (deterministic, no tolerance games).
fn fit_lambda(x: &[f64], quad: Option<Quad<'_>>) -> f64 {
    let ll = |l: f64| log_likelihood(x, l, quad);
    let (lo, hi) = LAMBDA_RANGE;
    let steps = 16;
    let h = (hi - lo) / steps as f64;
    let best = (0..=steps)
        .map(|i| lo + h * i as f64)
        .map(|l| (l, ll(l)))
        .fold(
            (1.0, f64::NEG_INFINITY),
            |b, c| if c.1 > b.1 { c } else { b },
        );
    if !best.1.is_finite() {
        return 1.0;
    }
    let (mut a, mut b) = ((best.0 - h).max(lo), (best.0 + h).min(hi));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (ll(c), ll(d));
    for _ in 0..30 {
        if fc > fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = ll(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = ll(d);
        }
    }
    let l = 0.5 * (a + b);
    if ll(l) >= best.1 {
        l
    } else {
        best.0
    }
}

/// `v` less its mean over its standard deviation (at least 1e-10), and that deviation.
fn standardized(mut v: Vec<f64>) -> (Vec<f64>, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let div = sd.max(1e-10);
    v.iter_mut().for_each(|x| *x = (*x - mean) / div);
    (v, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transform_is_monotone_and_continuous_at_its_special_exponents() {
        for lambda in [-2.0, -0.5, 0.0, 1e-9, 0.7, 1.0, 2.0, 2.0 - 1e-9] {
            let xs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.25).collect();
            for w in xs.windows(2) {
                assert!(yeo_johnson(w[0], lambda) < yeo_johnson(w[1], lambda));
            }
        }
        assert!((yeo_johnson(3.0, 1e-9) - yeo_johnson(3.0, 0.0)).abs() < 1e-6);
        assert!((yeo_johnson(-3.0, 2.0 - 1e-9) - yeo_johnson(-3.0, 2.0)).abs() < 1e-6);
        // λ = 1 is the identity.
        assert!((yeo_johnson(-2.5, 1.0) + 2.5).abs() < 1e-12);
        assert!((yeo_johnson(4.0, 1.0) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn a_heavy_tail_of_bad_values_is_compressed_and_gaussian_values_are_left_nearly_linear() {
        // Costs of a sphere at points spread over the box: a long tail of bad values.
        let costs: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).powi(4)).collect();
        let values: Vec<f64> = costs.iter().map(|c| -c).collect();
        let (w, lambda) = warp(&values, None);
        let lambda = lambda.expect("fitted");
        // scipy.stats.yeojohnson on the same centred, scaled costs: λ = −1.1205.
        assert!((lambda + 1.1205).abs() < 1e-3, "λ = {lambda}");
        // Order kept; the good trials are told apart better than after standardising alone.
        for p in w.windows(2) {
            assert!(p[0] > p[1]);
        }
        let (plain, _) = standardized(values.clone());
        assert!(w[0] - w[3] > 4.0 * (plain[0] - plain[3]));
        // Roughly symmetric values (a quantile grid of the normal): λ near 1.
        let normal: Vec<f64> = (1..40)
            .map(|i| {
                let p = i as f64 / 40.0;
                // A logistic stand-in for the normal quantile: symmetric, light-tailed.
                (p / (1.0 - p)).ln() * 0.6
            })
            .collect();
        let (_, lambda) = warp(&normal, None);
        let lambda = lambda.expect("fitted");
        assert!(
            (lambda - 1.0).abs() < 0.3,
            "symmetric values want λ ≈ 1, got {lambda}"
        );
    }

    #[test]
    fn constant_or_too_few_values_are_only_centred() {
        assert_eq!(warp(&[2.0, 2.0, 2.0, 2.0], None), (vec![0.0; 4], None));
        let (w, lambda) = warp(&[1.0, 3.0], None);
        assert_eq!(lambda, None);
        assert!((w[0] + 1.0).abs() < 1e-12 && (w[1] - 1.0).abs() < 1e-12);
    }
}
