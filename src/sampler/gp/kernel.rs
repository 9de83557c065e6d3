//! The Matérn-5/2 ARD kernel with a Hamming term for categoricals (Optuna's
//! `GPRegressor.kernel`): `k(x, x') = s · m(r²)`, `r² = Σ_j ρ_j δ_j(x, x')` with
//! `δ_j = (x_j − x'_j)²` for numeric coordinates and `[x_j ≠ x'_j]` for categorical ones,
//! `ρ_j` the inverse squared length scales, `s` the kernel scale and
//! `m(r²) = e^{−√(5r²)} (5r²/3 + √(5r²) + 1)`.

use serde::{Deserialize, Serialize};

/// Optuna's smallest noise variance (`prior.DEFAULT_MINIMUM_NOISE_VAR`).
pub(crate) const MIN_NOISE: f64 = 1e-6;

/// The kernel's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hyper {
    /// Inverse squared length scales `ρ_j`, one per coordinate.
    pub inv_sq_ls: Vec<f64>,
    /// Kernel scale `s` (the prior variance of the latent function).
    pub scale: f64,
    /// Noise variance (≥ [`MIN_NOISE`]).
    pub noise: f64,
}

impl Hyper {
    /// Optuna's starting point: every `ρ_j`, `s` and the noise 1.
    pub fn default_for(d: usize) -> Hyper {
        Hyper {
            inv_sq_ls: vec![1.0; d],
            scale: 1.0,
            noise: 1.0,
        }
    }

    /// The log-parameters the fit works on: `ln ρ_j`, `ln s`, `ln(noise − 0.99·min)` (as
    /// Optuna's initial point; the fit then reads `noise = e^raw + min`).
    pub fn to_raw(&self) -> Vec<f64> {
        let mut raw: Vec<f64> = self.inv_sq_ls.iter().map(|r| r.ln()).collect();
        raw.push(self.scale.ln());
        raw.push((self.noise - 0.99 * MIN_NOISE).max(1e-300).ln());
        raw
    }

    /// The inverse of [`Hyper::to_raw`] as the fit reads it.
    pub fn from_raw(raw: &[f64]) -> Hyper {
        let d = raw.len() - 2;
        Hyper {
            inv_sq_ls: raw[..d].iter().map(|r| r.exp()).collect(),
            scale: raw[d].exp(),
            noise: raw[d + 1].exp() + MIN_NOISE,
        }
    }

    /// Length scales `1/√ρ_j`.
    pub fn length_scales(&self) -> Vec<f64> {
        self.inv_sq_ls.iter().map(|r| 1.0 / r.sqrt()).collect()
    }
}

/// `m(r²)`.
#[inline]
pub(crate) fn matern52(r2: f64) -> f64 {
    let s = (5.0 * r2).sqrt();
    (-s).exp() * ((5.0 / 3.0) * r2 + s + 1.0)
}

/// `dm/d(r²) = −5/6 (1 + √(5r²)) e^{−√(5r²)}` (finite at 0, unlike the chain rule
/// through `√`).
#[inline]
pub(crate) fn matern52_d(r2: f64) -> f64 {
    let s = (5.0 * r2).sqrt();
    (-5.0 / 6.0) * (s + 1.0) * (-s).exp()
}

/// `r²` between `a` and `b`.
#[inline]
pub(crate) fn sq_dist(a: &[f64], b: &[f64], rho: &[f64], is_cat: &[bool]) -> f64 {
    let mut r2 = 0.0;
    for j in 0..a.len() {
        let dj = if is_cat[j] {
            if a[j] != b[j] {
                1.0
            } else {
                0.0
            }
        } else {
            let t = a[j] - b[j];
            t * t
        };
        r2 += rho[j] * dj;
    }
    r2
}

/// `k(a, b)` without noise.
#[inline]
pub(crate) fn kernel(a: &[f64], b: &[f64], h: &Hyper, is_cat: &[bool]) -> f64 {
    h.scale * matern52(sq_dist(a, b, &h.inv_sq_ls, is_cat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matern_derivative_matches_finite_differences() {
        for r2 in [1e-4, 0.01, 0.3, 1.0, 4.0] {
            let e = 1e-7 * r2;
            let fd = (matern52(r2 + e) - matern52(r2 - e)) / (2.0 * e);
            assert!((fd - matern52_d(r2)).abs() < 1e-6, "{r2}: {fd}");
        }
        assert_eq!(matern52(0.0), 1.0);
        assert!((matern52_d(0.0) + 5.0 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn raw_round_trip() {
        let h = Hyper {
            inv_sq_ls: vec![0.5, 20.0],
            scale: 1.7,
            noise: 0.01,
        };
        let back = Hyper::from_raw(&h.to_raw());
        for (a, b) in back.inv_sq_ls.iter().zip(&h.inv_sq_ls) {
            assert!((a - b).abs() < 1e-12 * b);
        }
        assert!((back.scale - 1.7).abs() < 1e-12);
        // from_raw adds the minimum back where to_raw took 0.99 of it.
        assert!((back.noise - 0.01 - 0.01 * MIN_NOISE).abs() < 1e-15);
    }
}
