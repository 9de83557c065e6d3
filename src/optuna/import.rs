//! `gaittune import`: an Optuna study (a JournalStorage file, or an RDB SQLite file) into a
//! gaittune study, to bring earlier Optuna work along: its trials as they finished (COMPLETE
//! with their values and intermediate values, PRUNED, FAIL), or their parameter sets enqueued
//! to run again on the robot.
//!
//! The search space is the union of the trials' distributions (`FloatDistribution`,
//! `IntDistribution`, `CategoricalDistribution` of numbers or strings); a parameter two trials
//! give different distributions is refused, as is a multi-objective study. Optuna's RUNNING
//! and WAITING trials come in WAITING. User attributes come along as trial attributes; the
//! prune reason of a study exported by gaittune is kept, other pruned trials get `optuna`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::op;
use crate::space::{Choice, Distribution, Params, SearchSpace};
use crate::storage::Storage;
use crate::trial::{Direction, TrialState};

/// An Optuna trial as read from its storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptunaTrial {
    /// Its number within the study.
    pub number: u64,
    /// Its state, as gaittune names it.
    pub state: Option<TrialState>,
    /// Its value (single objective).
    pub value: Option<f64>,
    /// Parameter name → (internal value, distribution).
    pub params: BTreeMap<String, (f64, Distribution)>,
    /// Intermediate values by step.
    pub intermediate: BTreeMap<u64, f64>,
    /// User attributes.
    pub user_attrs: Map<String, Value>,
}

/// An Optuna study as read from its storage.
#[derive(Debug, Clone, PartialEq)]
pub struct OptunaStudy {
    /// Its name.
    pub name: String,
    /// Its direction.
    pub direction: Direction,
    /// Its trials, by number.
    pub trials: Vec<OptunaTrial>,
}

/// How imported trials land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportAs {
    /// As they finished in Optuna (values, intermediate values, states).
    Finished,
    /// Their parameter sets as WAITING trials, to run on the robot.
    Enqueued,
}

/// Optuna's `TrialState` number as gaittune's state.
fn state_of(code: u64) -> Option<TrialState> {
    Some(match code {
        0 => TrialState::Running,
        1 => TrialState::Complete,
        2 => TrialState::Pruned,
        3 => TrialState::Fail,
        4 => TrialState::Waiting,
        _ => return None,
    })
}

fn direction_of(code: &Value, study: &str) -> Result<Direction, String> {
    match code.as_u64().or_else(|| match code.as_str() {
        Some("MINIMIZE") => Some(1),
        Some("MAXIMIZE") => Some(2),
        _ => None,
    }) {
        Some(1) => Ok(Direction::Minimize),
        Some(2) => Ok(Direction::Maximize),
        _ => Err(format!("study {study:?}: unknown direction {code}")),
    }
}

/// A distribution from Optuna's `distribution_to_json` text.
pub fn parse_distribution(text: &str) -> Result<Distribution, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("distribution {text}: {e}"))?;
    let a = &v["attributes"];
    let num = |k: &str| {
        a[k].as_f64()
            .ok_or_else(|| format!("distribution {text}: no {k}"))
    };
    match v["name"].as_str() {
        Some("FloatDistribution")
        | Some("UniformDistribution")
        | Some("LogUniformDistribution") => Ok(Distribution::Float {
            low: num("low")?,
            high: num("high")?,
            log: a["log"]
                .as_bool()
                .unwrap_or(v["name"] == "LogUniformDistribution"),
            step: a["step"].as_f64().or(a["q"].as_f64()),
        }),
        Some("IntDistribution")
        | Some("IntUniformDistribution")
        | Some("IntLogUniformDistribution") => Ok(Distribution::Int {
            low: num("low")? as i64,
            high: num("high")? as i64,
            step: a["step"].as_i64().unwrap_or(1),
            log: a["log"]
                .as_bool()
                .unwrap_or(v["name"] == "IntLogUniformDistribution"),
        }),
        Some("CategoricalDistribution") => {
            let choices = a["choices"]
                .as_array()
                .ok_or_else(|| format!("distribution {text}: no choices"))?
                .iter()
                .map(|c| match c {
                    Value::Number(n) => Ok(Choice::Number(n.as_f64().unwrap_or(f64::NAN))),
                    Value::String(s) => Ok(Choice::Text(s.clone())),
                    other => Err(format!(
                        "categorical choice {other} is neither a number nor a string (gaittune's choices are one or the other)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Distribution::Categorical { choices })
        }
        _ => Err(format!("distribution {text}: unknown kind")),
    }
}

/// Reads the study `name` (or the only one) of an Optuna journal file's text, replaying its
/// operations.
pub fn read_journal(text: &str, name: Option<&str>) -> Result<OptunaStudy, String> {
    struct Study {
        name: String,
        direction: Value,
        deleted: bool,
        trials: Vec<usize>,
    }
    let mut studies: Vec<Study> = Vec::new();
    // Trial ids are global, in creation order: (study index, trial).
    let mut trials: Vec<(usize, OptunaTrial)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", i + 1);
        let o: Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON ({e})")))?;
        let trial_mut = |trials: &mut Vec<(usize, OptunaTrial)>| -> Result<usize, String> {
            let id = o["trial_id"]
                .as_u64()
                .ok_or_else(|| at("no trial_id".into()))? as usize;
            if id >= trials.len() {
                return Err(at(format!("trial_id {id} was never created")));
            }
            Ok(id)
        };
        match o["op_code"].as_u64().map(|c| c as u8) {
            Some(op::CREATE_STUDY) => studies.push(Study {
                name: o["study_name"].as_str().unwrap_or("").to_string(),
                direction: if o["directions"].as_array().map_or(0, Vec::len) == 1 {
                    o["directions"][0].clone()
                } else {
                    Value::Null
                },
                deleted: false,
                trials: Vec::new(),
            }),
            Some(op::DELETE_STUDY) => {
                if let Some(s) = o["study_id"]
                    .as_u64()
                    .and_then(|s| studies.get_mut(s as usize))
                {
                    s.deleted = true;
                }
            }
            Some(op::CREATE_TRIAL) => {
                let study = o["study_id"]
                    .as_u64()
                    .ok_or_else(|| at("no study_id".into()))? as usize;
                let s = studies
                    .get_mut(study)
                    .ok_or_else(|| at(format!("study_id {study} was never created")))?;
                let mut t = OptunaTrial {
                    number: s.trials.len() as u64,
                    state: state_of(o["state"].as_u64().unwrap_or(0)),
                    value: o["value"]
                        .as_f64()
                        .or_else(|| o["values"].get(0).and_then(Value::as_f64)),
                    ..OptunaTrial::default()
                };
                if let (Some(ps), Some(ds)) =
                    (o["params"].as_object(), o["distributions"].as_object())
                {
                    for (k, v) in ps {
                        let d = ds[k]
                            .as_str()
                            .ok_or_else(|| at(format!("no distribution of {k}")))?;
                        let internal = v
                            .as_f64()
                            .ok_or_else(|| at(format!("param {k} is no number")))?;
                        t.params
                            .insert(k.clone(), (internal, parse_distribution(d).map_err(at)?));
                    }
                }
                if let Some(iv) = o["intermediate_values"].as_object() {
                    for (k, v) in iv {
                        if let (Ok(step), Some(v)) = (k.parse::<u64>(), v.as_f64()) {
                            t.intermediate.insert(step, v);
                        }
                    }
                }
                if let Some(ua) = o["user_attrs"].as_object() {
                    t.user_attrs = ua.clone();
                }
                s.trials.push(trials.len());
                trials.push((study, t));
            }
            Some(op::SET_TRIAL_PARAM) => {
                let id = trial_mut(&mut trials)?;
                let name = o["param_name"].as_str().unwrap_or("").to_string();
                let internal = o["param_value_internal"]
                    .as_f64()
                    .ok_or_else(|| at("no param_value_internal".into()))?;
                let d = o["distribution"]
                    .as_str()
                    .ok_or_else(|| at("no distribution".into()))?;
                trials[id]
                    .1
                    .params
                    .insert(name, (internal, parse_distribution(d).map_err(at)?));
            }
            Some(op::SET_TRIAL_STATE_VALUES) => {
                let id = trial_mut(&mut trials)?;
                let t = &mut trials[id].1;
                t.state = state_of(o["state"].as_u64().unwrap_or(0));
                if let Some(v) = o["values"].get(0).and_then(Value::as_f64) {
                    t.value = Some(v);
                }
            }
            Some(op::SET_TRIAL_INTERMEDIATE_VALUE) => {
                let id = trial_mut(&mut trials)?;
                if let (Some(step), Some(v)) =
                    (o["step"].as_u64(), o["intermediate_value"].as_f64())
                {
                    trials[id].1.intermediate.insert(step, v);
                }
            }
            Some(op::SET_TRIAL_USER_ATTR) => {
                let id = trial_mut(&mut trials)?;
                if let Some(ua) = o["user_attr"].as_object() {
                    trials[id].1.user_attrs.extend(ua.clone());
                }
            }
            // Study and trial system attributes carry Optuna's internals.
            Some(
                op::SET_STUDY_USER_ATTR | op::SET_STUDY_SYSTEM_ATTR | op::SET_TRIAL_SYSTEM_ATTR,
            ) => {}
            other => return Err(at(format!("unknown op_code {other:?}"))),
        }
    }
    let live: Vec<&Study> = studies.iter().filter(|s| !s.deleted).collect();
    let study = match name {
        Some(n) => live.iter().find(|s| s.name == n).copied().ok_or_else(|| {
            format!(
                "no study {n:?} in the journal; it has: {}",
                live.iter()
                    .map(|s| format!("{:?}", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => match live.as_slice() {
            [one] => *one,
            _ => {
                return Err(format!(
                    "the journal holds {} studies: choose one with --from-study ({})",
                    live.len(),
                    live.iter()
                        .map(|s| format!("{:?}", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        },
    };
    if study.direction.is_null() {
        return Err(format!(
            "study {:?} is multi-objective: gaittune studies have one objective",
            study.name
        ));
    }
    Ok(OptunaStudy {
        name: study.name.clone(),
        direction: direction_of(&study.direction, &study.name)?,
        trials: study
            .trials
            .iter()
            .map(|&id| trials[id].1.clone())
            .collect(),
    })
}

/// The search space the trials' distributions make.
pub fn space_of(study: &OptunaStudy) -> Result<SearchSpace, String> {
    let mut dists: BTreeMap<&str, &Distribution> = BTreeMap::new();
    for t in &study.trials {
        for (name, (_, d)) in &t.params {
            match dists.get(name.as_str()) {
                Some(seen) if *seen != d => {
                    return Err(format!(
                        "parameter {name} has two distributions in study {:?} ({} and {}): gaittune studies have one search space",
                        study.name,
                        seen.describe(),
                        d.describe()
                    ))
                }
                _ => {
                    dists.insert(name, d);
                }
            }
        }
    }
    SearchSpace::new(dists.into_iter().map(|(n, d)| (n.to_string(), d.clone())))
        .map_err(|e| format!("the study's parameters make no valid gaittune space: {e}"))
}

/// Creates study `name` in `storage` from `study` and returns how many trials it imported.
/// Trials without every parameter of the space (Optuna's define-by-run may skip some) are
/// skipped and counted apart.
pub fn import_into(
    storage: &dyn Storage,
    name: &str,
    study: &OptunaStudy,
    mode: ImportAs,
) -> Result<(u64, u64), String> {
    let space = space_of(study)?;
    let record = storage
        .create_study(name, study.direction, &space.to_json())
        .map_err(|e| e.to_string())?;
    let (mut imported, mut skipped) = (0, 0);
    for t in &study.trials {
        let params: Params = t.params.iter().map(|(k, (v, _))| (k.clone(), *v)).collect();
        if space.check_params(&params).is_err() {
            skipped += 1;
            continue;
        }
        let state = match (mode, t.state) {
            (ImportAs::Enqueued, _)
            | (_, None | Some(TrialState::Running | TrialState::Waiting)) => TrialState::Waiting,
            (ImportAs::Finished, Some(s)) => s,
        };
        let e = |e: crate::storage::StorageError| e.to_string();
        if state == TrialState::Waiting {
            storage
                .create_trial(record.id, TrialState::Waiting, &params)
                .map_err(e)?;
            imported += 1;
            continue;
        }
        let number = storage
            .create_trial(record.id, TrialState::Running, &params)
            .map_err(e)?;
        let values: Vec<(u64, f64)> = t.intermediate.iter().map(|(&s, &v)| (s, v)).collect();
        if !values.is_empty() {
            storage
                .report_intermediates(record.id, number, &values)
                .map_err(e)?;
        }
        for (k, v) in &t.user_attrs {
            if k != "prune_reason" && k != "episodes" && k != "worker" {
                storage.set_trial_attr(record.id, number, k, v).map_err(e)?;
            }
        }
        storage
            .set_trial_attr(record.id, number, "optuna_number", &Value::from(t.number))
            .map_err(e)?;
        let reason = t.user_attrs.get("prune_reason").and_then(Value::as_str);
        match state {
            TrialState::Complete => match t.value {
                Some(v) if v.is_finite() => storage
                    .set_trial_state(record.id, number, state, Some(v), None)
                    .map_err(e)?,
                _ => storage
                    .set_trial_state(
                        record.id,
                        number,
                        TrialState::Fail,
                        None,
                        Some("imported from Optuna: COMPLETE without a finite value"),
                    )
                    .map_err(e)?,
            },
            TrialState::Pruned => storage
                .set_trial_state(
                    record.id,
                    number,
                    state,
                    t.value.filter(|v| v.is_finite()),
                    Some(reason.unwrap_or("optuna")),
                )
                .map_err(e)?,
            _ => storage
                .set_trial_state(
                    record.id,
                    number,
                    TrialState::Fail,
                    None,
                    Some("failed in Optuna"),
                )
                .map_err(e)?,
        }
        imported += 1;
    }
    Ok((imported, skipped))
}

/// Reads the study `name` (or the only one) of an Optuna RDB storage in a SQLite file
/// (`sqlite:///study.db` in Optuna's terms), read-only.
#[cfg(feature = "sqlite")]
pub fn read_rdb(path: &std::path::Path, name: Option<&str>) -> Result<OptunaStudy, String> {
    use rusqlite::{Connection, OpenFlags};
    let e = |e: rusqlite::Error| format!("{}: {e} (is it an Optuna RDB file?)", path.display());
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(e)?;
    let studies: Vec<(i64, String)> = db
        .prepare("SELECT study_id, study_name FROM studies ORDER BY study_id")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(e)?;
    let (id, study_name) = match name {
        Some(n) => studies.iter().find(|s| s.1 == n).cloned().ok_or_else(|| {
            format!(
                "no study {n:?} in {}; it has: {:?}",
                path.display(),
                studies.iter().map(|s| &s.1).collect::<Vec<_>>()
            )
        })?,
        None => match studies.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(format!(
                    "{} holds {} studies: choose one with --from-study",
                    path.display(),
                    studies.len()
                ))
            }
        },
    };
    let directions: Vec<String> = db
        .prepare("SELECT direction FROM study_directions WHERE study_id = ?1 ORDER BY objective")
        .and_then(|mut s| {
            s.query_map([id], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(e)?;
    if directions.len() != 1 {
        return Err(format!(
            "study {study_name:?} is multi-objective: gaittune studies have one objective"
        ));
    }
    let direction = direction_of(&Value::from(directions[0].as_str()), &study_name)?;
    let rows: Vec<(i64, i64, String)> = db
        .prepare("SELECT trial_id, number, state FROM trials WHERE study_id = ?1 ORDER BY number")
        .and_then(|mut s| {
            s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(e)?;
    let mut trials = Vec::with_capacity(rows.len());
    for (trial_id, number, state) in rows {
        let mut t = OptunaTrial {
            number: number as u64,
            state: match state.as_str() {
                "RUNNING" => Some(TrialState::Running),
                "COMPLETE" => Some(TrialState::Complete),
                "PRUNED" => Some(TrialState::Pruned),
                "FAIL" => Some(TrialState::Fail),
                "WAITING" => Some(TrialState::Waiting),
                _ => None,
            },
            ..OptunaTrial::default()
        };
        let mut params = db
            .prepare("SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = ?1")
            .map_err(e)?;
        for row in params
            .query_map([trial_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(e)?
        {
            let (k, v, d) = row.map_err(e)?;
            t.params.insert(k, (v, parse_distribution(&d)?));
        }
        t.value = db
            .query_row(
                "SELECT value FROM trial_values WHERE trial_id = ?1 AND objective = 0",
                [trial_id],
                |r| r.get::<_, Option<f64>>(0),
            )
            .ok()
            .flatten();
        let mut iv = db
            .prepare("SELECT step, intermediate_value FROM trial_intermediate_values WHERE trial_id = ?1")
            .map_err(e)?;
        for row in iv
            .query_map([trial_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?))
            })
            .map_err(e)?
        {
            if let (step, Some(v)) = row.map_err(e)? {
                t.intermediate.insert(step as u64, v);
            }
        }
        let mut ua = db
            .prepare("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?1")
            .map_err(e)?;
        for row in ua
            .query_map([trial_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(e)?
        {
            let (k, v) = row.map_err(e)?;
            t.user_attrs
                .insert(k, serde_json::from_str(&v).unwrap_or(Value::String(v)));
        }
        trials.push(t);
    }
    Ok(OptunaStudy {
        name: study_name,
        direction,
        trials,
    })
}

/// Reads an Optuna study from `path`: a SQLite RDB file (by its header) or a journal file.
pub fn read_file(path: &std::path::Path, name: Option<&str>) -> Result<OptunaStudy, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.starts_with(b"SQLite format 3\0") {
        #[cfg(feature = "sqlite")]
        return read_rdb(path, name);
        #[cfg(not(feature = "sqlite"))]
        return Err(format!(
            "{} is a SQLite file: this build has no sqlite feature",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{} is neither an Optuna journal (UTF-8 JSON lines) nor a SQLite file: {e}",
            path.display()
        )
    })?;
    read_journal(&text, name).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_written_op_by_op_is_replayed() {
        let d = r#"{\"name\": \"FloatDistribution\", \"attributes\": {\"step\": null, \"low\": -5.0, \"high\": 5.0, \"log\": false}}"#;
        let c = r#"{\"name\": \"CategoricalDistribution\", \"attributes\": {\"choices\": [\"a\", \"b\"]}}"#;
        let text = [
            r#"{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}"#.to_string(),
            r#"{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": "2024-01-01T00:00:00.000000"}"#.into(),
            format!(r#"{{"op_code": 5, "worker_id": "w", "trial_id": 0, "param_name": "x", "param_value_internal": 1.5, "distribution": "{d}"}}"#),
            format!(r#"{{"op_code": 5, "worker_id": "w", "trial_id": 0, "param_name": "c", "param_value_internal": 1, "distribution": "{c}"}}"#),
            r#"{"op_code": 7, "worker_id": "w", "trial_id": 0, "step": 3, "intermediate_value": 0.5}"#.into(),
            r#"{"op_code": 6, "worker_id": "w", "trial_id": 0, "state": 1, "values": [2.25], "datetime_complete": "2024-01-01T00:00:01.000000"}"#.into(),
            r#"{"op_code": 4, "worker_id": "w", "study_id": 0}"#.into(),
        ]
        .join("\n");
        let study = read_journal(&text, None).unwrap();
        assert_eq!(study.direction, Direction::Minimize);
        assert_eq!(study.trials.len(), 2);
        let t = &study.trials[0];
        assert_eq!((t.state, t.value), (Some(TrialState::Complete), Some(2.25)));
        assert_eq!(t.params["c"].0, 1.0);
        assert_eq!(t.intermediate[&3], 0.5);
        assert_eq!(study.trials[1].state, Some(TrialState::Running));
        let space = space_of(&study).unwrap();
        assert_eq!(space.names().collect::<Vec<_>>(), ["c", "x"]);
        assert!(read_journal(&text, Some("other"))
            .unwrap_err()
            .contains("\"s\""));
    }
}
