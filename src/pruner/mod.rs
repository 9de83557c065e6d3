//! Pruners decide, after each intermediate value a trial reports, whether to stop it early
//! for poor performance. Like the samplers they are pure functions of the study's history:
//! no I/O, no clock, no async, no hidden state. Given the same history and the same trial
//! they return the same decision, so a resumed study prunes exactly as an uninterrupted one.
//!
//! The kinds follow Optuna 5.0's pruners, decision for decision where the semantics are
//! meant to be the same (`tests/pruner_replay.rs` replays Optuna's recorded runs and
//! checks every trial's decision):
//!
//! | kind                 | type                        | Optuna 5.0 counterpart      |
//! |----------------------|-----------------------------|-----------------------------|
//! | `none`               | (no pruner)                 | `NopPruner`                 |
//! | `median`             | [`PercentilePruner`]        | `MedianPruner`              |
//! | `percentile`         | [`PercentilePruner`]        | `PercentilePruner`          |
//! | `successive_halving` | [`SuccessiveHalvingPruner`] | `SuccessiveHalvingPruner`   |
//! | `hyperband`          | [`HyperbandPruner`]         | `HyperbandPruner`           |
//! | `threshold`          | [`ThresholdPruner`]         | `ThresholdPruner`           |
//! | `patient`            | [`PatientPruner`]           | `PatientPruner`             |
//! | `wilcoxon`           | [`WilcoxonPruner`]          | `WilcoxonPruner`            |
//!
//! # What a pruner sees
//!
//! A [`PruneRequest`] carries every trial of the study (`history`; it may or may not contain
//! the current trial: an entry with the current trial's number is ignored and
//! [`PruneRequest::trial`] is used instead), the current trial with all its intermediate
//! values so far, and the step just reported. Like Optuna, the pruners judge the trial at
//! its *highest* reported step (Optuna's `last_step`), which is the step just reported when
//! steps increase, as they do in the daemon.
//!
//! # Intentional differences from Optuna 5.0
//!
//! 1. **Unsafe trials are never reference trials.** A trial pruned as unsafe (state PRUNED,
//!    prune reason `unsafe` or `unsafe: ...`: a safety stop or a firmware trip) ended early
//!    for a reason that says nothing about its learning curve, so its partial curve must not
//!    poison the comparison. The percentile pruners only use COMPLETE trials anyway (as in
//!    Optuna); successive halving and hyperband, which in Optuna compare against every
//!    trial that reached a rung (pruned ones included), skip unsafe trials here. The
//!    recorded Optuna runs contain no unsafe trial, so replay equivalence is unaffected.
//! 2. **Successive-halving rungs are reconstructed from the history** instead of being
//!    written into the trial's system attributes while it runs (a pure pruner writes
//!    nothing). A trial's value at rung `k` is its value at the first reported step at or
//!    after the rung's promotion step, as Optuna records it. Trials that ran before the
//!    first COMPLETE trial finished carry no rung values when the minimum (SH) or maximum
//!    (hyperband) resource is `auto`, exactly as in Optuna, whose pruner does nothing until
//!    it can estimate the resource. This equals Optuna when trials run one at a time (as
//!    the daemon runs them) and steps are contiguous; with several trials in parallel, or
//!    when one report jumps over two rungs at once, Optuna's record depends on the timing
//!    of calls and may differ slightly.
//! 3. **`auto` resources are taken from the first COMPLETE trial that reported a step**
//!    (earliest `finished_at`, then lowest number), for the whole study. Optuna caches the
//!    estimate in the pruner object at its first chance, which in a sequential run is the
//!    same trial; a resumed Optuna process re-estimates from all COMPLETE trials.
//! 4. Wilcoxon: exact p-values are computed from integer counts (scipy sums float pmfs),
//!    and the averages behind Optuna's "average is best" safety are summed in step order
//!    (Optuna: report order); both differ only in the last bits, which matter only at an
//!    exact tie. The best trial is the best COMPLETE trial by value (earliest on ties);
//!    Optuna 5.0 would skip an infeasible best trial of a constrained study.
//!
//! The replay test (`tests/pruner_replay.rs`) feeds every recorded Optuna 5.0 run of the
//! learning-curve problem (10 seeds, Random and TPE samplers, median with warmup 10 and 30,
//! successive halving with defaults, hyperband(1, 100, 3)) through these pruners and checks
//! that every one of the 10,000 trials is pruned at the same step, or completes, as in
//! Optuna.

mod hyperband;
mod patient;
mod percentile;
mod successive_halving;
mod threshold;
mod wilcoxon;

pub use hyperband::{crc32, Brackets, HyperbandOptions, HyperbandPruner};
pub use patient::{PatientOptions, PatientPruner};
pub use percentile::{MedianOptions, PercentileOptions, PercentilePruner};
pub use successive_halving::{Resource, SuccessiveHalvingOptions, SuccessiveHalvingPruner};
pub use threshold::{ThresholdOptions, ThresholdPruner};
pub use wilcoxon::{signed_rank_p_value, Alternative, WilcoxonOptions, WilcoxonPruner};

use crate::trial::{Direction, FrozenTrial, TrialState};

pub use crate::trial::UNSAFE_REASON;

/// The prune reason of a trial a pruner stopped for poor performance.
pub const POOR_REASON: &str = "poor";

/// What a pruner is asked after a trial reported an intermediate value.
#[derive(Debug, Clone, Copy)]
pub struct PruneRequest<'a> {
    /// The study's name (hyperband assigns brackets by a hash of it and the trial number).
    pub study_name: &'a str,
    /// Whether larger or smaller values are better.
    pub direction: Direction,
    /// Every trial of the study, in any order and whatever its state. It may contain the
    /// current trial; an entry with the current trial's number is ignored in favour of
    /// [`PruneRequest::trial`].
    pub history: &'a [FrozenTrial],
    /// The trial being judged, with every intermediate value it reported so far.
    pub trial: &'a FrozenTrial,
    /// The step just reported. The pruners judge the trial at its highest reported step
    /// (see the module docs), which is this step when steps increase.
    pub step: u64,
}

impl<'a> PruneRequest<'a> {
    /// Every trial of the history except the current one.
    pub fn others(&self) -> impl Iterator<Item = &'a FrozenTrial> + 'a {
        let me = self.trial.number;
        self.history.iter().filter(move |t| t.number != me)
    }

    /// The trials other pruners may compare against: every other trial except those
    /// pruned as unsafe (see [`is_unsafe`]).
    pub fn reference_trials(&self) -> impl Iterator<Item = &'a FrozenTrial> + 'a {
        self.others().filter(|t| !is_unsafe(t))
    }

    /// The COMPLETE reference trials.
    pub fn complete_trials(&self) -> impl Iterator<Item = &'a FrozenTrial> + 'a {
        self.reference_trials()
            .filter(|t| t.state == TrialState::Complete)
    }
}

/// Decides whether a trial should stop early.
pub trait Pruner: Send {
    /// Short name, e.g. `median`.
    fn name(&self) -> &str;

    /// Whether the trial should be pruned now. Called after each reported value; `true`
    /// means: stop the episode and record the trial as PRUNED (reason [`POOR_REASON`]).
    fn prune(&self, req: &PruneRequest<'_>) -> bool;
}

/// Whether a trial was pruned by a safety stop, a firmware trip or a library user's
/// constraint ([`FrozenTrial::is_unsafe`]). Such trials never serve as reference.
pub fn is_unsafe(t: &FrozenTrial) -> bool {
    t.is_unsafe()
}

/// The pruner kinds [`build`] knows (`none` included).
pub const KINDS: &[&str] = &[
    "none",
    "median",
    "percentile",
    "successive_halving",
    "hyperband",
    "threshold",
    "patient",
    "wilcoxon",
];

/// What is wrong with a pruner's kind or options; every message names the config table
/// `pruner.<kind>` and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrunerError {
    /// No pruner has this kind.
    #[error("unknown pruner kind {kind:?}; available: {}", KINDS.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
    },
    /// Options were given to `none`.
    #[error("pruner.none takes no options (got: {}); remove them or choose a pruner kind", keys.join(", "))]
    NoOptions {
        /// The keys given.
        keys: Vec<String>,
    },
    /// The options table does not parse (an unknown key, a value of the wrong type).
    #[error("pruner.{kind}{}: {message}", dotted(key))]
    Parse {
        /// The pruner kind.
        kind: String,
        /// The offending key, when one alone fails.
        key: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// An option has a value the pruner does not allow, or a required one is missing.
    #[error("pruner.{kind}{} {problem}", dotted(key))]
    Invalid {
        /// The pruner kind.
        kind: String,
        /// The option, if the problem is with one (e.g. `inner.kind`).
        key: Option<String>,
        /// What is wrong and what to do, e.g. `must be at least 1 (got 0)`.
        problem: String,
    },
    /// The pruner wrapped by `patient` (`pruner.patient.inner`) is invalid.
    #[error("pruner.patient.inner: {0}")]
    Inner(Box<PrunerError>),
}

/// `.key`, or nothing.
fn dotted(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(".{k}")).unwrap_or_default()
}

impl PrunerError {
    /// Option `key` (`None`: the table as a whole) of pruner `kind` is invalid: `problem`.
    pub(crate) fn invalid(
        kind: &str,
        key: Option<&str>,
        problem: impl Into<String>,
    ) -> PrunerError {
        PrunerError::Invalid {
            kind: kind.into(),
            key: key.map(str::to_string),
            problem: problem.into(),
        }
    }
}

/// Builds a pruner by its config name (`[pruner] kind`), with its options table
/// (`[pruner.<kind>]`) if the config has one. Returns `Ok(None)` for `none`. Each pruner
/// parses its own options with Optuna's defaults and refuses unknown keys; errors name the
/// table and the key.
pub fn build(
    kind: &str,
    options: Option<&toml::Table>,
) -> Result<Option<Box<dyn Pruner>>, PrunerError> {
    let pruner: Box<dyn Pruner> = match kind {
        "none" => {
            if let Some(t) = options.filter(|t| !t.is_empty()) {
                return Err(PrunerError::NoOptions {
                    keys: t.keys().cloned().collect(),
                });
            }
            return Ok(None);
        }
        "median" => Box::new(PercentilePruner::median(parse_options(kind, options)?)?),
        "percentile" => Box::new(PercentilePruner::new(parse_options(kind, options)?)?),
        "successive_halving" => {
            Box::new(SuccessiveHalvingPruner::new(parse_options(kind, options)?)?)
        }
        "hyperband" => Box::new(HyperbandPruner::new(parse_options(kind, options)?)?),
        "threshold" => Box::new(ThresholdPruner::new(parse_options(kind, options)?)?),
        "patient" => Box::new(PatientPruner::new(parse_options(kind, options)?)?),
        "wilcoxon" => Box::new(WilcoxonPruner::new(parse_options(kind, options)?)?),
        other => return Err(PrunerError::UnknownKind { kind: other.into() }),
    };
    Ok(Some(pruner))
}

/// Builds a pruner by kind with default options (`None` for `none`).
pub fn from_kind(kind: &str) -> Result<Option<Box<dyn Pruner>>, PrunerError> {
    build(kind, None)
}

/// Parses a pruner's options table into its options struct (which uses
/// `#[serde(deny_unknown_fields, default)]`); errors name the table `pruner.<kind>` and the
/// offending key.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    kind: &str,
    options: Option<&toml::Table>,
) -> Result<T, PrunerError> {
    let Some(table) = options else {
        return Ok(T::default());
    };
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let msg = e.to_string();
        // The first line is the problem; toml adds the key on a later line.
        let problem = msg.lines().next().unwrap_or("").trim().to_string();
        // Name the key whose value alone fails (every field has a default, so a valid key
        // alone always parses).
        let key = table.iter().find(|(k, v)| {
            let mut one = toml::Table::new();
            one.insert((*k).clone(), (*v).clone());
            T::deserialize(toml::Value::Table(one)).is_err()
        });
        match key {
            Some((k, _)) => PrunerError::Parse {
                kind: kind.into(),
                key: Some(k.clone()),
                message: problem,
            },
            None => PrunerError::Parse {
                kind: kind.into(),
                key: None,
                message: msg.trim().replace('\n', " "),
            },
        }
    })
}

/// `Optuna`'s `nanmin`/`nanmax`: the best of the non-NaN values in `direction`, NaN if
/// there is none.
pub(crate) fn nan_best(values: impl Iterator<Item = f64>, direction: Direction) -> f64 {
    values.filter(|v| !v.is_nan()).fold(f64::NAN, |acc, v| {
        if acc.is_nan() || direction.is_better(v, acc) {
            v
        } else {
            acc
        }
    })
}

/// Optuna's `_is_first_in_interval_step`: whether `step` is the first reported step at or
/// after the latest pruning check point (`n_warmup_steps + k * interval_steps`).
pub(crate) fn is_first_in_interval_step(
    trial: &FrozenTrial,
    step: u64,
    n_warmup_steps: u64,
    interval_steps: u64,
) -> bool {
    let nearest_lower_pruning_step =
        (step - n_warmup_steps) / interval_steps * interval_steps + n_warmup_steps;
    let second_last = trial
        .intermediate
        .range(..step)
        .next_back()
        .map(|(&s, _)| s);
    second_last.map_or(true, |s| s < nearest_lower_pruning_step)
}

/// Checks an options value and names the key in the error.
pub(crate) fn check(
    cond: bool,
    kind: &str,
    key: &str,
    what: impl FnOnce() -> String,
) -> Result<(), PrunerError> {
    if cond {
        Ok(())
    } else {
        Err(PrunerError::invalid(kind, Some(key), what()))
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::collections::BTreeMap;

    use crate::trial::{FrozenTrial, TrialState};

    /// A trial with the given intermediate values at steps 1, 2, ...
    pub fn trial(number: u64, state: TrialState, values: &[f64]) -> FrozenTrial {
        trial_at(
            number,
            state,
            &values
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u64 + 1, v))
                .collect::<Vec<_>>(),
        )
    }

    /// A trial with the given (step, value) intermediate values.
    pub fn trial_at(number: u64, state: TrialState, values: &[(u64, f64)]) -> FrozenTrial {
        let intermediate: BTreeMap<u64, f64> = values.iter().copied().collect();
        FrozenTrial {
            number,
            state,
            params: Default::default(),
            value: if state == TrialState::Complete {
                intermediate.values().next_back().copied()
            } else {
                None
            },
            intermediate,
            prune_reason: (state == TrialState::Pruned).then(|| "poor".to_string()),
            episodes: vec![],
            started_at: None,
            finished_at: None,
            attrs: Default::default(),
            worker: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::trial;
    use super::*;

    #[test]
    fn build_knows_every_kind_and_none_is_none() {
        for kind in KINDS {
            let mut opts = toml::Table::new();
            match *kind {
                "percentile" => {
                    opts.insert("percentile".into(), 25.0.into());
                }
                "threshold" => {
                    opts.insert("upper".into(), 1.0.into());
                }
                "patient" => {
                    opts.insert("patience".into(), 2.into());
                }
                _ => {}
            }
            let p = build(kind, Some(&opts)).unwrap_or_else(|e| panic!("{kind}: {e}"));
            match *kind {
                "none" => assert!(p.is_none()),
                k => assert_eq!(p.unwrap().name(), k),
            }
        }
        assert!(from_kind("none").unwrap().is_none());
        let e = build("asha", None).err().unwrap();
        assert_eq!(
            e,
            PrunerError::UnknownKind {
                kind: "asha".into()
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "unknown pruner kind \"asha\"; available: {}",
                KINDS.join(", ")
            )
        );
    }

    #[test]
    fn option_errors_name_the_key() {
        let t: toml::Table = toml::from_str("n_warmup_step = 3").unwrap();
        let e = build("median", Some(&t)).err().unwrap();
        assert!(
            matches!(&e, PrunerError::Parse { kind, key: Some(k), .. }
                if kind == "median" && k == "n_warmup_step"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("pruner.median") && e.contains("n_warmup_step"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("n_warmup_steps = -3").unwrap();
        let e = build("median", Some(&t)).err().unwrap().to_string();
        assert!(e.contains("pruner.median.n_warmup_steps"), "{e}");
        let t: toml::Table = toml::from_str("interval_steps = 0").unwrap();
        let e = build("median", Some(&t)).err().unwrap();
        assert!(matches!(e, PrunerError::Invalid { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "pruner.median.interval_steps must be at least 1 (got 0)"
        );
        let t: toml::Table = toml::from_str("percentile = 50.0").unwrap();
        let e = build("median", Some(&t)).err().unwrap().to_string();
        assert!(e.contains("percentile"), "{e}");
        let t: toml::Table =
            toml::from_str("patience = 1\ninner = { kind = \"median\", warmup = 3 }").unwrap();
        let e = build("patient", Some(&t)).err().unwrap();
        assert!(
            matches!(&e, PrunerError::Inner(inner) if matches!(**inner, PrunerError::Parse { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("pruner.patient.inner: pruner.median.warmup: unknown field"),
            "{e}"
        );
        let t: toml::Table = toml::from_str("x = 1").unwrap();
        let e = build("none", Some(&t)).err().unwrap().to_string();
        assert_eq!(
            e,
            "pruner.none takes no options (got: x); remove them or choose a pruner kind"
        );
    }

    #[test]
    fn unsafe_reasons() {
        let mut t = trial(0, TrialState::Pruned, &[1.0]);
        assert!(!is_unsafe(&t));
        t.prune_reason = Some("unsafe".into());
        assert!(is_unsafe(&t));
        t.prune_reason = Some("unsafe: roll 0.9 rad > 0.6".into());
        assert!(is_unsafe(&t));
        t.prune_reason = Some("unsafely-named".into());
        assert!(!is_unsafe(&t));
        t.prune_reason = Some("unsafe".into());
        t.state = TrialState::Fail;
        assert!(!is_unsafe(&t));
    }

    #[test]
    fn history_excludes_current_trial_and_unsafe_ones() {
        let mut bad = trial(1, TrialState::Pruned, &[1.0]);
        bad.prune_reason = Some("unsafe".into());
        let history = vec![
            trial(0, TrialState::Complete, &[1.0]),
            bad,
            trial(2, TrialState::Running, &[1.0]),
        ];
        let req = PruneRequest {
            study_name: "s",
            direction: Direction::Minimize,
            history: &history,
            trial: &history[2],
            step: 1,
        };
        assert_eq!(req.others().count(), 2);
        assert_eq!(
            req.reference_trials().map(|t| t.number).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(req.complete_trials().count(), 1);
    }

    #[test]
    fn interval_step_rule_matches_optuna() {
        // warmup 2, interval 3: checks at 2, 5, 8, ...
        let t = trial(0, TrialState::Running, &[0.0; 5]);
        assert!(is_first_in_interval_step(&t, 5, 2, 3));
        let t = trial(0, TrialState::Running, &[0.0; 6]);
        assert!(!is_first_in_interval_step(&t, 6, 2, 3));
        // A postponed check: nothing reported at 5, the first report after it is checked.
        let t = super::test_util::trial_at(0, TrialState::Running, &[(4, 0.0), (7, 0.0)]);
        assert!(is_first_in_interval_step(&t, 7, 2, 3));
        let t = super::test_util::trial_at(0, TrialState::Running, &[(3, 0.0)]);
        assert!(is_first_in_interval_step(&t, 3, 2, 3));
    }

    #[test]
    fn nan_best_ignores_nans() {
        let v = [f64::NAN, 3.0, 1.0, f64::NAN, 2.0];
        assert_eq!(nan_best(v.iter().copied(), Direction::Minimize), 1.0);
        assert_eq!(nan_best(v.iter().copied(), Direction::Maximize), 3.0);
        assert!(nan_best([f64::NAN].into_iter(), Direction::Minimize).is_nan());
    }
}
