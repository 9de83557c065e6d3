//! A Cholesky factor stored packed by rows, grown one row at a time.
//!
//! Row `i` of `L` (`K = L Lᵀ`) depends only on rows `0..=i` of `K`, so appending the trials
//! that arrived since the last ask costs `O(n²)` per row instead of refactoring, and gives
//! bit for bit the factor a full factorisation computes (the full one is the same appends):
//! caching it can never change a proposal.

/// `Σ a_i b_i` over the shorter length, with eight independent partial sums: a plain
/// left-to-right sum is bound by the latency of one addition per term, which is what the
/// triangular solves spent their time on.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut s = [0.0f64; 8];
    for (x, y) in ca.zip(cb) {
        for ((sk, xk), yk) in s.iter_mut().zip(x).zip(y) {
            *sk += xk * yk;
        }
    }
    let mut t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (x, y) in ra.iter().zip(rb) {
        t += x * y;
    }
    t
}

use nalgebra::DMatrix;

/// A lower-triangular factor, rows packed (`row i` = `data[i(i+1)/2 ..][..=i]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Packed {
    data: Vec<f64>,
    n: usize,
}

impl Packed {
    /// Rows so far.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row `i` (`i + 1` entries).
    #[inline]
    pub fn row(&self, i: usize) -> &[f64] {
        let start = i * (i + 1) / 2;
        &self.data[start..start + i + 1]
    }

    /// Appends the row of `K` given as `k_row` (`n + 1` entries: covariances with the rows
    /// so far, then the diagonal). `false` if `K` is not positive definite there (the factor
    /// is then unchanged).
    pub fn push(&mut self, k_row: &[f64]) -> bool {
        let i = self.n;
        debug_assert_eq!(k_row.len(), i + 1);
        let start = self.data.len();
        for j in 0..i {
            let lj = self.row(j);
            let ri = &self.data[start..start + j];
            let v = (k_row[j] - dot(ri, &lj[..j])) / lj[j];
            self.data.push(v);
        }
        let ri = &self.data[start..start + i];
        let s = k_row[i] - dot(ri, ri);
        if !(s > 0.0 && s.is_finite()) {
            self.data.truncate(start);
            return false;
        }
        self.data.push(s.sqrt());
        self.n += 1;
        true
    }

    /// Solves `L v = b` in place.
    pub fn solve_lower(&self, b: &mut [f64]) {
        for i in 0..self.n {
            let r = self.row(i);
            b[i] = (b[i] - dot(&r[..i], &b[..i])) / r[i];
        }
    }

    /// Solves `Lᵀ w = b` in place.
    pub fn solve_upper(&self, b: &mut [f64]) {
        for i in (0..self.n).rev() {
            let r = self.row(i);
            let w = b[i] / r[i];
            b[i] = w;
            for (bj, a) in b[..i].iter_mut().zip(&r[..i]) {
                *bj -= a * w;
            }
        }
    }

    /// Solves `K x = b` in place.
    pub fn solve(&self, b: &mut [f64]) {
        self.solve_lower(b);
        self.solve_upper(b);
    }

    /// `L⁻¹` (lower triangular, column-major `n × n`): column `k` solves `L x = e_k`, which
    /// is zero above `k`.
    pub fn inverse(&self) -> DMatrix<f64> {
        let n = self.n;
        let mut inv = DMatrix::<f64>::zeros(n, n);
        let data = inv.as_mut_slice();
        for k in 0..n {
            let col = &mut data[k * n..(k + 1) * n];
            col[k] = 1.0 / self.row(k)[k];
            for i in k + 1..n {
                let r = self.row(i);
                col[i] = -dot(&r[k..i], &col[k..i]) / r[i];
            }
        }
        inv
    }

    /// `ln det K = 2 Σ ln L_ii`.
    #[cfg(test)]
    pub fn log_det(&self) -> f64 {
        (0..self.n).map(|i| 2.0 * self.row(i)[i].ln()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::TrialRng;
    use nalgebra::{DMatrix, DVector};

    fn spd(n: usize, seed: u64) -> DMatrix<f64> {
        let mut r = TrialRng::from_seed(seed);
        let a = DMatrix::from_fn(n, n, |_, _| r.normal());
        &a * a.transpose() + DMatrix::identity(n, n) * 0.1
    }

    fn factor(k: &DMatrix<f64>) -> Packed {
        let mut p = Packed::default();
        for i in 0..k.nrows() {
            let row: Vec<f64> = (0..=i).map(|j| k[(i, j)]).collect();
            assert!(p.push(&row));
        }
        p
    }

    #[test]
    fn solve_matches_a_direct_solve() {
        for (n, seed) in [(1, 1), (5, 2), (30, 3)] {
            let k = spd(n, seed);
            let p = factor(&k);
            let mut r = TrialRng::from_seed(seed + 10);
            let b: Vec<f64> = (0..n).map(|_| r.normal()).collect();
            let direct = k.clone().lu().solve(&DVector::from_vec(b.clone())).unwrap();
            let mut x = b.clone();
            p.solve(&mut x);
            for i in 0..n {
                assert!((x[i] - direct[i]).abs() < 1e-8 * (1.0 + direct[i].abs()));
            }
            let det = k.determinant();
            assert!((p.log_det() - det.ln()).abs() < 1e-8 * det.ln().abs().max(1.0));
            // L Lᵀ reproduces K.
            for i in 0..n {
                for j in 0..=i {
                    let s: f64 = (0..=j).map(|m| p.row(i)[m] * p.row(j)[m]).sum();
                    assert!((s - k[(i, j)]).abs() < 1e-9 * (1.0 + k[(i, j)].abs()));
                }
            }
        }
    }

    #[test]
    fn inverse_inverts_and_dot_sums() {
        let k = spd(21, 5);
        let p = factor(&k);
        let inv = p.inverse();
        let mut l = DMatrix::<f64>::zeros(21, 21);
        for i in 0..21 {
            for j in 0..=i {
                l[(i, j)] = p.row(i)[j];
            }
        }
        let id = &inv * &l;
        for i in 0..21 {
            for j in 0..21 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((id[(i, j)] - want).abs() < 1e-9, "{i} {j}: {}", id[(i, j)]);
            }
        }
        let a: Vec<f64> = (0..19).map(|i| i as f64 * 0.5).collect();
        let b: Vec<f64> = (0..23).map(|i| 1.0 - i as f64).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), want, "exact on small integers and halves");
    }

    #[test]
    fn growing_equals_refactoring_and_refuses_indefinite_rows() {
        let k = spd(12, 4);
        let full = factor(&k);
        let mut grown = factor(&k.view((0, 0), (7, 7)).into_owned());
        for i in 7..12 {
            let row: Vec<f64> = (0..=i).map(|j| k[(i, j)]).collect();
            assert!(grown.push(&row));
        }
        assert_eq!(grown, full, "bit for bit");
        let mut p = Packed::default();
        assert!(p.push(&[1.0]));
        assert!(!p.push(&[1.0, 1.0]), "singular: rank 1");
        assert_eq!(p.n(), 1);
    }
}
