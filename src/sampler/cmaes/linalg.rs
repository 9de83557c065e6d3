//! The little linear algebra CMA-ES needs: a symmetric eigensolver (cyclic Jacobi, exact
//! enough and fast for the ≤ 64 dimensions a gait controller has) and the standard normal
//! quantile for the integer margin.

/// Eigen-decomposition of a symmetric `n × n` matrix `a` (row-major; only its upper
/// triangle is read) by cyclic Jacobi rotations.
///
/// Returns `(values, vectors)`: `vectors[i * n + j]` is component `i` of the unit
/// eigenvector of `values[j]` (the eigenvectors are the columns of a row-major matrix `B`,
/// with `A = B diag(values) Bᵀ`). Deterministic: the same input gives the same bits.
pub(crate) fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "sym_eigen: matrix is not {n}x{n}");
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            m[i * n + j] = a[i * n + j];
            m[j * n + i] = a[i * n + j];
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..64 {
        let mut off = 0.0;
        let mut diag = 0.0;
        for i in 0..n {
            diag += m[i * n + i] * m[i * n + i];
            for j in i + 1..n {
                off += m[i * n + j] * m[i * n + j];
            }
        }
        if off == 0.0 || off <= 1e-30 * diag {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let app = m[p * n + p];
                let aqq = m[q * n + q];
                // Skip rotations too small to change the diagonal in floating point.
                if apq.abs() * 1e18 < app.abs().min(aqq.abs()) {
                    m[p * n + q] = 0.0;
                    m[q * n + p] = 0.0;
                    continue;
                }
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = m[k * n + p];
                    let akq = m[k * n + q];
                    m[k * n + p] = c * akp - s * akq;
                    m[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = m[p * n + k];
                    let aqk = m[q * n + k];
                    m[p * n + k] = c * apk - s * aqk;
                    m[q * n + k] = s * apk + c * aqk;
                }
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| m[i * n + i]).collect();
    (values, v)
}

/// The standard normal quantile `Φ⁻¹(p)` for `p` in (0, 1) (Acklam's rational
/// approximation, relative error below 1.2e-9).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::TrialRng;

    fn check_decomposition(a: &[f64], n: usize) {
        let (vals, vecs) = sym_eigen(a, n);
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1.0);
        // A b_j = λ_j b_j for every column, and BᵀB = I.
        for j in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|k| a[i * n + k] * vecs[k * n + j]).sum();
                let lv = vals[j] * vecs[i * n + j];
                assert!(
                    (av - lv).abs() < 1e-10 * scale,
                    "n={n} col {j}: {av} vs {lv}"
                );
            }
            for k in 0..n {
                let dot: f64 = (0..n).map(|i| vecs[i * n + j] * vecs[i * n + k]).sum();
                let want = if j == k { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "not orthonormal: {dot}");
            }
        }
    }

    #[test]
    fn jacobi_diagonalises_random_symmetric_matrices() {
        let mut rng = TrialRng::from_seed(11);
        for n in [1, 2, 3, 8, 20, 40] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in i..n {
                    let x = rng.normal();
                    a[i * n + j] = x;
                    a[j * n + i] = x;
                }
            }
            check_decomposition(&a, n);
        }
    }

    #[test]
    fn jacobi_known_values_and_ill_conditioning() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let (mut vals, _) = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        vals.sort_by(f64::total_cmp);
        assert!((vals[0] - 1.0).abs() < 1e-14 && (vals[1] - 3.0).abs() < 1e-14);
        // A covariance with condition number 1e12, rotated: eigenvalues recovered.
        let n = 4;
        let diag = [1e-6, 1e-2, 1.0, 1e6];
        let mut rng = TrialRng::from_seed(5);
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let x = rng.normal();
                m[i * n + j] = x;
                m[j * n + i] = x;
            }
        }
        let (_, q) = sym_eigen(&m, n);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| q[i * n + k] * diag[k] * q[j * n + k]).sum();
            }
        }
        let (mut vals, _) = sym_eigen(&a, n);
        vals.sort_by(f64::total_cmp);
        for (v, d) in vals.iter().zip(diag) {
            assert!((v - d).abs() < 1e-9 * 1e6, "{v} vs {d}");
        }
        assert!((vals[3] - 1e6).abs() < 1e-6 && (vals[2] - 1.0).abs() < 1e-8);
    }

    #[test]
    fn normal_quantile_matches_tables() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.01) + 2.326_347_874_040_841).abs() < 1e-8);
        assert!((normal_quantile(1.0 - 1e-6) - 4.753_424_308_822_899).abs() < 1e-7);
    }
}
