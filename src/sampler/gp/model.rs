//! A fitted Gaussian process: training points, hyperparameters, the Cholesky factor of
//! `K + σ²I` and `α = (K + σ²I)⁻¹ y`; the posterior of the latent function at new points.

use nalgebra::DMatrix;

use super::chol::{dot, Packed};
use super::kernel::{kernel, matern52, matern52_d, sq_dist, Hyper};

/// A GP conditioned on its training data (zero prior mean; `y` as given).
#[derive(Debug, Clone)]
pub(crate) struct Gp {
    pub d: usize,
    /// Training points, row-major `n × d`.
    pub x: Vec<f64>,
    pub is_cat: Vec<bool>,
    pub hyper: Hyper,
    pub chol: Packed,
    pub alpha: Vec<f64>,
    /// Noise actually on the diagonal (the fitted one, raised if `K` was not positive
    /// definite with it).
    pub noise: f64,
    /// `L⁻¹` (dense, column-major), once [`Gp::prepare`] computed it for the current
    /// factor: the acquisition's many posteriors then cost matrix-vector products.
    linv: Option<DMatrix<f64>>,
}

/// Per-evaluation scratch space.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    k: Vec<f64>,
    v: Vec<f64>,
    dk: Vec<f64>,
}

impl Gp {
    /// An empty GP (no training point yet) over `d` coordinates.
    pub fn empty(d: usize, is_cat: Vec<bool>, hyper: Hyper) -> Gp {
        let noise = hyper.noise;
        Gp {
            d,
            x: Vec::new(),
            is_cat,
            hyper,
            chol: Packed::default(),
            alpha: Vec::new(),
            noise,
            linv: None,
        }
    }

    /// Computes and keeps `L⁻¹` for the posteriors that follow (until the training set
    /// changes): `O(n³/6)` once per ask instead of two triangular solves per evaluation.
    pub fn prepare(&mut self) {
        if self.linv.is_none() {
            self.linv = Some(self.chol.inverse());
        }
    }

    /// `v = L⁻¹ k` in place (`L⁻¹` if prepared: column by column, vectorised).
    fn whiten(&self, k: &[f64], v: &mut Vec<f64>) {
        let n = k.len();
        v.clear();
        match &self.linv {
            Some(li) => {
                v.resize(n, 0.0);
                let ld = li.as_slice();
                for (j, &kj) in k.iter().enumerate() {
                    let col = &ld[j * n + j..(j + 1) * n];
                    for (vi, a) in v[j..].iter_mut().zip(col) {
                        *vi += a * kj;
                    }
                }
            }
            None => {
                v.extend_from_slice(k);
                self.chol.solve_lower(v);
            }
        }
    }

    /// `w = L⁻ᵀ v` in place.
    fn unwhiten(&self, v: &mut [f64]) {
        match &self.linv {
            Some(li) => {
                let n = v.len();
                let ld = li.as_slice();
                for j in 0..n {
                    v[j] = dot(&ld[j * n + j..(j + 1) * n], &v[j..]);
                }
            }
            None => self.chol.solve_upper(v),
        }
    }

    /// Training points.
    pub fn n(&self) -> usize {
        self.chol.n()
    }

    /// Conditions on the points `rows` (row-major) too. If a point makes the matrix
    /// numerically singular, the whole factor is rebuilt with ten times the noise (the same
    /// arithmetic every time, so still deterministic).
    pub fn extend(&mut self, rows: &[f64]) {
        let d = self.d;
        let mut k_row = Vec::new();
        self.linv = None;
        for (i, p) in rows.chunks(d).enumerate() {
            self.x.extend_from_slice(p);
            if !self.push_row(self.n(), &mut k_row) {
                // The rebuild covers every point in `x`: the rest go in first.
                self.x.extend_from_slice(&rows[(i + 1) * d..]);
                self.refactor_with_more_noise();
                return;
            }
        }
    }

    fn push_row(&mut self, i: usize, k_row: &mut Vec<f64>) -> bool {
        let d = self.d;
        let p = &self.x[i * d..(i + 1) * d];
        k_row.clear();
        for j in 0..i {
            k_row.push(kernel(
                p,
                &self.x[j * d..(j + 1) * d],
                &self.hyper,
                &self.is_cat,
            ));
        }
        k_row.push(self.hyper.scale + self.noise);
        self.chol.push(k_row)
    }

    fn refactor_with_more_noise(&mut self) {
        let n = self.x.len() / self.d;
        let mut k_row = Vec::new();
        'retry: loop {
            self.noise = (self.noise * 10.0).max(1e-10 * self.hyper.scale);
            self.chol = Packed::default();
            for i in 0..n {
                if !self.push_row(i, &mut k_row) {
                    continue 'retry;
                }
            }
            return;
        }
    }

    /// Sets the training targets (one per training point): `α = K⁻¹ y`.
    pub fn set_y(&mut self, y: &[f64]) {
        debug_assert_eq!(y.len(), self.n());
        self.alpha.clear();
        self.alpha.extend_from_slice(y);
        self.chol.solve(&mut self.alpha);
    }

    /// Posterior means and variances of the latent function at the `m` points `q`
    /// (row-major `m × d`), written to `mean` and `var`: the same numbers as [`Gp::posterior`]
    /// up to rounding, computed for all points at once. The cross-covariances of a block of
    /// points form one `n × b` matrix `K*`; `V = L⁻¹ K*` is one matrix product (row blocks of
    /// the triangular `L⁻¹` against the rows of `K*` they touch); the variances are
    /// `s − ‖V_col‖²` and the means `K*ᵀ α`.
    pub fn posterior_batch(&self, q: &[f64], mean: &mut Vec<f64>, var: &mut Vec<f64>) {
        const BLOCK: usize = 256;
        const ROWS: usize = 32;
        let n = self.n();
        let d = self.d;
        let m = q.len() / d;
        mean.clear();
        var.clear();
        if n == 0 {
            mean.resize(m, 0.0);
            var.resize(m, self.hyper.scale);
            return;
        }
        let computed;
        let linv = match &self.linv {
            Some(l) => l,
            None => {
                computed = self.chol.inverse();
                &computed
            }
        };
        let b = BLOCK.min(m);
        let mut ks = DMatrix::<f64>::zeros(n, b);
        let mut v = DMatrix::<f64>::zeros(n, b);
        for c0 in (0..m).step_by(BLOCK) {
            let mc = BLOCK.min(m - c0);
            let kd = ks.as_mut_slice();
            for c in 0..mc {
                let qc = &q[(c0 + c) * d..(c0 + c + 1) * d];
                let col = &mut kd[c * n..(c + 1) * n];
                for (i, kc) in col.iter_mut().enumerate() {
                    *kc = kernel(qc, &self.x[i * d..(i + 1) * d], &self.hyper, &self.is_cat);
                }
            }
            for r0 in (0..n).step_by(ROWS) {
                let r1 = (r0 + ROWS).min(n);
                v.view_mut((r0, 0), (r1 - r0, mc)).gemm(
                    1.0,
                    &linv.view((r0, 0), (r1 - r0, r1)),
                    &ks.view((0, 0), (r1, mc)),
                    0.0,
                );
            }
            let (kd, vd) = (ks.as_slice(), v.as_slice());
            for c in 0..mc {
                let kc = &kd[c * n..(c + 1) * n];
                let vc = &vd[c * n..(c + 1) * n];
                mean.push(dot(kc, &self.alpha));
                var.push((self.hyper.scale - dot(vc, vc)).max(0.0));
            }
        }
    }

    /// Posterior mean at `q` and its gradient with respect to the coordinates `cont` of
    /// `q` (into `dmean`); `O(n d)`, no solve (`dmean` empty: the mean only).
    pub fn mean_grad(&self, q: &[f64], cont: &[usize], dmean: &mut [f64]) -> f64 {
        let d = self.d;
        let h = &self.hyper;
        dmean.iter_mut().for_each(|g| *g = 0.0);
        let mut mean = 0.0;
        for (i, &a) in self.alpha.iter().enumerate() {
            let xi = &self.x[i * d..(i + 1) * d];
            let r2 = sq_dist(q, xi, &h.inv_sq_ls, &self.is_cat);
            mean += a * h.scale * matern52(r2);
            if !dmean.is_empty() {
                let dm = a * h.scale * matern52_d(r2);
                for (c, &j) in cont.iter().enumerate() {
                    dmean[c] += dm * 2.0 * h.inv_sq_ls[j] * (q[j] - xi[j]);
                }
            }
        }
        mean
    }

    /// Posterior mean and variance of the latent function at `q`.
    pub fn posterior(&self, q: &[f64], s: &mut Scratch) -> (f64, f64) {
        let n = self.n();
        let d = self.d;
        s.k.clear();
        let mut mean = 0.0;
        for i in 0..n {
            let ki = kernel(q, &self.x[i * d..(i + 1) * d], &self.hyper, &self.is_cat);
            mean += ki * self.alpha[i];
            s.k.push(ki);
        }
        self.whiten(&s.k, &mut s.v);
        let vv = dot(&s.v, &s.v);
        (mean, (self.hyper.scale - vv).max(0.0))
    }

    /// Posterior mean and variance at `q` and their gradients with respect to the
    /// coordinates `cont` (numeric ones) of `q`, written to `dmean` and `dvar`.
    pub fn posterior_grad(
        &self,
        q: &[f64],
        cont: &[usize],
        dmean: &mut [f64],
        dvar: &mut [f64],
        s: &mut Scratch,
    ) -> (f64, f64) {
        let n = self.n();
        let d = self.d;
        let h = &self.hyper;
        s.k.clear();
        s.dk.clear();
        let mut mean = 0.0;
        for i in 0..n {
            let xi = &self.x[i * d..(i + 1) * d];
            let r2 = sq_dist(q, xi, &h.inv_sq_ls, &self.is_cat);
            let ki = h.scale * matern52(r2);
            mean += ki * self.alpha[i];
            s.k.push(ki);
            s.dk.push(h.scale * matern52_d(r2));
        }
        self.whiten(&s.k, &mut s.v);
        let vv = dot(&s.v, &s.v);
        // w = K⁻¹ k, for the variance's gradient.
        self.unwhiten(&mut s.v);
        dmean.iter_mut().for_each(|g| *g = 0.0);
        dvar.iter_mut().for_each(|g| *g = 0.0);
        for i in 0..n {
            let xi = &self.x[i * d..(i + 1) * d];
            let (a, w, dm) = (self.alpha[i], s.v[i], s.dk[i]);
            for (c, &j) in cont.iter().enumerate() {
                // ∂k_i/∂q_j = s·m'(r²)·2ρ_j(q_j − x_ij)
                let g = dm * 2.0 * h.inv_sq_ls[j] * (q[j] - xi[j]);
                dmean[c] += a * g;
                dvar[c] -= 2.0 * w * g;
            }
        }
        let var = h.scale - vv;
        if var <= 0.0 {
            dvar.iter_mut().for_each(|g| *g = 0.0);
        }
        (mean, var.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::TrialRng;

    fn gp(n: usize, d: usize, seed: u64, is_cat: Vec<bool>) -> Gp {
        let mut r = TrialRng::from_seed(seed);
        let h = Hyper {
            inv_sq_ls: (0..d).map(|j| 1.0 + j as f64).collect(),
            scale: 1.3,
            noise: 0.01,
        };
        let mut g = Gp::empty(d, is_cat.clone(), h);
        let x: Vec<f64> = (0..n * d)
            .map(|k| {
                if is_cat[k % d] {
                    r.below(3) as f64
                } else {
                    r.next_f64()
                }
            })
            .collect();
        g.extend(&x);
        let y: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        g.set_y(&y);
        g
    }

    #[test]
    fn a_singular_point_keeps_every_point_after_it() {
        let h = Hyper {
            inv_sq_ls: vec![1.0, 1.0],
            scale: 1.0,
            noise: 0.0,
        };
        let mut g = Gp::empty(2, vec![false, false], h);
        // The second point repeats the first: without noise the matrix is singular there.
        g.extend(&[0.2, 0.3, 0.2, 0.3, 0.9, 0.1, 0.5, 0.5]);
        assert_eq!(g.n(), 4);
        assert!(g.noise > 0.0);
        g.set_y(&[1.0, 1.0, -1.0, 0.0]);
        let (mean, _) = g.posterior(&[0.9, 0.1], &mut Scratch::default());
        assert!((mean + 1.0).abs() < 0.1, "{mean}");
    }

    #[test]
    fn kernel_matrix_is_symmetric_and_positive_definite() {
        let g = gp(25, 3, 1, vec![false, true, false]);
        let d = g.d;
        let x = |i: usize| &g.x[i * d..(i + 1) * d];
        for i in 0..25 {
            for j in 0..25 {
                let a = kernel(x(i), x(j), &g.hyper, &g.is_cat);
                let b = kernel(x(j), x(i), &g.hyper, &g.is_cat);
                assert_eq!(a, b);
                assert!(a <= g.hyper.scale + 1e-15);
            }
        }
        // Positive definite without noise too: the factor of K + 1e-10·I exists and its
        // quadratic forms are positive.
        let mut p = Packed::default();
        for i in 0..25 {
            let mut row: Vec<f64> = (0..i)
                .map(|j| kernel(x(i), x(j), &g.hyper, &g.is_cat))
                .collect();
            row.push(g.hyper.scale + 1e-10);
            assert!(p.push(&row), "row {i}");
        }
        let mut r = TrialRng::from_seed(9);
        for _ in 0..20 {
            let v: Vec<f64> = (0..25).map(|_| r.normal()).collect();
            let q: f64 = (0..25)
                .flat_map(|i| (0..25).map(move |j| (i, j)))
                .map(|(i, j)| v[i] * v[j] * kernel(x(i), x(j), &g.hyper, &g.is_cat))
                .sum();
            assert!(q > 0.0);
        }
    }

    #[test]
    fn batched_posterior_matches_one_at_a_time() {
        for (n, is_cat) in [
            (0, vec![false, true, false]),
            (45, vec![false, true, false]),
        ] {
            let g = gp(n, 3, 4, is_cat);
            let mut r = TrialRng::from_seed(5);
            // More points than one block, and training points among them.
            let mut q: Vec<f64> = (0..300 * 3)
                .map(|k| {
                    if k % 3 == 1 {
                        r.below(3) as f64
                    } else {
                        r.next_f64()
                    }
                })
                .collect();
            q.extend_from_slice(&g.x[..3.min(g.x.len())]);
            let (mut mean, mut var) = (Vec::new(), Vec::new());
            g.posterior_batch(&q, &mut mean, &mut var);
            assert_eq!(mean.len(), q.len() / 3);
            let mut s = Scratch::default();
            let mut prepared = g.clone();
            prepared.prepare();
            let (mut pm, mut pv) = (Vec::new(), Vec::new());
            prepared.posterior_batch(&q, &mut pm, &mut pv);
            assert_eq!((&pm, &pv), (&mean, &var), "the same L⁻¹ either way");
            let cont = [0usize, 2];
            let (mut dm, mut dv, mut pdm, mut pdv) = ([0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]);
            for (i, p) in q.chunks(3).enumerate() {
                let (m, v) = g.posterior(p, &mut s);
                assert!((m - mean[i]).abs() < 1e-9, "{i}: {m} {}", mean[i]);
                assert!((v - var[i]).abs() < 1e-9, "{i}: {v} {}", var[i]);
                let (m2, v2) = prepared.posterior(p, &mut s);
                assert!(
                    (m - m2).abs() < 1e-9 && (v - v2).abs() < 1e-9,
                    "{i} prepared"
                );
                g.posterior_grad(p, &cont, &mut dm, &mut dv, &mut s);
                prepared.posterior_grad(p, &cont, &mut pdm, &mut pdv, &mut s);
                for c in 0..2 {
                    assert!((dm[c] - pdm[c]).abs() < 1e-8, "{i} dmean {c}");
                    assert!((dv[c] - pdv[c]).abs() < 1e-8, "{i} dvar {c}");
                }
            }
        }
    }

    #[test]
    fn posterior_interpolates_and_gradients_match_finite_differences() {
        let g = gp(20, 3, 2, vec![false, true, false]);
        let mut s = Scratch::default();
        // Near a training point the posterior variance is about the noise level or less.
        let (_, var) = g.posterior(&g.x[0..3], &mut s);
        assert!(var < 0.02, "{var}");
        let (_, far) = g.posterior(&[10.0, 7.0, 10.0], &mut s);
        assert!((far - g.hyper.scale).abs() < 1e-9);
        let q = [0.3, 1.0, 0.6];
        let cont = [0usize, 2];
        let (mut dm, mut dv) = ([0.0; 2], [0.0; 2]);
        let (m, v) = g.posterior_grad(&q, &cont, &mut dm, &mut dv, &mut s);
        let (m2, v2) = g.posterior(&q, &mut s);
        assert!((m - m2).abs() < 1e-12 && (v - v2).abs() < 1e-12);
        for (c, &j) in cont.iter().enumerate() {
            let e = 1e-6;
            let (mut a, mut b) = (q, q);
            a[j] += e;
            b[j] -= e;
            let (ma, va) = g.posterior(&a, &mut s);
            let (mb, vb) = g.posterior(&b, &mut s);
            assert!(((ma - mb) / (2.0 * e) - dm[c]).abs() < 1e-5, "mean {j}");
            assert!(((va - vb) / (2.0 * e) - dv[c]).abs() < 1e-5, "var {j}");
        }
    }
}
