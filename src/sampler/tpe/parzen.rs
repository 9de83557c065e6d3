//! The Parzen estimator of TPE: a mixture of products of per-parameter kernels (truncated
//! normals for floats, discretised truncated normals for ints and stepped floats, a
//! smoothed one-hot for categoricals), one kernel per observed trial plus a prior kernel.
//!
//! Built as Optuna 5.0 builds it: neighbour-distance bandwidths (the larger gap to the sorted
//! neighbours, endpoints only for a lone observation unless `consider_endpoints`), the
//! "magic clip" `σ ≥ (high − low) / min(100, m + 1)` (Optuna's `m` is the kernel count,
//! prior included; the caller may give another, see [`ParzenParams::floor_count`]),
//! `σ ≤ high − low`, a prior kernel at the centre with `σ = high − low`, categorical
//! kernels `prior_weight / (n + 1)` smoothed.
//!
//! Evaluation differs in *how*, not *what*. Two paths, both equal to the full sum to ~1e-15
//! relative (tests check both against [`Parzen::log_pdf_naive`]):
//! - [`Parzen::log_pdf_batch`], when every parameter is a float: all candidate points at
//!   once, kernel by kernel over blocks of [`LANES`] points, straight-line arithmetic the
//!   compiler vectorises (AVX2 and FMA when the CPU has them, the same results bit for
//!   bit without), with a vectorisable `exp` of our own ([`exp_lanes`]).
//! - [`Parzen::log_pdf`], one point at a time, for mixed spaces: the mixture's log-density
//!   is `log Σ_k exp(base_k + Σ_j t_kj)` with every per-parameter term `t_kj ≤ 0` once the
//!   normalising constants are folded into `base_k`. So a partial sum over some parameters
//!   bounds the kernel's final term from above, and a kernel whose bound falls 40 nats below
//!   the best kernel found so far cannot change the result by more than `e^-40` relative
//!   (< 4e-18 per kernel); most kernels are dropped after one or two parameters.

use super::truncnorm::{self, LN_SQRT_2PI};
use crate::sampler::TrialRng;
use crate::space::Distribution;

/// Kernels dropped when this many nats below the best one (relative error ≤ n·e^-40).
const CUT_NATS: f64 = 40.0;

/// Points evaluated together by [`batch_log_pdf`]: TPE's default candidate count, so a
/// default ask is one block, six independent 4-wide chains (the fused multiply-adds'
/// latency hidden) and no padding.
pub(crate) const LANES: usize = 24;

/// `e^x` for each of `LANES` values `x ≤ 0` (NaN and `x > 0` are not expected), in place,
/// to within 2 ulp, in plain lane-by-lane arithmetic that vectorises: `x = n·ln2 + r` with
/// `|r| ≤ ln2/2` (Cody–Waite), a degree-13 Taylor polynomial for `e^r` (truncation
/// < 4e-18 relative), and `2^n` built in the exponent bits. Inputs below −700 give `e^−700`
/// (≈ 1e−304): as a mixture term next to the largest one (`e^0`) it is nothing.
///
/// Written with fused multiply-adds (`mul_add`, exactly rounded by definition), so the
/// result is the same on every machine: one instruction each where the CPU has FMA
/// (x86-64 since 2013, every aarch64), a slower library call where it does not.
#[inline(always)]
pub(crate) fn exp_lanes(x: &mut [f64; LANES]) {
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5 · 2^52: adding it rounds to an integer held in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    const COEFFS: [f64; 13] = [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let mut v = [0.0f64; LANES];
    let mut r = [0.0f64; LANES];
    let mut p = [1.0f64 / 6_227_020_800.0; LANES];
    for l in 0..LANES {
        let xl = x[l].max(-700.0);
        v[l] = xl.mul_add(std::f64::consts::LOG2_E, SHIFTER);
        let n = v[l] - SHIFTER;
        r[l] = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xl));
    }
    for c in COEFFS {
        for l in 0..LANES {
            p[l] = p[l].mul_add(r[l], c);
        }
    }
    for l in 0..LANES {
        // n is an integer in [-1010, 0]: its two's complement sits in v's low bits.
        let n = (v[l].to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
        x[l] = p[l] * f64::from_bits(((n + 1023) as u64) << 52);
    }
}

/// What kind of kernel a parameter gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// Continuous float in `[low, high]` (own units): truncated normal in (log) space.
    Cont { low: f64, high: f64 },
    /// Int or stepped float: truncated normal integrated over each grid cell. `low`, `high`
    /// and `step` are in the parameter's own units.
    Disc { low: f64, high: f64, step: f64 },
    /// Categorical with `n` choices.
    Cat { n: usize },
}

/// One modelled parameter in TPE's internal space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dim {
    /// Kernel kind.
    pub kind: Kind,
    /// Whether the kernel lives in log space.
    pub log: bool,
    /// Lower truncation bound, internal space (log'd, half a step below `low` if discrete).
    pub lo: f64,
    /// Upper truncation bound, internal space.
    pub hi: f64,
}

impl Dim {
    /// The model of a distribution; `None` if it has a single value (nothing to learn).
    pub fn of(dist: &Distribution) -> Option<Dim> {
        if dist.cardinality() == Some(1) {
            return None;
        }
        let (kind, log, low, high) = match *dist {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => {
                if high <= low {
                    return None;
                }
                match step {
                    Some(step) => (Kind::Disc { low, high, step }, false, low, high),
                    None => (Kind::Cont { low, high }, log, low, high),
                }
            }
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => {
                let (low, high, step) = (low as f64, high as f64, step as f64);
                (Kind::Disc { low, high, step }, log, low, high)
            }
            Distribution::Categorical { ref choices } => {
                return Some(Dim {
                    kind: Kind::Cat { n: choices.len() },
                    log: false,
                    lo: 0.0,
                    hi: 0.0,
                })
            }
        };
        let (mut lo, mut hi) = (low, high);
        if let Kind::Disc { step, .. } = kind {
            lo -= 0.5 * step;
            hi += 0.5 * step;
        }
        if log {
            lo = lo.ln();
            hi = hi.ln();
        }
        Some(Dim { kind, log, lo, hi })
    }

    /// A stored (internal) value of the parameter in TPE's space (log'd where log).
    #[inline]
    pub fn model_of(&self, x: f64) -> f64 {
        if self.log {
            x.ln()
        } else {
            x
        }
    }

    /// A value drawn in TPE's space back to the parameter's internal value (exp, snapped
    /// to the grid and clipped, as Optuna does).
    #[inline]
    pub fn value_of(&self, t: f64) -> f64 {
        let x = if self.log { t.exp() } else { t };
        match self.kind {
            Kind::Disc { low, high, step } => {
                (low + ((x - low) / step).round() * step).clamp(low, high)
            }
            // exp(ln(high)) can miss high by an ulp.
            Kind::Cont { low, high } => x.clamp(low, high),
            Kind::Cat { .. } => x,
        }
    }

    /// The normalising term of a kernel at `mu` with bandwidth `sig` (model space): for a
    /// float `−ln σ − ln√(2π) − ln mass`, for a discrete parameter `ln mass` (the mass of
    /// the normal inside the truncation bounds).
    #[inline]
    pub fn norm(&self, mu: f64, sig: f64) -> f64 {
        let lm = truncnorm::log_gauss_mass((self.lo - mu) / sig, (self.hi - mu) / sig);
        if matches!(self.kind, Kind::Cont { .. }) {
            -sig.ln() - LN_SQRT_2PI - lm
        } else {
            lm
        }
    }

    /// The two evaluation coordinates of a parameter value: the model value for floats and
    /// categoricals, the cell `[x - step/2, x + step/2]` (model space) for discrete ones.
    #[inline]
    pub fn eval_coords(&self, x: f64) -> [f64; 2] {
        match self.kind {
            Kind::Disc { step, .. } => {
                let (l, r) = (x - 0.5 * step, x + 0.5 * step);
                if self.log {
                    [l.ln(), r.ln()]
                } else {
                    [l, r]
                }
            }
            _ => [self.model_of(x), 0.0],
        }
    }
}

/// Optuna's default weights of `n` observations in trial-number order: flat for `n < 25`,
/// else a linear ramp from `1/n` for the oldest `n − 25` and 1 for the newest 25.
pub(crate) fn default_weight(n: usize, i: usize) -> f64 {
    if n < 25 || i >= n - 25 {
        return 1.0;
    }
    let m = n - 25;
    let start = 1.0 / n as f64;
    if m == 1 {
        return start;
    }
    start + (1.0 - start) * i as f64 / (m - 1) as f64
}

/// Optuna's neighbour-distance bandwidth of the observation at position `i` of `sorted`
/// (one parameter's observations in ascending order): the larger gap to its sorted
/// neighbours (the domain ends standing in at the extremes), the one-sided gap at the
/// extremes unless `consider_endpoints`, clipped to `[min_sigma, high − low]`.
#[inline]
pub(crate) fn bandwidth(
    sorted: &[(f64, u32)],
    i: usize,
    dim: &Dim,
    min_sigma: f64,
    consider_endpoints: bool,
) -> f64 {
    let n = sorted.len();
    let m = sorted[i].0;
    let prev = if i == 0 { dim.lo } else { sorted[i - 1].0 };
    let next = if i + 1 == n { dim.hi } else { sorted[i + 1].0 };
    let mut sig = (m - prev).max(next - m);
    if !consider_endpoints && n >= 2 {
        if i == 0 {
            sig = next - m;
        } else if i + 1 == n {
            sig = m - prev;
        }
    }
    sig.clamp(min_sigma, dim.hi - dim.lo)
}

/// A cache of per-(trial, parameter) normalising constants, keyed by the bandwidth they
/// were computed for: bandwidths rarely change between asks, logs and erfc are not free.
pub(crate) struct NormCache<'a> {
    /// The trial slot of each data kernel.
    pub slot_of: &'a [u32],
    /// The space index of each modelled parameter.
    pub dim_index: &'a [usize],
    /// Entries `[space index][slot]`: (σ bits, constant, `1/(σ√2)`); σ bits 0 = empty.
    /// One row per parameter, so a build walks each row in order.
    pub entries: &'a mut [Vec<(u64, f64, f64)>],
}

/// Knobs of the estimator (Optuna's `_ParzenEstimatorParameters`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParzenParams {
    /// Weight of the prior kernel.
    pub prior_weight: f64,
    /// Use the domain ends as neighbours of the extreme observations.
    pub consider_endpoints: bool,
    /// Floor the bandwidths at `(high − low) / min(100, m + 1)`.
    pub magic_clip: bool,
    /// What `m` of the floor counts.
    pub floor_count: FloorCount,
}

/// `m` of the bandwidth floor `σ ≥ width / min(100, m + 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloorCount {
    /// This estimator's kernel count, prior included (Optuna's `n + 1`).
    Kernels,
    /// A count given by the caller, never below the kernel count.
    Count(usize),
    /// The geometric mean of the kernel count and a count given by the caller (never below
    /// the kernel count): sharpens as evidence grows, half as fast (in log terms) as
    /// [`FloorCount::Count`].
    GeometricMean(usize),
}

impl FloorCount {
    /// The same rule over another count.
    pub fn recount(self, count: usize) -> FloorCount {
        match self {
            FloorCount::Kernels => FloorCount::Kernels,
            FloorCount::Count(_) => FloorCount::Count(count),
            FloorCount::GeometricMean(_) => FloorCount::GeometricMean(count),
        }
    }
}

impl ParzenParams {
    /// The bandwidth floor of a parameter whose model range is `width` wide, in an
    /// estimator of `kernels` kernels (prior included).
    pub fn min_sigma(&self, width: f64, kernels: usize) -> f64 {
        if self.magic_clip {
            let m = match self.floor_count {
                FloorCount::Kernels => kernels as f64,
                FloorCount::Count(n) => n.max(kernels) as f64,
                FloorCount::GeometricMean(n) => ((n.max(kernels) * kernels) as f64).sqrt(),
            };
            width / (100.0f64).min(1.0 + m)
        } else {
            1e-12
        }
    }
}

/// One Parzen estimator over a group of parameters. Kernel `nk − 1` is the prior.
#[derive(Debug, Default)]
pub(crate) struct Parzen {
    /// Modelled parameters (copied per build).
    dims: Vec<Dim>,
    /// Number of kernels, prior included.
    pub nk: usize,
    /// Normalised mixture weights.
    weights: Vec<f64>,
    /// `mu[j * nk + k]`: kernel centre (categoricals: the observed index, prior −1).
    mu: Vec<f64>,
    /// `sigma[j * nk + k]`: bandwidth (numeric parameters).
    sigma: Vec<f64>,
    /// `norm[j * nk + k]`: `−ln σ − ln√(2π) − ln mass` for floats, `ln mass` for discrete.
    norm: Vec<f64>,
    /// Per categorical parameter: ln p(observed choice), ln p(other choice), for data
    /// kernels; ln p(any) for the prior kernel.
    cat_logp: Vec<[f64; 3]>,
    /// `isig[j * nk + k]`: `1 / (σ √2)` for floats.
    isig: Vec<f64>,
    /// `kernel_major[k * d + j]`: the [`batch_kernel`] of numeric parameters, kernel by
    /// kernel (the layout [`Parzen::log_pdf_batch`] walks).
    kernel_major: Vec<(f64, f64)>,
    /// Per kernel: ln weight plus the floats' normalising constants (and the prior's
    /// constant categorical terms).
    base: Vec<f64>,
    /// Parameters in evaluation order: floats, categoricals, discrete.
    eval_order: Vec<usize>,
    n_cont: usize,
    scratch_p: Vec<f64>,
    scratch_alive: Vec<u32>,
}

impl Parzen {
    /// Rebuilds the estimator.
    ///
    /// - `obs(k, j)`: the model-space value of parameter `j` of observation `k` (`0..n`).
    /// - `sorted[j]`: for numeric `j`, `(value, k)` of every observation sorted by value.
    /// - `weight(k)`: unnormalised weight of observation `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &mut self,
        dims: &[Dim],
        n: usize,
        obs: impl Fn(usize, usize) -> f64,
        sorted: &[Vec<(f64, u32)>],
        weight: impl Fn(usize) -> f64,
        params: ParzenParams,
        mut cache: Option<NormCache<'_>>,
    ) {
        let nk = n + 1;
        let d = dims.len();
        self.dims.clear();
        self.dims.extend_from_slice(dims);
        self.nk = nk;
        // Mixture weights: observations then the prior (alone if nothing was observed).
        self.weights.clear();
        self.weights.extend((0..n).map(&weight));
        self.weights
            .push(if n == 0 { 1.0 } else { params.prior_weight });
        let total: f64 = self.weights.iter().sum();
        for w in &mut self.weights {
            *w /= total;
        }
        self.kernel_major.resize(d * nk, (0.0, 0.0));
        // Every entry is written below (categorical rows: zeroed), so no clearing pass.
        for v in [
            &mut self.mu,
            &mut self.sigma,
            &mut self.norm,
            &mut self.isig,
        ] {
            v.resize(d * nk, 0.0);
        }
        self.cat_logp.clear();
        self.cat_logp.resize(d, [0.0; 3]);
        for (j, dim) in dims.iter().enumerate() {
            let row = j * nk;
            if let Kind::Cat { n: c } = dim.kind {
                let c = c as f64;
                for k in 0..n {
                    self.mu[row + k] = obs(k, j);
                }
                self.mu[row + n] = -1.0;
                let logp = if n == 0 {
                    [f64::NEG_INFINITY, f64::NEG_INFINITY, -c.ln()]
                } else {
                    let eps = params.prior_weight / nk as f64;
                    let row_sum = 1.0 + eps * c;
                    let prior = if params.prior_weight > 0.0 {
                        -c.ln()
                    } else {
                        f64::NEG_INFINITY
                    };
                    [((1.0 + eps) / row_sum).ln(), (eps / row_sum).ln(), prior]
                };
                self.cat_logp[j] = logp;
                for v in [&mut self.sigma, &mut self.norm, &mut self.isig] {
                    v[row..row + nk].fill(0.0);
                }
                continue;
            }
            // Numeric: bandwidths from neighbour gaps in sorted order.
            let (lo, hi) = (dim.lo, dim.hi);
            let s = &sorted[j];
            debug_assert_eq!(s.len(), n);
            let width = hi - lo;
            let min_sigma = params.min_sigma(width, nk);
            for (i, &(m, k)) in s.iter().enumerate() {
                let k = k as usize;
                self.mu[row + k] = m;
                self.sigma[row + k] = bandwidth(s, i, dim, min_sigma, params.consider_endpoints);
            }
            self.mu[row + n] = 0.5 * (lo + hi);
            self.sigma[row + n] = width;
            let (mu, sigma) = (&self.mu[row..row + nk], &self.sigma[row..row + nk]);
            let (norm, isig) = (&mut self.norm[row..row + nk], &mut self.isig[row..row + nk]);
            match &mut cache {
                Some(c) => {
                    let entries = &mut c.entries[c.dim_index[j]];
                    for k in 0..n {
                        let e = &mut entries[c.slot_of[k] as usize];
                        if e.0 != sigma[k].to_bits() {
                            *e = (
                                sigma[k].to_bits(),
                                dim.norm(mu[k], sigma[k]),
                                std::f64::consts::FRAC_1_SQRT_2 / sigma[k],
                            );
                        }
                        norm[k] = e.1;
                        isig[k] = e.2;
                    }
                }
                None => {
                    for k in 0..n {
                        norm[k] = dim.norm(mu[k], sigma[k]);
                        isig[k] = std::f64::consts::FRAC_1_SQRT_2 / sigma[k];
                    }
                }
            }
            // The prior kernel.
            norm[n] = dim.norm(mu[n], sigma[n]);
            isig[n] = std::f64::consts::FRAC_1_SQRT_2 / sigma[n];
            for (k, (&m, &s)) in mu.iter().zip(sigma.iter()).enumerate() {
                self.kernel_major[k * d + j] = batch_kernel(m, s);
            }
        }
        self.build_eval();
    }

    /// Precomputes the per-kernel base terms and the evaluation order.
    fn build_eval(&mut self) {
        let nk = self.nk;
        let dims = &self.dims;
        let d = dims.len();
        self.eval_order.clear();
        self.eval_order
            .extend((0..d).filter(|&j| matches!(dims[j].kind, Kind::Cont { .. })));
        self.n_cont = self.eval_order.len();
        self.eval_order
            .extend((0..d).filter(|&j| matches!(dims[j].kind, Kind::Cat { .. })));
        self.eval_order
            .extend((0..d).filter(|&j| matches!(dims[j].kind, Kind::Disc { .. })));
        self.base.clear();
        self.base.extend(self.weights.iter().map(|w| w.ln()));
        for (j, dim) in dims.iter().enumerate() {
            match dim.kind {
                Kind::Cont { .. } => {
                    let norm = &self.norm[j * nk..(j + 1) * nk];
                    for (b, &c) in self.base.iter_mut().zip(norm) {
                        *b += c;
                    }
                }
                // The prior's categorical kernel is uniform: a constant.
                Kind::Cat { .. } => self.base[nk - 1] += self.cat_logp[j][2],
                Kind::Disc { .. } => {}
            }
        }
    }

    /// Draws `count` points from the mixture into `out` (row-major, one value per modelled
    /// parameter, in the parameter's internal representation).
    pub fn sample_into(&self, count: usize, rng: &mut TrialRng, out: &mut Vec<f64>) {
        let nk = self.nk;
        out.clear();
        for _ in 0..count {
            // Active kernel by weight.
            let u = rng.next_f64();
            let mut acc = 0.0;
            let mut k = nk - 1;
            for (i, &w) in self.weights.iter().enumerate() {
                acc += w;
                if u < acc {
                    k = i;
                    break;
                }
            }
            for (j, dim) in self.dims.iter().enumerate() {
                let at = j * nk + k;
                let x = match dim.kind {
                    Kind::Cat { n: c } => {
                        let obs = self.mu[at];
                        if obs < 0.0 {
                            rng.below(c as u64) as f64
                        } else {
                            let p_hit = self.cat_logp[j][0].exp();
                            if rng.next_f64() < p_hit || c == 1 {
                                obs
                            } else {
                                let r = rng.below(c as u64 - 1) as f64;
                                if r >= obs {
                                    r + 1.0
                                } else {
                                    r
                                }
                            }
                        }
                    }
                    _ => {
                        let t = truncnorm::sample(self.mu[at], self.sigma[at], dim.lo, dim.hi, rng);
                        dim.value_of(t)
                    }
                };
                out.push(x);
            }
        }
    }

    /// Parameter `j`'s exact term (≤ 0, normalising constants of floats excluded) for
    /// kernel `k` at `coords`.
    fn term(&self, j: usize, k: usize, coords: &[f64]) -> f64 {
        let at = j * self.nk + k;
        let x = coords[2 * j];
        match self.dims[j].kind {
            Kind::Cont { .. } => {
                let t = (x - self.mu[at]) * self.isig[at];
                -t * t
            }
            Kind::Cat { .. } => {
                let [hit, miss, _] = self.cat_logp[j];
                if self.mu[at] == x {
                    hit
                } else if k + 1 == self.nk {
                    0.0
                } else {
                    miss
                }
            }
            Kind::Disc { .. } => {
                let (m, sig) = (self.mu[at], self.sigma[at]);
                let lm = truncnorm::log_gauss_mass((x - m) / sig, (coords[2 * j + 1] - m) / sig);
                (lm - self.norm[at]).min(0.0)
            }
        }
    }

    /// Adds parameter `j`'s term (≤ 0) at `coords` to the partial sums `p` of the kernels
    /// listed in `alive`; discrete terms are skipped (set to −∞) when their cheap upper
    /// bound already puts the kernel below `cut`.
    fn add_term(&self, j: usize, coords: &[f64], alive: &[u32], p: &mut [f64], cut: f64) {
        let nk = self.nk;
        let row = j * nk;
        let x = coords[2 * j];
        let mu = &self.mu[row..row + nk];
        match self.dims[j].kind {
            Kind::Cont { .. } => {
                let is = &self.isig[row..row + nk];
                for &k in alive {
                    let k = k as usize;
                    let t = (x - mu[k]) * is[k];
                    p[k] -= t * t;
                }
            }
            Kind::Cat { .. } => {
                for &k in alive {
                    p[k as usize] += self.term(j, k as usize, coords);
                }
            }
            Kind::Disc { .. } => {
                let r = coords[2 * j + 1];
                let sigma = &self.sigma[row..row + nk];
                let norm = &self.norm[row..row + nk];
                for &k in alive {
                    let k = k as usize;
                    if p[k] < cut || p[k] == f64::NEG_INFINITY {
                        continue;
                    }
                    let (m, sig, nm) = (mu[k], sigma[k], norm[k]);
                    // Upper bound first: cell mass ≤ width · φ(nearest point) / σ.
                    let dist = if m < x {
                        x - m
                    } else if m > r {
                        m - r
                    } else {
                        0.0
                    };
                    let z = dist / sig;
                    let bound = ((r - x) / sig).ln() - LN_SQRT_2PI - 0.5 * z * z - nm;
                    if p[k] + bound.min(0.0) < cut {
                        p[k] = f64::NEG_INFINITY;
                        continue;
                    }
                    p[k] += self.term(j, k, coords);
                }
            }
        }
    }

    /// The mixture's log-density (log-mass for discrete parameters) at a point given by its
    /// evaluation coordinates (`coords[2j..2j+2]`, see [`Dim::eval_coords`]).
    ///
    /// Exact to ~1e-15 relative, without visiting every (kernel, parameter) pair: all
    /// kernels get their first two float terms (a branch-free, vectorisable pass), the most
    /// promising one is finished to give a lower bound on the largest term, and every later
    /// parameter is added only for kernels whose partial sum (an upper bound, every term
    /// being ≤ 0) is still within [`CUT_NATS`] of it.
    pub fn log_pdf(&mut self, coords: &[f64]) -> f64 {
        let nk = self.nk;
        let mut p = std::mem::take(&mut self.scratch_p);
        let mut alive = std::mem::take(&mut self.scratch_alive);
        p.clear();
        p.extend_from_slice(&self.base);
        let first = self.n_cont.min(2);
        for &j in &self.eval_order[..first] {
            let row = j * nk;
            let x = coords[2 * j];
            let mu = &self.mu[row..row + nk];
            let is = &self.isig[row..row + nk];
            for ((pk, &m), &s) in p.iter_mut().zip(mu).zip(is) {
                let t = (x - m) * s;
                *pk -= t * t;
            }
        }
        // A lower bound on the largest term: finish the most promising kernel.
        let mut kmax = 0;
        for (k, &v) in p.iter().enumerate() {
            if v > p[kmax] {
                kmax = k;
            }
        }
        let mut best = p[kmax]
            + self.eval_order[first..]
                .iter()
                .map(|&j| self.term(j, kmax, coords))
                .sum::<f64>();
        let mut cut = best - CUT_NATS;
        // Branch-free compaction of the kernels still in the running.
        alive.clear();
        alive.resize(nk, 0);
        let mut n = 0;
        for (k, &v) in p.iter().enumerate() {
            alive[n] = k as u32;
            n += (v >= cut) as usize;
        }
        alive.truncate(n);
        for &j in &self.eval_order[first..] {
            self.add_term(j, coords, &alive, &mut p, cut);
            let mut n = 0;
            for i in 0..alive.len() {
                let k = alive[i];
                alive[n] = k;
                n += (p[k as usize] >= cut) as usize;
            }
            alive.truncate(n);
        }
        for &k in &alive {
            best = best.max(p[k as usize]);
        }
        let out = if best == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            cut = best - CUT_NATS;
            let s: f64 = alive
                .iter()
                .map(|&k| p[k as usize])
                .filter(|&t| t >= cut)
                .map(|t| (t - best).exp())
                .sum();
            best + s.ln()
        };
        self.scratch_p = p;
        self.scratch_alive = alive;
        out
    }

    /// Whether every modelled parameter is a continuous float, so that
    /// [`Parzen::log_pdf_batch`] applies.
    pub fn all_continuous(&self) -> bool {
        self.n_cont == self.dims.len()
    }

    /// The mixture's log-density at `nc` points at once, all parameters continuous
    /// ([`Parzen::all_continuous`]): `xs[j * nc + c]` is parameter `j` of point `c` in model
    /// space; `out[c]` receives its log-density (see [`batch_log_pdf`]).
    pub fn log_pdf_batch(&mut self, xs: &[f64], nc: usize, out: &mut Vec<f64>) {
        debug_assert!(self.all_continuous());
        let d = self.dims.len();
        let kernels = &self.kernel_major[..self.nk * d];
        batch_log_pdf(kernels, &self.base, d, xs, nc, out, &mut self.scratch_p);
    }

    /// The plain `O(kernels × parameters)` log-density, no pruning (reference for tests).
    #[cfg(test)]
    pub fn log_pdf_naive(&self, coords: &[f64]) -> f64 {
        let nk = self.nk;
        let mut logs = Vec::with_capacity(nk);
        for k in 0..nk {
            let mut t = self.weights[k].ln();
            for (j, dim) in self.dims.iter().enumerate() {
                let at = j * nk + k;
                let x = coords[2 * j];
                t += match dim.kind {
                    Kind::Cont { .. } => {
                        let z = (x - self.mu[at]) / self.sigma[at];
                        -0.5 * z * z + self.norm[at]
                    }
                    Kind::Cat { .. } => {
                        let [hit, miss, prior] = self.cat_logp[j];
                        if k + 1 == nk {
                            prior
                        } else if self.mu[at] == x {
                            hit
                        } else {
                            miss
                        }
                    }
                    Kind::Disc { .. } => {
                        let (mu, sig) = (self.mu[at], self.sigma[at]);
                        truncnorm::log_gauss_mass((x - mu) / sig, (coords[2 * j + 1] - mu) / sig)
                            - self.norm[at]
                    }
                };
            }
            logs.push(t);
        }
        let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + logs.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
    }

    /// Bandwidth of kernel `k` for parameter `j`.
    #[cfg(test)]
    pub fn sigma(&self, j: usize, k: usize) -> f64 {
        self.sigma[j * self.nk + k]
    }

    /// The width of parameter `j`'s model range (for tests).
    #[cfg(test)]
    pub fn width(&self, j: usize) -> f64 {
        self.dims[j].hi - self.dims[j].lo
    }
}

/// A float kernel as [`batch_log_pdf`] reads it: `(μ·s, s)` with `s = 1/(σ√2)`, so that
/// its term at `x` is `−(x·s − μ·s)²`, two fused multiply-adds.
#[inline]
pub(crate) fn batch_kernel(mu: f64, sigma: f64) -> (f64, f64) {
    let s = std::f64::consts::FRAC_1_SQRT_2 / sigma;
    (mu * s, s)
}

/// The log-density of an all-float mixture at `nc` points at once: kernel `k` is
/// `base[k] − Σ_j (x_j·s_kj − μ_kj·s_kj)²` with `kernels[k * d + j]` its
/// [`batch_kernel`] for parameter `j` (normalising constants and ln weight folded into
/// `base`). `xs[j * nc + c]` is parameter `j` of point `c`; `out[c]` receives its
/// log-density. A kernel whose `base` is −∞ is absent.
///
/// Every kernel is evaluated at every point (no pruning), kernel by kernel over blocks of
/// [`LANES`] points, so the inner loops are straight-line arithmetic the compiler
/// vectorises; with AVX2 and FMA present it runs 4 doubles wide. The arithmetic is fixed
/// (fused multiply-adds written out, our own [`exp_lanes`]), so the result is the same
/// bit for bit on every machine. `scratch` is grown as needed, never cleared.
pub(crate) fn batch_log_pdf(
    kernels: &[(f64, f64)],
    base: &[f64],
    d: usize,
    xs: &[f64],
    nc: usize,
    out: &mut Vec<f64>,
    scratch: &mut Vec<f64>,
) {
    debug_assert_eq!(kernels.len(), base.len() * d);
    debug_assert_eq!(xs.len(), d * nc);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { batch_log_pdf_avx2(kernels, base, d, xs, nc, out, scratch) };
            return;
        }
    }
    batch_log_pdf_body(kernels, base, d, xs, nc, out, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn batch_log_pdf_avx2(
    kernels: &[(f64, f64)],
    base: &[f64],
    d: usize,
    xs: &[f64],
    nc: usize,
    out: &mut Vec<f64>,
    scratch: &mut Vec<f64>,
) {
    batch_log_pdf_body(kernels, base, d, xs, nc, out, scratch)
}

#[inline(always)]
fn batch_log_pdf_body(
    kernels: &[(f64, f64)],
    base: &[f64],
    d: usize,
    xs: &[f64],
    nc: usize,
    out: &mut Vec<f64>,
    terms: &mut Vec<f64>,
) {
    let nk = base.len();
    let blocks = nc.div_ceil(LANES);
    // Points padded to whole blocks (copies of the last point; their results are unused),
    // block-major: `x[blk * d + j]` holds parameter j of the block's points.
    let mut x = vec![[0.0f64; LANES]; d * blocks];
    for j in 0..d {
        for c in 0..blocks * LANES {
            x[(c / LANES) * d + j][c % LANES] = xs[j * nc + c.min(nc - 1)];
        }
    }
    // Kernels are kernel-major, so the hot loop walks memory in order.
    // Pass 1: every kernel's log-term at every point, and the largest per point.
    // Fully written here: grown, never cleared.
    if terms.len() < nk * blocks * LANES {
        terms.resize(nk * blocks * LANES, 0.0);
    }
    let mut best = vec![[f64::NEG_INFINITY; LANES]; blocks];
    let rows = terms[..nk * blocks * LANES].chunks_exact_mut(blocks * LANES);
    for ((kernel, &b), row) in kernels.chunks_exact(d).zip(base).zip(rows) {
        for ((top, xb), out) in best
            .iter_mut()
            .zip(x.chunks_exact(d))
            .zip(row.chunks_exact_mut(LANES))
        {
            let mut acc = [b; LANES];
            for (&(ms, s), xj) in kernel.iter().zip(xb) {
                for l in 0..LANES {
                    let t = xj[l].mul_add(s, -ms);
                    acc[l] = (-t).mul_add(t, acc[l]);
                }
            }
            out.copy_from_slice(&acc);
            for l in 0..LANES {
                top[l] = top[l].max(acc[l]);
            }
        }
    }
    // Pass 2: log Σ_k exp(term − best) + best, per point. A block of kernel terms all
    // more than CUT_NATS below their points' best adds < LANES·e^-40 relative: skipped.
    let mut sum = vec![[0.0f64; LANES]; blocks];
    for k_terms in terms[..nk * blocks * LANES].chunks_exact(blocks * LANES) {
        for ((acc, top), t) in sum.iter_mut().zip(&best).zip(k_terms.chunks_exact(LANES)) {
            let mut y = [0.0f64; LANES];
            let mut near = false;
            for l in 0..LANES {
                y[l] = t[l] - top[l];
                near |= y[l] >= -CUT_NATS;
            }
            if near {
                exp_lanes(&mut y);
                for l in 0..LANES {
                    acc[l] += y[l];
                }
            }
        }
    }
    out.clear();
    out.extend((0..nc).map(|c| {
        let (blk, l) = (c / LANES, c % LANES);
        let top = best[blk][l];
        if top == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            top + sum[blk][l].ln()
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_density_is_the_same_bit_for_bit_with_and_without_simd() {
        // The dispatched path (AVX2 + FMA here when the CPU has them) against the plain
        // body compiled for the baseline target: what a machine without them computes.
        let mut rng = TrialRng::from_seed(3);
        let (d, nk) = (5, 300);
        for nc in [1, 24, 37] {
            let kernels: Vec<(f64, f64)> = (0..nk * d)
                .map(|_| batch_kernel(rng.uniform(-3.0, 3.0), rng.uniform(0.01, 2.0)))
                .collect();
            let mut base: Vec<f64> = (0..nk).map(|_| rng.uniform(-20.0, 0.0)).collect();
            base[7] = f64::NEG_INFINITY;
            let xs: Vec<f64> = (0..d * nc).map(|_| rng.uniform(-3.0, 3.0)).collect();
            let (mut fast, mut plain, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
            batch_log_pdf(&kernels, &base, d, &xs, nc, &mut fast, &mut scratch);
            batch_log_pdf_body(&kernels, &base, d, &xs, nc, &mut plain, &mut scratch);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "{nc} points");
            assert!(fast.iter().all(|v| v.is_finite()));
        }
    }
}
