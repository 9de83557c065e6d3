//! The "above" estimator `g(x)` of an all-float parameter group, kept from one ask to the
//! next and patched instead of rebuilt.
//!
//! Between two asks the above group changes by a trial or two (the one just told, perhaps
//! one crossing the split), yet a full build redoes every kernel's bandwidth and
//! normalising constant: `O(n·d)` work for `O(d)` changes. Here kernel `k` is history slot
//! `k` (non-members carry weight 0, so their `base` is −∞ and they add nothing; the prior
//! kernel follows the last slot), each parameter's members stay sorted, and an ask re-derives
//! only the kernels whose sorted neighbours changed. What stays `O(n)` per ask is cheap:
//! the weights ramp (it moves with the group size) and the per-kernel sums of ln weight and
//! normalising constants.
//!
//! The result is the estimator [`Parzen::build`](super::parzen::Parzen::build) would make
//! from the same group, term for term with the same arithmetic (tests compare the
//! densities bit for bit); only the absent kernels are extra, and they add exactly nothing.

use super::parzen::{
    bandwidth, batch_kernel, batch_log_pdf, default_weight, Dim, Kind, ParzenParams,
};

/// What the kept state was built for: when any of it changes, everything is rebuilt.
#[derive(Debug, Clone)]
struct Layout {
    /// The history cache's generation (bumped whenever a stored trial was re-read).
    generation: u64,
    /// The space parameters of the group.
    dim_index: Vec<usize>,
    dims: Vec<Dim>,
    consider_endpoints: bool,
}

/// An all-float Parzen estimator over history slots, updated in place (see the module
/// docs).
#[derive(Debug, Default)]
pub(crate) struct SlotParzen {
    layout: Option<Layout>,
    /// The bandwidth floor per parameter the kernels were derived with.
    min_sigma: Vec<f64>,
    /// Per slot: in the group.
    member: Vec<bool>,
    /// Per group parameter: the members' `(value, slot)`, ascending, ties by slot.
    sorted: Vec<Vec<(f64, u32)>>,
    /// `norm[slot * d + j]`: the normalising constant of member `slot`'s kernel.
    norm: Vec<f64>,
    /// `kernels[k * d + j]`: `(μ, 1/(σ√2))`, slots then the prior.
    kernels: Vec<(f64, f64)>,
    /// Per kernel: ln weight plus normalising constants; −∞ for non-members.
    base: Vec<f64>,
    weights: Vec<f64>,
    added: Vec<u32>,
    removed: Vec<u32>,
    dirty: Vec<u32>,
    scratch: Vec<f64>,
}

/// The history as [`SlotParzen::update`] reads it.
pub(crate) struct Slots<'a> {
    /// Generation of the data below (see [`Layout::generation`]).
    pub generation: u64,
    /// Model-space values, `coords[slot * stride + space index]`.
    pub coords: &'a [f64],
    /// Values per slot in `coords` (the space's parameter count).
    pub stride: usize,
    /// Per space parameter: every valid `(value, slot)`, ascending, ties by slot.
    pub order: &'a [Vec<(f64, u32)>],
    /// Per slot: in the group.
    pub member: &'a [bool],
}

impl SlotParzen {
    /// Whether a group of these parameters can be kept here (all continuous floats).
    pub fn applies(dims: &[Dim]) -> bool {
        !dims.is_empty() && dims.iter().all(|d| matches!(d.kind, Kind::Cont { .. }))
    }

    /// Brings the estimator in line with the group `slots.member` of the history, for the
    /// parameters `dims` (space indices `dim_index`).
    pub fn update(
        &mut self,
        slots: &Slots<'_>,
        dims: &[Dim],
        dim_index: &[usize],
        params: ParzenParams,
    ) {
        debug_assert!(Self::applies(dims));
        let d = dims.len();
        let n_slots = slots.member.len();
        let n_members = slots.member.iter().filter(|&&m| m).count();
        let min_sigma: Vec<f64> = dims
            .iter()
            .map(|dim| params.min_sigma(dim.hi - dim.lo, n_members + 1))
            .collect();
        self.added.clear();
        self.removed.clear();
        let old = self.member.len();
        let same_layout = self.layout.as_ref().is_some_and(|l| {
            l.generation == slots.generation
                && l.dim_index == dim_index
                && l.dims == dims
                && l.consider_endpoints == params.consider_endpoints
        }) && old <= n_slots;
        if same_layout {
            for (s, (&was, &is)) in self.member.iter().zip(slots.member).enumerate() {
                if was != is {
                    (if is {
                        &mut self.added
                    } else {
                        &mut self.removed
                    })
                    .push(s as u32);
                }
            }
            self.added.extend(
                (old..n_slots)
                    .filter(|&s| slots.member[s])
                    .map(|s| s as u32),
            );
        }
        // Patching costs a binary search and a shift per change and parameter: past a
        // few percent of the group, deriving everything afresh is as cheap.
        let rebuild = !same_layout || (self.added.len() + self.removed.len()) * 16 > n_members;
        self.member.clear();
        self.member.extend_from_slice(slots.member);
        self.norm.resize(n_slots * d, 0.0);
        // Slots that were the prior's place, or new non-members: inert finite entries.
        self.kernels.resize((n_slots + 1) * d, (0.0, 0.0));
        for s in old.min(n_slots)..n_slots {
            if !slots.member[s] {
                self.kernels[s * d..(s + 1) * d].fill((0.0, 0.0));
            }
        }
        let all_dirty = rebuild || min_sigma != self.min_sigma;
        self.sorted.resize_with(d, Vec::new);
        for (jj, dim) in dims.iter().enumerate() {
            let j = dim_index[jj];
            if rebuild {
                let list = &mut self.sorted[jj];
                list.clear();
                list.extend(slots.order[j].iter().filter(|e| slots.member[e.1 as usize]));
            } else {
                self.patch_order(jj, slots.coords, slots.stride, j);
            }
            let (floor, ends) = (min_sigma[jj], params.consider_endpoints);
            if all_dirty {
                for i in 0..self.sorted[jj].len() {
                    self.derive(jj, i, dim, d, floor, ends);
                }
            } else {
                self.derive_dirty(jj, dim, d, floor, ends, slots, j);
            }
            // The prior kernel: centred, as wide as the range.
            self.kernels[n_slots * d + jj] = batch_kernel(0.5 * (dim.lo + dim.hi), dim.hi - dim.lo);
        }
        if !same_layout {
            self.layout = Some(Layout {
                generation: slots.generation,
                dim_index: dim_index.to_vec(),
                dims: dims.to_vec(),
                consider_endpoints: params.consider_endpoints,
            });
        }
        self.min_sigma = min_sigma;
        self.fill_base(dims, n_members, params.prior_weight);
    }

    /// Applies this ask's membership changes to parameter `jj`'s sorted list and records
    /// the kernels whose neighbours changed.
    fn patch_order(&mut self, jj: usize, coords: &[f64], stride: usize, j: usize) {
        let list = &mut self.sorted[jj];
        let dirty = &mut self.dirty;
        dirty.clear();
        let find = |list: &[(f64, u32)], e: (f64, u32)| {
            list.partition_point(|x| x.0.total_cmp(&e.0).then(x.1.cmp(&e.1)).is_lt())
        };
        for &s in &self.removed {
            let e = (coords[s as usize * stride + j], s);
            let at = find(list, e);
            debug_assert_eq!(list.get(at).map(|x| x.1), Some(s));
            list.remove(at);
            dirty.extend(at.checked_sub(1).and_then(|i| list.get(i)).map(|x| x.1));
            dirty.extend(list.get(at).map(|x| x.1));
        }
        for &s in &self.added {
            let e = (coords[s as usize * stride + j], s);
            let at = find(list, e);
            list.insert(at, e);
            dirty.extend(
                list[at.saturating_sub(1)..(at + 2).min(list.len())]
                    .iter()
                    .map(|x| x.1),
            );
        }
        dirty.sort_unstable();
        dirty.dedup();
    }

    /// Re-derives the kernels [`SlotParzen::patch_order`] marked for parameter `jj`.
    #[allow(clippy::too_many_arguments)]
    fn derive_dirty(
        &mut self,
        jj: usize,
        dim: &Dim,
        d: usize,
        min_sigma: f64,
        consider_endpoints: bool,
        slots: &Slots<'_>,
        j: usize,
    ) {
        let dirty = std::mem::take(&mut self.dirty);
        // A neighbour marked while another member left may have left too.
        for &s in &dirty {
            if !self.member[s as usize] {
                continue;
            }
            let e = (slots.coords[s as usize * slots.stride + j], s);
            let at = self.sorted[jj]
                .partition_point(|x| x.0.total_cmp(&e.0).then(x.1.cmp(&e.1)).is_lt());
            debug_assert_eq!(self.sorted[jj][at].1, s);
            self.derive(jj, at, dim, d, min_sigma, consider_endpoints);
        }
        self.dirty = dirty;
    }

    /// Derives the kernel of the member at position `i` of parameter `jj`'s sorted list.
    fn derive(
        &mut self,
        jj: usize,
        i: usize,
        dim: &Dim,
        d: usize,
        min_sigma: f64,
        consider_endpoints: bool,
    ) {
        let list = &self.sorted[jj];
        let (mu, s) = list[i];
        let sigma = bandwidth(list, i, dim, min_sigma, consider_endpoints);
        let at = s as usize * d + jj;
        self.norm[at] = dim.norm(mu, sigma);
        self.kernels[at] = batch_kernel(mu, sigma);
    }

    /// The per-kernel ln weight plus normalising constants, summed as
    /// [`Parzen::build`](super::parzen::Parzen::build) sums them.
    fn fill_base(&mut self, dims: &[Dim], n_members: usize, prior_weight: f64) {
        let d = dims.len();
        self.weights.clear();
        self.weights
            .extend((0..n_members).map(|k| default_weight(n_members, k)));
        let prior = if n_members == 0 { 1.0 } else { prior_weight };
        self.weights.push(prior);
        let total: f64 = self.weights.iter().sum();
        self.base.clear();
        let mut rank = 0;
        for (s, &member) in self.member.iter().enumerate() {
            if !member {
                self.base.push(f64::NEG_INFINITY);
                continue;
            }
            let mut b = (self.weights[rank] / total).ln();
            rank += 1;
            for &c in &self.norm[s * d..(s + 1) * d] {
                b += c;
            }
            self.base.push(b);
        }
        let mut b = (prior / total).ln();
        for dim in dims {
            b += dim.norm(0.5 * (dim.lo + dim.hi), dim.hi - dim.lo);
        }
        self.base.push(b);
    }

    /// The estimator's log-density at `nc` points (`xs[j * nc + c]`, model space).
    pub fn log_pdf_batch(&mut self, xs: &[f64], nc: usize, out: &mut Vec<f64>) {
        let d = self.sorted.len();
        let nk = self.base.len();
        batch_log_pdf(
            &self.kernels[..nk * d],
            &self.base,
            d,
            xs,
            nc,
            out,
            &mut self.scratch,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::parzen::{FloorCount, Parzen};
    use super::*;
    use crate::sampler::TrialRng;
    use crate::space::Distribution;

    /// The estimator [`Parzen::build`] makes of the members, kernels in slot order.
    fn fresh(dims: &[Dim], dim_index: &[usize], slots: &Slots<'_>, params: ParzenParams) -> Parzen {
        let members: Vec<usize> = (0..slots.member.len())
            .filter(|&s| slots.member[s])
            .collect();
        let n = members.len();
        let value = |k: usize, jj: usize| slots.coords[members[k] * slots.stride + dim_index[jj]];
        let sorted: Vec<Vec<(f64, u32)>> = (0..dims.len())
            .map(|jj| {
                let mut v: Vec<(f64, u32)> = (0..n).map(|k| (value(k, jj), k as u32)).collect();
                v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                v
            })
            .collect();
        let mut p = Parzen::default();
        p.build(
            dims,
            n,
            value,
            &sorted,
            |k| default_weight(n, k),
            params,
            None,
        );
        p
    }

    #[test]
    fn the_patched_estimator_equals_a_fresh_build_bit_for_bit() {
        // A 4-parameter history, the group modelling parameters 0, 2 and 3 (one log-scaled):
        // a trial joins per step, memberships flip as the split moves, now and then many at
        // once (a rebuild) or the history is re-read (a new generation); both bandwidth
        // rules; the floor moves until the group is large, then stays.
        let float = |low, high, log| Distribution::Float {
            low,
            high,
            log,
            step: None,
        };
        let space = [
            float(-5.0, 5.0, false),
            float(0.0, 1.0, false),
            float(1e-3, 10.0, true),
            float(0.0, 100.0, false),
        ];
        let dim_index = [0, 2, 3];
        let dims: Vec<Dim> = dim_index
            .iter()
            .map(|&j| Dim::of(&space[j]).unwrap())
            .collect();
        assert!(SlotParzen::applies(&dims));
        let rules = [(false, false), (true, false), (false, true), (true, true)];
        for (consider_endpoints, geometric) in rules {
            let mut rng = TrialRng::from_seed(7 + consider_endpoints as u64);
            let (mut coords, mut member) = (Vec::new(), Vec::new());
            let mut generation = 0;
            let mut kept = SlotParzen::default();
            for step in 0..300usize {
                for dist in &space {
                    let dim = Dim::of(dist).unwrap();
                    // Some repeated values: ties in the sorted orders.
                    let u = if step % 13 == 5 { 0.5 } else { rng.next_f64() };
                    coords.push(dim.lo + u * (dim.hi - dim.lo));
                }
                member.push(rng.next_f64() < 0.9);
                let flips = if step % 97 == 50 {
                    40
                } else {
                    (rng.next_f64() * 3.0) as usize
                };
                for _ in 0..flips {
                    let s = rng.below(member.len() as u64) as usize;
                    member[s] = !member[s];
                }
                if step % 71 == 70 {
                    generation += 1;
                }
                let order: Vec<Vec<(f64, u32)>> = (0..space.len())
                    .map(|j| {
                        let mut v: Vec<(f64, u32)> = (0..member.len())
                            .map(|s| (coords[s * space.len() + j], s as u32))
                            .collect();
                        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                        v
                    })
                    .collect();
                let slots = Slots {
                    generation,
                    coords: &coords,
                    stride: space.len(),
                    order: &order,
                    member: &member,
                };
                let params = ParzenParams {
                    prior_weight: 1.0,
                    consider_endpoints,
                    magic_clip: true,
                    floor_count: if geometric {
                        FloorCount::GeometricMean(member.len())
                    } else {
                        FloorCount::Count(member.len())
                    },
                };
                kept.update(&slots, &dims, &dim_index, params);
                let mut reference = fresh(&dims, &dim_index, &slots, params);
                let nc = 11;
                let xs: Vec<f64> = dims
                    .iter()
                    .flat_map(|dim| {
                        (0..nc)
                            .map(|_| dim.lo + rng.next_f64() * (dim.hi - dim.lo))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                kept.log_pdf_batch(&xs, nc, &mut a);
                reference.log_pdf_batch(&xs, nc, &mut b);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "step {step}, endpoints {consider_endpoints}: {a:?} vs {b:?}"
                );
            }
        }
    }
}
