//! The search space against what the firmware declares: refusing a space that leaves the
//! declared limits, the firmware's defaults as a baseline trial, the values sent for a
//! trial, and the trial's parameters as the robot actually applied them.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::robot::{Applied, ParamDecl, RobotInfo};
use crate::space::{Distribution, Params, SearchSpace};

/// A number that travelled as an `f32` (the firmware's limits and defaults) as the shortest
/// text that reads back as that `f32`: `0.8`, not `0.800000011920929`. Other numbers as
/// they are.
pub fn f32_text(x: f64) -> String {
    let f = x as f32;
    if f64::from(f) == x {
        f.to_string()
    } else {
        x.to_string()
    }
}

/// Refuses a search space that leaves the firmware's declared limits, naming the parameter
/// and both ranges.
pub fn check_space_against_firmware(
    space: &SearchSpace,
    info: &RobotInfo,
    config: &Config,
) -> Result<()> {
    let declared: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    for name in space.names() {
        let Some(decl) = info.params.iter().find(|p| p.name == name) else {
            bail!(
                "{}: space.{name}: the robot '{}' declares no parameter '{name}' (it declares: {}); rename or remove it",
                config.path.display(),
                info.robot_id,
                declared.join(", ")
            );
        };
        let (low, high) = space.firmware_range(name);
        if !within_declared(decl, low, high) {
            bail!(
                "{}: space.{name} = [{low}, {high}] leaves the robot's declared limits [{}, {}] for '{name}'; narrow the range to fit inside them",
                config.path.display(),
                f32_text(decl.min),
                f32_text(decl.max)
            );
        }
    }
    Ok(())
}

/// Whether `[low, high]` lies inside the robot's declared limits for the parameter. The
/// limits travel as f32: a value at a limit written in decimal (0.1) is allowed for that
/// rounding.
pub fn within_declared(decl: &ParamDecl, low: f64, high: f64) -> bool {
    let slack = |x: f64| 1e-6 * x.abs().max(1.0);
    low >= decl.min - slack(decl.min) && high <= decl.max + slack(decl.max)
}

/// The firmware's default parameter set, expressed in the search space (for the baseline
/// trial); an error names the first default the space cannot express.
pub fn baseline_params(space: &SearchSpace, info: &RobotInfo) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, dist) in space.iter() {
        let decl = info
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("the robot declares no '{name}'"))?;
        let internal = internal_of(dist, decl.default)
            .filter(|&x| close(dist.firmware_value(x), decl.default))
            .ok_or_else(|| {
                format!(
                    "the firmware default of '{name}' ({}) is not a value of space.{name}",
                    f32_text(decl.default)
                )
            })?;
        params.insert(name.to_string(), internal);
    }
    Ok(params)
}

/// The values a SetParams sends for `params`, in the firmware's declaration order; a
/// declared parameter outside the space gets its default.
pub fn firmware_values(space: &SearchSpace, info: &RobotInfo, params: &Params) -> Vec<f64> {
    info.params
        .iter()
        .map(|decl| match params.get(&decl.name) {
            Some(&internal) => space.firmware_value(&decl.name, internal),
            None => decl.default,
        })
        .collect()
}

/// What ran: the trial's parameters with every value the firmware clamped replaced by the
/// applied one (the nearest value of the space, if the applied value is not one), and the
/// attribute recording the difference: `{"requested": {name: value}, "applied": {name:
/// value the firmware reported}}`. `None` when nothing in the space was clamped.
pub fn applied_params(
    space: &SearchSpace,
    info: &RobotInfo,
    requested: &Params,
    applied: &Applied,
) -> Option<(Params, Value)> {
    let mut params = requested.clone();
    let mut asked = Map::new();
    let mut got = Map::new();
    for &i in &applied.clamped {
        let name = &info.params[i].name;
        let (Some(dist), Some(&internal)) = (space.get(name), requested.get(name)) else {
            continue;
        };
        let value = applied.values[i];
        asked.insert(name.clone(), space.external(name, internal));
        got.insert(name.clone(), json!(value));
        params.insert(
            name.clone(),
            internal_of(dist, value).unwrap_or_else(|| dist.snap(value)),
        );
    }
    if asked.is_empty() {
        return None;
    }
    Some((params, json!({ "requested": asked, "applied": got })))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

/// The internal value whose firmware value is `firmware` (the nearest value of the space).
fn internal_of(dist: &Distribution, firmware: f64) -> Option<f64> {
    match dist {
        Distribution::Categorical { choices } => {
            let best = (0..choices.len()).map(|i| i as f64).min_by(|&a, &b| {
                let da = (dist.firmware_value(a) - firmware).abs();
                let db = (dist.firmware_value(b) - firmware).abs();
                da.total_cmp(&db)
            })?;
            Some(best)
        }
        _ => Some(dist.snap(firmware)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RobotInfo {
        let decl = |name: &str, min: f64, max: f64, default: f64| ParamDecl {
            name: name.into(),
            min,
            max,
            default,
        };
        RobotInfo {
            robot_id: "r".into(),
            firmware_version: "1.0.0".into(),
            protocol_version: 2,
            boot_id: 1,
            params: vec![
                decl("freq", 0.5, 4.0, 1.0),
                decl("kp", 5.0, 80.0, 20.0),
                decl("gait", 0.0, 2.0, 1.0),
                decl("spare", 0.0, 1.0, 0.5),
            ],
            schema_hash: 0,
            watchdog_ms: 1000,
            step_period_us: 20_000,
        }
    }

    fn space() -> SearchSpace {
        let text = r#"
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
            choices = [0, 1, 2]
        "#;
        SearchSpace::from_toml(&toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn a_limit_written_in_decimal_is_within_its_own_f32_declaration() {
        // The robot declares [0.1, 0.3] as f32: 0.10000000149…, 0.30000001192…
        let decl = ParamDecl {
            name: "duty".into(),
            min: f64::from(0.1f32),
            max: f64::from(0.3f32),
            default: f64::from(0.2f32),
        };
        assert!(decl.min > 0.1, "the premise: rounding moved the limit");
        assert!(within_declared(&decl, 0.1, 0.1));
        assert!(within_declared(&decl, 0.1, 0.3));
        assert!(!within_declared(&decl, 0.09, 0.2));
        assert!(!within_declared(&decl, 0.2, 0.31));
    }

    #[test]
    fn firmware_numbers_print_at_f32_precision() {
        assert_eq!(f32_text(f64::from(0.8f32)), "0.8");
        assert_eq!(f32_text(f64::from(-85.5f32)), "-85.5");
        assert_eq!(
            f32_text(0.1 + 0.2),
            "0.30000000000000004",
            "not an f32: as it is"
        );
        let mut robot = info();
        robot.params[0].max = f64::from(0.8f32);
        robot.params[0].min = f64::from(0.1f32);
        let config = crate::config::Config::parse(
            "[study]\nname = \"t\"\n[robot]\ndevice = \"/dev/null\"\n[space.freq]\ntype = \"float\"\nlow = 0.5\nhigh = 3.0\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap();
        let e = check_space_against_firmware(&space(), &robot, &config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0.1, 0.8]"), "{e}");
    }

    #[test]
    fn clamped_values_become_the_trials_params_and_the_request_is_kept() {
        let space = space();
        let requested: Params = [("freq", 2.5), ("kp", 40.0), ("gait", 2.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let sent = firmware_values(&space, &info(), &requested);
        assert_eq!(
            sent,
            vec![2.5, 40.0, 2.0, 0.5],
            "a parameter outside the space: default"
        );
        // The firmware held freq at 1.5 and kp at 33 (off the space's grid: nearest is 35).
        let applied = Applied {
            values: vec![1.5, 33.0, 2.0, 0.5],
            clamped: vec![0, 1],
        };
        let (params, attr) = applied_params(&space, &info(), &requested, &applied).unwrap();
        assert_eq!(params["freq"], 1.5);
        assert_eq!(params["kp"], 35.0);
        assert_eq!(params["gait"], 2.0);
        space.check_params(&params).unwrap();
        assert_eq!(attr["requested"]["freq"], json!(2.5));
        assert_eq!(attr["requested"]["kp"], json!(40));
        assert_eq!(attr["applied"]["kp"], json!(33.0));
        let unclamped = Applied {
            values: sent,
            clamped: vec![],
        };
        assert!(applied_params(&space, &info(), &requested, &unclamped).is_none());
    }

    #[test]
    fn the_baseline_is_the_firmware_default_in_the_space() {
        let p = baseline_params(&space(), &info()).unwrap();
        assert_eq!((p["freq"], p["gait"]), (1.0, 1.0));
        let mut i = info();
        i.params[1].default = 22.0; // not on kp's grid of 5
        assert!(baseline_params(&space(), &i).unwrap_err().contains("kp"));
    }
}
