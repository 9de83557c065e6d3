//! Hyperband, as Optuna 5.0's `HyperbandPruner`: several successive-halving brackets with
//! different early-stopping rates; each trial belongs to one bracket, chosen
//! deterministically by `crc32("{study_name}_{trial_number}")`, and competes only with the
//! trials of its bracket.

use serde::{Deserialize, Serialize};

use super::successive_halving::{first_complete, has_rung_values, Rungs};
use super::{check, PruneRequest, Pruner, PrunerError, Resource};
use crate::trial::FrozenTrial;

/// Options of the `hyperband` pruner (`[pruner.hyperband]`), with Optuna's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HyperbandOptions {
    /// The smallest resource (steps) a trial gets, `r`. At least 1.
    pub min_resource: u64,
    /// The largest resource, normally the number of steps a trial runs; `auto`: the last
    /// step of the first COMPLETE trial plus one (nothing is pruned until a trial
    /// completes).
    pub max_resource: Resource,
    /// `eta`, shared by every bracket. At least 2.
    pub reduction_factor: u64,
    /// See [`super::SuccessiveHalvingOptions::bootstrap_count`]; needs a fixed
    /// `max_resource`.
    pub bootstrap_count: u64,
}

impl Default for HyperbandOptions {
    fn default() -> Self {
        HyperbandOptions {
            min_resource: 1,
            max_resource: Resource::Auto,
            reduction_factor: 3,
            bootstrap_count: 0,
        }
    }
}

/// The hyperband pruner.
#[derive(Debug, Clone)]
pub struct HyperbandPruner {
    opts: HyperbandOptions,
}

/// The brackets of a hyperband run with a known maximum resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brackets {
    /// Trial allocation budget of each bracket (bracket `i` has early-stopping rate `i`).
    pub budgets: Vec<u64>,
}

impl Brackets {
    /// Optuna's bracket layout: `floor(log_eta(max / min)) + 1` brackets, bracket `i`
    /// (with `s = n - 1 - i`) weighted by `ceil(n * eta^s / (s + 1))`. Empty when
    /// `max_resource < min_resource`.
    pub fn new(min_resource: u64, max_resource: u64, reduction_factor: u64) -> Brackets {
        // Same float expression as Python's math.log(max / min, eta), so that exact powers
        // round the same way (e.g. log_3(243) = 4.999...).
        let ratio = max_resource as f64 / min_resource as f64;
        let n = (ratio.ln() / (reduction_factor as f64).ln()).floor() + 1.0;
        if n.is_nan() || n < 1.0 {
            return Brackets { budgets: vec![] };
        }
        let n = n as u64;
        let budgets = (0..n)
            .map(|i| {
                let s = n - 1 - i;
                let num = n.saturating_mul(reduction_factor.saturating_pow(s as u32));
                num.div_ceil(s + 1)
            })
            .collect();
        Brackets { budgets }
    }

    /// The bracket of trial `number` in study `study_name`; `None` without brackets.
    pub fn bracket_of(&self, study_name: &str, number: u64) -> Option<u64> {
        let total: u64 = self.budgets.iter().sum();
        if total == 0 {
            return None;
        }
        let mut n = u64::from(crc32(format!("{study_name}_{number}").as_bytes())) % total;
        for (i, &b) in self.budgets.iter().enumerate() {
            if n < b {
                return Some(i as u64);
            }
            n -= b;
        }
        None
    }
}

impl HyperbandPruner {
    /// Validates the options; errors name the bad option.
    pub fn new(opts: HyperbandOptions) -> Result<HyperbandPruner, PrunerError> {
        const K: &str = "hyperband";
        check(opts.min_resource >= 1, K, "min_resource", || {
            "must be at least 1 (got 0)".into()
        })?;
        check(opts.reduction_factor >= 2, K, "reduction_factor", || {
            format!("must be at least 2 (got {})", opts.reduction_factor)
        })?;
        if let Resource::Steps(max) = opts.max_resource {
            check(max >= opts.min_resource, K, "max_resource", || {
                format!(
                    "= {max} is smaller than min_resource = {}; set it to the number of \
                     steps a trial runs",
                    opts.min_resource
                )
            })?;
        }
        check(
            !(opts.bootstrap_count > 0 && opts.max_resource == Resource::Auto),
            K,
            "bootstrap_count",
            || {
                format!(
                    "= {} needs a fixed max_resource (max_resource = \"auto\" cannot be combined \
                     with bootstrap_count > 0)",
                    opts.bootstrap_count
                )
            },
        )?;
        Ok(HyperbandPruner { opts })
    }
}

impl Pruner for HyperbandPruner {
    fn name(&self) -> &str {
        "hyperband"
    }

    fn prune(&self, req: &PruneRequest<'_>) -> bool {
        let (max_resource, first) = match self.opts.max_resource {
            Resource::Steps(m) => (m, None),
            Resource::Auto => {
                let Some(first) = first_complete(req) else {
                    return false;
                };
                let last = first.last_intermediate().map_or(0, |(s, _)| s);
                (last + 1, Some(first))
            }
        };
        let brackets = Brackets::new(
            self.opts.min_resource,
            max_resource,
            self.opts.reduction_factor,
        );
        let Some(bracket) = brackets.bracket_of(req.study_name, req.trial.number) else {
            return false;
        };
        let competitors: Vec<&FrozenTrial> = req
            .reference_trials()
            .filter(|t| has_rung_values(first, t))
            .filter(|t| brackets.bracket_of(req.study_name, t.number) == Some(bracket))
            .collect();
        let rungs = Rungs {
            min_resource: self.opts.min_resource,
            reduction_factor: self.opts.reduction_factor,
            min_early_stopping_rate: bracket,
            bootstrap_count: self.opts.bootstrap_count,
        };
        rungs.decide(req.direction, req.trial, &competitors)
    }
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32` and Python's `binascii.crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::trial;
    use super::*;
    use crate::trial::{Direction, TrialState};

    #[test]
    fn crc32_known_values() {
        // binascii.crc32(b"123456789") == 0xCBF43926 (the standard check value);
        // binascii.crc32(b"lc_s0_0") == 2739029972; binascii.crc32(b"") == 0.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"lc_s0_0"), 2_739_029_972);
    }

    #[test]
    fn bracket_layout_matches_optuna() {
        // HyperbandPruner(1, 100, 3): 5 brackets, budgets ceil(5 * 3^s / (s + 1)).
        assert_eq!(Brackets::new(1, 100, 3).budgets, vec![81, 34, 15, 8, 5]);
        // math.log(243, 3) = 4.999999999999999 in Python: 5 brackets, not 6.
        assert_eq!(Brackets::new(1, 243, 3).budgets.len(), 5);
        assert_eq!(Brackets::new(1, 81, 3).budgets.len(), 5);
        assert_eq!(Brackets::new(10, 5, 3).budgets.len(), 0);
        // SH's default eta 4 with Optuna's default auto max for 100 steps (101).
        assert_eq!(Brackets::new(1, 101, 4).budgets, vec![64, 22, 8, 4]);
    }

    #[test]
    fn bracket_assignment_by_crc32() {
        let b = Brackets::new(1, 100, 3);
        // Python: [next(i for i, c in enumerate(itertools.accumulate([81, 34, 15, 8, 5]))
        //          if binascii.crc32(f"lc_s0_{n}".encode()) % 143 < c) for n in range(8)]
        // e.g. crc32("lc_s0_0") % 143 = 107 = 81 + 26 -> bracket 1.
        let expected = [1, 1, 1, 0, 1, 1, 2, 0];
        for (n, &e) in expected.iter().enumerate() {
            assert_eq!(b.bracket_of("lc_s0", n as u64), Some(e), "trial {n}");
        }
        // Every trial gets a bracket, and over many trials each bracket's share follows
        // its budget (counts are deterministic: crc32 is fixed).
        let mut counts = [0u32; 5];
        for n in 0..1430 {
            counts[b.bracket_of("study", n).unwrap() as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn trials_compete_only_within_their_bracket() {
        let b = Brackets::new(1, 100, 3);
        // Find two trial numbers in bracket 0 and one in another bracket.
        let in0: Vec<u64> = (0..50)
            .filter(|&n| b.bracket_of("s", n) == Some(0))
            .take(2)
            .collect();
        let other = (0..50).find(|&n| b.bracket_of("s", n) != Some(0)).unwrap();
        let p = HyperbandPruner::new(HyperbandOptions {
            max_resource: Resource::Steps(100),
            ..HyperbandOptions::default()
        })
        .unwrap();
        let run = |history: &[FrozenTrial], t: &FrozenTrial| {
            p.prune(&PruneRequest {
                study_name: "s",
                direction: Direction::Minimize,
                history,
                trial: t,
                step: 1,
            })
        };
        // Bracket 0 has its first rung at step 1 (min_resource * 3^0).
        let cur = trial(in0[1], TrialState::Running, &[5.0]);
        let same = vec![trial(in0[0], TrialState::Complete, &[1.0; 3])];
        assert!(run(&same, &cur));
        let diff = vec![trial(other, TrialState::Complete, &[1.0; 3])];
        assert!(!run(&diff, &cur));
    }

    #[test]
    fn auto_max_resource_waits_for_a_complete_trial() {
        let p = HyperbandPruner::new(HyperbandOptions::default()).unwrap();
        let t = trial(7, TrialState::Running, &[1e9; 100]);
        let history = vec![trial(0, TrialState::Running, &[0.0; 100])];
        let req = PruneRequest {
            study_name: "s",
            direction: Direction::Minimize,
            history: &history,
            trial: &t,
            step: 100,
        };
        assert!(!p.prune(&req));
        let e = HyperbandPruner::new(HyperbandOptions {
            bootstrap_count: 2,
            ..HyperbandOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("pruner.hyperband.bootstrap_count"), "{e}");
        let e = HyperbandPruner::new(HyperbandOptions {
            max_resource: Resource::Steps(5),
            min_resource: 10,
            ..HyperbandOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("pruner.hyperband.max_resource"), "{e}");
    }
}
