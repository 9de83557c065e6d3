//! The CMA-ES search distribution `N(m, σ² C)` in the unit cube and its update: active
//! CMA-ES with Hansen's default learning rates (The CMA Evolution Strategy: A Tutorial,
//! 2016), or sep-CMA-ES (diagonal `C`, Ros & Hansen 2008) for high dimensions.

// Parallel arrays indexed together: index loops read like the formulas.
#![allow(clippy::needless_range_loop)]

use super::linalg::sym_eigen;

/// Smallest eigenvalue kept in `C` (negative ones from the active update are raised to it).
const EIG_FLOOR: f64 = 1e-20;
/// Largest step size (the cube has side 1; anything near this is divergence).
const SIGMA_MAX: f64 = 1e6;

/// Learning rates and recombination weights for one update of `k` ranked points.
#[derive(Debug, Clone)]
pub(crate) struct Rates {
    /// Weights by rank, best first (negative ones are the active part).
    pub w: Vec<f64>,
    /// Number of positive weights.
    pub mu: usize,
    /// Variance-effective selection mass of the positive weights.
    pub mu_eff: f64,
    /// Rank-one learning rate.
    pub c1: f64,
    /// Rank-μ learning rate.
    pub cmu: f64,
    /// Cumulation for the step size.
    pub c_sigma: f64,
    /// Damping for the step size.
    pub d_sigma: f64,
    /// Cumulation for the rank-one update.
    pub cc: f64,
    /// E‖N(0, I)‖.
    pub chi_n: f64,
}

impl Rates {
    /// Rates for `d` dimensions and `k` ranked points of which the best `mu` (≥ 1, ≤ k)
    /// get positive weights. `mu = k / 2` is Hansen's default.
    pub fn new(d: usize, k: usize, mu: usize, sep: bool) -> Rates {
        let n = d as f64;
        let mu = mu.clamp(1, k.max(1));
        let chi_n = n.sqrt() * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n));
        if sep {
            // Positive weights only, as sep-CMA-ES (cmaes' SepCMA) does.
            let wp: Vec<f64> = (0..mu)
                .map(|i| ((mu + 1) as f64).ln() - ((i + 1) as f64).ln())
                .collect();
            let s: f64 = wp.iter().sum();
            let mut w: Vec<f64> = wp.iter().map(|x| x / s).collect();
            w.resize(k, 0.0);
            let mu_eff = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
            let c1 = 2.0 / ((n + 1.3).powi(2) + mu_eff);
            let cmu_full = 2.0 / mu_eff / (n + 2f64.sqrt()).powi(2)
                + (1.0 - 1.0 / mu_eff)
                    * f64::min(1.0, (2.0 * mu_eff - 1.0) / ((n + 2.0).powi(2) + mu_eff));
            let cmu = ((n + 2.0) / 3.0 * cmu_full).min(1.0 - c1);
            let c_sigma = (mu_eff + 2.0) / (n + mu_eff + 3.0);
            let d_sigma =
                1.0 + 2.0 * f64::max(0.0, ((mu_eff - 1.0) / (n + 1.0)).sqrt() - 1.0) + c_sigma;
            return Rates {
                w,
                mu,
                mu_eff,
                c1,
                cmu,
                c_sigma,
                d_sigma,
                cc: 4.0 / (n + 4.0),
                chi_n,
            };
        }
        let base = if mu == k / 2 {
            ((k + 1) as f64 / 2.0).ln()
        } else {
            (mu as f64 + 0.5).ln()
        };
        let wp: Vec<f64> = (0..k).map(|i| base - ((i + 1) as f64).ln()).collect();
        let pos = &wp[..mu];
        let neg = &wp[mu..];
        let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        let mu_eff = pos.iter().sum::<f64>().powi(2) / sq(pos);
        let neg_sum: f64 = neg.iter().filter(|x| **x < 0.0).map(|x| -x).sum();
        let mu_eff_minus = if neg_sum > 0.0 {
            neg_sum.powi(2) / sq(neg)
        } else {
            0.0
        };
        let alpha_cov = 2.0;
        let c1 = alpha_cov / ((n + 1.3).powi(2) + mu_eff);
        let cmu = f64::min(
            1.0 - c1 - 1e-8,
            alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff)
                / ((n + 2.0).powi(2) + alpha_cov * mu_eff / 2.0),
        )
        .max(0.0);
        let mut min_alpha = 1.0 + 2.0 * mu_eff_minus / (mu_eff + 2.0);
        if cmu > 0.0 {
            min_alpha = min_alpha
                .min(1.0 + c1 / cmu)
                .min((1.0 - c1 - cmu) / (n * cmu));
        }
        let pos_sum: f64 = pos.iter().filter(|x| **x > 0.0).sum();
        let w = wp
            .iter()
            .map(|&x| {
                if x >= 0.0 {
                    x / pos_sum
                } else {
                    min_alpha * x / neg_sum
                }
            })
            .collect();
        let c_sigma = (mu_eff + 2.0) / (n + mu_eff + 5.0);
        let d_sigma =
            1.0 + 2.0 * f64::max(0.0, ((mu_eff - 1.0) / (n + 1.0)).sqrt() - 1.0) + c_sigma;
        let cc = (4.0 + mu_eff / n) / (n + 4.0 + 2.0 * mu_eff / n);
        Rates {
            w,
            mu,
            mu_eff,
            c1,
            cmu,
            c_sigma,
            d_sigma,
            cc,
            chi_n,
        }
    }
}

/// The search distribution and its evolution paths.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Es {
    /// Dimension.
    pub d: usize,
    /// Diagonal covariance (sep-CMA-ES).
    pub sep: bool,
    /// Mean, in the unit cube.
    pub mean: Vec<f64>,
    /// Step size.
    pub sigma: f64,
    /// Covariance: `d × d` row-major (exactly symmetric), or its diagonal if `sep`.
    pub c: Vec<f64>,
    /// Conjugate evolution path (step size).
    pub p_sigma: Vec<f64>,
    /// Evolution path (rank-one update).
    pub p_c: Vec<f64>,
    /// Updates since the start of this run.
    pub g: u64,
    /// Eigenvectors of `C` (columns; empty if `sep`).
    b: Vec<f64>,
    /// Square roots of the eigenvalues of `C` (of its diagonal if `sep`).
    dv: Vec<f64>,
}

impl Es {
    /// A distribution with the given mean, step size and covariance (`None`: identity;
    /// full `d × d` otherwise, reduced to its diagonal if `sep`).
    pub fn new(mean: Vec<f64>, sigma: f64, cov: Option<&[f64]>, sep: bool) -> Es {
        let d = mean.len();
        let c = match (cov, sep) {
            (None, true) => vec![1.0; d],
            (None, false) => {
                let mut c = vec![0.0; d * d];
                for i in 0..d {
                    c[i * d + i] = 1.0;
                }
                c
            }
            (Some(cv), true) => (0..d).map(|i| cv[i * d + i]).collect(),
            (Some(cv), false) => cv.to_vec(),
        };
        Es::from_parts(mean, sigma, c, vec![0.0; d], vec![0.0; d], 0, sep)
    }

    /// Rebuilds a distribution from its stored parts (computes the eigen-decomposition).
    pub fn from_parts(
        mean: Vec<f64>,
        sigma: f64,
        c: Vec<f64>,
        p_sigma: Vec<f64>,
        p_c: Vec<f64>,
        g: u64,
        sep: bool,
    ) -> Es {
        let d = mean.len();
        let mut es = Es {
            d,
            sep,
            mean,
            sigma,
            c,
            p_sigma,
            p_c,
            g,
            b: Vec::new(),
            dv: Vec::new(),
        };
        es.refresh();
        es
    }

    /// Recomputes the eigen-decomposition of `C`, first raising eigenvalues below the floor
    /// (then `C` is rebuilt from the repaired decomposition).
    fn refresh(&mut self) {
        let d = self.d;
        if self.sep {
            for x in &mut self.c {
                if x.is_nan() || *x < EIG_FLOOR {
                    *x = EIG_FLOOR;
                }
            }
            self.dv = self.c.iter().map(|x| x.sqrt()).collect();
            return;
        }
        let (mut vals, mut vecs) = sym_eigen(&self.c, d);
        if vals.iter().any(|v| v.is_nan() || *v < EIG_FLOOR) {
            for v in &mut vals {
                if v.is_nan() || *v < EIG_FLOOR {
                    *v = EIG_FLOOR;
                }
            }
            for i in 0..d {
                for j in i..d {
                    let x: f64 = (0..d)
                        .map(|k| vecs[i * d + k] * vals[k] * vecs[j * d + k])
                        .sum();
                    self.c[i * d + j] = x;
                    self.c[j * d + i] = x;
                }
            }
            (vals, vecs) = sym_eigen(&self.c, d);
            for v in &mut vals {
                *v = v.max(EIG_FLOOR);
            }
        }
        self.dv = vals.iter().map(|v| v.sqrt()).collect();
        self.b = vecs;
    }

    /// `x = m + σ B D z` for a standard normal `z`.
    pub fn sample_into(&self, z: &[f64], x: &mut [f64]) {
        let d = self.d;
        if self.sep {
            for i in 0..d {
                x[i] = self.mean[i] + self.sigma * self.dv[i] * z[i];
            }
            return;
        }
        for i in 0..d {
            let row = &self.b[i * d..(i + 1) * d];
            let mut s = 0.0;
            for k in 0..d {
                s += row[k] * self.dv[k] * z[k];
            }
            x[i] = self.mean[i] + self.sigma * s;
        }
    }

    /// A unit-cube point in the distribution's own coordinates, `C^{-1/2} (x − m) / σ`:
    /// Euclidean distances there are Mahalanobis distances of the search distribution.
    pub fn whiten(&self, x: &[f64]) -> Vec<f64> {
        let y: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .map(|(a, m)| (a - m) / self.sigma)
            .collect();
        self.inv_sqrt(&y)
    }

    /// `C^{-1/2} y`.
    pub fn inv_sqrt(&self, y: &[f64]) -> Vec<f64> {
        let d = self.d;
        if self.sep {
            return y.iter().zip(&self.dv).map(|(a, b)| a / b).collect();
        }
        // Bᵀ y, scaled by 1/D, then B ·.
        let mut t = vec![0.0; d];
        for k in 0..d {
            let mut s = 0.0;
            for i in 0..d {
                s += self.b[i * d + k] * y[i];
            }
            t[k] = s / self.dv[k];
        }
        (0..d)
            .map(|i| (0..d).map(|k| self.b[i * d + k] * t[k]).sum())
            .collect()
    }

    /// `C_jj`.
    pub fn c_diag(&self, j: usize) -> f64 {
        if self.sep {
            self.c[j]
        } else {
            self.c[j * self.d + j]
        }
    }

    /// Largest / smallest square root of the eigenvalues of `C`.
    pub fn axis_ratio(&self) -> f64 {
        let max = self.dv.iter().copied().fold(0.0, f64::max);
        let min = self.dv.iter().copied().fold(f64::INFINITY, f64::min);
        max / min
    }

    /// Largest standard deviation along a principal axis, `σ max(D)`.
    pub fn max_axis_std(&self) -> f64 {
        self.sigma * self.dv.iter().copied().fold(0.0, f64::max)
    }

    /// The largest Mahalanobis length a point from outside this distribution may have in
    /// an update (Hansen's rule for injected solutions).
    pub fn injection_clip(&self) -> f64 {
        let n = self.d as f64;
        n.sqrt() + 2.0 * n / (n + 2.0)
    }

    /// One CMA-ES update from the steps `ys[i] = (x_i - m) / σ`, ranked best first, with
    /// `mu` positive weights.
    pub fn update(&mut self, ys: &[Vec<f64>], mu: usize) {
        let d = self.d;
        let k = ys.len();
        if k == 0 || d == 0 {
            return;
        }
        let r = Rates::new(d, k, mu, self.sep);
        self.g += 1;
        let mut y_w = vec![0.0; d];
        for (w, y) in r.w.iter().zip(ys).take(r.mu) {
            for i in 0..d {
                y_w[i] += w * y[i];
            }
        }
        for i in 0..d {
            self.mean[i] += self.sigma * y_w[i];
        }
        let ciy = self.inv_sqrt(&y_w);
        let a = (r.c_sigma * (2.0 - r.c_sigma) * r.mu_eff).sqrt();
        for i in 0..d {
            self.p_sigma[i] = (1.0 - r.c_sigma) * self.p_sigma[i] + a * ciy[i];
        }
        let norm_ps = self.p_sigma.iter().map(|x| x * x).sum::<f64>().sqrt();
        self.sigma *= ((r.c_sigma / r.d_sigma) * (norm_ps / r.chi_n - 1.0)).exp();
        self.sigma = self.sigma.min(SIGMA_MAX);
        let left = norm_ps / (1.0 - (1.0 - r.c_sigma).powf(2.0 * (self.g + 1) as f64)).sqrt();
        let h = if left < (1.4 + 2.0 / (d as f64 + 1.0)) * r.chi_n {
            1.0
        } else {
            0.0
        };
        let ac = h * (r.cc * (2.0 - r.cc) * r.mu_eff).sqrt();
        for i in 0..d {
            self.p_c[i] = (1.0 - r.cc) * self.p_c[i] + ac * y_w[i];
        }
        let dh = (1.0 - h) * r.cc * (2.0 - r.cc);
        let w_sum: f64 = r.w.iter().sum();
        let decay = 1.0 + r.c1 * dh - r.c1 - r.cmu * w_sum;
        if self.sep {
            for i in 0..d {
                let mut rank_mu = 0.0;
                for (w, y) in r.w.iter().zip(ys) {
                    rank_mu += w * y[i] * y[i];
                }
                self.c[i] = decay * self.c[i] + r.c1 * self.p_c[i] * self.p_c[i] + r.cmu * rank_mu;
            }
        } else {
            // Active CMA: negative weights are rescaled by n / ‖C^{-1/2} y‖².
            let w_io: Vec<f64> =
                r.w.iter()
                    .zip(ys)
                    .map(|(&w, y)| {
                        if w >= 0.0 {
                            w
                        } else {
                            let m2: f64 = self.inv_sqrt(y).iter().map(|x| x * x).sum();
                            w * d as f64 / (m2 + 1e-8)
                        }
                    })
                    .collect();
            for i in 0..d {
                for j in i..d {
                    let mut rank_mu = 0.0;
                    for (w, y) in w_io.iter().zip(ys) {
                        rank_mu += w * y[i] * y[j];
                    }
                    let x = decay * self.c[i * d + j]
                        + r.c1 * self.p_c[i] * self.p_c[j]
                        + r.cmu * rank_mu;
                    self.c[i * d + j] = x;
                    self.c[j * d + i] = x;
                }
            }
        }
        self.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rates_match_hansen() {
        // d = 8, λ = 10 (cmaes' CMA gives these numbers).
        let r = Rates::new(8, 10, 5, false);
        assert!((r.mu_eff - 3.167_299).abs() < 1e-5, "{}", r.mu_eff);
        assert!((r.w[..5].iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(r.w[5..].iter().all(|w| *w < 0.0));
        assert!((r.c1 - 2.0 / (9.3f64.powi(2) + r.mu_eff)).abs() < 1e-15);
        assert!(r.cmu > 0.0 && r.c1 + r.cmu < 1.0);
        assert!((r.c_sigma - (r.mu_eff + 2.0) / (8.0 + r.mu_eff + 5.0)).abs() < 1e-15);
        let s = Rates::new(30, 14, 7, true);
        assert!(s.w[7..].iter().all(|w| *w == 0.0));
        assert!((s.w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Fewer positive weights than λ/2 (failed trials): still normalised.
        let f = Rates::new(8, 10, 2, false);
        assert_eq!(f.mu, 2);
        assert!((f.w[..2].iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(f.w[2..].iter().all(|w| *w < 0.0));
    }

    #[test]
    fn sampling_follows_the_covariance() {
        let c = [4.0, 1.0, 1.0, 1.0];
        let es = Es::new(vec![0.5, 0.5], 0.1, Some(&c), false);
        let mut rng = crate::sampler::TrialRng::from_seed(1);
        let n = 20_000;
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        let mut x = [0.0; 2];
        for _ in 0..n {
            let z = [rng.normal(), rng.normal()];
            es.sample_into(&z, &mut x);
            let (a, b) = ((x[0] - 0.5) / 0.1, (x[1] - 0.5) / 0.1);
            sxx += a * a;
            sxy += a * b;
            syy += b * b;
        }
        let n = n as f64;
        assert!(
            (sxx / n - 4.0).abs() < 0.15
                && (sxy / n - 1.0).abs() < 0.08
                && (syy / n - 1.0).abs() < 0.05
        );
        let v = es.inv_sqrt(&[2.0, 1.0]);
        // ‖C^{-1/2} y‖² = yᵀ C⁻¹ y = [2 1] (1/3)[[1,-1],[-1,4]] [2 1]ᵀ = 4/3.
        let m2: f64 = v.iter().map(|x| x * x).sum();
        assert!((m2 - 4.0 / 3.0).abs() < 1e-12, "{m2}");
    }
}
