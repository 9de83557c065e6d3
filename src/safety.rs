//! The daemon's safety envelope: limits checked on every Step frame the moment it arrives.
//! A violation means EStop first, bookkeeping after. The warmup guard of pruning never
//! applies here.

use firmware_protocol::Step;
use serde::{Deserialize, Serialize};

/// Limits on a step's telemetry, from `[safety]` in the config. A limit left out is not
/// checked.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SafetyEnvelope {
    /// Largest allowed |roll|, degrees.
    pub max_roll_deg: Option<f64>,
    /// Largest allowed |pitch|, degrees.
    pub max_pitch_deg: Option<f64>,
    /// Lowest allowed body height, metres.
    pub min_body_height_m: Option<f64>,
    /// Highest allowed joint temperature, °C.
    pub max_joint_temp_c: Option<f64>,
    /// Fault bits (see the protocol's `FAULT_*`) that count as a violation; 0 = none.
    #[serde(default)]
    pub fault_mask: u32,
    /// Lowest allowed per-step reward: a sudden drop (a stumble, a collision) stops the
    /// robot. A NaN reward is always a violation.
    pub min_step_reward: Option<f64>,
}

impl Default for SafetyEnvelope {
    fn default() -> Self {
        Self {
            max_roll_deg: Some(30.0),
            max_pitch_deg: Some(30.0),
            min_body_height_m: Some(0.10),
            max_joint_temp_c: Some(75.0),
            fault_mask: 0,
            min_step_reward: None,
        }
    }
}

/// Which limit a step broke, by how much, and where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The limit's config key, e.g. `max_roll_deg`.
    pub limit: &'static str,
    /// The measured value, in the limit's units (NaN when the robot sent no number).
    pub value: f64,
    /// The limit.
    pub threshold: f64,
    /// Episode step index of the offending frame.
    pub step: u32,
    /// Episode index.
    pub episode: u16,
}

impl Violation {
    /// How far past the limit, in the limit's units (infinite for a non-number).
    pub fn excess(&self) -> f64 {
        crate::trial::excess_past(self.value, self.threshold)
    }
}

/// The record of an envelope stop (source `envelope`), as every unsafe trial records it.
impl From<&Violation> for crate::trial::ConstraintViolation {
    fn from(v: &Violation) -> Self {
        crate::trial::ConstraintViolation::new(v.limit, v.value, v.threshold)
            .from_source("envelope")
            .at(v.episode.into(), v.step.into())
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {:.3} (limit {}) at episode {} step {}",
            self.limit, self.value, self.threshold, self.episode, self.step
        )
    }
}

impl SafetyEnvelope {
    /// Checks one step; returns the first limit it breaks. A NaN where a number is needed is a
    /// violation: a firmware that cannot measure its tilt is not safe to keep running.
    pub fn check(&self, step: &Step) -> Option<Violation> {
        let v = |limit: &'static str, value: f64, threshold: f64| Violation {
            limit,
            value,
            threshold,
            step: step.step,
            episode: step.episode,
        };
        let above = |value: f64, max: f64| value.is_nan() || value > max;
        if let Some(max) = self.max_roll_deg {
            let roll = (step.roll as f64).to_degrees().abs();
            if above(roll, max) {
                return Some(v("max_roll_deg", roll, max));
            }
        }
        if let Some(max) = self.max_pitch_deg {
            let pitch = (step.pitch as f64).to_degrees().abs();
            if above(pitch, max) {
                return Some(v("max_pitch_deg", pitch, max));
            }
        }
        if let Some(min) = self.min_body_height_m {
            let h = step.body_height as f64;
            if h.is_nan() || h < min {
                return Some(v("min_body_height_m", h, min));
            }
        }
        if let Some(max) = self.max_joint_temp_c {
            let t = step.max_joint_temp as f64;
            if above(t, max) {
                return Some(v("max_joint_temp_c", t, max));
            }
        }
        if step.faults & self.fault_mask != 0 {
            return Some(v(
                "fault_mask",
                (step.faults & self.fault_mask) as f64,
                self.fault_mask as f64,
            ));
        }
        if step.reward.is_nan() {
            return Some(v("reward", f64::NAN, 0.0));
        }
        if let Some(min) = self.min_step_reward {
            let r = step.reward as f64;
            if r < min {
                return Some(v("min_step_reward", r, min));
            }
        }
        None
    }

    /// Checks the limits themselves; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("max_roll_deg", self.max_roll_deg),
            ("max_pitch_deg", self.max_pitch_deg),
        ] {
            if let Some(x) = value {
                if !(x > 0.0 && x <= 180.0) {
                    return Err(format!("safety.{key} = {x}: must be in (0, 180] degrees"));
                }
            }
        }
        if let Some(h) = self.min_body_height_m {
            if !(h.is_finite() && h >= 0.0) {
                return Err(format!(
                    "safety.min_body_height_m = {h}: must be a height in metres >= 0"
                ));
            }
        }
        if let Some(t) = self.max_joint_temp_c {
            if !t.is_finite() {
                return Err(format!("safety.max_joint_temp_c = {t}: must be a number"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(roll: f32, pitch: f32, h: f32, t: f32) -> Step {
        Step {
            timestamp_us: 0,
            trial: 1,
            episode: 0,
            step: 17,
            reward: 0.1,
            roll,
            pitch,
            body_height: h,
            max_joint_temp: t,
            faults: 0,
        }
    }

    #[test]
    fn safe_step_passes() {
        assert_eq!(
            SafetyEnvelope::default().check(&step(0.1, -0.1, 0.25, 40.0)),
            None
        );
    }

    #[test]
    fn each_limit_trips_and_names_itself() {
        let env = SafetyEnvelope::default();
        let roll = env.check(&step(-0.7, 0.0, 0.25, 40.0)).unwrap();
        assert_eq!(roll.limit, "max_roll_deg");
        assert!((roll.value - 0.7f64.to_degrees()).abs() < 1e-3);
        assert_eq!(roll.step, 17);
        assert_eq!(
            env.check(&step(0.0, 0.6, 0.25, 40.0)).unwrap().limit,
            "max_pitch_deg"
        );
        assert_eq!(
            env.check(&step(0.0, 0.0, 0.05, 40.0)).unwrap().limit,
            "min_body_height_m"
        );
        assert_eq!(
            env.check(&step(0.0, 0.0, 0.25, 90.0)).unwrap().limit,
            "max_joint_temp_c"
        );
    }

    #[test]
    fn nan_telemetry_is_a_violation() {
        let env = SafetyEnvelope::default();
        let v = env.check(&step(f32::NAN, 0.0, 0.25, 40.0)).unwrap();
        assert_eq!(v.limit, "max_roll_deg");
        assert_eq!(v.excess(), f64::INFINITY);
        let mut s = step(0.0, 0.0, 0.25, 40.0);
        s.reward = f32::NAN;
        assert_eq!(env.check(&s).unwrap().limit, "reward");
    }

    #[test]
    fn fault_mask_selects_faults() {
        let env = SafetyEnvelope {
            fault_mask: firmware_protocol::FAULT_MOTOR_DRIVER,
            ..SafetyEnvelope::default()
        };
        let mut s = step(0.0, 0.0, 0.25, 40.0);
        s.faults = firmware_protocol::FAULT_TORQUE_SATURATION;
        assert_eq!(env.check(&s), None);
        s.faults |= firmware_protocol::FAULT_MOTOR_DRIVER;
        assert_eq!(env.check(&s).unwrap().limit, "fault_mask");
    }

    #[test]
    fn a_sudden_reward_drop_is_a_violation() {
        let env = SafetyEnvelope {
            min_step_reward: Some(-1.0),
            ..SafetyEnvelope::default()
        };
        let mut s = step(0.0, 0.0, 0.25, 40.0);
        s.reward = -0.5;
        assert_eq!(env.check(&s), None);
        s.reward = -3.0;
        let v = env.check(&s).unwrap();
        assert_eq!(v.limit, "min_step_reward");
        assert!((v.excess() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_envelope_record_is_the_daemons() {
        let env = SafetyEnvelope::default();
        for s in [step(0.9, 0.0, 0.25, 40.0), step(f32::NAN, 0.0, 0.25, 40.0)] {
            let v = env.check(&s).unwrap();
            // What the daemon wrote before the record was shared with library users.
            let before = serde_json::json!({
                "source": "envelope", "limit": v.limit, "value": v.value,
                "threshold": v.threshold, "excess": v.excess(),
                "episode": v.episode, "step": v.step,
            });
            assert_eq!(
                crate::trial::ConstraintViolation::from(&v).to_attr(),
                before
            );
        }
    }

    #[test]
    fn validate_names_the_key() {
        let env = SafetyEnvelope {
            max_roll_deg: Some(-3.0),
            ..SafetyEnvelope::default()
        };
        assert!(env.validate().unwrap_err().contains("safety.max_roll_deg"));
    }
}
