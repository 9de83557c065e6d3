//! The gait controller inside the simulated firmware: the open-loop oscillator gait used as a
//! locomotion baseline in the literature, and the PD position loop of each motor.
//!
//! # Oscillators
//!
//! Each joint `i` has a phase ψᵢ that starts at its phase offset φᵢ and advances at
//! ω_swing while sin ψᵢ > 0 (the swing half of its cycle) and at ω_stance otherwise; its
//! target angle is
//!
//! ```text
//! q_des,i = aᵢ · sin ψᵢ + bᵢ        (ψᵢ = θᵢ + φᵢ in the usual notation)
//! ```
//!
//! One cycle lasts π/ω_swing + π/ω_stance. With ω = 2π·f, the frequencies are declared in Hz.
//!
//! # Motors
//!
//! Each motor runs a PD loop on its joint angle at the physics rate:
//! τ = s·(K_P·(q_des − q) − K_D·q̇), limited by a torque–speed line: a motor turning at
//! speed |q̇| can push in its direction of motion with at most τ_max·s·(1 − |q̇|/q̇_max) and
//! brake with up to τ_max·s. `s` is the motor's strength factor (1 nominal, spread by the
//! noise model). When the PD command exceeds the limit the torque-saturation fault is set.

use std::f32::consts::TAU;

/// PD stiffness, N·m/rad.
pub const KP: f32 = 12.0;
/// PD damping, N·m·s/rad.
pub const KD: f32 = 0.25;
/// Peak motor torque, N·m.
pub const TORQUE_MAX: f32 = 2.5;
/// No-load motor speed, rad/s.
pub const SPEED_MAX: f32 = 20.0;

/// One joint's oscillator: amplitude, offset and phase offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointOscillator {
    /// Amplitude a, rad.
    pub amp: f32,
    /// Offset b, rad.
    pub offset: f32,
    /// Phase offset φ, rad.
    pub phase: f32,
}

/// The whole gait: one oscillator per joint and the two frequencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gait {
    /// Per joint, in joint order.
    pub joints: [JointOscillator; super::body::JOINTS],
    /// Swing frequency, Hz (ω_swing = 2π·f).
    pub swing_hz: f32,
    /// Stance frequency, Hz.
    pub stance_hz: f32,
}

impl Gait {
    /// Duration of one gait cycle, s.
    pub fn period(&self) -> f32 {
        0.5 / self.swing_hz + 0.5 / self.stance_hz
    }
}

/// The running oscillators: one phase per joint.
#[derive(Debug, Clone, PartialEq)]
pub struct Oscillators {
    gait: Gait,
    psi: [f32; super::body::JOINTS],
}

impl Oscillators {
    /// Oscillators at time zero: ψᵢ = φᵢ.
    pub fn new(gait: Gait) -> Oscillators {
        let psi = gait.joints.map(|j| j.phase.rem_euclid(TAU));
        Oscillators { gait, psi }
    }

    /// Target angles now.
    pub fn targets(&self) -> [f32; super::body::JOINTS] {
        let mut q = [0.0; super::body::JOINTS];
        for (i, (j, psi)) in self.gait.joints.iter().zip(self.psi).enumerate() {
            q[i] = j.amp * psi.sin() + j.offset;
        }
        q
    }

    /// Advances every phase by `dt` seconds (ω_swing while sin ψ > 0, else ω_stance; a
    /// step that crosses a half-cycle boundary uses each rate for its share of `dt`).
    pub fn advance(&mut self, dt: f32) {
        let w_swing = TAU * self.gait.swing_hz;
        let w_stance = TAU * self.gait.stance_hz;
        for psi in &mut self.psi {
            let mut left = dt;
            // At most a few boundary crossings per step at the declared frequencies.
            for _ in 0..8 {
                if left <= 0.0 {
                    break;
                }
                let in_swing = *psi < std::f32::consts::PI;
                let (w, boundary) = if in_swing {
                    (w_swing, std::f32::consts::PI)
                } else {
                    (w_stance, TAU)
                };
                let to_boundary = (boundary - *psi) / w;
                if to_boundary > left {
                    *psi += w * left;
                    left = 0.0;
                } else {
                    *psi = boundary;
                    left -= to_boundary;
                }
                if *psi >= TAU {
                    *psi -= TAU;
                }
            }
        }
    }
}

/// What one motor does in one physics step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotorOutput {
    /// Torque applied, N·m.
    pub torque: f32,
    /// Whether the PD command exceeded the torque–speed limit.
    pub saturated: bool,
}

/// One motor's PD loop with its torque–speed limit; `strength` scales gains and torque.
pub fn motor(q_des: f32, q: f32, qd: f32, strength: f32) -> MotorOutput {
    let command = strength * (KP * (q_des - q) - KD * qd);
    let peak = TORQUE_MAX * strength;
    let limit = if command * qd > 0.0 {
        peak * (1.0 - qd.abs() / SPEED_MAX).max(0.0)
    } else {
        peak
    };
    let torque = command.clamp(-limit, limit);
    MotorOutput {
        torque,
        saturated: command.abs() > limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn gait(swing_hz: f32, stance_hz: f32, phase: f32) -> Gait {
        Gait {
            joints: [JointOscillator {
                amp: 0.5,
                offset: 0.1,
                phase,
            }; 8],
            swing_hz,
            stance_hz,
        }
    }

    #[test]
    fn targets_follow_the_sine_around_the_offset() {
        let o = Oscillators::new(gait(1.0, 1.0, PI / 2.0));
        assert!((o.targets()[0] - 0.6).abs() < 1e-6);
        let o = Oscillators::new(gait(1.0, 1.0, 0.0));
        assert!((o.targets()[3] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn swing_and_stance_halves_run_at_their_own_rates() {
        // Swing at 2 Hz takes 0.25 s, stance at 0.5 Hz takes 1 s: period 1.25 s.
        let g = gait(2.0, 0.5, 0.0);
        assert!((g.period() - 1.25).abs() < 1e-6);
        let mut o = Oscillators::new(g);
        let dt = 0.001;
        let mut t_swing = 0.0;
        for _ in 0..1250 {
            if o.psi[0] < PI {
                t_swing += dt;
            }
            o.advance(dt);
        }
        assert!((t_swing - 0.25f32).abs() < 0.003, "{t_swing}");
        // A whole period brings the phase back (up to rounding).
        let back = o.psi[0].min(TAU - o.psi[0]);
        assert!(back < 1e-2, "{}", o.psi[0]);
    }

    #[test]
    fn a_large_step_crosses_boundaries_exactly() {
        let mut a = Oscillators::new(gait(1.0, 3.0, 0.3));
        let mut b = a.clone();
        a.advance(0.4);
        for _ in 0..400 {
            b.advance(0.001);
        }
        assert!(
            (a.psi[0] - b.psi[0]).abs() < 1e-3,
            "{} {}",
            a.psi[0],
            b.psi[0]
        );
    }

    #[test]
    fn motor_is_a_pd_loop_with_a_torque_speed_limit() {
        let m = motor(0.1, 0.0, 0.0, 1.0);
        assert!((m.torque - KP * 0.1).abs() < 1e-6 && !m.saturated);
        let m = motor(2.0, 0.0, 0.0, 1.0);
        assert_eq!(m.torque, TORQUE_MAX);
        assert!(m.saturated);
        // At half the no-load speed, pushing further along the motion: half the torque.
        let m = motor(5.0, 0.0, SPEED_MAX / 2.0, 1.0);
        assert!((m.torque - TORQUE_MAX / 2.0).abs() < 1e-5, "{m:?}");
        // Braking is not limited by speed.
        let m = motor(-5.0, 0.0, SPEED_MAX / 2.0, 1.0);
        assert_eq!(m.torque, -TORQUE_MAX);
        // A weaker motor.
        let m = motor(0.1, 0.0, 0.0, 0.9);
        assert!((m.torque - 0.9 * KP * 0.1).abs() < 1e-6);
    }
}
