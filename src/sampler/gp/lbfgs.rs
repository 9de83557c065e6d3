//! A projected L-BFGS minimiser for box constraints (a small L-BFGS-B): the two-loop
//! L-BFGS direction over the variables not held at a bound, a backtracking (Armijo) line
//! search along the projected path. Used for the hyperparameter fit (wide bounds on the
//! log-parameters) and the acquisition's continuous coordinates (the unit box).

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    /// Largest projected-gradient component considered zero (scipy's `pgtol`).
    pub pgtol: f64,
    /// Relative decrease of `f` below which it stops (scipy's `factr × eps`).
    pub ftol: f64,
    /// Iterations at most.
    pub max_iter: usize,
}

/// The result: the point, its value, and the iterations done.
#[derive(Debug, Clone)]
pub(crate) struct Minimum {
    pub x: Vec<f64>,
    pub f: f64,
    pub iterations: usize,
}

const MEMORY: usize = 10;

fn project(x: &mut [f64], lo: &[f64], hi: &[f64]) {
    for i in 0..x.len() {
        x[i] = x[i].clamp(lo[i], hi[i]);
    }
}

/// Whether variable `i` is held at a bound by the gradient.
fn held(x: f64, g: f64, lo: f64, hi: f64) -> bool {
    (x <= lo && g > 0.0) || (x >= hi && g < 0.0)
}

/// Minimises `fg` (value, gradient written to its second argument) over the box
/// `[lo, hi]` from `x0`. A non-finite value counts as "worse than anything" for the line
/// search.
pub(crate) fn minimize(
    mut fg: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    stop: Stop,
) -> Minimum {
    let n = x0.len();
    let mut x = x0.to_vec();
    project(&mut x, lo, hi);
    let mut g = vec![0.0; n];
    let mut f = fg(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut dir = vec![0.0; n];
    let mut iterations = 0;
    if !f.is_finite() {
        return Minimum { x, f, iterations };
    }
    while iterations < stop.max_iter {
        let free: Vec<bool> = (0..n).map(|i| !held(x[i], g[i], lo[i], hi[i])).collect();
        let pg = (0..n)
            .filter(|&i| free[i])
            .map(|i| g[i].abs())
            .fold(0.0, f64::max);
        if pg <= stop.pgtol {
            break;
        }
        // Two-loop recursion on the free variables.
        for i in 0..n {
            dir[i] = if free[i] { g[i] } else { 0.0 };
        }
        let m = s_hist.len();
        let mut alpha = vec![0.0; m];
        let dot = |a: &[f64], b: &[f64]| -> f64 {
            (0..n).filter(|&i| free[i]).map(|i| a[i] * b[i]).sum()
        };
        let mut rho = vec![0.0; m];
        for k in (0..m).rev() {
            let sy = dot(&s_hist[k], &y_hist[k]);
            rho[k] = if sy > 0.0 { 1.0 / sy } else { 0.0 };
            alpha[k] = rho[k] * dot(&s_hist[k], &dir);
            for i in 0..n {
                if free[i] {
                    dir[i] -= alpha[k] * y_hist[k][i];
                }
            }
        }
        if m > 0 {
            let (sy, yy) = (
                dot(&s_hist[m - 1], &y_hist[m - 1]),
                dot(&y_hist[m - 1], &y_hist[m - 1]),
            );
            if sy > 0.0 && yy > 0.0 {
                let gamma = sy / yy;
                dir.iter_mut().for_each(|v| *v *= gamma);
            }
        }
        for k in 0..m {
            let beta = rho[k] * dot(&y_hist[k], &dir);
            for i in 0..n {
                if free[i] {
                    dir[i] += s_hist[k][i] * (alpha[k] - beta);
                }
            }
        }
        dir.iter_mut().for_each(|v| *v = -*v);
        let mut slope: f64 = (0..n).map(|i| dir[i] * g[i]).sum();
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction: steepest descent, forget the curvature pairs.
            for i in 0..n {
                dir[i] = if free[i] { -g[i] } else { 0.0 };
            }
            slope = -(0..n).map(|i| dir[i] * dir[i]).sum::<f64>();
            s_hist.clear();
            y_hist.clear();
        }
        // First step of a fresh memory: at most a unit move.
        let mut t = if s_hist.is_empty() {
            let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
            (1.0 / norm).min(1.0)
        } else {
            1.0
        };
        let mut accepted = false;
        let mut f_new = f;
        for _ in 0..40 {
            for i in 0..n {
                x_new[i] = x[i] + t * dir[i];
            }
            project(&mut x_new, lo, hi);
            f_new = fg(&x_new, &mut g_new);
            let decrease: f64 = (0..n).map(|i| g[i] * (x_new[i] - x[i])).sum();
            if f_new.is_finite() && f_new <= f + 1e-4 * decrease.min(0.0).max(t * slope) {
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        iterations += 1;
        if !accepted {
            break;
        }
        let s: Vec<f64> = (0..n).map(|i| x_new[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| g_new[i] - g[i]).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let f_old = f;
        x.copy_from_slice(&x_new);
        g.copy_from_slice(&g_new);
        f = f_new;
        if sy > 1e-12 * y.iter().map(|v| v * v).sum::<f64>().max(1e-300) {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
        }
        if (f_old - f) <= stop.ftol * f_old.abs().max(f.abs()).max(1.0) {
            break;
        }
    }
    Minimum { x, f, iterations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_rosenbrock_and_respects_bounds() {
        let rosen = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let stop = Stop {
            pgtol: 1e-8,
            ftol: 1e-15,
            max_iter: 500,
        };
        let inf = f64::INFINITY;
        let m = minimize(rosen, &[-1.2, 1.0], &[-inf, -inf], &[inf, inf], stop);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-4 && (m.x[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
        // With the box [−2, 0.5]²: the constrained optimum is on the bound a = 0.5.
        let m = minimize(rosen, &[-1.2, 1.0], &[-2.0, -2.0], &[0.5, 0.5], stop);
        assert!(
            (m.x[0] - 0.5).abs() < 1e-9 && (m.x[1] - 0.25).abs() < 1e-4,
            "{m:?}"
        );
    }
}
