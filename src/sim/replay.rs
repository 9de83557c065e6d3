//! `gaittune sim --replay`: one episode of the physics robot offline (no pseudo-terminal), a
//! JSON summary on stdout (`steps`, `seconds`, `mean_forward_speed`, `return`,
//! `max_joint_temp`, `trip`, `params`) and, with `--plot`, an SVG of the trunk path, its
//! height and the joint angles.
//!
//! Two sources: a parameter file (`--replay PARAMS.json`, with `--seed`, `--noise`,
//! `--replay-seed` and `--replay-steps` as given), or a stored trial (`--replay --storage URL
//! --study NAME --trial N [--episode K]`): its parameters, the seed its episode was given, its
//! length, and the robot the study ran on (robot seed and noise, from the study's record) —
//! exactly what the trial ran; the summary then has `stored` (the episode's stored return,
//! steps and seed) and `matches` (whether the replayed return is the stored one).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use super::firmware::RobotModel;
use super::physics::{self, PhysicsQuadruped};
use super::SimOptions;

/// What one replay runs.
struct Target {
    label: String,
    params: Map<String, Value>,
    robot_seed: u64,
    noise: f64,
    full_params: bool,
    episode_seed: u64,
    steps: u32,
    /// The stored episode, when replaying a trial: `{trial, episode, return, steps, seed}`.
    stored: Option<Value>,
}

/// Runs `--replay` (see [the module](self)).
pub fn run(opts: &SimOptions) -> Result<()> {
    let target = match &opts.replay {
        Some(Some(file)) => from_file(opts, file)?,
        _ => from_storage(opts)?,
    };
    let model = PhysicsQuadruped::new(target.robot_seed, target.noise, target.full_params);
    let values = physics::values_from_map(model.params(), &target.params)
        .with_context(|| format!("in {}", target.label))?;
    let replay = physics::replay(&model, &values, target.episode_seed, target.steps);
    let max_temp = replay
        .frames
        .iter()
        .map(|f| f.telemetry.max_joint_temp)
        .fold(f32::MIN, f32::max);
    let mut summary = json!({
        "steps": replay.frames.len(),
        "seconds": replay.frames.len() as f64 * 0.02,
        "mean_forward_speed": replay.mean_forward_speed(),
        "return": replay.episode_return(),
        "max_joint_temp": if replay.frames.is_empty() { Value::Null } else { max_temp.into() },
        "trip": replay.trip.map(|(reason, value, step)| json!({
            "reason": reason, "value": value, "step": step,
        })),
        "params": model.params().iter().zip(&values)
            .map(|(s, v)| (s.name.to_string(), json!(v)))
            .collect::<Map<_, _>>(),
        "robot_seed": target.robot_seed,
        "noise": target.noise,
        "episode_seed": target.episode_seed,
    });
    if let Some(stored) = &target.stored {
        let stored_return = stored["return"].as_f64().unwrap_or(f64::NAN);
        // The robot reports its return as an f32.
        let matches = (replay.episode_return() as f64 - stored_return).abs()
            <= 1e-5 * stored_return.abs().max(1.0);
        summary["stored"] = stored.clone();
        summary["matches"] = json!(matches);
        if !matches {
            eprintln!(
                "gaittune sim: the replay returns {} but the trial stored {stored_return}: {}",
                replay.episode_return(),
                if stored["seed"].is_null() {
                    "its episode seed was not stored (a study from before seeds were), so episode seed 0 was used"
                } else {
                    "the robot it ran on differed from this replay's (a real robot, or a simulator of another version)"
                }
            );
        }
    }
    if let Some(out) = &opts.plot {
        let title = format!(
            "{}: robot seed {}, episode seed {}, noise {}",
            target.label, target.robot_seed, target.episode_seed, target.noise
        );
        std::fs::write(out, physics::plot::episode_svg(&replay, &title))
            .with_context(|| format!("writing the plot {} (--plot)", out.display()))?;
    }
    println!("{summary}");
    Ok(())
}

fn from_file(opts: &SimOptions, file: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the parameter file {} (--replay)", file.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON: --replay expects an object name -> value, e.g. {{\"hip_amp\": 0.3}}",
            file.display()
        )
    })?;
    let map = match json.get("params").and_then(Value::as_object) {
        Some(inner) => inner.clone(),
        None => json.as_object().cloned().ok_or_else(|| {
            anyhow!(
                "{} must hold a JSON object name -> value (or a trial with a \"params\" object)",
                file.display()
            )
        })?,
    };
    Ok(Target {
        label: file.display().to_string(),
        params: map,
        robot_seed: opts.seed,
        noise: opts.noise,
        full_params: opts.full_params,
        episode_seed: opts.replay_seed,
        steps: opts.replay_steps,
        stored: None,
    })
}

fn from_storage(opts: &SimOptions) -> Result<Target> {
    let (url, name, number) = match (&opts.storage, &opts.study, opts.trial) {
        (Some(u), Some(s), Some(n)) => (u, s, n),
        _ => bail!("--replay without a file needs --storage URL --study NAME --trial N"),
    };
    let storage = crate::storage::open_read_only(url)?;
    let (record, space) = crate::study::load_record(&*storage, name)?;
    let trial = storage
        .get_trial(record.id, number)?
        .ok_or_else(|| anyhow!("study {name:?} has no trial {number}"))?;
    let sim = record.attrs.get("sim").ok_or_else(|| {
        anyhow!("study {name:?} did not run on the simulated robot (or was stored before gaittune recorded its settings): replay its parameters with --replay PARAMS.json and the robot options you want")
    })?;
    if sim["model"] != "physics" {
        bail!(
            "study {name:?} ran on the {} simulated robot; --replay runs the physics robot only",
            sim["model"]
        );
    }
    let episode = trial
        .episodes
        .iter()
        .find(|e| e.episode == opts.episode)
        .ok_or_else(|| {
            anyhow!(
                "trial {number} has no finished episode {} (it has {}); choose one with --episode",
                opts.episode,
                trial.episodes.len()
            )
        })?;
    let episode_json = serde_json::to_value(episode)?;
    let full_params = sim["extra_args"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "--full-params"));
    Ok(Target {
        label: format!("study {name} trial {number} episode {}", opts.episode),
        params: space.external_params(&trial.params),
        robot_seed: sim["seed"].as_u64().unwrap_or(1),
        noise: sim["noise"].as_f64().unwrap_or(1.0),
        full_params,
        episode_seed: episode_json["seed"].as_u64().unwrap_or(0),
        steps: episode.steps.max(1),
        stored: Some(json!({
            "trial": number, "episode": opts.episode, "return": episode.episode_return,
            "steps": episode.steps, "seed": episode_json["seed"],
        })),
    })
}
