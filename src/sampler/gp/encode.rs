//! The GP's view of the search space: every modelled parameter as one coordinate, as
//! Optuna's `_gp/search_space.py` does.
//!
//! - float: `[low, high]` → `[0, 1]` (in log space if `log`);
//! - stepped float and int: the range widened by half a step on each side,
//!   `[low − step/2, high + step/2]` → `[0, 1]` (log ints: `[ln(low − ½), ln(high + ½)]`), so
//!   every grid point owns an equal slice; the coordinate only takes the grid points' values;
//! - categorical: the choice index itself (the kernel compares indices by Hamming distance).
//!
//! Single-valued parameters are not modelled (Optuna leaves them out of the relative space):
//! they always get their one value.

use crate::space::{Distribution, Params, SearchSpace};

/// How one coordinate varies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Coord {
    /// Any value in `[0, 1]`.
    Continuous,
    /// One of the grid points `grid` (normalised, increasing); `values[i]` is the internal
    /// value of grid point `i`.
    Discrete { grid: Vec<f64>, values: Vec<f64> },
    /// A choice index `0..k`.
    Categorical { k: usize },
}

/// One modelled parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dim {
    /// Index in the search space.
    pub space_index: usize,
    pub coord: Coord,
    /// The normalisation bounds (log-transformed if `log`).
    lo: f64,
    hi: f64,
    log: bool,
}

/// The search space as GP coordinates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Encoding {
    /// The modelled parameters, in space order.
    pub dims: Vec<Dim>,
    /// Per modelled coordinate: categorical (Hamming distance) or not.
    pub is_cat: Vec<bool>,
}

fn normalise(x: f64, lo: f64, hi: f64, log: bool) -> f64 {
    let x = if log { x.ln() } else { x };
    if hi == lo {
        0.5
    } else {
        (x - lo) / (hi - lo)
    }
}

impl Encoding {
    /// The encoding of `space`.
    pub fn new(space: &SearchSpace) -> Encoding {
        let mut dims = Vec::new();
        for (i, (_, dist)) in space.iter().enumerate() {
            if dist.cardinality() == Some(1) {
                continue;
            }
            let dim = match *dist {
                Distribution::Float {
                    low,
                    high,
                    log,
                    step: None,
                } => {
                    let (lo, hi) = if log {
                        (low.ln(), high.ln())
                    } else {
                        (low, high)
                    };
                    if lo == hi {
                        continue;
                    }
                    Dim {
                        space_index: i,
                        coord: Coord::Continuous,
                        lo,
                        hi,
                        log,
                    }
                }
                Distribution::Float {
                    low,
                    high,
                    step: Some(step),
                    ..
                } => {
                    let n = ((high - low) / step).round() as usize;
                    let values: Vec<f64> =
                        (0..=n).map(|k| dist.snap(low + k as f64 * step)).collect();
                    Self::discrete(i, values, low - 0.5 * step, high + 0.5 * step, false)
                }
                Distribution::Int {
                    low,
                    high,
                    step,
                    log,
                } => {
                    let n = ((high as i128 - low as i128) / step as i128) as usize;
                    let values: Vec<f64> = (0..=n)
                        .map(|k| (low as i128 + k as i128 * step as i128) as f64)
                        .collect();
                    let half = 0.5 * step as f64;
                    let (lo, hi) = (low as f64 - half, high as f64 + half);
                    if log {
                        Self::discrete(i, values, lo.ln(), hi.ln(), true)
                    } else {
                        Self::discrete(i, values, lo, hi, false)
                    }
                }
                Distribution::Categorical { ref choices } => Dim {
                    space_index: i,
                    coord: Coord::Categorical { k: choices.len() },
                    lo: 0.0,
                    hi: 1.0,
                    log: false,
                },
            };
            dims.push(dim);
        }
        let is_cat = dims
            .iter()
            .map(|d| matches!(d.coord, Coord::Categorical { .. }))
            .collect();
        Encoding { dims, is_cat }
    }

    fn discrete(i: usize, values: Vec<f64>, lo: f64, hi: f64, log: bool) -> Dim {
        let grid = values.iter().map(|&v| normalise(v, lo, hi, log)).collect();
        Dim {
            space_index: i,
            coord: Coord::Discrete { grid, values },
            lo,
            hi,
            log,
        }
    }

    /// Number of coordinates.
    pub fn d(&self) -> usize {
        self.dims.len()
    }

    /// The coordinates of `params`, if every modelled parameter has a valid value there.
    pub fn encode(&self, space: &SearchSpace, params: &Params, out: &mut Vec<f64>) -> bool {
        out.clear();
        for dim in &self.dims {
            let (name, dist) = space.iter().nth(dim.space_index).expect("index in space");
            let Some(&x) = params.get(name) else {
                return false;
            };
            if !dist.contains(x) {
                return false;
            }
            out.push(match &dim.coord {
                Coord::Categorical { .. } => x,
                Coord::Continuous => normalise(x, dim.lo, dim.hi, dim.log).clamp(0.0, 1.0),
                Coord::Discrete { grid, values } => {
                    // The grid point of the stored value (exact, not re-normalised).
                    let k = nearest(values, x);
                    grid[k]
                }
            });
        }
        true
    }

    /// The internal value of coordinate `j` at `u` (always a valid value of its parameter).
    pub fn decode_one(&self, space: &SearchSpace, j: usize, u: f64) -> f64 {
        let dim = &self.dims[j];
        let (_, dist) = space.iter().nth(dim.space_index).expect("index in space");
        match &dim.coord {
            Coord::Categorical { k } => u.round().clamp(0.0, (*k - 1) as f64),
            Coord::Discrete { grid, values } => values[nearest(grid, u)],
            Coord::Continuous => {
                let x = dim.lo + u.clamp(0.0, 1.0) * (dim.hi - dim.lo);
                dist.snap(if dim.log { x.exp() } else { x })
            }
        }
    }

    /// Brings `u` to a valid coordinate of dimension `j`: clamped, on the grid, or an index.
    pub fn round(&self, j: usize, u: f64) -> f64 {
        match &self.dims[j].coord {
            Coord::Continuous => u.clamp(0.0, 1.0),
            Coord::Discrete { grid, .. } => grid[nearest(grid, u)],
            Coord::Categorical { k } => u.round().clamp(0.0, (*k - 1) as f64),
        }
    }

    /// Maps a unit-cube point (a QMC draw) to valid coordinates, as Optuna's
    /// `_sample_normalized_params`: continuous as is, discrete rounded to the grid
    /// point owning the slice, categorical `⌊u·k⌋`.
    pub fn unit_to_coords(&self, unit: &[f64], out: &mut [f64]) {
        for (j, (dim, &u)) in self.dims.iter().zip(unit).enumerate() {
            out[j] = match &dim.coord {
                Coord::Categorical { k } => ((u * *k as f64).floor()).min((*k - 1) as f64),
                _ => self.round(j, u),
            };
        }
    }
}

/// Index of the sorted `xs` entry nearest to `x`.
pub(crate) fn nearest(xs: &[f64], x: f64) -> usize {
    let i = xs.partition_point(|&v| v < x);
    if i == 0 {
        0
    } else if i == xs.len() {
        xs.len() - 1
    } else if (x - xs[i - 1]).abs() <= (xs[i] - x).abs() {
        i - 1
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Choice;

    fn space() -> SearchSpace {
        SearchSpace::new([
            (
                "a".to_string(),
                Distribution::Float {
                    low: 1e-3,
                    high: 10.0,
                    log: true,
                    step: None,
                },
            ),
            (
                "b".to_string(),
                Distribution::Int {
                    low: 1,
                    high: 4,
                    step: 1,
                    log: false,
                },
            ),
            (
                "c".to_string(),
                Distribution::Categorical {
                    choices: vec![Choice::Text("x".into()), Choice::Text("y".into())],
                },
            ),
            (
                "d".to_string(),
                Distribution::Float {
                    low: 2.0,
                    high: 2.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "e".to_string(),
                Distribution::Float {
                    low: 0.0,
                    high: 1.0,
                    log: false,
                    step: Some(0.25),
                },
            ),
        ])
        .unwrap()
    }

    #[test]
    fn encodes_as_optuna_and_round_trips() {
        let s = space();
        let e = Encoding::new(&s);
        assert_eq!(e.d(), 4, "the single-valued parameter is not modelled");
        assert_eq!(e.is_cat, [false, false, true, false]);
        let p: Params = [("a", 0.1), ("b", 2.0), ("c", 1.0), ("d", 2.0), ("e", 0.75)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut u = Vec::new();
        assert!(e.encode(&s, &p, &mut u));
        // log: (ln 0.1 − ln 1e-3) / (ln 10 − ln 1e-3) = 2/4.
        assert!((u[0] - 0.5).abs() < 1e-12);
        // int 1..4 widened to [0.5, 4.5]: 2 → 1.5/4.
        assert!((u[1] - 0.375).abs() < 1e-12);
        assert_eq!(u[2], 1.0);
        // step 0.25 on [−0.125, 1.125]: 0.75 → 0.875/1.25.
        assert!((u[3] - 0.7).abs() < 1e-12);
        for (j, name) in ["a", "b", "c", "e"].iter().enumerate() {
            let back = e.decode_one(&s, j, u[j]);
            assert!((back - p[*name]).abs() < 1e-9, "{name}: {back}");
        }
        let missing: Params = [("a".to_string(), 0.1)].into_iter().collect();
        assert!(!e.encode(&s, &missing, &mut u));
    }

    #[test]
    fn unit_points_land_on_valid_coordinates() {
        let s = space();
        let e = Encoding::new(&s);
        let mut out = vec![0.0; 4];
        e.unit_to_coords(&[0.999, 0.999, 0.999, 0.999], &mut out);
        assert_eq!(out[2], 1.0);
        assert!((e.decode_one(&s, 1, out[1]) - 4.0).abs() < 1e-12);
        assert!((e.decode_one(&s, 3, out[3]) - 1.0).abs() < 1e-12);
        e.unit_to_coords(&[0.0, 0.0, 0.0, 0.0], &mut out);
        assert_eq!(e.decode_one(&s, 1, out[1]), 1.0);
        assert_eq!(out[2], 0.0);
    }
}
