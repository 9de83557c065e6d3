//! Optuna interop: a study as Optuna's JournalStorage file (`gaittune export --format
//! optuna-journal`), which `optuna.storages.JournalStorage(JournalFileBackend(path))`,
//! `optuna-dashboard path` and `optuna.visualization` open.
//!
//! The format is Optuna 5.0's (`optuna/storages/journal/_storage.py` and `_file.py`): one
//! JSON object per line, each an operation with its `op_code` and the `worker_id` that wrote
//! it. The export writes `CREATE_STUDY`, `SET_STUDY_USER_ATTR` (where the study came from),
//! then one `CREATE_TRIAL` per trial carrying the whole trial, as Optuna itself writes a
//! finished trial it copies (`Study.add_trial`, `copy_study`): state, value, start and end
//! times (ISO 8601, microseconds, UTC offset), parameters in Optuna's internal representation
//! (the float, the integer as a float, the *index* of a categorical choice: gaittune's own)
//! with their distributions (`FloatDistribution`, `IntDistribution`,
//! `CategoricalDistribution`, as `distribution_to_json` writes them), intermediate values and
//! user attributes.
//!
//! A PRUNED trial has no value (as in gaittune's own exports: its last report, for an unsafe
//! trial the projection just before it fell, is an intermediate value, not a result). User
//! attributes: gaittune's trial attributes as they are (e.g. `unsafe`: which limit tripped,
//! by how much, at which step), plus `prune_reason`, `episodes` (return, steps, status and
//! seed of each) and `worker`.

pub mod import;

use serde_json::{json, Map, Value};

use crate::space::{Choice, Distribution, SearchSpace};
use crate::storage::StudyRecord;
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Optuna's journal operation codes (`JournalOperation` in `_storage.py`).
pub mod op {
    /// `CREATE_STUDY`: `study_name`, `directions`.
    pub const CREATE_STUDY: u8 = 0;
    /// `DELETE_STUDY`: `study_id`.
    pub const DELETE_STUDY: u8 = 1;
    /// `SET_STUDY_USER_ATTR`: `study_id`, `user_attr` (one key).
    pub const SET_STUDY_USER_ATTR: u8 = 2;
    /// `SET_STUDY_SYSTEM_ATTR`: `study_id`, `system_attr` (one key).
    pub const SET_STUDY_SYSTEM_ATTR: u8 = 3;
    /// `CREATE_TRIAL`: `study_id`, `datetime_start`, and for a whole trial its `state`,
    /// `value`/`values`, `datetime_complete`, `distributions`, `params`, `user_attrs`,
    /// `system_attrs`, `intermediate_values`.
    pub const CREATE_TRIAL: u8 = 4;
    /// `SET_TRIAL_PARAM`: `trial_id`, `param_name`, `param_value_internal`, `distribution`.
    pub const SET_TRIAL_PARAM: u8 = 5;
    /// `SET_TRIAL_STATE_VALUES`: `trial_id`, `state`, `values`, `datetime_start` (RUNNING) or
    /// `datetime_complete` (finished).
    pub const SET_TRIAL_STATE_VALUES: u8 = 6;
    /// `SET_TRIAL_INTERMEDIATE_VALUE`: `trial_id`, `step`, `intermediate_value`.
    pub const SET_TRIAL_INTERMEDIATE_VALUE: u8 = 7;
    /// `SET_TRIAL_USER_ATTR`: `trial_id`, `user_attr` (one key).
    pub const SET_TRIAL_USER_ATTR: u8 = 8;
    /// `SET_TRIAL_SYSTEM_ATTR`: `trial_id`, `system_attr` (one key).
    pub const SET_TRIAL_SYSTEM_ATTR: u8 = 9;
}

/// The `worker_id` of the operations an export writes (Optuna's own are a UUID and a thread
/// id, so they never collide with it).
pub const EXPORT_WORKER_ID: &str = "gaittune-export";

/// Optuna's `TrialState` number of a gaittune state (`RUNNING` 0, `COMPLETE` 1, `PRUNED` 2,
/// `FAIL` 3, `WAITING` 4: the same states).
pub fn state_code(state: TrialState) -> u8 {
    match state {
        TrialState::Running => 0,
        TrialState::Complete => 1,
        TrialState::Pruned => 2,
        TrialState::Fail => 3,
        TrialState::Waiting => 4,
    }
}

/// Optuna's `StudyDirection` number (`MINIMIZE` 1, `MAXIMIZE` 2).
pub fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Minimize => 1,
        Direction::Maximize => 2,
    }
}

/// A distribution as Optuna's `distribution_to_json` writes it: a JSON *string* holding
/// `{"name": "FloatDistribution", "attributes": {...}}`.
pub fn distribution_json(dist: &Distribution) -> String {
    let v = match dist {
        Distribution::Float {
            low,
            high,
            log,
            step,
        } => json!({"name": "FloatDistribution",
                    "attributes": {"step": step, "low": low, "high": high, "log": log}}),
        Distribution::Int {
            low,
            high,
            step,
            log,
        } => json!({"name": "IntDistribution",
                    "attributes": {"log": log, "step": step, "low": low, "high": high}}),
        Distribution::Categorical { choices } => {
            let choices: Vec<Value> = choices.iter().map(Choice::to_json).collect();
            json!({"name": "CategoricalDistribution", "attributes": {"choices": choices}})
        }
    };
    v.to_string()
}

/// A gaittune time (RFC 3339 UTC with milliseconds) as Python's `datetime.isoformat(timespec=
/// "microseconds")` writes an aware UTC time: `2024-05-01T12:00:00.123000+00:00`.
pub fn optuna_datetime(utc: &str) -> Option<String> {
    let ms = crate::trial::parse_utc(utc)?;
    let text = crate::trial::format_utc(ms.div_euclid(1000), ms.rem_euclid(1000) as u32);
    Some(format!("{}000+00:00", text.strip_suffix('Z')?))
}

/// One trial as Optuna's `CREATE_TRIAL` operation with the whole trial in it.
pub fn create_trial_op(t: &FrozenTrial, space: &SearchSpace, study_id: u64) -> Value {
    let mut distributions = Map::new();
    let mut params = Map::new();
    for (name, dist) in space.iter() {
        if let Some(&internal) = t.params.get(name) {
            distributions.insert(name.to_string(), json!(distribution_json(dist)));
            params.insert(name.to_string(), json!(internal));
        }
    }
    let intermediate: Map<String, Value> = t
        .intermediate
        .iter()
        .map(|(step, v)| (step.to_string(), json!(v)))
        .collect();
    let mut user_attrs = t.attrs.clone();
    user_attrs.insert("prune_reason".into(), json!(t.prune_reason));
    user_attrs.insert("episodes".into(), json!(t.episodes));
    user_attrs.insert("worker".into(), json!(t.worker));
    let start = match t.state {
        TrialState::Waiting => None,
        _ => t.started_at.as_deref().and_then(optuna_datetime),
    };
    let mut op = json!({
        "op_code": op::CREATE_TRIAL,
        "worker_id": EXPORT_WORKER_ID,
        "study_id": study_id,
        "datetime_start": start,
        "state": state_code(t.state),
        "value": crate::export::exported_value(t),
        "values": null,
        "distributions": distributions,
        "params": params,
        "user_attrs": user_attrs,
        "system_attrs": {},
        "intermediate_values": intermediate,
    });
    if t.state.is_finished() {
        // Optuna reads a finished trial's end time; one finished without a recorded end (it
        // never happens in gaittune's storages) gets its start.
        let end = t
            .finished_at
            .as_deref()
            .or(t.started_at.as_deref())
            .and_then(optuna_datetime);
        op["datetime_complete"] = json!(end);
    }
    op
}

/// The study as an Optuna journal file: one JSON operation per line (see the [module
/// docs](self)).
pub fn export_journal(record: &StudyRecord, space: &SearchSpace, trials: &[FrozenTrial]) -> String {
    let mut ops = vec![
        json!({
            "op_code": op::CREATE_STUDY,
            "worker_id": EXPORT_WORKER_ID,
            "study_name": record.name,
            "directions": [direction_code(record.direction)],
        }),
        json!({
            "op_code": op::SET_STUDY_USER_ATTR,
            "worker_id": EXPORT_WORKER_ID,
            "study_id": 0,
            "user_attr": {"gaittune": {
                "exported_by": format!("gaittune {}", env!("CARGO_PKG_VERSION")),
                "created_at": record.created_at,
                "search_space": serde_json::from_str::<Value>(&space.to_json())
                    .unwrap_or(Value::Null),
            }},
        }),
    ];
    ops.extend(trials.iter().map(|t| create_trial_op(t, space, 0)));
    let mut out = String::new();
    for op in ops {
        out.push_str(&serde_json::to_string(&op).expect("JSON values serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StudyId;
    use crate::trial::EpisodeRecord;
    use std::collections::BTreeMap;

    fn space() -> SearchSpace {
        SearchSpace::from_toml(
            &toml::from_str(
                r#"
                [freq]
                type = "float"
                low = 0.5
                high = 3.0
                [kp]
                type = "int"
                low = 10
                high = 60
                step = 5
                [gait]
                type = "categorical"
                choices = ["walk", "trot"]
                [amp]
                type = "float"
                low = 0.01
                high = 1.0
                log = true
            "#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn distributions_as_optuna_writes_them() {
        let s = space();
        let v = |name: &str| -> Value {
            serde_json::from_str(&distribution_json(s.get(name).unwrap())).unwrap()
        };
        assert_eq!(
            v("freq"),
            json!({"name": "FloatDistribution",
                   "attributes": {"step": null, "low": 0.5, "high": 3.0, "log": false}})
        );
        assert_eq!(
            v("amp")["attributes"],
            json!({"step": null, "low": 0.01, "high": 1.0, "log": true})
        );
        assert_eq!(
            v("kp"),
            json!({"name": "IntDistribution",
                   "attributes": {"log": false, "step": 5, "low": 10, "high": 60}})
        );
        assert_eq!(
            v("gait"),
            json!({"name": "CategoricalDistribution", "attributes": {"choices": ["walk", "trot"]}})
        );
    }

    #[test]
    fn times_as_python_isoformat() {
        assert_eq!(
            optuna_datetime("2024-05-01T12:00:00.123Z").as_deref(),
            Some("2024-05-01T12:00:00.123000+00:00")
        );
        assert_eq!(optuna_datetime("yesterday"), None);
    }

    #[test]
    fn journal_lines() {
        let s = space();
        let record = StudyRecord {
            id: StudyId(7),
            name: "demo".into(),
            direction: Direction::Maximize,
            space_json: s.to_json(),
            created_at: "2024-05-01T11:00:00.000Z".into(),
            attrs: Map::new(),
        };
        let params = [("freq", 1.5), ("kp", 25.0), ("gait", 1.0), ("amp", 0.1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut pruned = FrozenTrial::new(0, TrialState::Pruned, params, Some(159.0));
        pruned.intermediate = BTreeMap::from([(10, 50.0), (20, 159.0)]);
        pruned.prune_reason = Some("unsafe".into());
        pruned.started_at = Some("2024-05-01T12:00:00.000Z".into());
        pruned.finished_at = Some("2024-05-01T12:00:01.500Z".into());
        pruned
            .attrs
            .insert("unsafe".into(), json!({"limit": "roll"}));
        pruned.episodes.push(EpisodeRecord {
            episode: 0,
            episode_return: 12.0,
            steps: 20,
            status: "SafetyTrip".into(),
            seed: Some(99),
        });
        let waiting = FrozenTrial::new(1, TrialState::Waiting, Default::default(), None);
        let text = export_journal(&record, &s, &[pruned, waiting]);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            json!({"op_code": 0, "worker_id": "gaittune-export", "study_name": "demo",
                   "directions": [2]})
        );
        assert_eq!(lines[1]["op_code"], 2);
        assert_eq!(
            lines[1]["study_id"], 0,
            "Optuna numbers studies from 0 in a file"
        );
        let t = &lines[2];
        assert_eq!(t["op_code"], 4);
        assert_eq!(t["state"], 2);
        assert_eq!(t["value"], Value::Null, "a pruned trial has no value");
        assert_eq!(t["values"], Value::Null);
        assert_eq!(
            t["params"],
            json!({"amp": 0.1, "freq": 1.5, "gait": 1.0, "kp": 25.0})
        );
        assert!(t["distributions"]["gait"].is_string());
        assert_eq!(t["intermediate_values"], json!({"10": 50.0, "20": 159.0}));
        assert_eq!(t["datetime_start"], "2024-05-01T12:00:00.000000+00:00");
        assert_eq!(t["datetime_complete"], "2024-05-01T12:00:01.500000+00:00");
        assert_eq!(t["user_attrs"]["prune_reason"], "unsafe");
        assert_eq!(t["user_attrs"]["unsafe"], json!({"limit": "roll"}));
        assert_eq!(t["user_attrs"]["episodes"][0]["seed"], 99);
        let w = &lines[3];
        assert_eq!(
            (w["state"].clone(), w["datetime_start"].clone()),
            (json!(4), Value::Null)
        );
        assert!(w.get("datetime_complete").is_none(), "unfinished: no end");
        assert!(
            text.ends_with('\n') && !text.contains(": "),
            "compact, one per line"
        );
    }
}
