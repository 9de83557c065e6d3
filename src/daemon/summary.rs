//! What the daemon prints: the progress line of each trial and the study's summary.

use std::time::Instant;

use anyhow::Result;

use crate::evaluation;
use crate::space::{Params, SearchSpace};
use crate::study::Study;
use crate::trial::{FrozenTrial, TrialState};

/// How one trial ended, for the progress line.
pub(super) enum TrialEnd {
    Complete(f64),
    Unsafe(String),
    Poor { step: u64, value: f64 },
    Failed(String),
}

impl TrialEnd {
    /// The `trial_finished` event of trial `number` ending so.
    pub(super) fn to_event(&self, number: u64) -> serde_json::Value {
        use serde_json::json;
        match self {
            TrialEnd::Complete(v) => json!({ "trial": number, "state": "COMPLETE", "value": v }),
            TrialEnd::Unsafe(why) => {
                json!({ "trial": number, "state": "PRUNED", "reason": "unsafe", "detail": why })
            }
            TrialEnd::Poor { step, value } => json!({
                "trial": number, "state": "PRUNED", "reason": "poor", "step": step, "last": value
            }),
            TrialEnd::Failed(why) => json!({ "trial": number, "state": "FAIL", "reason": why }),
        }
    }
}

/// `name=value` pairs of a parameter set, floats at four significant digits.
pub(super) fn format_params(space: &SearchSpace, params: &Params) -> String {
    params
        .iter()
        .map(|(k, &v)| format!("{k}={}", short(&space.external(k, v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parameter value for a progress line: floats at four significant digits.
fn short(value: &serde_json::Value) -> String {
    match value.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if !value.is_i64() && !value.is_u64() => {
            let digits = (4 - 1 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
            format!("{x:.digits$}")
        }
        _ => value.to_string(),
    }
}

/// The line printed when a trial ends.
pub(super) fn print_end(number: u64, end: &TrialEnd, best: Option<&FrozenTrial>, started: Instant) {
    let best = best
        .map(|b| format!("best {:.4} (#{})", b.value.unwrap_or(f64::NAN), b.number))
        .unwrap_or_else(|| "best -".into());
    let secs = started.elapsed().as_secs_f64();
    match end {
        TrialEnd::Complete(v) => {
            outln!("trial {number:>4} COMPLETE value {v:.4}  {best}  ({secs:.1} s)")
        }
        TrialEnd::Unsafe(why) => {
            outln!("trial {number:>4} PRUNED(unsafe) {why}  {best}  ({secs:.1} s)")
        }
        TrialEnd::Poor { step, value } => outln!(
            "trial {number:>4} PRUNED(poor) at step {step} (projected {value:.4})  {best}  ({secs:.1} s)"
        ),
        TrialEnd::Failed(why) => outln!("trial {number:>4} FAIL {why}  {best}  ({secs:.1} s)"),
    }
}

/// The study's counts, its best trial next to the baseline, and the likely best.
pub(super) fn print_summary(study: &Study) -> Result<()> {
    let trials = study.trials()?;
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    let unsafe_trials = trials
        .iter()
        .filter(|t| crate::pruner::is_unsafe(t))
        .count();
    outln!(
        "study '{}': {} complete, {} pruned ({} unsafe), {} failed, {} waiting",
        study.name(),
        count(TrialState::Complete),
        count(TrialState::Pruned),
        unsafe_trials,
        count(TrialState::Fail),
        count(TrialState::Waiting)
    );
    let baseline = trials
        .iter()
        .find(|t| t.attrs.contains_key("baseline") && t.state == TrialState::Complete);
    match study.best_trial()? {
        Some(best) => {
            let versus = match baseline.and_then(|b| b.value.map(|v| (b.number, v))) {
                Some((number, v)) if number != best.number => {
                    format!(" (baseline trial {number}: {v:.4})")
                }
                _ => String::new(),
            };
            outln!(
                "best trial {}: value {:.4}{versus}",
                best.number,
                best.value.unwrap_or(f64::NAN)
            );
            for (name, &v) in &best.params {
                outln!("  {name} = {}", study.space().external(name, v));
            }
        }
        None => outln!("no complete trial yet"),
    }
    if study.sampler_name() == "gp" {
        if let Some((trial, mean)) =
            evaluation::likely_best_by_model(study.space(), &trials, study.direction())
        {
            outln!(
                "likely best by the GP's posterior mean (noise-aware, among the {} best): trial {} predicted {:.4} (measured {:.4})",
                evaluation::MODEL_TOP,
                trial.number,
                mean,
                trial.value.unwrap_or(f64::NAN)
            );
        }
    }
    if let Some((trial, stats)) = evaluation::likely_best(&trials, study.direction()) {
        outln!(
            "likely best (mean over {} episodes): trial {} mean {:.4} ± {:.4} (sd {:.4})",
            stats.n,
            trial.number,
            stats.mean,
            stats.sem,
            stats.sd
        );
        for (name, &v) in &trial.params {
            outln!("  {name} = {}", study.space().external(name, v));
        }
    }
    Ok(())
}
