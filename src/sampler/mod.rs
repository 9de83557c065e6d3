//! Samplers decide the next parameter set. They are pure functions of the study's history
//! plus a random stream: no I/O, no clock, no async. Given the same space, history, trial
//! number and seed, a sampler returns the same parameters, so a resumed study is
//! reproducible.
//!
//! A sampler sees the *whole* history, including RUNNING and WAITING trials (to avoid
//! proposing the same point twice), intermediate values and prune reasons (unsafe trials
//! are constraint violations the search must learn from).

mod cmaes;
mod gp;
mod qmc;
mod random;
mod tpe;

pub use cmaes::{
    default_popsize, warm_start_from, CmaesOptions, CmaesSampler, Restart, WarmStart,
    WarmStartSource,
};
pub use gp::{posterior_mean, posterior_means, GpOptions, GpSampler};
pub use qmc::{QmcKind, QmcOptions, QmcSampler};
pub use random::RandomSampler;
pub use tpe::{Startup, TpeOptions, TpeSampler};

use crate::space::{Params, SearchSpace};
use crate::trial::{Direction, FrozenTrial};

/// How far an unsafe trial broke its limit, as the samplers rank it: its recorded excess;
/// a tiny positive amount if that is ≤ 0 (it still broke the limit); 1 if missing or not
/// finite.
pub(crate) fn violation_amount(t: &FrozenTrial) -> f64 {
    match t.violation_excess() {
        Some(x) if x > 0.0 && x.is_finite() => x,
        Some(x) if x <= 0.0 => f64::MIN_POSITIVE,
        _ => 1.0,
    }
}

/// What a sampler is asked: parameters for one new trial of a study.
#[derive(Debug, Clone, Copy)]
pub struct SampleRequest<'a> {
    /// The search space.
    pub space: &'a SearchSpace,
    /// Every trial of the study so far, in number order, whatever its state.
    pub history: &'a [FrozenTrial],
    /// Whether larger or smaller values are better.
    pub direction: Direction,
    /// The number the new trial will get.
    pub trial_number: u64,
}

/// Chooses parameters for new trials.
pub trait Sampler: Send {
    /// Short name, e.g. `random`.
    fn name(&self) -> &str;

    /// Proposes parameters (internal representation, every parameter of the space, each a
    /// valid value) for the requested trial, given every trial of the study so far.
    fn sample(&mut self, request: &SampleRequest<'_>) -> Params;

    /// Called after a trial finished (complete, pruned or failed), with its stored state.
    /// Samplers that keep incremental state update it here; the default ignores it.
    fn tell(&mut self, _trial: &FrozenTrial) {}

    /// The sampler's state worth keeping across a restart of the daemon, as one small JSON
    /// value (the study stores it as the study attribute `sampler_state`); `None` for
    /// stateless samplers. It must stay small: `O(d²)` numbers, not the history.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restores a state produced by [`Sampler::save_state`] of a sampler of the same kind.
    /// An error says why the state cannot be used.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// The sampler kinds [`from_kind`] knows.
pub const KINDS: &[&str] = &["random", "cmaes", "tpe", "qmc", "gp"];

/// What is wrong with a sampler's kind or options; every message names the kind (as the
/// config table `sampler.<kind>`) and the option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// No sampler has this kind.
    #[error("unknown sampler kind {kind:?}; available: {}", KINDS.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
    },
    /// Options were given to a sampler that takes none.
    #[error("sampler.{kind} takes no options (got: {})", keys.join(", "))]
    NoOptions {
        /// The sampler kind.
        kind: String,
        /// The keys given.
        keys: Vec<String>,
    },
    /// The options table does not parse (an unknown key, a value of the wrong type).
    #[error("sampler.{kind}: {message}")]
    Parse {
        /// The sampler kind.
        kind: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// An option has a value the sampler does not allow.
    #[error("sampler.{kind}.{key} {problem}")]
    Invalid {
        /// The sampler kind.
        kind: String,
        /// The option.
        key: String,
        /// What is wrong and what to do, e.g. `must be at least 1 (Optuna uses 24)`.
        problem: String,
    },
}

impl SamplerError {
    /// Option `key` of sampler `kind` is invalid: `problem`.
    pub(crate) fn invalid(kind: &str, key: &str, problem: impl Into<String>) -> SamplerError {
        SamplerError::Invalid {
            kind: kind.into(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Builds a sampler by its config name (`[sampler] kind`), with its options table
/// (`[sampler.<kind>]`, e.g. `[sampler.tpe]`) if the config has one. Each sampler parses its
/// own options and refuses unknown keys.
pub fn build(
    kind: &str,
    seed: u64,
    options: Option<&toml::Table>,
) -> Result<Box<dyn Sampler>, SamplerError> {
    match kind {
        "random" => {
            no_options(kind, options)?;
            Ok(Box::new(RandomSampler::new(seed)))
        }
        "cmaes" => {
            let o: CmaesOptions = parse_options(kind, options)?;
            Ok(Box::new(CmaesSampler::with_options(seed, o)?))
        }
        "tpe" => {
            let o: TpeOptions = parse_options(kind, options)?;
            Ok(Box::new(TpeSampler::with_options(seed, o)?))
        }
        "gp" => {
            let o: GpOptions = parse_options(kind, options)?;
            Ok(Box::new(GpSampler::with_options(seed, o)?))
        }
        "qmc" => {
            let o: QmcOptions = parse_options(kind, options)?;
            Ok(Box::new(QmcSampler::with_options(seed, o)))
        }
        other => Err(SamplerError::UnknownKind { kind: other.into() }),
    }
}

/// Wraps a sampler so that it learns nothing from unsafe trials: every trial PRUNED as
/// unsafe ([`crate::pruner::is_unsafe`]) is shown to it as a FAIL trial (no value, no
/// intermediate values, no violation), which every sampler ignores, as Optuna's samplers
/// ignore failed trials. Only for measuring what feeding unsafe trials back as constraint
/// violations is worth (`[sampler] constraints = false`); never for a real robot.
pub fn without_constraints(inner: Box<dyn Sampler>) -> Box<dyn Sampler> {
    Box::new(Unconstrained { inner })
}

/// See [`without_constraints`].
struct Unconstrained {
    inner: Box<dyn Sampler>,
}

/// The fail reason an unsafe trial is shown with when constraints are off.
const HIDDEN_UNSAFE_REASON: &str = "unsafe (hidden: constraints off)";

fn hide_violation(t: &FrozenTrial) -> Option<FrozenTrial> {
    crate::pruner::is_unsafe(t).then(|| {
        let mut t = t.clone();
        t.state = crate::trial::TrialState::Fail;
        t.value = None;
        t.intermediate.clear();
        t.prune_reason = Some(HIDDEN_UNSAFE_REASON.into());
        t.attrs.remove(crate::trial::UNSAFE_ATTR);
        t
    })
}

impl Sampler for Unconstrained {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn sample(&mut self, request: &SampleRequest<'_>) -> Params {
        if !request.history.iter().any(crate::pruner::is_unsafe) {
            return self.inner.sample(request);
        }
        let history: Vec<FrozenTrial> = request
            .history
            .iter()
            .map(|t| hide_violation(t).unwrap_or_else(|| t.clone()))
            .collect();
        self.inner.sample(&SampleRequest {
            history: &history,
            ..*request
        })
    }

    fn tell(&mut self, trial: &FrozenTrial) {
        match hide_violation(trial) {
            Some(t) => self.inner.tell(&t),
            None => self.inner.tell(trial),
        }
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        self.inner.save_state()
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        self.inner.load_state(state)
    }
}

/// Builds a sampler by kind with default options.
pub fn from_kind(kind: &str, seed: u64) -> Result<Box<dyn Sampler>, SamplerError> {
    build(kind, seed, None)
}

fn no_options(kind: &str, options: Option<&toml::Table>) -> Result<(), SamplerError> {
    match options {
        Some(t) if !t.is_empty() => Err(SamplerError::NoOptions {
            kind: kind.into(),
            keys: t.keys().cloned().collect(),
        }),
        _ => Ok(()),
    }
}

/// Parses a sampler's options table into its options struct (which should use
/// `#[serde(deny_unknown_fields, default)]`); errors name the table.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    kind: &str,
    options: Option<&toml::Table>,
) -> Result<T, SamplerError> {
    match options {
        None => Ok(T::default()),
        Some(t) => t.clone().try_into().map_err(|e| SamplerError::Parse {
            kind: kind.into(),
            message: e.to_string(),
        }),
    }
}

/// SplitMix64's output function: a bijective 64-bit mixer.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast random stream (xoshiro256++) whose output is fixed by this code alone, not
/// by a dependency's version: a study's draws stay reproducible across upgrades.
///
/// Samplers derive one stream per trial with [`TrialRng::for_trial`]. It implements
/// [`rand::RngCore`], so `rand`'s helpers work on it too (their algorithms may change
/// between `rand` versions; the methods here do not).
#[derive(Debug, Clone)]
pub struct TrialRng {
    s: [u64; 4],
}

impl TrialRng {
    /// A stream seeded from one 64-bit value (state filled by SplitMix64, as the xoshiro
    /// authors recommend).
    pub fn from_seed(seed: u64) -> TrialRng {
        let mut x = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix64(x);
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        TrialRng { s }
    }

    /// The stream of trial `number` of a sampler seeded with `seed`; `stream` separates
    /// independent uses within one trial (0 for the main draw).
    pub fn for_trial(seed: u64, number: u64, stream: u64) -> TrialRng {
        TrialRng::from_seed(splitmix64(splitmix64(splitmix64(seed) ^ number) ^ stream))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)` (`low` if the range is empty).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let x = low + (high - low) * self.next_f64();
        if x < high {
            x
        } else {
            low
        }
    }

    /// Uniform integer in `0..n` (0 if `n` is 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        // Lemire's multiply-shift with rejection.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl rand::RngCore for TrialRng {
    fn next_u32(&mut self) -> u32 {
        (TrialRng::next_u64(self) >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        TrialRng::next_u64(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let b = TrialRng::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_kind_lists_kinds() {
        assert_eq!(from_kind("random", 1).unwrap().name(), "random");
        let e = from_kind("tpe-ish", 1).err().unwrap();
        assert_eq!(
            e.to_string(),
            "unknown sampler kind \"tpe-ish\"; available: random, cmaes, tpe, qmc, gp"
        );
        let t: toml::Table = toml::from_str("a = 1\nb = 2").unwrap();
        let e = build("random", 1, Some(&t)).err().unwrap();
        assert_eq!(e.to_string(), "sampler.random takes no options (got: a, b)");
        assert!(matches!(e, SamplerError::NoOptions { .. }));
    }

    /// Records the histories it is shown and the trials it is told.
    #[derive(Default, Clone)]
    struct Spy(std::sync::Arc<std::sync::Mutex<(Vec<FrozenTrial>, Vec<FrozenTrial>)>>);

    impl Sampler for Spy {
        fn name(&self) -> &str {
            "spy"
        }
        fn sample(&mut self, request: &SampleRequest<'_>) -> Params {
            self.0.lock().unwrap().0 = request.history.to_vec();
            Params::new()
        }
        fn tell(&mut self, trial: &FrozenTrial) {
            self.0.lock().unwrap().1.push(trial.clone());
        }
    }

    #[test]
    fn without_constraints_shows_unsafe_trials_as_failed_ones() {
        use crate::pruner::{is_unsafe, test_util::trial};
        use crate::trial::TrialState;
        let mut unsafe_trial = trial(1, TrialState::Pruned, &[1.0, 2.0]);
        unsafe_trial.prune_reason = Some("unsafe".into());
        unsafe_trial
            .attrs
            .insert("unsafe".into(), serde_json::json!({ "excess": 0.3 }));
        let poor = trial(2, TrialState::Pruned, &[0.5]);
        let history = vec![unsafe_trial.clone(), poor.clone()];
        let space = SearchSpace::new([(
            "x".to_string(),
            crate::space::Distribution::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: None,
            },
        )])
        .unwrap();
        let request = SampleRequest {
            space: &space,
            history: &history,
            direction: Direction::Maximize,
            trial_number: 3,
        };
        let spy = Spy::default();
        let mut hidden = without_constraints(Box::new(spy.clone()));
        assert_eq!(hidden.name(), "spy");
        hidden.sample(&request);
        hidden.tell(&unsafe_trial);
        let seen = spy.0.lock().unwrap();
        let (shown, told) = (&seen.0, &seen.1);
        for t in [&shown[0], &told[0]] {
            assert!(!is_unsafe(t), "{t:?}");
            assert_eq!(t.state, TrialState::Fail);
            assert!(t.intermediate.is_empty() && t.value.is_none());
            assert!(!t.attrs.contains_key("unsafe"));
            assert_eq!(t.params, unsafe_trial.params);
        }
        assert_eq!(shown[1], poor, "other trials pass unchanged");
        // With constraints on, the sampler sees the violation.
        let mut plain = Spy::default();
        plain.sample(&request);
        assert!(is_unsafe(&plain.0.lock().unwrap().0[0]));
    }

    #[test]
    fn streams_are_fixed_and_distinct() {
        // Pinned output: a change here breaks reproducibility of stored studies.
        let mut r = TrialRng::from_seed(0);
        let first = [r.next_u64(), r.next_u64()];
        // Checked against an independent Python implementation of SplitMix64 + xoshiro256++.
        assert_eq!(
            first,
            [5_987_356_902_031_041_503, 7_051_070_477_665_621_255]
        );
        assert_eq!(
            TrialRng::for_trial(1, 2, 3).next_u64(),
            5_298_041_080_994_355_231
        );
        assert_ne!(
            TrialRng::for_trial(1, 0, 0).next_u64(),
            TrialRng::for_trial(0, 1, 0).next_u64()
        );
        assert_ne!(
            TrialRng::for_trial(1, 2, 0).next_u64(),
            TrialRng::for_trial(1, 2, 1).next_u64()
        );
    }

    #[test]
    fn below_and_uniform_are_in_range_and_cover_it() {
        let mut r = TrialRng::from_seed(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[r.below(5) as usize] += 1;
            let x = r.uniform(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
        }
        // Each bucket expects 1000; 800 is > 6 standard deviations below.
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        assert_eq!(r.uniform(1.0, 1.0), 1.0);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = TrialRng::from_seed(3);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
