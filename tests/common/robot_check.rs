//! The check the chaos tests and the chaos benchmark make after a run: the stored study is
//! what the robot actually ran. Shared by `tests/common/mod.rs` and `benches/chaos.rs`.

use std::collections::HashSet;

use serde_json::Value;

/// Whether two JSON returns are the same binary32 (both null: NaN, which JSON cannot hold).
fn same_return(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x as f32).to_bits() == (y as f32).to_bits(),
        (None, None) => a.is_null() && b.is_null(),
        _ => false,
    }
}

/// Every way a study (`gaittune export --format json`, parsed) differs from what the robot
/// logged (`gaittune sim --event-log`, parsed): a trial left RUNNING; a stored episode
/// `{episode, return, steps, status}` of a finished trial (COMPLETE, PRUNED, FAIL) that
/// matches no `episode_end` event with the same trial, episode, steps (`step`), status and
/// return (as binary32); an episode stored twice in one trial; a COMPLETE trial whose value
/// is not the mean of its stored episodes' returns. Empty when they agree.
pub fn study_mismatches(export: &[Value], events: &[Value]) -> Vec<String> {
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "episode_end")
        .collect();
    let mut problems = Vec::new();
    for trial in export {
        let number = trial["number"].as_u64().unwrap_or(u64::MAX);
        let state = trial["state"].as_str().unwrap_or("?");
        if state == "RUNNING" {
            problems.push(format!("trial {number} is RUNNING"));
            continue;
        }
        if !matches!(state, "COMPLETE" | "PRUNED" | "FAIL") {
            continue;
        }
        let episodes = trial["episodes"].as_array().cloned().unwrap_or_default();
        let mut stored = HashSet::new();
        for ep in &episodes {
            if !stored.insert(ep["episode"].as_u64()) {
                problems.push(format!(
                    "trial {number}: episode {} is stored twice",
                    ep["episode"]
                ));
            }
            let ran = ends.iter().any(|e| {
                e["trial"].as_u64() == Some(number)
                    && e["episode"].as_u64() == ep["episode"].as_u64()
                    && e["step"].as_u64() == ep["steps"].as_u64()
                    && e["status"] == ep["status"]
                    && same_return(&e["return"], &ep["return"])
            });
            if !ran {
                let logged: Vec<String> = ends
                    .iter()
                    .filter(|e| e["trial"].as_u64() == Some(number))
                    .map(|e| {
                        format!(
                            "{{episode {}, steps {}, status {}, return {}}}",
                            e["episode"], e["step"], e["status"], e["return"]
                        )
                    })
                    .collect();
                problems.push(format!(
                    "trial {number} ({state}): stored episode {ep} matches no episode_end of the robot (it logged for this trial: [{}])",
                    logged.join(", ")
                ));
            }
        }
        if state == "COMPLETE" {
            let returns: Vec<f64> = episodes
                .iter()
                .filter_map(|e| e["return"].as_f64())
                .collect();
            let value = trial["value"].as_f64();
            let mean = returns.iter().sum::<f64>() / returns.len() as f64;
            let agrees = value.is_some_and(|v| {
                !returns.is_empty() && (v - mean).abs() <= 1e-9 * mean.abs().max(1.0)
            });
            if !agrees {
                problems.push(format!(
                    "trial {number}: value {} is not the mean of its stored returns {returns:?}",
                    trial["value"]
                ));
            }
        }
    }
    problems
}

/// Panics, listing every mismatch, unless the study is what the robot ran (see
/// [`study_mismatches`]).
pub fn assert_study_matches_robot(export: &[Value], events: &[Value]) {
    let problems = study_mismatches(export, events);
    assert!(
        problems.is_empty(),
        "the stored study is not what the robot ran ({} problems):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
