//! Maximising the acquisition over the mixed space, as Optuna's `optimize_acqf_mixed`:
//! score `n_preliminary` scrambled Sobol points, start local searches from the best of them,
//! from points drawn by roulette (probability ∝ `e^{acq − max}`) and from the warm starts
//! (the best trial), and return the best point found.
//!
//! The preliminary points are scored in one batch ([`Acquisition::values`]: one matrix
//! product per model instead of a triangular solve per point).
//!
//! A local search alternates until nothing changes (at most 100 rounds):
//! - the continuous coordinates by projected L-BFGS on the box, in coordinates scaled by the
//!   length scales (`z = x/ℓ`, Optuna's preconditioning);
//! - each discrete coordinate in turn: categoricals and grids of at most 16 points by trying
//!   every value; longer grids by trying the neighbours at ±1, ±2, ±4, … grid steps (Optuna
//!   runs Brent's method on the interpolated line instead; both look at O(log n) points).

use super::acqf::{Acquisition, BatchWork, Work};
use super::encode::{nearest, Coord, Encoding};
use super::lbfgs::{minimize, Stop};
use crate::sampler::qmc::{unit_points, QmcKind};
use crate::sampler::TrialRng;

/// Optuna's limit for trying every value of an int.
const MAX_EXHAUSTIVE: usize = 16;

/// A local search stops once an L-BFGS step improves the log-acquisition by less than this
/// (relative to `max(|f|, 1)`): an EI larger by a factor `1 + 1e-6` cannot change which
/// point is proposed in any way that matters, and the last iterations of a search that
/// crawls along a flat ridge were much of the time spent. (scipy's default, Optuna's, is
/// `1e7·ε ≈ 2.2e-9`.)
const LOCAL_FTOL: f64 = 1e-6;

/// Settings of the optimiser.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub n_preliminary: usize,
    pub n_local_search: usize,
    pub tol: f64,
}

/// One local search's state.
struct Point {
    x: Vec<f64>,
    f: f64,
}

/// The best point found and its acquisition value.
pub(crate) fn optimize(
    acq: &Acquisition,
    enc: &Encoding,
    length_scales: &[f64],
    warm_starts: &[Vec<f64>],
    rng: &mut TrialRng,
    settings: Settings,
) -> (Vec<f64>, f64) {
    let d = enc.d();
    let mut w = Work::default();
    let qmc_seed = rng.next_u64();
    let n = settings.n_preliminary.max(1);
    let mut units = Vec::new();
    unit_points(QmcKind::Sobol, true, qmc_seed, n, d, &mut units);
    let mut xs = vec![0.0; n * d];
    for (u, x) in units.chunks(d).zip(xs.chunks_mut(d)) {
        enc.unit_to_coords(u, x);
    }
    let mut fs = Vec::with_capacity(n);
    acq.values(&xs, &mut fs, &mut BatchWork::default());
    let max_i = (0..n).fold(0, |b, i| if fs[i] > fs[b] { i } else { b });
    let mut starts: Vec<Vec<f64>> = vec![xs[max_i * d..(max_i + 1) * d].to_vec()];
    // Roulette over the rest, without replacement.
    let mut probs: Vec<f64> = fs.iter().map(|&f| (f - fs[max_i]).exp()).collect();
    probs[max_i] = 0.0;
    let budget = settings
        .n_local_search
        .saturating_sub(warm_starts.len() + 1);
    for _ in 0..budget {
        let total: f64 = probs.iter().sum();
        if total.is_nan() || total <= 0.0 {
            break;
        }
        let mut u = rng.next_f64() * total;
        let mut pick = None;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                pick = Some(i);
                if u < p {
                    break;
                }
                u -= p;
            }
        }
        let Some(i) = pick else { break };
        probs[i] = 0.0;
        starts.push(xs[i * d..(i + 1) * d].to_vec());
    }
    starts.extend(warm_starts.iter().cloned());
    let mut best: Option<Point> = None;
    for x in starts {
        let f = acq.value(&x, &mut w);
        let p = local_search(
            acq,
            enc,
            length_scales,
            Point { x, f },
            settings.tol,
            &mut w,
        );
        if best.as_ref().map_or(true, |b| p.f > b.f) {
            best = Some(p);
        }
    }
    let best = best.expect("at least one start");
    (best.x, best.f)
}

fn local_search(
    acq: &Acquisition,
    enc: &Encoding,
    length_scales: &[f64],
    mut p: Point,
    tol: f64,
    w: &mut Work,
) -> Point {
    let cont: Vec<usize> = (0..enc.d())
        .filter(|&j| matches!(enc.dims[j].coord, Coord::Continuous))
        .collect();
    let ls: Vec<f64> = cont.iter().map(|&j| length_scales[j]).collect();
    for _ in 0..100 {
        let mut changed = continuous_step(acq, &cont, &ls, &mut p, tol, w);
        for j in 0..enc.d() {
            changed |= discrete_step(acq, enc, j, &mut p, w);
        }
        if !changed {
            break;
        }
    }
    p
}

/// L-BFGS over the continuous coordinates; whether it improved the point.
fn continuous_step(
    acq: &Acquisition,
    cont: &[usize],
    ls: &[f64],
    p: &mut Point,
    tol: f64,
    w: &mut Work,
) -> bool {
    if cont.is_empty() {
        return false;
    }
    let z0: Vec<f64> = cont.iter().zip(ls).map(|(&j, l)| p.x[j] / l).collect();
    let lo = vec![0.0; cont.len()];
    let hi: Vec<f64> = ls.iter().map(|l| 1.0 / l).collect();
    let mut x = p.x.clone();
    let mut gx = vec![0.0; cont.len()];
    let m = minimize(
        |z, g| {
            for (c, &j) in cont.iter().enumerate() {
                x[j] = (z[c] * ls[c]).clamp(0.0, 1.0);
            }
            let f = acq.value_grad(&x, cont, &mut gx, w);
            for c in 0..cont.len() {
                g[c] = -gx[c] * ls[c];
            }
            -f
        },
        &z0,
        &lo,
        &hi,
        Stop {
            pgtol: tol.sqrt(),
            ftol: LOCAL_FTOL,
            max_iter: 200,
        },
    );
    let f = -m.f;
    if m.iterations > 0 && f > p.f {
        for (c, &j) in cont.iter().enumerate() {
            p.x[j] = (m.x[c] * ls[c]).clamp(0.0, 1.0);
        }
        p.f = f;
        true
    } else {
        false
    }
}

/// Improves coordinate `j` (if discrete) with the others fixed; whether it changed.
fn discrete_step(acq: &Acquisition, enc: &Encoding, j: usize, p: &mut Point, w: &mut Work) -> bool {
    let values: Vec<f64> = match &enc.dims[j].coord {
        Coord::Continuous => return false,
        Coord::Categorical { k } => (0..*k).map(|c| c as f64).collect(),
        Coord::Discrete { grid, .. } => grid.clone(),
    };
    if values.len() < 2 {
        return false;
    }
    let current = nearest(&values, p.x[j]);
    let candidates: Vec<usize> = if values.len() <= MAX_EXHAUSTIVE
        || matches!(enc.dims[j].coord, Coord::Categorical { .. })
    {
        (0..values.len()).filter(|&c| c != current).collect()
    } else {
        let mut c = Vec::new();
        let mut step = 1usize;
        while step < values.len() {
            if current >= step {
                c.push(current - step);
            }
            if current + step < values.len() {
                c.push(current + step);
            }
            step *= 2;
        }
        c
    };
    let mut x = p.x.clone();
    let mut best: Option<(usize, f64)> = None;
    for c in candidates {
        x[j] = values[c];
        let f = acq.value(&x, w);
        if f > p.f && best.map_or(true, |(_, b)| f > b) {
            best = Some((c, f));
        }
    }
    match best {
        Some((c, f)) => {
            p.x[j] = values[c];
            p.f = f;
            true
        }
        None => false,
    }
}
