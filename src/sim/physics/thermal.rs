//! Motor winding temperature: I²R heating and cooling to ambient, one first-order model per
//! motor.
//!
//! The winding current is proportional to torque (i = τ/k_t), so the copper loss is
//! P = R·τ²/k_t². With a thermal resistance R_th to ambient and a time constant τ_th:
//!
//! ```text
//! dT/dt = (G·τ² − (T − T_ambient)) / τ_th,      G = R·R_th/k_t²  (°C per (N·m)²)
//! ```
//!
//! so a steady torque τ settles at T_ambient + G·τ². With [`GAIN_C_PER_NM2`] = 16 and
//! [`TIME_CONSTANT_S`] = 15 s: 1 N·m held gives +16 °C, a motor held at its 2.5 N·m peak
//! would reach +100 °C (130 °C), and a hard gait averaging τ² ≈ 4 (N·m)² crosses 70 °C after
//! ≈ 13 s. Every episode starts at ambient: the reset routine between episodes includes
//! the cool-down a real robot would need.

/// Ambient (and episode-start) winding temperature, °C.
pub const AMBIENT_C: f32 = 30.0;
/// Steady-state temperature rise per (N·m)² of torque, °C.
pub const GAIN_C_PER_NM2: f32 = 16.0;
/// Thermal time constant of a winding, s.
pub const TIME_CONSTANT_S: f32 = 15.0;

/// Winding temperatures of a set of motors.
#[derive(Debug, Clone, PartialEq)]
pub struct Thermal<const N: usize> {
    temp: [f32; N],
}

impl<const N: usize> Default for Thermal<N> {
    fn default() -> Self {
        Self {
            temp: [AMBIENT_C; N],
        }
    }
}

impl<const N: usize> Thermal<N> {
    /// Advances every winding by `dt` seconds under the given torques (N·m).
    pub fn advance(&mut self, torques: &[f32; N], dt: f32) {
        let k = (dt / TIME_CONSTANT_S).min(1.0);
        for (t, tau) in self.temp.iter_mut().zip(torques) {
            let target = AMBIENT_C + GAIN_C_PER_NM2 * tau * tau;
            *t += k * (target - *t);
        }
    }

    /// Temperatures, °C.
    pub fn temps(&self) -> &[f32; N] {
        &self.temp
    }

    /// The hottest winding, °C.
    pub fn max(&self) -> f32 {
        self.temp.iter().copied().fold(f32::MIN, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heats_towards_the_steady_state_and_cools_back() {
        let mut th = Thermal::<2>::default();
        assert_eq!(th.max(), AMBIENT_C);
        for _ in 0..(TIME_CONSTANT_S * 1000.0) as usize {
            th.advance(&[1.0, 0.0], 0.001);
        }
        // One time constant: 63 % of the way.
        let rise = th.temps()[0] - AMBIENT_C;
        assert!((rise - 0.632 * GAIN_C_PER_NM2).abs() < 0.1, "{rise}");
        assert_eq!(th.temps()[1], AMBIENT_C);
        for _ in 0..(10.0 * TIME_CONSTANT_S * 100.0) as usize {
            th.advance(&[0.0, 0.0], 0.01);
        }
        assert!(th.max() - AMBIENT_C < 0.01);
    }

    #[test]
    fn hard_torque_overheats_within_an_episode() {
        let mut th = Thermal::<1>::default();
        let mut t = 0.0;
        while th.max() < 70.0 {
            th.advance(&[2.0], 0.02);
            t += 0.02;
            assert!(t < 20.0, "never got hot");
        }
        assert!((10.0..16.0).contains(&t), "{t}");
    }
}
