//! The acquisition function: log expected improvement (Optuna's `logei`, numerically
//! stable far below the incumbent), plus `ln P(safe)` from the safety model (constrained
//! EI, as Optuna's `ConstrainedLogEI`), restricted in safe-exploration mode to where the
//! safety model's upper confidence bound on the violation is ≤ 0.

// Numerical code: index loops over parallel arrays read best.
#![allow(clippy::needless_range_loop)]

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use super::model::{Gp, Scratch};
use crate::sampler::tpe::truncnorm::{erfc, log_ndtr};

/// Optuna's `stabilizing_noise` added to the posterior variance.
const STABILIZING_NOISE: f64 = 1e-12;

/// The value given to a point outside the safe set (minus its violation), below any
/// acquisition value.
const OUTSIDE_SAFE_SET: f64 = -1e12;

/// `erfcx(x) = e^{x²} erfc(x)` for `x ≥ 0` (only needed for large `x` here): continued
/// fraction above 2, direct below.
fn erfcx(x: f64) -> f64 {
    if x < 2.0 {
        return (x * x).exp() * erfc(x);
    }
    // Lentz-free continued fraction: erfcx(x) = (1/√π) · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))).
    let mut f = x;
    for k in (1..60).rev() {
        f = x + (k as f64 * 0.5) / f;
    }
    1.0 / (PI.sqrt() * f)
}

/// `ln E[max(0, Z + z)]` for a standard normal `Z` (Optuna's `standard_logei`): the direct
/// formula `ln(zΦ(z) + φ(z))` above −25, below it `−z²/2 − ln√(2π) + ln(1 + √(π/2)·z·erfcx(−z/√2))`.
pub(crate) fn standard_logei(z: f64) -> f64 {
    let ln_sqrt_2pi = 0.5 * (2.0 * PI).ln();
    if z >= -25.0 {
        let cdf = 0.5 * erfc(-z * FRAC_1_SQRT_2);
        let pdf = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        (z * cdf + pdf).ln()
    } else {
        -0.5 * z * z - ln_sqrt_2pi + (1.0 + (0.5 * PI).sqrt() * z * erfcx(-z * FRAC_1_SQRT_2)).ln()
    }
}

/// `d/dz standard_logei(z) = Φ(z) / (zΦ(z) + φ(z))`.
fn standard_logei_d(z: f64, logei: f64) -> f64 {
    (log_ndtr(z) - logei).exp()
}

/// `ln E[max(0, Y − f0)]` for `Y ~ N(mean, var)`.
pub(crate) fn logei(mean: f64, var: f64, f0: f64) -> f64 {
    let sigma = var.sqrt();
    standard_logei((mean - f0) / sigma) + sigma.ln()
}

/// The safety model as the acquisition uses it.
#[derive(Debug, Clone)]
pub(crate) enum Safety {
    /// No safety model (no unsafe trial yet, or constraints off).
    None,
    /// Constrained EI: add `ln P(c(x) ≤ threshold)` (the model's targets standardised; the
    /// threshold is where the raw violation is 0).
    Probability { gp: Gp, threshold: f64 },
    /// Safe exploration: only points with `μ_c + β σ_c ≤ 0` (targets in violation units,
    /// zero prior mean) are eligible; `ln P(c ≤ 0)` is added as well.
    SafeSet { gp: Gp, beta: f64 },
}

/// What the acquisition optimiser maximises.
#[derive(Debug, Clone)]
pub(crate) struct Acquisition {
    /// The objective's GP on standardised values to maximise; `None` when no trial has a
    /// value yet (then only the safety terms count).
    pub objective: Option<Gp>,
    /// The best standardised value so far (among feasible trials).
    pub f0: f64,
    /// A prior mean function added to the objective's posterior mean: the posterior mean
    /// of a GP on a source study's trials, plus a constant (the sim-to-real warm start).
    pub prior: Option<(Gp, f64)>,
    pub safety: Safety,
}

/// Buffers of [`Acquisition::values`].
#[derive(Debug, Default, Clone)]
pub(crate) struct BatchWork {
    om: Vec<f64>,
    ov: Vec<f64>,
    cm: Vec<f64>,
    cv: Vec<f64>,
}

/// Scratch and gradient buffers of one optimiser.
#[derive(Debug, Default, Clone)]
pub(crate) struct Work {
    s: Scratch,
    dp: Vec<f64>,
    dm: Vec<f64>,
    dv: Vec<f64>,
}

impl Acquisition {
    /// Prepares the models for many evaluations ([`Gp::prepare`]).
    pub fn prepare(&mut self) {
        if let Some(gp) = &mut self.objective {
            gp.prepare();
        }
        match &mut self.safety {
            Safety::None => {}
            Safety::Probability { gp, .. } | Safety::SafeSet { gp, .. } => gp.prepare(),
        }
    }

    /// The acquisition value at `x`.
    pub fn value(&self, x: &[f64], w: &mut Work) -> f64 {
        let obj = self.objective.as_ref().map(|gp| {
            let (m, v) = gp.posterior(x, &mut w.s);
            (m + self.prior_mean(x), v)
        });
        let con = self.safety_gp().map(|gp| gp.posterior(x, &mut w.s));
        self.combine(obj, con)
    }

    /// The acquisition values at the points `xs` (row-major, `d` coordinates each), written
    /// to `out`: [`Acquisition::value`] at each point up to rounding, with the posteriors
    /// computed in one batch per model ([`Gp::posterior_batch`]).
    pub fn values(&self, xs: &[f64], out: &mut Vec<f64>, w: &mut BatchWork) {
        out.clear();
        if let Some(gp) = &self.objective {
            gp.posterior_batch(xs, &mut w.om, &mut w.ov);
        }
        if let Some(gp) = self.safety_gp() {
            gp.posterior_batch(xs, &mut w.cm, &mut w.cv);
        }
        let m = if let Some(gp) = self.objective.as_ref().or(self.safety_gp()) {
            xs.len() / gp.d
        } else {
            0
        };
        if self.prior.is_some() && m > 0 {
            for (i, x) in xs.chunks(xs.len() / m).take(m).enumerate() {
                w.om[i] += self.prior_mean(x);
            }
        }
        for i in 0..m {
            let obj = self.objective.as_ref().map(|_| (w.om[i], w.ov[i]));
            let con = self.safety_gp().map(|_| (w.cm[i], w.cv[i]));
            out.push(self.combine(obj, con));
        }
    }

    /// The prior mean at `x` (0 without a prior).
    fn prior_mean(&self, x: &[f64]) -> f64 {
        self.prior
            .as_ref()
            .map_or(0.0, |(gp, c)| c + gp.mean_grad(x, &[], &mut []))
    }

    fn safety_gp(&self) -> Option<&Gp> {
        match &self.safety {
            Safety::None => None,
            Safety::Probability { gp, .. } | Safety::SafeSet { gp, .. } => Some(gp),
        }
    }

    /// The value from the objective's and the safety model's posterior (mean, variance).
    fn combine(&self, obj: Option<(f64, f64)>, con: Option<(f64, f64)>) -> f64 {
        let mut total = 0.0;
        if let Some((m, v)) = obj {
            total += logei(m, v + STABILIZING_NOISE, self.f0);
        }
        let Some((m, v)) = con else {
            return total;
        };
        match &self.safety {
            Safety::None => {}
            Safety::Probability { threshold, .. } => {
                total += log_ndtr((threshold - m) / (v + STABILIZING_NOISE).sqrt());
            }
            Safety::SafeSet { beta, .. } => {
                let sd = (v + STABILIZING_NOISE).sqrt();
                let ucb = m + beta * sd;
                if ucb > 0.0 {
                    return OUTSIDE_SAFE_SET - ucb;
                }
                total += log_ndtr(-m / sd);
            }
        }
        total
    }

    /// The value at `x` and its gradient with respect to the coordinates `cont`.
    pub fn value_grad(&self, x: &[f64], cont: &[usize], grad: &mut [f64], w: &mut Work) -> f64 {
        let nc = cont.len();
        w.dm.resize(nc, 0.0);
        w.dv.resize(nc, 0.0);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut total = 0.0;
        if let Some(gp) = &self.objective {
            let (mut m, v) = gp.posterior_grad(x, cont, &mut w.dm, &mut w.dv, &mut w.s);
            if let Some((prior, c)) = &self.prior {
                w.dp.resize(nc, 0.0);
                m += c + prior.mean_grad(x, cont, &mut w.dp);
                for (a, b) in w.dm.iter_mut().zip(&w.dp) {
                    *a += b;
                }
            }
            let var = v + STABILIZING_NOISE;
            let sigma = var.sqrt();
            let z = (m - self.f0) / sigma;
            let h = standard_logei(z);
            total += h + sigma.ln();
            let hd = standard_logei_d(z, h);
            for c in 0..nc {
                let dsigma = w.dv[c] / (2.0 * sigma);
                // d/dx [h(z) + ln σ], z = (m − f0)/σ.
                grad[c] += hd * (w.dm[c] - z * dsigma) / sigma + dsigma / sigma;
            }
        }
        let (gp, threshold, beta) = match &self.safety {
            Safety::None => return total,
            Safety::Probability { gp, threshold } => (gp, *threshold, None),
            Safety::SafeSet { gp, beta } => (gp, 0.0, Some(*beta)),
        };
        let (m, v) = gp.posterior_grad(x, cont, &mut w.dm, &mut w.dv, &mut w.s);
        let sd = (v + STABILIZING_NOISE).sqrt();
        if let Some(beta) = beta {
            let ucb = m + beta * sd;
            if ucb > 0.0 {
                for c in 0..nc {
                    grad[c] = -(w.dm[c] + beta * w.dv[c] / (2.0 * sd));
                }
                return OUTSIDE_SAFE_SET - ucb;
            }
        }
        let u = (threshold - m) / sd;
        let lp = log_ndtr(u);
        total += lp;
        // d ln Φ(u)/du = φ(u)/Φ(u).
        let ratio = (-0.5 * u * u - 0.5 * (2.0 * PI).ln() - lp).exp();
        for c in 0..nc {
            let dsd = w.dv[c] / (2.0 * sd);
            grad[c] += ratio * (-w.dm[c] - u * dsd) / sd;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::gp::kernel::Hyper;
    use crate::sampler::TrialRng;

    /// E[max(0, Y − f0)] by the textbook formula (accurate away from the far tail).
    fn direct_ei(mean: f64, var: f64, f0: f64) -> f64 {
        let s = var.sqrt();
        let z = (mean - f0) / s;
        let cdf = 0.5 * erfc(-z * FRAC_1_SQRT_2);
        let pdf = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        s * (z * cdf + pdf)
    }

    #[test]
    fn logei_matches_direct_ei_and_stays_finite_in_the_tail() {
        for (m, v, f0) in [
            (0.0, 1.0, 0.0),
            (1.0, 0.5, 0.2),
            (-2.0, 0.3, 1.0),
            (3.0, 2.0, -1.0),
        ] {
            let a = logei(m, v, f0).exp();
            let b = direct_ei(m, v, f0);
            assert!(
                (a - b).abs() < 1e-12 * b.max(1e-300) + 1e-15,
                "{m} {v} {f0}: {a} {b}"
            );
        }
        // Both branches meet at z = −25 (continuity), and far below EI underflows while
        // logEI stays finite and decreasing like −z²/2.
        let (a, b) = (standard_logei(-25.0 + 1e-9), standard_logei(-25.0 - 1e-9));
        assert!((a - b).abs() < 1e-6, "{a} {b}");
        let far = standard_logei(-60.0);
        assert!(far.is_finite() && far < standard_logei(-50.0));
        assert!((far - (-1800.0 - 0.5 * (2.0 * PI).ln() - 2.0 * 60f64.ln())).abs() < 0.01);
        // The derivative matches finite differences on both sides of −25.
        for z in [-30.0, -5.0, 0.0, 2.0] {
            let e = 1e-6;
            let fd = (standard_logei(z + e) - standard_logei(z - e)) / (2.0 * e);
            let an = standard_logei_d(z, standard_logei(z));
            assert!((fd - an).abs() < 1e-5 * an.abs().max(1.0), "{z}: {fd} {an}");
        }
    }

    fn toy_gp(seed: u64, y_shift: f64) -> Gp {
        let mut r = TrialRng::from_seed(seed);
        let h = Hyper {
            inv_sq_ls: vec![4.0, 2.0],
            scale: 1.0,
            noise: 1e-4,
        };
        let mut g = Gp::empty(2, vec![false, false], h);
        let x: Vec<f64> = (0..16).map(|_| r.next_f64()).collect();
        g.extend(&x);
        let y: Vec<f64> = x
            .chunks(2)
            .map(|p| (4.0 * p[0]).sin() * p[1] + y_shift)
            .collect();
        g.set_y(&y);
        g
    }

    #[test]
    fn acquisition_gradient_matches_finite_differences() {
        let cont = [0usize, 1];
        for safety in [
            Safety::None,
            Safety::Probability {
                gp: toy_gp(2, 0.0),
                threshold: 0.3,
            },
            Safety::SafeSet {
                gp: toy_gp(3, -2.0),
                beta: 1.0,
            },
        ] {
            let with_prior = matches!(safety, Safety::Probability { .. });
            let a = Acquisition {
                objective: Some(toy_gp(1, 0.0)),
                f0: 0.5,
                prior: with_prior.then(|| (toy_gp(4, 0.3), -0.2)),
                safety,
            };
            let mut w = Work::default();
            let qs = [0.2, 0.7, 0.55, 0.3, 0.9, 0.9, 0.01, 0.99];
            let mut batch = Vec::new();
            a.values(&qs, &mut batch, &mut BatchWork::default());
            for (q, b) in qs.chunks(2).zip(&batch) {
                let one = a.value(q, &mut w);
                assert!(
                    (one - b).abs() < 1e-9 * one.abs().max(1.0),
                    "{q:?}: {one} {b}"
                );
            }
            for q in [[0.2, 0.7], [0.55, 0.3], [0.9, 0.9]] {
                let mut g = [0.0; 2];
                let v = a.value_grad(&q, &cont, &mut g, &mut w);
                assert!((v - a.value(&q, &mut w)).abs() < 1e-10);
                for c in 0..2 {
                    let e = 1e-6;
                    let (mut p, mut m) = (q, q);
                    p[c] += e;
                    m[c] -= e;
                    let fd = (a.value(&p, &mut w) - a.value(&m, &mut w)) / (2.0 * e);
                    assert!(
                        (fd - g[c]).abs() < 1e-4 * fd.abs().max(1.0),
                        "{q:?} {c}: {fd} {}",
                        g[c]
                    );
                }
            }
        }
    }
}
