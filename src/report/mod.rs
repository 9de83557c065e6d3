//! `gaittune report`: one self-contained HTML file about a study (no network: the page holds
//! its data, its script and its styles), with the plots people look at: the optimisation
//! history with the best so far and unsafe trials marked, the intermediate values, parallel
//! coordinates, parameter importances ([`importance`]: PED-ANOVA), a slice plot per parameter
//! (unsafe trials marked where they fell), the baseline against the best, and, for a study
//! run on the physics simulator, the best trial's gait replayed.
//!
//! The plots are the live dashboard's (`control/assets/plots.js`): one implementation.

pub mod importance;

use serde_json::{json, Value};

use crate::space::{Distribution, SearchSpace};
use crate::storage::{self, StudyRecord};
use crate::study::StudyError;
use crate::trial::FrozenTrial;

const TEMPLATE: &str = include_str!("report.html");
const PLOTS_JS: &str = include_str!("../control/assets/plots.js");

/// Builds the report of study `study` in the storage at `url` (opened read-only).
pub fn build(url: &str, study: &str) -> Result<String, StudyError> {
    let storage = storage::open_read_only(url)?;
    let (record, space) = crate::study::load_record(&*storage, study)?;
    let trials = storage.list_trials(record.id)?;
    Ok(render(&record, &space, &trials))
}

/// The report page of a study from its record, space and trials.
pub fn render(record: &StudyRecord, space: &SearchSpace, trials: &[FrozenTrial]) -> String {
    let data = report_data(record, space, trials);
    // `</` may not appear inside a <script> element.
    let data = data.to_string().replace("</", "<\\/");
    TEMPLATE
        .replacen("/*PLOTS_JS*/", PLOTS_JS, 1)
        .replacen("/*REPORT_DATA*/null", &data, 1)
        .replacen("{{TITLE}}", &html_escape(&record.name), 1)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Everything the page draws, as one JSON object.
fn report_data(record: &StudyRecord, space: &SearchSpace, trials: &[FrozenTrial]) -> Value {
    let direction = record.direction;
    let best = crate::study::best_of(trials, direction);
    let baseline = trials
        .iter()
        .find(|t| t.attrs.get("baseline") == Some(&json!(true)));
    let importances = importance::ped_anova(space, trials, direction);
    let gait = best.and_then(|b| gait_plot(record, b));
    json!({
        "study": record.name,
        "created_at": record.created_at,
        "direction": direction,
        "space": space.iter().map(|(name, d)| param_json(name, d)).collect::<Vec<_>>(),
        "trials": trials.iter().map(|t| crate::export::trial_json(t, space)).collect::<Vec<_>>(),
        "counts": crate::study::StateCounts::of(trials),
        "best": best.map(|b| b.number),
        "baseline": baseline.map(|b| b.number),
        "importances": importances,
        "importance_method": format!(
            "PED-ANOVA (Watanabe et al. 2023, as Optuna's PedAnovaImportanceEvaluator): the top {:.0} % of the COMPLETE trials against all of them; needs at least {} COMPLETE trials",
            importance::TOP_QUANTILE * 100.0,
            importance::MIN_TRIALS
        ),
        "gait": gait,
        "robot": record.attrs.get("robot"),
        "unsafe_count": trials.iter().filter(|t| t.is_unsafe()).count(),
    })
}

fn param_json(name: &str, d: &Distribution) -> Value {
    match d {
        Distribution::Float { low, high, log, .. } => {
            json!({ "name": name, "kind": "float", "low": low, "high": high, "log": log })
        }
        Distribution::Int { low, high, log, .. } => {
            json!({ "name": name, "kind": "int", "low": low, "high": high, "log": log })
        }
        Distribution::Categorical { choices } => json!({
            "name": name, "kind": "categorical",
            "choices": choices.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        }),
    }
}

/// The best trial's gait replayed on the physics simulator, when the study's robot is the
/// physics quadruped (its parameter names say so): `{svg, caption}`.
#[cfg(feature = "daemon")]
fn gait_plot(record: &StudyRecord, best: &FrozenTrial) -> Option<Value> {
    use crate::sim::firmware::RobotModel;
    use crate::sim::physics::{self, PhysicsQuadruped};
    let robot = record.attrs.get("robot")?;
    if robot.get("robot_id").and_then(Value::as_str) != Some(crate::sim::ROBOT_ID) {
        return None;
    }
    let space = SearchSpace::from_json(&record.space_json).ok()?;
    let params = space.external_params(&best.params);
    let seed = best
        .episodes
        .first()
        .and_then(|e| serde_json::to_value(e).ok())
        .and_then(|e| e.get("seed").and_then(Value::as_u64));
    // The simulated robot as the study ran it, if it says (else the default robot, seed 1,
    // noise-free).
    let sim = record.attrs.get("sim");
    let robot_seed = sim.and_then(|s| s["seed"].as_u64()).unwrap_or(1);
    let noise = sim.and_then(|s| s["noise"].as_f64()).unwrap_or(0.0);
    let (model, values) = [false, true].into_iter().find_map(|full| {
        let model = PhysicsQuadruped::new(robot_seed, noise, full);
        let values = physics::values_from_map(model.params(), &params).ok()?;
        Some((model, values))
    })?;
    let max_steps = best.episodes.first().map_or(500, |e| e.steps.max(1));
    let replay = physics::replay(&model, &values, seed.unwrap_or(0), max_steps);
    let caption = format!(
        "trial {}'s parameters replayed for {} steps on the physics simulator's robot (seed {robot_seed}, noise {noise}, episode seed {}): return {:.2}, mean forward speed {:.3} m/s{}",
        best.number,
        replay.frames.len(),
        seed.map_or("0 (not stored with this study)".to_string(), |s| s.to_string()),
        replay.episode_return(),
        replay.mean_forward_speed(),
        best.value
            .map(|v| format!("; the stored value: {v:.2}"))
            .unwrap_or_default()
    );
    let svg = physics::plot::episode_svg(&replay, &format!("trial {}", best.number));
    Some(json!({ "svg": svg, "caption": caption }))
}

#[cfg(not(feature = "daemon"))]
fn gait_plot(_: &StudyRecord, _: &FrozenTrial) -> Option<Value> {
    None
}
