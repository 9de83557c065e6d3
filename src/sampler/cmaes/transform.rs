//! The map between a search space's numeric parameters and the unit cube CMA-ES works in.
//!
//! Every non-constant float or int parameter becomes one axis in `[0, 1]`:
//! - continuous floats: linear, or linear in `ln x` for log scales;
//! - discrete ones (ints, stepped floats): the range is widened by half a step on each side
//!   (`[low - step/2, high + step/2]`, or `[ln(low - 0.5), ln(high + 0.5)]` for log ints),
//!   so every grid value owns a cell of the cube; a point decodes to the value of its cell.
//!
//! Categorical parameters and parameters with a single value are not axes: the sampler
//! fills them in itself.

use crate::space::{Distribution, Params, SearchSpace};

/// One numeric parameter as a CMA-ES coordinate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// Parameter name.
    pub name: String,
    /// Its distribution.
    pub dist: Distribution,
    /// Lower end of the (possibly log, possibly widened) interval mapped to 0.
    lo: f64,
    /// Upper end mapped to 1.
    hi: f64,
    /// Whether the interval is in `ln x`.
    log: bool,
    /// Half the grid spacing for discrete parameters (`None`: continuous).
    half_step: Option<f64>,
}

impl Axis {
    fn new(name: &str, dist: &Distribution) -> Option<Axis> {
        let (lo, hi, log, half_step) = match *dist {
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
                    Some(s) => (low - s / 2.0, high + s / 2.0, false, Some(s / 2.0)),
                    None if log => (low.ln(), high.ln(), true, None),
                    None => (low, high, false, None),
                }
            }
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => {
                if high <= low {
                    return None;
                }
                if log {
                    (
                        (low as f64 - 0.5).ln(),
                        (high as f64 + 0.5).ln(),
                        true,
                        Some(0.5),
                    )
                } else {
                    let h = step as f64 / 2.0;
                    (low as f64 - h, high as f64 + h, false, Some(h))
                }
            }
            Distribution::Categorical { .. } => return None,
        };
        Some(Axis {
            name: name.to_string(),
            dist: dist.clone(),
            lo,
            hi,
            log,
            half_step,
        })
    }

    /// Whether the parameter takes grid values only.
    pub fn is_discrete(&self) -> bool {
        self.half_step.is_some()
    }

    fn to_unit(&self, x: f64) -> f64 {
        let t = if self.log { x.ln() } else { x };
        (t - self.lo) / (self.hi - self.lo)
    }

    /// A parameter value → its coordinate (not clamped).
    pub fn encode(&self, x: f64) -> f64 {
        self.to_unit(x)
    }

    /// A coordinate → the valid parameter value it stands for.
    pub fn decode(&self, u: f64) -> f64 {
        let t = self.lo + u.clamp(0.0, 1.0) * (self.hi - self.lo);
        let x = if self.log { t.exp() } else { t };
        self.dist.snap(x)
    }

    /// For a discrete axis, the coordinates of the edges of the cell holding `u` (the
    /// points where the decoded value changes); `None` for continuous axes.
    pub fn cell(&self, u: f64) -> Option<(f64, f64)> {
        let h = self.half_step?;
        let v = self.decode(u);
        let a = self.to_unit(v - h).max(0.0);
        let b = self.to_unit(v + h).min(1.0);
        Some((a, b))
    }
}

/// The numeric axes of a search space, in space order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    /// The space the layout was made for.
    pub space: SearchSpace,
    /// One axis per non-constant numeric parameter.
    pub axes: Vec<Axis>,
}

impl Layout {
    /// The layout of `space`.
    pub fn new(space: &SearchSpace) -> Layout {
        Layout {
            space: space.clone(),
            axes: space
                .iter()
                .filter_map(|(name, dist)| Axis::new(name, dist))
                .collect(),
        }
    }

    /// Number of CMA-ES coordinates.
    pub fn dim(&self) -> usize {
        self.axes.len()
    }

    /// Whether any axis is discrete.
    pub fn has_discrete(&self) -> bool {
        self.axes.iter().any(Axis::is_discrete)
    }

    /// The coordinates of stored parameters, clamped to the cube; `None` if a numeric
    /// parameter is missing or not finite.
    pub fn encode(&self, params: &Params) -> Option<Vec<f64>> {
        self.axes
            .iter()
            .map(|a| {
                let x = *params.get(&a.name)?;
                let u = a.encode(x);
                u.is_finite().then_some(u.clamp(0.0, 1.0))
            })
            .collect()
    }

    /// Decodes coordinates into parameter values: every axis, plus every constant numeric
    /// parameter at its single value. Categorical parameters are left out.
    pub fn decode(&self, u: &[f64]) -> Params {
        let mut out = Params::new();
        for (a, &x) in self.axes.iter().zip(u) {
            out.insert(a.name.clone(), a.decode(x));
        }
        for (name, dist) in self.space.iter() {
            if !out.contains_key(name) && !matches!(dist, Distribution::Categorical { .. }) {
                out.insert(name.to_string(), dist.snap(lowest(dist)));
            }
        }
        out
    }

    /// Whether `params` holds exactly the numeric values `u` decodes to (so the trial is
    /// the sampler's own proposal `u`, not an enqueued or foreign point).
    pub fn decodes_to(&self, u: &[f64], params: &Params) -> bool {
        self.axes.iter().zip(u).all(|(a, &x)| {
            params.get(&a.name).is_some_and(|&p| {
                let d = a.decode(x);
                p == d || (p - d).abs() <= 1e-12 * d.abs().max(1e-300)
            })
        })
    }
}

fn lowest(dist: &Distribution) -> f64 {
    match *dist {
        Distribution::Float { low, .. } => low,
        Distribution::Int { low, .. } => low as f64,
        Distribution::Categorical { .. } => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(low: f64, high: f64, log: bool, step: Option<f64>) -> Distribution {
        Distribution::Float {
            low,
            high,
            log,
            step,
        }
    }
    fn i(low: i64, high: i64, step: i64, log: bool) -> Distribution {
        Distribution::Int {
            low,
            high,
            step,
            log,
        }
    }

    #[test]
    fn round_trips_and_cells() {
        let space = SearchSpace::new([
            ("a".to_string(), f(-5.0, 5.0, false, None)),
            ("b".to_string(), f(1e-5, 1.0, true, None)),
            ("c".to_string(), f(0.5, 1.0, false, Some(0.25))),
            ("d".to_string(), i(1, 10, 1, false)),
            ("e".to_string(), i(1, 1000, 1, true)),
            ("k".to_string(), i(3, 3, 1, false)),
        ])
        .unwrap();
        let l = Layout::new(&space);
        assert_eq!(l.dim(), 5, "the constant int is not an axis");
        let p = l.decode(&[0.5, 0.5, 0.0, 1.0, 0.5]);
        assert_eq!(p["a"], 0.0);
        assert!((p["b"] - 10f64.powf(-2.5)).abs() < 1e-12);
        assert_eq!((p["c"], p["d"], p["k"]), (0.5, 10.0, 3.0));
        space.check_params(&p).unwrap();
        // Encoding a decoded point decodes to the same values.
        let u = l.encode(&p).unwrap();
        assert_eq!(l.decode(&u), p);
        assert!(l.decodes_to(&u, &p));
        // Three stepped values share [0, 1] equally.
        let c = &l.axes[2];
        assert_eq!(c.decode(0.33), 0.5);
        assert_eq!(c.decode(0.34), 0.75);
        let (lo, hi) = c.cell(0.5).unwrap();
        assert!((lo - 1.0 / 3.0).abs() < 1e-12 && (hi - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.cell(0.1).unwrap().0, 0.0);
        assert!(l.axes[0].cell(0.5).is_none());
        // Log ints: every integer reachable at both ends.
        let e = &l.axes[4];
        assert_eq!((e.decode(0.0), e.decode(1.0)), (1.0, 1000.0));
        let (lo, hi) = e.cell(e.encode(10.0)).unwrap();
        assert_eq!((e.decode(lo + 1e-9), e.decode(hi - 1e-9)), (10.0, 10.0));
    }
}
