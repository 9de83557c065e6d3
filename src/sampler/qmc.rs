//! Quasi-random search: scrambled Sobol points (or Halton) mapped onto the search space.
//!
//! Point `n` of the sequence goes to trial `n`, so the sampler is a pure function of
//! (seed, trial number) like [`super::RandomSampler`], but its first `2^m` points spread over
//! the space far more evenly than random draws: a clean baseline, and the start-up design of
//! model-based samplers ([`super::TpeSampler`] with `startup = "qmc"`).
//!
//! - **Sobol** with the Joe–Kuo (2008, `new-joe-kuo-6.21201`) direction numbers for up to
//!   64 parameters (the protocol's maximum), scrambled by a hash-based nested uniform
//!   (Owen) scramble (Burley 2020, Laine–Karras permutation): every output bit is flipped by
//!   a function of the higher bits only, so the net structure survives and seeds differ.
//! - **Halton** (prime bases), optionally with a random (Cranley–Patterson) shift.
//!
//! Each unit coordinate `u ∈ [0, 1)` maps to its parameter as Optuna's `QMCSampler` does:
//! linearly (log for log scales) over `[low, high]`, over `[low − step/2, high + step/2]`
//! then rounded for ints and stepped floats (every grid point gets the same share), and
//! `floor(u·n)` for categoricals.

use serde::{Deserialize, Serialize};

use super::{splitmix64, SampleRequest, Sampler, TrialRng};
use crate::space::{Distribution, Params};

/// Which low-discrepancy sequence to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QmcKind {
    /// Sobol with Joe–Kuo direction numbers (best uniformity; the default).
    #[default]
    Sobol,
    /// Halton with prime bases.
    Halton,
}

/// Options of the `qmc` sampler (`[sampler.qmc]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QmcOptions {
    /// Randomise the sequence by the seed (Owen scramble for Sobol, random shift for
    /// Halton). Without it every seed gives the same points, the first one at the lower
    /// corner of the space.
    pub scramble: bool,
    /// `"sobol"` or `"halton"`.
    pub kind: QmcKind,
}

impl Default for QmcOptions {
    fn default() -> Self {
        QmcOptions {
            scramble: true,
            kind: QmcKind::Sobol,
        }
    }
}

/// The quasi-random sampler: trial `n` gets point `n` of a (scrambled) low-discrepancy
/// sequence in as many dimensions as the space has parameters.
#[derive(Debug, Clone)]
pub struct QmcSampler {
    seed: u64,
    options: QmcOptions,
    unit: Vec<f64>,
}

impl QmcSampler {
    /// A scrambled Sobol sampler with the given seed.
    pub fn new(seed: u64) -> QmcSampler {
        QmcSampler::with_options(seed, QmcOptions::default())
    }

    /// A sampler with explicit options.
    pub fn with_options(seed: u64, options: QmcOptions) -> QmcSampler {
        QmcSampler {
            seed,
            options,
            unit: Vec::new(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &QmcOptions {
        &self.options
    }
}

impl Sampler for QmcSampler {
    fn name(&self) -> &str {
        "qmc"
    }

    fn sample(&mut self, request: &SampleRequest<'_>) -> Params {
        let d = request.space.len();
        unit_point(
            self.options.kind,
            self.options.scramble,
            self.seed,
            request.trial_number,
            d,
            &mut self.unit,
        );
        request
            .space
            .iter()
            .zip(&self.unit)
            .map(|((name, dist), &u)| (name.to_string(), from_unit(dist, u)))
            .collect()
    }
}

/// Sobol parameters `(s, a, m_1..m_s)` of dimensions 2..=64 (Joe & Kuo, new-joe-kuo-6.21201;
/// dimension 1 is the van der Corput sequence).
const JOE_KUO: [(u32, u32, &[u32]); 63] = [
    (1, 0, &[1]),
    (2, 1, &[1, 3]),
    (3, 1, &[1, 3, 1]),
    (3, 2, &[1, 1, 1]),
    (4, 1, &[1, 1, 3, 3]),
    (4, 4, &[1, 3, 5, 13]),
    (5, 2, &[1, 1, 5, 5, 17]),
    (5, 4, &[1, 1, 5, 5, 5]),
    (5, 7, &[1, 1, 7, 11, 19]),
    (5, 11, &[1, 1, 5, 1, 1]),
    (5, 13, &[1, 1, 1, 3, 11]),
    (5, 14, &[1, 3, 5, 5, 31]),
    (6, 1, &[1, 3, 3, 9, 7, 49]),
    (6, 13, &[1, 1, 1, 15, 21, 21]),
    (6, 16, &[1, 3, 1, 13, 27, 49]),
    (6, 19, &[1, 1, 1, 15, 7, 5]),
    (6, 22, &[1, 3, 1, 15, 13, 25]),
    (6, 25, &[1, 1, 5, 5, 19, 61]),
    (7, 1, &[1, 3, 7, 11, 23, 15, 103]),
    (7, 4, &[1, 3, 7, 13, 13, 15, 69]),
    (7, 7, &[1, 1, 3, 13, 7, 35, 63]),
    (7, 8, &[1, 3, 5, 9, 1, 25, 53]),
    (7, 14, &[1, 3, 1, 13, 9, 35, 107]),
    (7, 19, &[1, 3, 1, 5, 27, 61, 31]),
    (7, 21, &[1, 1, 5, 11, 19, 41, 61]),
    (7, 28, &[1, 3, 5, 3, 3, 13, 69]),
    (7, 31, &[1, 1, 7, 13, 1, 19, 1]),
    (7, 32, &[1, 3, 7, 5, 13, 19, 59]),
    (7, 37, &[1, 1, 3, 9, 25, 29, 41]),
    (7, 41, &[1, 3, 5, 13, 23, 1, 55]),
    (7, 42, &[1, 3, 7, 3, 13, 59, 17]),
    (7, 50, &[1, 3, 1, 3, 5, 53, 69]),
    (7, 55, &[1, 1, 5, 5, 23, 33, 13]),
    (7, 56, &[1, 1, 7, 7, 1, 61, 123]),
    (7, 59, &[1, 1, 7, 9, 13, 61, 49]),
    (7, 62, &[1, 3, 3, 5, 3, 55, 33]),
    (8, 14, &[1, 3, 1, 15, 31, 13, 49, 245]),
    (8, 21, &[1, 3, 5, 15, 31, 59, 63, 97]),
    (8, 22, &[1, 3, 1, 11, 11, 11, 77, 249]),
    (8, 38, &[1, 3, 1, 11, 27, 43, 71, 9]),
    (8, 47, &[1, 1, 7, 15, 21, 11, 81, 45]),
    (8, 49, &[1, 3, 7, 3, 25, 31, 65, 79]),
    (8, 50, &[1, 3, 1, 1, 19, 11, 3, 205]),
    (8, 52, &[1, 1, 5, 9, 19, 21, 29, 157]),
    (8, 56, &[1, 3, 7, 11, 1, 33, 89, 185]),
    (8, 67, &[1, 3, 3, 3, 15, 9, 79, 71]),
    (8, 70, &[1, 3, 7, 11, 15, 39, 119, 27]),
    (8, 84, &[1, 1, 3, 1, 11, 31, 97, 225]),
    (8, 97, &[1, 1, 1, 3, 23, 43, 57, 177]),
    (8, 103, &[1, 3, 7, 7, 17, 17, 37, 71]),
    (8, 115, &[1, 3, 1, 5, 27, 63, 123, 213]),
    (8, 122, &[1, 1, 3, 5, 11, 43, 53, 133]),
    (9, 8, &[1, 3, 5, 5, 29, 17, 47, 173, 479]),
    (9, 13, &[1, 3, 3, 11, 3, 1, 109, 9, 69]),
    (9, 16, &[1, 1, 1, 5, 17, 39, 23, 5, 343]),
    (9, 22, &[1, 3, 1, 5, 25, 15, 31, 103, 499]),
    (9, 25, &[1, 1, 1, 11, 11, 17, 63, 105, 183]),
    (9, 44, &[1, 1, 5, 11, 9, 29, 97, 231, 363]),
    (9, 47, &[1, 1, 5, 15, 19, 45, 41, 7, 383]),
    (9, 52, &[1, 3, 7, 7, 31, 19, 83, 137, 221]),
    (9, 55, &[1, 1, 1, 3, 23, 15, 111, 223, 83]),
    (9, 59, &[1, 1, 5, 13, 31, 15, 55, 25, 161]),
    (9, 62, &[1, 1, 3, 13, 25, 47, 39, 87, 257]),
];

/// Number of dimensions with Sobol direction numbers.
pub const SOBOL_MAX_DIM: usize = JOE_KUO.len() + 1;

/// The 32 direction numbers of Sobol dimension `j` (0-based), left-aligned in 32 bits.
fn directions(j: usize) -> [u32; 32] {
    let mut v = [0u32; 32];
    if j == 0 {
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = 1 << (31 - k);
        }
        return v;
    }
    let (s, a, m) = JOE_KUO[j - 1];
    let s = s as usize;
    for k in 0..32 {
        v[k] = if k < s {
            m[k] << (31 - k)
        } else {
            let mut x = v[k - s] ^ (v[k - s] >> s);
            for i in 1..s {
                if (a >> (s - 1 - i)) & 1 == 1 {
                    x ^= v[k - i];
                }
            }
            x
        };
    }
    v
}

/// Coordinate `j` of Sobol point `index` as 32 bits (`index` modulo 2^32), in Gray-code
/// order as scipy and Optuna generate them (the first `2^m` points are the same set either way).
fn sobol_bits(v: &[u32; 32], index: u64) -> u32 {
    let mut i = index as u32;
    i ^= i >> 1;
    let mut x = 0u32;
    let mut k = 0;
    while i != 0 {
        if i & 1 == 1 {
            x ^= v[k];
        }
        i >>= 1;
        k += 1;
    }
    x
}

/// Nested uniform (Owen) scramble of a 32-bit fixed-point coordinate: output bit `i` (from
/// the top) is input bit `i` flipped by a hash of the seed and the bits above it.
fn owen_scramble(x: u32, seed: u32) -> u32 {
    let mut x = x.reverse_bits();
    x = x.wrapping_add(seed);
    x ^= x.wrapping_mul(0x6c50_b47c);
    x ^= x.wrapping_mul(0xb82f_1e52);
    x ^= x.wrapping_mul(0xc7af_e638);
    x ^= x.wrapping_mul(0x8d22_f6e6);
    x.reverse_bits()
}

/// The `j`-th prime (0-based), for Halton bases.
fn nth_prime(j: usize) -> u64 {
    let mut count = 0;
    let mut p = 1u64;
    loop {
        p += 1;
        if (2..p).take_while(|q| q * q <= p).all(|q| p % q != 0) {
            if count == j {
                return p;
            }
            count += 1;
        }
    }
}

/// Radical inverse of `index` in `base`.
fn radical_inverse(mut index: u64, base: u64) -> f64 {
    let inv = 1.0 / base as f64;
    let mut f = inv;
    let mut r = 0.0;
    while index > 0 {
        r += (index % base) as f64 * f;
        index /= base;
        f *= inv;
    }
    r
}

/// Point `index` of the sequence in `d` dimensions, each coordinate in `[0, 1)`, into `out`.
pub(crate) fn unit_point(
    kind: QmcKind,
    scramble: bool,
    seed: u64,
    index: u64,
    d: usize,
    out: &mut Vec<f64>,
) {
    out.clear();
    let dim_seed = |j: usize| splitmix64(seed ^ splitmix64(0x5107_u64 + j as u64));
    for j in 0..d {
        let u = match kind {
            QmcKind::Sobol if j < SOBOL_MAX_DIM => {
                let x = sobol_bits(&directions(j), index);
                if scramble {
                    let x = owen_scramble(x, dim_seed(j) as u32);
                    (x as f64 + 0.5) * (1.0 / 4_294_967_296.0)
                } else {
                    x as f64 * (1.0 / 4_294_967_296.0)
                }
            }
            // Never reached through a validated space (at most 64 parameters).
            QmcKind::Sobol => TrialRng::for_trial(seed, index, 1 + j as u64).next_f64(),
            QmcKind::Halton => {
                let r = radical_inverse(index, nth_prime(j));
                if scramble {
                    let shift = (dim_seed(j) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                    let x = r + shift;
                    if x >= 1.0 {
                        x - 1.0
                    } else {
                        x
                    }
                } else {
                    r
                }
            }
        };
        out.push(u);
    }
}

/// Points `0..count` of the sequence [`unit_point`] gives (bit for bit), row-major
/// `count × d` in `out`: the Sobol direction numbers and scramble seeds are computed once
/// per coordinate instead of once per point.
pub(crate) fn unit_points(
    kind: QmcKind,
    scramble: bool,
    seed: u64,
    count: usize,
    d: usize,
    out: &mut Vec<f64>,
) {
    out.clear();
    out.resize(count * d, 0.0);
    if !matches!(kind, QmcKind::Sobol) || d > SOBOL_MAX_DIM {
        let mut row = Vec::with_capacity(d);
        for i in 0..count {
            unit_point(kind, scramble, seed, i as u64, d, &mut row);
            out[i * d..(i + 1) * d].copy_from_slice(&row);
        }
        return;
    }
    for j in 0..d {
        let v = directions(j);
        let dim_seed = splitmix64(seed ^ splitmix64(0x5107_u64 + j as u64)) as u32;
        for i in 0..count {
            let x = sobol_bits(&v, i as u64);
            out[i * d + j] = if scramble {
                (owen_scramble(x, dim_seed) as f64 + 0.5) * (1.0 / 4_294_967_296.0)
            } else {
                x as f64 * (1.0 / 4_294_967_296.0)
            };
        }
    }
}

/// The value of `dist` at unit coordinate `u ∈ [0, 1)` (always a valid value).
pub(crate) fn from_unit(dist: &Distribution, u: f64) -> f64 {
    let u = u.clamp(0.0, 1.0);
    let grid = |n: u64| ((u * (n + 1) as f64).floor() as u64).min(n);
    match *dist {
        Distribution::Float {
            low,
            high,
            log,
            step,
        } => {
            if let Some(step) = step {
                let n = ((high - low) / step).round() as u64;
                return dist.snap(low + grid(n) as f64 * step);
            }
            let x = if log {
                (low.ln() + u * (high.ln() - low.ln())).exp()
            } else {
                low + u * (high - low)
            };
            x.clamp(low, high)
        }
        Distribution::Int {
            low,
            high,
            step,
            log,
        } => {
            if log {
                let lo = (low as f64 - 0.5).ln();
                let hi = (high as f64 + 0.5).ln();
                dist.snap((lo + u * (hi - lo)).exp())
            } else {
                let n = ((high as i128 - low as i128) / step as i128) as u64;
                (low as i128 + grid(n) as i128 * step as i128) as f64
            }
        }
        Distribution::Categorical { ref choices } => {
            ((u * choices.len() as f64).floor() as usize).min(choices.len() - 1) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Choice, SearchSpace};
    use crate::trial::Direction;

    fn points(kind: QmcKind, scramble: bool, seed: u64, n: u64, d: usize) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        (0..n)
            .map(|i| {
                unit_point(kind, scramble, seed, i, d, &mut out);
                out.clone()
            })
            .collect()
    }

    #[test]
    fn sobol_first_dims_match_the_published_sequence() {
        // Unscrambled Sobol (Joe–Kuo), points 0..8 in 3-D, as listed by scipy/Joe–Kuo.
        let want = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25],
            [0.25, 0.75, 0.75],
            [0.375, 0.375, 0.625],
            [0.875, 0.875, 0.125],
            [0.625, 0.125, 0.875],
            [0.125, 0.625, 0.375],
        ];
        let got = points(QmcKind::Sobol, false, 0, 8, 3);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.as_slice(), w.as_slice());
        }
    }

    #[test]
    fn sobol_2d_first_64_points_fill_every_8x8_cell_once() {
        for (scramble, seed) in [(false, 0), (true, 1), (true, 2)] {
            let pts = points(QmcKind::Sobol, scramble, seed, 64, 2);
            let mut cells = [0u32; 64];
            for p in &pts {
                cells[(p[0] * 8.0) as usize * 8 + (p[1] * 8.0) as usize] += 1;
            }
            assert!(
                cells.iter().all(|&c| c == 1),
                "scramble {scramble}: {cells:?}"
            );
        }
    }

    #[test]
    fn every_sobol_dimension_is_stratified() {
        // 1-D projections of a Sobol sequence are (0,1)-sequences: the first 64 points put
        // exactly one point in each interval [k/64, (k+1)/64), in every dimension. This
        // checks the direction-number table line by line (scrambled or not).
        for scramble in [false, true] {
            let pts = points(QmcKind::Sobol, scramble, 9, 64, SOBOL_MAX_DIM);
            for j in 0..SOBOL_MAX_DIM {
                let mut cells = [0u32; 64];
                for p in &pts {
                    cells[(p[j] * 64.0) as usize] += 1;
                }
                assert!(cells.iter().all(|&c| c == 1), "dim {j}: {cells:?}");
            }
        }
        // Seeds change scrambled points.
        assert_ne!(
            points(QmcKind::Sobol, true, 1, 4, 3),
            points(QmcKind::Sobol, true, 2, 4, 3)
        );
    }

    #[test]
    fn sobol_beats_random_on_grid_coverage_in_higher_dims() {
        // 2-D projections of dims (2, 5): 256 points over a 16x16 grid. Random points leave
        // ~1/e of the cells empty (~94); a low-discrepancy set leaves far fewer.
        let pts = points(QmcKind::Sobol, true, 3, 256, 6);
        let mut cells = [0u32; 256];
        for p in &pts {
            cells[(p[2] * 16.0) as usize * 16 + (p[5] * 16.0) as usize] += 1;
        }
        let empty = cells.iter().filter(|&&c| c == 0).count();
        assert!(empty < 40, "{empty} empty cells");
    }

    #[test]
    fn halton_is_a_net_in_bases_2_and_3() {
        // The first 72 = 8·9 unshifted Halton points (bases 2, 3) fill every 1/8 × 1/9 box.
        let pts = points(QmcKind::Halton, false, 0, 72, 2);
        let mut cells = [0u32; 72];
        for p in &pts {
            cells[(p[0] * 8.0) as usize * 9 + (p[1] * 9.0 + 1e-9) as usize] += 1;
        }
        assert!(cells.iter().all(|&c| c == 1), "{cells:?}");
        let shifted = points(QmcKind::Halton, true, 4, 50, 5);
        assert!(shifted.iter().flatten().all(|u| (0.0..1.0).contains(u)));
        assert_ne!(shifted, points(QmcKind::Halton, true, 5, 50, 5));
        assert_eq!(nth_prime(0), 2);
        assert_eq!(nth_prime(9), 29);
    }

    fn mixed_space() -> SearchSpace {
        let f = |low, high, log, step| Distribution::Float {
            low,
            high,
            log,
            step,
        };
        SearchSpace::new([
            ("a".to_string(), f(-5.0, 5.0, false, None)),
            ("b".to_string(), f(1e-5, 1.0, true, None)),
            ("c".to_string(), f(0.5, 4.0, false, Some(0.5))),
            (
                "d".to_string(),
                Distribution::Int {
                    low: -10,
                    high: 10,
                    step: 5,
                    log: false,
                },
            ),
            (
                "e".to_string(),
                Distribution::Int {
                    low: 1,
                    high: 100,
                    step: 1,
                    log: true,
                },
            ),
            (
                "f".to_string(),
                Distribution::Categorical {
                    choices: vec![
                        Choice::Text("x".into()),
                        Choice::Text("y".into()),
                        Choice::Text("z".into()),
                    ],
                },
            ),
        ])
        .unwrap()
    }

    #[test]
    fn every_point_is_valid_and_grids_are_covered_evenly() {
        let space = mixed_space();
        for options in [
            QmcOptions::default(),
            QmcOptions {
                scramble: false,
                kind: QmcKind::Sobol,
            },
            QmcOptions {
                scramble: true,
                kind: QmcKind::Halton,
            },
        ] {
            let mut s = QmcSampler::with_options(7, options.clone());
            let mut counts = [0u32; 5];
            let mut cats = [0u32; 3];
            for n in 0..320 {
                let p = s.sample(&SampleRequest {
                    space: &space,
                    history: &[],
                    direction: Direction::Minimize,
                    trial_number: n,
                });
                space.check_params(&p).unwrap();
                counts[((p["d"] + 10.0) / 5.0) as usize] += 1;
                cats[p["f"] as usize] += 1;
            }
            // 5 grid points and 3 choices, each within a few points of an equal share.
            assert!(
                counts.iter().all(|&c| (60..=68).contains(&c)),
                "{options:?}: {counts:?}"
            );
            assert!(
                cats.iter().all(|&c| (100..=114).contains(&c)),
                "{options:?}: {cats:?}"
            );
        }
    }

    #[test]
    fn deterministic_per_seed_and_trial() {
        let space = mixed_space();
        let req = |n| SampleRequest {
            space: &space,
            history: &[],
            direction: Direction::Minimize,
            trial_number: n,
        };
        let a: Vec<Params> = (0..10)
            .map(|n| QmcSampler::new(3).sample(&req(n)))
            .collect();
        let mut s = QmcSampler::new(3);
        let b: Vec<Params> = (0..10).rev().map(|n| s.sample(&req(n))).collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(a[0], QmcSampler::new(4).sample(&req(0)));
    }

    #[test]
    fn unit_points_is_unit_point_in_a_batch() {
        for (kind, scramble) in [
            (QmcKind::Sobol, true),
            (QmcKind::Sobol, false),
            (QmcKind::Halton, true),
        ] {
            let mut batch = Vec::new();
            unit_points(kind, scramble, 7, 300, 9, &mut batch);
            let one: Vec<f64> = points(kind, scramble, 7, 300, 9).concat();
            assert_eq!(batch, one);
        }
    }
}
