//! Exports of a study's trials: JSON (everything), CSV (one row per trial, for a spreadsheet
//! or pandas, columns as Optuna's `trials_dataframe`) and Optuna's journal file
//! ([`crate::optuna`]). Parameter values are exported as the user wrote them (see
//! [`SearchSpace::external`]).
//!
//! Only a COMPLETE trial has a `value`: a pruned trial's last report (for an unsafe trial, the
//! projected return just before it fell) is no result, so it is its own field,
//! `last_intermediate` (`[step, value]`), and sorting by `value` never picks a pruned trial.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::space::SearchSpace;
use crate::study::StudyError;
use crate::trial::{FrozenTrial, TrialState};

/// The formats of [`export_study`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A JSON array of trials ([`trial_json`]).
    Json,
    /// CSV, one row per trial ([`export_csv`]).
    Csv,
    /// Optuna's JournalStorage file ([`crate::optuna::export_journal`]).
    OptunaJournal,
}

/// Opens the storage at `storage_url`, reads study `study_name` with its stored space, and
/// returns its trials in `format`. Writes nothing.
pub fn export_study(
    storage_url: &str,
    study_name: &str,
    format: ExportFormat,
) -> Result<String, StudyError> {
    let storage = crate::storage::open_read_only(storage_url)?;
    let (record, space) = crate::study::load_record(&*storage, study_name)?;
    let trials = storage.list_trials(record.id)?;
    Ok(match format {
        ExportFormat::Json => export_json(&trials, &space),
        ExportFormat::Csv => export_csv(&trials, &space),
        ExportFormat::OptunaJournal => crate::optuna::export_journal(&record, &space, &trials),
    })
}

/// The trial's value as exported: only a COMPLETE trial has one (a PRUNED trial's stored
/// value is its last report, exported as `last_intermediate`).
pub fn exported_value(t: &FrozenTrial) -> Option<f64> {
    match t.state {
        TrialState::Complete => t.value,
        _ => None,
    }
}

/// How long the trial ran, in seconds (`finished_at - started_at`), if it finished.
pub fn duration_secs(t: &FrozenTrial) -> Option<f64> {
    let start = crate::trial::parse_utc(t.started_at.as_deref()?)?;
    let end = crate::trial::parse_utc(t.finished_at.as_deref()?)?;
    Some((end - start) as f64 / 1000.0)
}

/// One trial as a JSON object.
pub fn trial_json(t: &FrozenTrial, space: &SearchSpace) -> Value {
    let intermediate: Vec<Value> = t
        .intermediate
        .iter()
        .map(|(&step, &v)| json!([step, v]))
        .collect();
    json!({
        "number": t.number,
        "state": t.state.as_str(),
        "params": space.external_params(&t.params),
        "value": exported_value(t),
        "last_intermediate": t.last_intermediate().map(|(step, v)| json!([step, v])),
        "intermediate": intermediate,
        "prune_reason": t.prune_reason,
        "episodes": t.episodes,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "worker": t.worker,
        "attrs": t.attrs,
        "returns": crate::evaluation::ReturnStats::of(&crate::evaluation::all_returns(t)),
    })
}

/// All trials as a pretty-printed JSON array.
pub fn export_json(trials: &[FrozenTrial], space: &SearchSpace) -> String {
    let all: Vec<Value> = trials.iter().map(|t| trial_json(t, space)).collect();
    serde_json::to_string_pretty(&all).expect("JSON values serialise")
}

/// Quotes a CSV field when needed (RFC 4180: fields with a comma, quote or line break are
/// quoted, quotes doubled).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A JSON value as one CSV cell: empty for null, a string as itself, a number or boolean as
/// written, anything else JSON-encoded.
fn csv_value(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// All trials as CSV, one row per trial, with the columns of Optuna's `trials_dataframe`:
/// `number,value,datetime_start,datetime_complete,duration,params_<name>...,
/// user_attrs_<key>...,state`, then gaittune's own: `prune_reason`, `last_intermediate`
/// (`[step,value]`), `episodes` (how many) and `episode_seeds` (a JSON array). `duration` is
/// in seconds; times are RFC 3339 UTC; a user attribute that is not a number, string or
/// boolean is JSON-encoded; empty cells for missing values.
pub fn export_csv(trials: &[FrozenTrial], space: &SearchSpace) -> String {
    let attr_keys: BTreeSet<&str> = trials
        .iter()
        .flat_map(|t| t.attrs.keys().map(String::as_str))
        .collect();
    let mut out = String::new();
    let mut header = vec![
        "number".to_string(),
        "value".into(),
        "datetime_start".into(),
        "datetime_complete".into(),
        "duration".into(),
    ];
    header.extend(space.names().map(|n| format!("params_{n}")));
    header.extend(attr_keys.iter().map(|k| format!("user_attrs_{k}")));
    header.extend(
        [
            "state",
            "prune_reason",
            "last_intermediate",
            "episodes",
            "episode_seeds",
        ]
        .map(String::from),
    );
    push_row(&mut out, &header);
    for t in trials {
        let mut row = vec![
            t.number.to_string(),
            exported_value(t).map(|v| v.to_string()).unwrap_or_default(),
            t.started_at.clone().unwrap_or_default(),
            t.finished_at.clone().unwrap_or_default(),
            duration_secs(t).map(|d| d.to_string()).unwrap_or_default(),
        ];
        for name in space.names() {
            row.push(
                t.params
                    .get(name)
                    .map(|&x| space.external(name, x))
                    .map(|v| csv_value(&v))
                    .unwrap_or_default(),
            );
        }
        for key in &attr_keys {
            row.push(t.attrs.get(*key).map(csv_value).unwrap_or_default());
        }
        let seeds: Vec<Value> = t.episodes.iter().map(|e| json!(e.seed)).collect();
        row.extend([
            t.state.as_str().to_string(),
            t.prune_reason.clone().unwrap_or_default(),
            t.last_intermediate()
                .map(|(step, v)| json!([step, v]).to_string())
                .unwrap_or_default(),
            t.episodes.len().to_string(),
            Value::Array(seeds).to_string(),
        ]);
        push_row(&mut out, &row);
    }
    out
}

fn push_row(out: &mut String, fields: &[String]) {
    let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&quoted.join(","));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Choice, Distribution, Params};
    use crate::trial::EpisodeRecord;
    use std::collections::BTreeMap;

    fn space() -> SearchSpace {
        SearchSpace::new([
            (
                "freq".to_string(),
                Distribution::Float {
                    low: 0.5,
                    high: 4.0,
                    log: false,
                    step: None,
                },
            ),
            (
                "gait".to_string(),
                Distribution::Categorical {
                    choices: vec![
                        Choice::Text("walk, slow".into()),
                        Choice::Text("say \"hi\"".into()),
                    ],
                },
            ),
            (
                "n".to_string(),
                Distribution::Int {
                    low: 0,
                    high: 9,
                    step: 1,
                    log: false,
                },
            ),
        ])
        .unwrap()
    }

    fn trial(number: u64, state: TrialState, value: Option<f64>, gait: f64) -> FrozenTrial {
        let params: Params = [
            ("freq".to_string(), 1.25),
            ("gait".to_string(), gait),
            ("n".to_string(), 3.0),
        ]
        .into_iter()
        .collect();
        FrozenTrial {
            number,
            state,
            params,
            value,
            intermediate: BTreeMap::from([(10, 0.5), (20, 0.75)]),
            prune_reason: (state == TrialState::Pruned)
                .then(|| "unsafe: roll, \"high\"".to_string()),
            episodes: vec![EpisodeRecord {
                episode: 0,
                episode_return: 2.5,
                steps: 200,
                status: "done".into(),
                seed: Some(42),
            }],
            started_at: Some("2024-05-01T12:00:00.000Z".into()),
            finished_at: None,
            attrs: serde_json::Map::new(),
            worker: None,
        }
    }

    #[test]
    fn json_shape() {
        let s = space();
        let mut pruned = trial(1, TrialState::Pruned, Some(159.0), 1.0);
        pruned.intermediate.insert(30, 159.0);
        let trials = [
            trial(0, TrialState::Complete, Some(1.5), 0.0),
            pruned,
            trial(2, TrialState::Running, Some(9.0), 1.0),
        ];
        let v: Value = serde_json::from_str(&export_json(&trials, &s)).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3);
        let t0 = &a[0];
        assert_eq!(t0["number"], json!(0));
        assert_eq!(t0["state"], json!("COMPLETE"));
        assert_eq!(
            t0["params"],
            json!({"freq": 1.25, "gait": "walk, slow", "n": 3})
        );
        assert!(t0["params"]["n"].is_i64());
        assert_eq!(t0["value"], json!(1.5));
        assert_eq!(t0["intermediate"], json!([[10, 0.5], [20, 0.75]]));
        assert_eq!(t0["last_intermediate"], json!([20, 0.75]));
        assert_eq!(t0["prune_reason"], Value::Null);
        assert_eq!(
            t0["episodes"],
            json!([{"episode": 0, "return": 2.5, "steps": 200, "status": "done", "seed": 42}])
        );
        assert_eq!(t0["started_at"], json!("2024-05-01T12:00:00.000Z"));
        assert_eq!(t0["finished_at"], Value::Null);
        assert_eq!(t0["attrs"], json!({}));
        assert_eq!(a[1]["prune_reason"], json!("unsafe: roll, \"high\""));
        assert_eq!(
            a[1]["value"],
            Value::Null,
            "a pruned trial's last report is no result"
        );
        assert_eq!(a[1]["last_intermediate"], json!([30, 159.0]));
        assert_eq!(
            a[2]["value"],
            Value::Null,
            "only complete trials carry a value"
        );
        let mut bare = trial(3, TrialState::Waiting, None, 0.0);
        bare.intermediate.clear();
        assert_eq!(trial_json(&bare, &s)["last_intermediate"], Value::Null);
    }

    #[test]
    fn csv_columns_as_optuna_trials_dataframe() {
        let s = space();
        let mut t0 = trial(0, TrialState::Complete, Some(1.5), 0.0);
        t0.finished_at = Some("2024-05-01T12:00:02.250Z".into());
        t0.attrs.insert("baseline".into(), json!(true));
        t0.attrs
            .insert("unsafe".into(), json!({"limit": "roll", "excess": 0.1}));
        let mut t1 = trial(1, TrialState::Pruned, Some(159.0), 1.0);
        t1.attrs.insert("note".into(), json!("a, b"));
        t1.episodes[0].seed = None;
        let csv = export_csv(&[t0, t1], &s);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "number,value,datetime_start,datetime_complete,duration,params_freq,params_gait,params_n,\
             user_attrs_baseline,user_attrs_note,user_attrs_unsafe,state,prune_reason,\
             last_intermediate,episodes,episode_seeds"
        );
        assert_eq!(
            lines[1],
            "0,1.5,2024-05-01T12:00:00.000Z,2024-05-01T12:00:02.250Z,2.25,1.25,\"walk, slow\",3,\
             true,,\"{\"\"excess\"\":0.1,\"\"limit\"\":\"\"roll\"\"}\",COMPLETE,,\"[20,0.75]\",1,[42]"
        );
        assert_eq!(
            lines[2],
            "1,,2024-05-01T12:00:00.000Z,,,1.25,\"say \"\"hi\"\"\",3,,\"a, b\",,PRUNED,\
             \"unsafe: roll, \"\"high\"\"\",\"[20,0.75]\",1,[null]"
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn export_study_reads_the_storage() {
        use crate::sampler::RandomSampler;
        use crate::study::Study;
        use crate::trial::Direction;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("e.db").display());
        let mut st = Study::create_or_load(
            crate::storage::open(&url).unwrap(),
            "demo",
            Direction::Maximize,
            space(),
            Box::new(RandomSampler::new(3)),
        )
        .unwrap();
        let t = st.ask().unwrap();
        st.tell(t.number, 2.0).unwrap();
        st.ask().unwrap();
        drop(st);
        let v: Value =
            serde_json::from_str(&export_study(&url, "demo", ExportFormat::Json).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["value"], json!(2.0));
        assert_eq!(v[1]["state"], json!("RUNNING"));
        let csv = export_study(&url, "demo", ExportFormat::Csv).unwrap();
        assert_eq!(csv.lines().count(), 3);
        let e = export_study(&url, "other", ExportFormat::Csv)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no study \"other\"") && e.contains("\"demo\""),
            "{e}"
        );
    }
}
