//! The hyperparameter fit, as Optuna's `fit_kernel_params`: maximise the log marginal
//! likelihood plus Optuna's log prior over `(ln ρ, ln s, ln(σ² − min))` by L-BFGS with the
//! analytic gradient, from the previous optimum (warm start) and, if that fails, from
//! Optuna's default point.
//!
//! Prior (Optuna's `default_log_prior`): `−Σ_j (0.1/ρ_j + 0.1·ρ_j)` on the inverse squared
//! length scales, Gamma(2, 1) on the kernel scale, Gamma(1.1, 30) on the noise variance.
//!
//! Linear algebra from nalgebra (Cholesky, inverse): one evaluation costs
//! `O(n³)` for the factor and the inverse `K⁻¹` the gradient needs
//! (`∂L/∂θ = ½ tr((ααᵀ − K⁻¹) ∂K/∂θ)`) plus `O(n² d)` for the gradient itself.

// Numerical code: index loops over parallel arrays read best.
#![allow(clippy::needless_range_loop)]

use nalgebra::{DMatrix, DVector};

use super::kernel::{matern52, matern52_d, Hyper, MIN_NOISE};
use super::lbfgs::{minimize, Stop};

/// Training data of one fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Data<'a> {
    pub d: usize,
    /// Row-major `n × d`.
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub is_cat: &'a [bool],
}

impl Data<'_> {
    fn n(&self) -> usize {
        self.y.len()
    }
    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
    fn delta(&self, i: usize, k: usize, j: usize) -> f64 {
        let (a, b) = (self.row(i)[j], self.row(k)[j]);
        if self.is_cat[j] {
            if a != b {
                1.0
            } else {
                0.0
            }
        } else {
            (a - b) * (a - b)
        }
    }
}

/// Optuna's log prior of `h` and its gradient with respect to the raw parameters.
fn log_prior(h: &Hyper, grad: &mut [f64]) -> f64 {
    let d = h.inv_sq_ls.len();
    let mut lp = 0.0;
    for (j, &r) in h.inv_sq_ls.iter().enumerate() {
        lp -= 0.1 / r + 0.1 * r;
        grad[j] = 0.1 / r - 0.1 * r;
    }
    // Gamma(k, θ) log-density up to a constant: (k − 1) ln x − rate·x.
    lp += h.scale.ln() - h.scale;
    grad[d] = 1.0 - h.scale;
    lp += 0.1 * h.noise.ln() - 30.0 * h.noise;
    grad[d + 1] = (0.1 / h.noise - 30.0) * (h.noise - MIN_NOISE);
    lp
}

/// The loss `−(log marginal likelihood + log prior)` (without the `n/2 ln 2π` constant, as
/// Optuna) at the raw parameters `raw`, and its gradient; `+∞` if the covariance is not
/// positive definite there.
pub(crate) fn loss(data: &Data<'_>, raw: &[f64], grad: &mut [f64]) -> f64 {
    let h = Hyper::from_raw(raw);
    let n = data.n();
    let d = data.d;
    if raw.iter().any(|v| !v.is_finite()) || !h.scale.is_finite() || !h.noise.is_finite() {
        return f64::INFINITY;
    }
    let mut k = DMatrix::<f64>::zeros(n, n);
    let mut dm = DMatrix::<f64>::zeros(n, n);
    for i in 0..n {
        for j in 0..i {
            let r2: f64 = (0..d).map(|c| h.inv_sq_ls[c] * data.delta(i, j, c)).sum();
            let v = h.scale * matern52(r2);
            k[(i, j)] = v;
            k[(j, i)] = v;
            let g = h.scale * matern52_d(r2);
            dm[(i, j)] = g;
            dm[(j, i)] = g;
        }
        k[(i, i)] = h.scale + h.noise;
    }
    let Some(chol) = k.clone().cholesky() else {
        return f64::INFINITY;
    };
    let y = DVector::from_column_slice(data.y);
    let alpha = chol.solve(&y);
    let log_det: f64 = (0..n).map(|i| 2.0 * chol.l_dirty()[(i, i)].ln()).sum();
    let mll = -0.5 * y.dot(&alpha) - 0.5 * log_det;
    let mut gp = vec![0.0; d + 2];
    let lp = log_prior(&h, &mut gp);
    // W = ααᵀ − K⁻¹; ∂mll/∂θ = ½ Σ_ik W_ik ∂K_ik/∂θ.
    let mut w = chol.inverse();
    w.iter_mut().for_each(|v| *v = -*v);
    w.ger(1.0, &alpha, &alpha, 1.0);
    let mut g = vec![0.0; d + 2];
    for i in 0..n {
        for j in 0..i {
            // Off-diagonal pairs count twice (symmetry).
            let wm = w[(i, j)] * dm[(i, j)];
            for (c, gc) in g.iter_mut().enumerate().take(d) {
                *gc += wm * data.delta(i, j, c);
            }
            g[d] += 2.0 * w[(i, j)] * k[(i, j)];
        }
        g[d] += w[(i, i)] * h.scale;
        g[d + 1] += 0.5 * w[(i, i)] * (h.noise - MIN_NOISE);
    }
    for c in 0..d {
        // ½·2 Σ_{i>j} W_ij s m'(r²) δ_ijc ρ_c (∂r²/∂ln ρ_c = ρ_c δ_c).
        g[c] *= h.inv_sq_ls[c];
    }
    g[d] *= 0.5;
    for c in 0..d + 2 {
        grad[c] = -(g[c] + gp[c]);
    }
    let value = -(mll + lp);
    if value.is_finite() {
        value
    } else {
        f64::INFINITY
    }
}

/// Bounds on the raw parameters: wide (e^±20 on ρ and s), only there to keep the
/// arithmetic finite.
fn bounds(d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![-20.0; d + 2];
    let mut hi = vec![20.0; d + 2];
    lo[d + 1] = -40.0;
    hi[d + 1] = 5.0;
    (lo, hi)
}

/// Fits the hyperparameters to `data` from `start` (the previous optimum), falling back to
/// Optuna's default start, then to the default hyperparameters themselves. With
/// `deterministic` the noise variance is held at its minimum during the fit (Optuna's
/// `deterministic_objective`): the length scales and kernel scale are fitted for a
/// noise-free model. The result and the number of loss evaluations.
pub(crate) fn fit(data: &Data<'_>, start: Option<&Hyper>, deterministic: bool) -> (Hyper, usize) {
    let d = data.d;
    let (lo, mut hi) = bounds(d);
    if deterministic {
        hi[d + 1] = lo[d + 1];
    }
    let stop = Stop {
        pgtol: 1e-2,
        // scipy's default factr = 1e7 times machine epsilon.
        ftol: 1e7 * f64::EPSILON,
        max_iter: 200,
    };
    let default = Hyper::default_for(d);
    let mut evaluations = 0;
    for init in [start, Some(&default)].into_iter().flatten() {
        let mut x0 = init.to_raw();
        x0[d + 1] = x0[d + 1].clamp(lo[d + 1], hi[d + 1]);
        let m = minimize(
            |raw, g| {
                evaluations += 1;
                loss(data, raw, g)
            },
            &x0,
            &lo,
            &hi,
            stop,
        );
        if m.f.is_finite() {
            let mut h = Hyper::from_raw(&m.x);
            if deterministic {
                h.noise = MIN_NOISE;
            }
            return (h, evaluations);
        }
    }
    let mut h = default;
    if deterministic {
        h.noise = MIN_NOISE;
    }
    (h, evaluations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::TrialRng;

    /// `n` noisy points of a 3-D function with a categorical middle coordinate.
    struct Sample {
        x: Vec<f64>,
        y: Vec<f64>,
        is_cat: Vec<bool>,
    }

    impl Sample {
        fn new(n: usize, seed: u64) -> Sample {
            let mut r = TrialRng::from_seed(seed);
            let mut x = Vec::new();
            let mut y = Vec::new();
            for _ in 0..n {
                let p = [r.next_f64(), r.below(3) as f64, r.next_f64()];
                y.push((3.0 * p[0]).sin() + 0.5 * p[1] + 0.1 * r.normal());
                x.extend_from_slice(&p);
            }
            Sample {
                x,
                y,
                is_cat: vec![false, true, false],
            }
        }

        fn data(&self) -> Data<'_> {
            Data {
                d: 3,
                x: &self.x,
                y: &self.y,
                is_cat: &self.is_cat,
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let sample = Sample::new(15, 1);
        let data = sample.data();
        let raw = [0.3, -0.5, 1.2, 0.2, -3.0];
        let mut g = [0.0; 5];
        let f = loss(&data, &raw, &mut g);
        assert!(f.is_finite());
        let mut dummy = [0.0; 5];
        for c in 0..5 {
            let e = 1e-6;
            let (mut a, mut b) = (raw, raw);
            a[c] += e;
            b[c] -= e;
            let fd = (loss(&data, &a, &mut dummy) - loss(&data, &b, &mut dummy)) / (2.0 * e);
            assert!(
                (fd - g[c]).abs() < 1e-5 * (1.0 + fd.abs()),
                "param {c}: analytic {} vs fd {fd}",
                g[c]
            );
        }
    }

    #[test]
    fn a_deterministic_fit_holds_the_noise_at_its_minimum_while_it_fits() {
        let sample = Sample::new(40, 2);
        let data = sample.data();
        let (h, _) = fit(&data, None, true);
        assert_eq!(h.noise, MIN_NOISE);
        // A stationary point of the loss with the noise at its minimum: the other
        // parameters' gradient vanishes there (fitting them with the noise free, then
        // setting it, leaves them far from it).
        let mut raw = h.to_raw();
        raw[4] = bounds(3).0[4];
        let mut g = [0.0; 5];
        loss(&data, &raw, &mut g);
        for (j, gj) in g[..4].iter().enumerate() {
            assert!(gj.abs() < 0.05, "gradient {j}: {gj} ({g:?})");
        }
    }

    #[test]
    fn fit_improves_the_loss_and_finds_the_noise() {
        let sample = Sample::new(40, 2);
        let data = sample.data();
        let mut g = [0.0; 5];
        let default = Hyper::default_for(3);
        let before = loss(&data, &default.to_raw(), &mut g);
        let (h, _) = fit(&data, None, false);
        let after = loss(&data, &h.to_raw(), &mut g);
        assert!(after < before - 1.0, "{before} -> {after}");
        // The data's noise variance is 0.01: the fitted one is well below the default 1.
        assert!(h.noise < 0.1, "{h:?}");
        // Warm-started from its own optimum it stays there.
        let (h2, evals) = fit(&data, Some(&h), false);
        assert!(loss(&data, &h2.to_raw(), &mut g) <= after + 1e-9);
        assert!(evals < 20, "{evals}");
    }
}
