//! The synthetic quadruped: a seeded, noisy, analytic model of an open-loop gait controller.
//!
//! It is not a physics simulation. It is a reward landscape and a set of safety signals with
//! the shape a real gait-tuning campaign has — a smooth, non-separable optimum away from the
//! centre of the box, noisy per-step rewards, and an unsafe region where the body starts to
//! wobble and falls over part-way through an episode — with every number known, so tests
//! and documentation can check what the tuner found against the truth.
//!
//! # Parameters
//!
//! | index | name          | min  | max  | default | meaning                                  |
//! |-------|---------------|------|------|---------|------------------------------------------|
//! | 0     | `freq_hz`     | 0.5  | 4.0  | 1.0     | stepping frequency, Hz                   |
//! | 1     | `stride_amp`  | 0.0  | 0.8  | 0.2     | hip swing amplitude, rad                 |
//! | 2     | `lift_amp`    | 0.0  | 0.5  | 0.15    | knee lift amplitude, rad                 |
//! | 3     | `hip_offset`  | −0.4 | 0.4  | 0.0     | hip offset, rad                          |
//! | 4     | `duty_factor` | 0.3  | 0.9  | 0.6     | stance fraction of the gait cycle        |
//! | 5     | `phase_lag`   | 0.0  | 1.0  | 0.5     | front/rear phase offset, cycles (cyclic) |
//! | 6     | `kp`          | 5.0  | 80.0 | 20.0    | PD stiffness                             |
//! | 7     | `gait`        | 0.0  | 2.0  | 0.0     | 0 trot, 1 pace, 2 bound (rounded)        |
//!
//! # Reward
//!
//! The steady-state reward (forward-velocity-like, see [`true_value`]) is
//!
//! ```text
//! base(p) = G(gait) · (0.8 · exp(−Q/2) + 0.2 · exp(−Q/8)),   Q = dᵀ M d
//! ```
//!
//! with `d` the distance to the optimum in scaled units:
//! `d_freq = (freq − 2.6)/1.4`, `d_stride = (stride − 0.55)/0.38`, `d_lift = (lift − 0.22)/0.2`,
//! `d_hip = (hip + 0.12)/0.3`, `d_duty = (duty − 0.55)/0.25`,
//! `d_phase = sin(π·(phase − φ*(gait)))/(π·0.3)` (cyclic: phase 0 and 1 are the same gait),
//! `d_kp = ln(kp/45)/0.9`. `M` has 1 on its diagonal and these interactions (so the landscape
//! is not separable): freq×stride +0.45 (faster stepping wants shorter strides), freq×duty
//! +0.3, lift×kp −0.35 (a stiffer leg carries a higher lift), hip×kp +0.25. It is diagonally
//! dominant, hence positive definite. The gait sets the gain `G` and the best phase `φ*`:
//! trot `G = 1.0, φ* = 0.25`; pace `G = 0.6, φ* = 0.0`; bound `G = 0.75, φ* = 0.5`.
//!
//! **Optimum** ([`OPTIMUM`]): freq 2.6, stride 0.55, lift 0.22, hip −0.12, duty 0.55,
//! phase 0.25, kp 45, trot — reward 1.0. The defaults give ≈ 0.21 (a slow walk); a uniformly
//! random point gives ≈ 0.14 (median).
//!
//! Per step `k` of an episode: `reward_k = base · g_ep · (1 − exp(−(k+1)/3.5)) + ε_k` — the
//! gait ramps up over the first ~10 steps; `g_ep = 1 + noise·0.03·N(0,1)` is drawn once per
//! episode (terrain, battery); `ε_k ~ N(0, (noise · 0.05 · (0.2 + |base|))²)`.
//!
//! # Safety telemetry and the unsafe region
//!
//! Time within the episode is `t = k · 0.02 s` (the firmware's 20 ms control period).
//!
//! * **Roll** `= A_r(k) · sin(2π·freq·t + φ_r) + noise·0.005·N`, with
//!   `A_r(0) = 0.03 + 0.06·min(stride·freq/1.6, 1.5)`. When `stride·freq > 1.6` the roll
//!   oscillation is unstable: `A_r(k) = A_r(0)·exp(λ_r k)`, `λ_r = min(0.04, 0.1·(stride·freq − 1.6))`
//!   per step. E.g. stride·freq = 1.65 trips the firmware's 0.8 rad limit after ≈ 430 steps,
//!   1.7 after ≈ 210 steps, ≥ 2.0 after ≈ 45 steps. The amplitude grows by at most 4 % per
//!   step, so a host watching for a tighter limit (e.g. 25° = 0.436 rad) sees it several
//!   steps before the firmware trips.
//! * **Pitch** `= 0.1·hip + A_p(k) · sin(4π·freq·t + φ_p) + noise·0.005·N`, with
//!   `A_p(0) = 0.02 + 0.12·lift`. A high lift on a soft leg is unstable: when
//!   `lift > 0.12 + 0.004·kp`, `λ_p = min(0.04, 0.2·(lift − 0.12 − 0.004·kp))`.
//! * **Body height** `= 0.272 + 0.03·hip + 0.03·(lift − 0.15) + 0.004·sin(4π·freq·t) − sink·k`
//!   (+ noise·0.001·N), between 0.255 and 0.295 m in the safe region. A very negative hip
//!   offset on a soft leg makes the body sink: when `−hip > 0.15 + 0.004·kp`,
//!   `sink = 0.04·(−hip − 0.15 − 0.004·kp)` m per step (hip −0.4 with kp 5: below the
//!   firmware's 0.08 m after ≈ 20 steps). The body never goes below 0.02 m.
//! * **Joint temperature** starts at 35 °C each episode and follows
//!   `T += 0.55/120 · effort − (T − 35)/120` per step, `effort = freq·stride²·kp`, so it tends
//!   to `35 + 0.55·effort` °C with a 120-step time constant (+ noise·0.05·N on the reading).
//!   Defaults: ≈ 35.4 °C; optimum: ≈ 54.5 °C; the 85 °C limit needs effort > 91.
//! * **Faults**: torque saturation when `kp·stride·freq > 100`; joint limit when
//!   `stride + |hip| > 0.95` or `lift > 0.45`. Informational; they never trip the firmware.
//!
//! In the safe region (see [`is_safe`]) |roll| and |pitch| stay below 0.2 rad and the body
//! between 0.25 and 0.30 m; the defaults and the optimum are both safe.
//!
//! # Determinism
//!
//! Everything random in an episode comes from one `StdRng` seeded from the StartEpisode seed
//! combined with the robot seed (`--seed`, a per-robot offset): the same (robot seed, episode
//! seed, parameters) always gives the same step stream, bit for bit.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::firmware::{ParamSpec, RobotModel, Telemetry};
use firmware_protocol::{FAULT_JOINT_LIMIT, FAULT_TORQUE_SATURATION};

/// The eight declared parameters of the synthetic quadruped, in index order.
pub const PARAMS: [ParamSpec; 8] = [
    ParamSpec::new("freq_hz", 0.5, 4.0, 1.0),
    ParamSpec::new("stride_amp", 0.0, 0.8, 0.2),
    ParamSpec::new("lift_amp", 0.0, 0.5, 0.15),
    ParamSpec::new("hip_offset", -0.4, 0.4, 0.0),
    ParamSpec::new("duty_factor", 0.3, 0.9, 0.6),
    ParamSpec::new("phase_lag", 0.0, 1.0, 0.5),
    ParamSpec::new("kp", 5.0, 80.0, 20.0),
    ParamSpec::new("gait", 0.0, 2.0, 0.0),
];

/// The parameters with the highest steady-state reward ([`OPTIMUM_VALUE`]), in index order.
pub const OPTIMUM: [f64; 8] = [2.6, 0.55, 0.22, -0.12, 0.55, 0.25, 45.0, 0.0];

/// [`true_value`] at [`OPTIMUM`].
pub const OPTIMUM_VALUE: f64 = 1.0;

/// Control period the model's time base assumes, s (the firmware's `step_period_us`).
const DT: f64 = 0.02;
/// Largest per-step growth rate of an unstable oscillation.
const MAX_GROWTH: f64 = 0.04;
/// Ambient (and episode-start) joint temperature, °C.
const T_AMBIENT: f64 = 35.0;
/// Thermal time constant, steps.
const T_TAU: f64 = 120.0;
/// Steady-state temperature rise per unit of effort, °C.
const T_GAIN: f64 = 0.55;
/// Scales of the distance to the optimum, per continuous dimension
/// (freq, stride, lift, hip, duty, phase, kp).
const WIDTH: [f64; 7] = [1.4, 0.38, 0.2, 0.3, 0.25, 0.3, 0.9];
/// Off-diagonal entries of `M` (each pair once; `Q` counts them twice).
const INTERACTIONS: [(usize, usize, f64); 4] =
    [(0, 1, 0.45), (0, 4, 0.3), (2, 6, -0.35), (3, 6, 0.25)];

/// The gait pattern selected by parameter `gait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gait {
    /// Diagonal legs together (code 0).
    Trot,
    /// Lateral legs together (code 1).
    Pace,
    /// Front legs together, then rear legs (code 2).
    Bound,
}

impl Gait {
    /// The gait of a (possibly fractional) `gait` parameter value: rounded, then clamped.
    pub fn from_value(v: f64) -> Gait {
        match v.round() {
            x if x >= 2.0 => Gait::Bound,
            x if x >= 1.0 => Gait::Pace,
            _ => Gait::Trot,
        }
    }

    /// Reward gain and best front/rear phase lag of this gait.
    fn gain_and_phase(self) -> (f64, f64) {
        match self {
            Gait::Trot => (1.0, 0.25),
            Gait::Pace => (0.6, 0.0),
            Gait::Bound => (0.75, 0.5),
        }
    }
}

/// A parameter vector, by name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaitParams {
    /// Stepping frequency, Hz.
    pub freq: f64,
    /// Hip swing amplitude, rad.
    pub stride: f64,
    /// Knee lift amplitude, rad.
    pub lift: f64,
    /// Hip offset, rad.
    pub hip: f64,
    /// Stance fraction.
    pub duty: f64,
    /// Front/rear phase lag, cycles.
    pub phase: f64,
    /// PD stiffness.
    pub kp: f64,
    /// Gait pattern.
    pub gait: Gait,
}

impl GaitParams {
    /// Reads the eight values in index order; missing values take their defaults.
    pub fn from_values(v: &[f64]) -> GaitParams {
        let get = |i: usize| v.get(i).copied().unwrap_or(PARAMS[i].default as f64);
        GaitParams {
            freq: get(0),
            stride: get(1),
            lift: get(2),
            hip: get(3),
            duty: get(4),
            phase: get(5),
            kp: get(6),
            gait: Gait::from_value(get(7)),
        }
    }

    /// Scaled distance to the optimum of this gait, per continuous dimension.
    fn distance(&self) -> [f64; 7] {
        let (_, best_phase) = self.gait.gain_and_phase();
        let pi = std::f64::consts::PI;
        [
            (self.freq - OPTIMUM[0]) / WIDTH[0],
            (self.stride - OPTIMUM[1]) / WIDTH[1],
            (self.lift - OPTIMUM[2]) / WIDTH[2],
            (self.hip - OPTIMUM[3]) / WIDTH[3],
            (self.duty - OPTIMUM[4]) / WIDTH[4],
            (pi * (self.phase - best_phase)).sin() / (pi * WIDTH[5]),
            (self.kp.max(1e-6) / OPTIMUM[6]).ln() / WIDTH[6],
        ]
    }

    /// Noiseless steady-state per-step reward.
    fn base_reward(&self) -> f64 {
        let d = self.distance();
        let mut q: f64 = d.iter().map(|x| x * x).sum();
        for (i, j, c) in INTERACTIONS {
            q += 2.0 * c * d[i] * d[j];
        }
        let (gain, _) = self.gait.gain_and_phase();
        OPTIMUM_VALUE * gain * (0.8 * (-q / 2.0).exp() + 0.2 * (-q / 8.0).exp())
    }

    /// Per-step growth rate of the roll oscillation (0 = stable).
    fn roll_growth(&self) -> f64 {
        (0.1 * (self.stride * self.freq - 1.6)).clamp(0.0, MAX_GROWTH)
    }

    /// Per-step growth rate of the pitch oscillation (0 = stable).
    fn pitch_growth(&self) -> f64 {
        (0.2 * (self.lift - 0.12 - 0.004 * self.kp)).clamp(0.0, MAX_GROWTH)
    }

    /// Body sink per step, m (0 = holds its height).
    fn sink_rate(&self) -> f64 {
        (0.04 * (-self.hip - 0.15 - 0.004 * self.kp)).max(0.0)
    }

    /// Mechanical effort that heats the joints.
    fn effort(&self) -> f64 {
        self.freq * self.stride * self.stride * self.kp
    }
}

/// Noiseless expected per-step reward at steady state (after the ramp-up) of a parameter
/// vector in index order. Its maximum is [`OPTIMUM_VALUE`] at [`OPTIMUM`].
pub fn true_value(params: &[f64]) -> f64 {
    GaitParams::from_values(params).base_reward()
}

/// Whether a parameter vector lies in the safe region: no growing roll or pitch oscillation,
/// no sinking body, and a steady-state joint temperature below 70 °C (well inside the
/// firmware's 85 °C). Outside it, episodes trip a safety limit sooner or later.
pub fn is_safe(params: &[f64]) -> bool {
    let p = GaitParams::from_values(params);
    p.roll_growth() == 0.0
        && p.pitch_growth() == 0.0
        && p.sink_rate() == 0.0
        && T_AMBIENT + T_GAIN * p.effort() < 70.0
}

/// The synthetic quadruped ([module docs](self)).
#[derive(Debug, Clone)]
pub struct SyntheticQuadruped {
    robot_seed: u64,
    noise: f64,
}

impl SyntheticQuadruped {
    /// A robot whose noise streams are offset by `robot_seed`, with noise scale `noise`
    /// (1.0 = default realism, 0.0 = noiseless).
    pub fn new(robot_seed: u64, noise: f64) -> Self {
        Self {
            robot_seed,
            noise: noise.max(0.0),
        }
    }
}

/// SplitMix64 finaliser: spreads a seed over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw (Box–Muller).
fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The state of one running episode of the synthetic quadruped.
#[derive(Debug, Clone)]
pub struct SyntheticEpisode {
    p: GaitParams,
    rng: StdRng,
    noise: f64,
    base: f64,
    episode_gain: f64,
    roll_phase: f64,
    pitch_phase: f64,
    temp: f64,
}

impl RobotModel for SyntheticQuadruped {
    type Episode = SyntheticEpisode;

    fn params(&self) -> &[ParamSpec] {
        &PARAMS
    }

    fn start_episode(&self, values: &[f32], seed: u64) -> SyntheticEpisode {
        let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        let p = GaitParams::from_values(&v);
        let mut rng = StdRng::seed_from_u64(seed ^ mix(self.robot_seed));
        let episode_gain = 1.0 + self.noise * 0.03 * gauss(&mut rng);
        let two_pi = 2.0 * std::f64::consts::PI;
        let roll_phase = rng.gen::<f64>() * two_pi;
        let pitch_phase = rng.gen::<f64>() * two_pi;
        SyntheticEpisode {
            p,
            rng,
            noise: self.noise,
            base: p.base_reward(),
            episode_gain,
            roll_phase,
            pitch_phase,
            temp: T_AMBIENT,
        }
    }

    fn step(&self, ep: &mut SyntheticEpisode, step: u32) -> Telemetry {
        let p = ep.p;
        let k = step as f64;
        let t = k * DT;
        let w = 2.0 * std::f64::consts::PI * p.freq * t;
        let n = ep.noise;

        let ramp = 1.0 - (-(k + 1.0) / 3.5).exp();
        let sigma = n * 0.05 * (0.2 + ep.base.abs());
        let reward = ep.base * ep.episode_gain * ramp + sigma * gauss(&mut ep.rng);

        // Amplitudes stop growing once the robot has certainly fallen (no overflow).
        let a_roll = (0.03 + 0.06 * (p.stride * p.freq / 1.6).min(1.5))
            * (p.roll_growth() * k).min(5.0).exp();
        let roll = a_roll * (w + ep.roll_phase).sin() + n * 0.005 * gauss(&mut ep.rng);

        let a_pitch = (0.02 + 0.12 * p.lift) * (p.pitch_growth() * k).min(5.0).exp();
        let pitch = 0.1 * p.hip
            + a_pitch * (2.0 * w + ep.pitch_phase).sin()
            + n * 0.005 * gauss(&mut ep.rng);

        let h0 = 0.272 + 0.03 * p.hip + 0.03 * (p.lift - 0.15);
        let height = (h0 + 0.004 * (2.0 * w).sin() - p.sink_rate() * k).max(0.02)
            + n * 0.001 * gauss(&mut ep.rng);

        ep.temp += T_GAIN / T_TAU * p.effort() - (ep.temp - T_AMBIENT) / T_TAU;
        let temp = ep.temp + n * 0.05 * gauss(&mut ep.rng);

        let mut faults = 0;
        if p.kp * p.stride * p.freq > 100.0 {
            faults |= FAULT_TORQUE_SATURATION;
        }
        if p.stride + p.hip.abs() > 0.95 || p.lift > 0.45 {
            faults |= FAULT_JOINT_LIMIT;
        }
        Telemetry {
            reward: reward as f32,
            roll: roll as f32,
            pitch: pitch as f32,
            body_height: height as f32,
            max_joint_temp: temp as f32,
            faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<f64> {
        PARAMS.iter().map(|p| p.default as f64).collect()
    }

    fn run(model: &SyntheticQuadruped, params: &[f64], seed: u64, steps: u32) -> Vec<Telemetry> {
        let v: Vec<f32> = params.iter().map(|&x| x as f32).collect();
        let mut ep = model.start_episode(&v, seed);
        (0..steps).map(|k| model.step(&mut ep, k)).collect()
    }

    #[test]
    fn optimum_is_the_maximum_and_beats_the_default_clearly() {
        let best = true_value(&OPTIMUM);
        assert!((best - OPTIMUM_VALUE).abs() < 1e-12);
        let default = true_value(&defaults());
        assert!(default > 0.05, "the default walks slowly: {default}");
        assert!(best > 3.0 * default, "optimum {best} vs default {default}");
        // Moving any coordinate away from the optimum lowers the value.
        for i in 0..7 {
            for delta in [-0.05, 0.05] {
                let mut p = OPTIMUM;
                p[i] += delta * (PARAMS[i].max - PARAMS[i].min) as f64;
                assert!(true_value(&p) < best, "dimension {i}, delta {delta}");
            }
        }
        for g in [1.0, 2.0] {
            let mut p = OPTIMUM;
            p[7] = g;
            assert!(true_value(&p) < 0.8 * best);
        }
    }

    #[test]
    fn landscape_is_not_separable() {
        // The best stride depends on the frequency (freq x stride interaction).
        let best_stride = |freq: f64| {
            (0..=80)
                .map(|i| i as f64 * 0.01)
                .max_by(|&a, &b| {
                    let mut pa = OPTIMUM;
                    pa[0] = freq;
                    pa[1] = a;
                    let mut pb = pa;
                    pb[1] = b;
                    true_value(&pa).total_cmp(&true_value(&pb))
                })
                .unwrap()
        };
        assert!(best_stride(1.5) > best_stride(3.5) + 0.1);
    }

    #[test]
    fn interaction_matrix_is_positive_definite() {
        // Cholesky of M must succeed.
        let mut m = [[0.0f64; 7]; 7];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for (i, j, c) in INTERACTIONS {
            m[i][j] = c;
            m[j][i] = c;
        }
        let mut l = [[0.0f64; 7]; 7];
        for i in 0..7 {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
                if i == j {
                    let d = m[i][i] - s;
                    assert!(d > 0.0, "not positive definite at {i}");
                    l[i][i] = d.sqrt();
                } else {
                    l[i][j] = (m[i][j] - s) / l[j][j];
                }
            }
        }
    }

    #[test]
    fn phase_is_cyclic() {
        let mut a = OPTIMUM;
        a[5] = 0.0;
        let mut b = OPTIMUM;
        b[5] = 1.0;
        assert!((true_value(&a) - true_value(&b)).abs() < 1e-12);
    }

    #[test]
    fn episodes_are_deterministic_per_seed() {
        let m = SyntheticQuadruped::new(1, 1.0);
        let a = run(&m, &defaults(), 42, 100);
        assert_eq!(a, run(&m, &defaults(), 42, 100));
        assert_ne!(a, run(&m, &defaults(), 43, 100));
        // The robot seed offsets the noise.
        assert_ne!(
            a,
            run(&SyntheticQuadruped::new(2, 1.0), &defaults(), 42, 100)
        );
    }

    #[test]
    fn rewards_ramp_up_and_are_noisy_around_the_true_value() {
        let m = SyntheticQuadruped::new(1, 1.0);
        let steps = run(&m, &OPTIMUM, 7, 400);
        assert!(steps[0].reward < steps[20].reward);
        let late: Vec<f64> = steps[20..].iter().map(|s| s.reward as f64).collect();
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        let var = late.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / late.len() as f64;
        assert!((mean - OPTIMUM_VALUE).abs() < 0.15, "mean {mean}");
        assert!(var > 0.0);
        // Noiseless: exactly the ramped true value.
        let quiet = run(&SyntheticQuadruped::new(1, 0.0), &OPTIMUM, 7, 50);
        assert!((quiet[49].reward as f64 - OPTIMUM_VALUE).abs() < 1e-4);
    }

    #[test]
    fn safe_region_telemetry_stays_in_bounds() {
        let m = SyntheticQuadruped::new(3, 1.0);
        for params in [defaults(), OPTIMUM.to_vec()] {
            assert!(is_safe(&params));
            for s in run(&m, &params, 11, 1000) {
                assert!(s.roll.abs() < 0.2 && s.pitch.abs() < 0.2, "{s:?}");
                assert!((0.25..=0.30).contains(&s.body_height), "{s:?}");
                assert!(s.max_joint_temp < 70.0, "{s:?}");
            }
        }
        // The default config stays cool over a 200-step episode.
        let last = run(&m, &defaults(), 5, 200)[199];
        assert!(last.max_joint_temp < 40.0, "{last:?}");
    }

    /// First step whose telemetry breaks the firmware's hard limits.
    fn first_trip(params: &[f64]) -> Option<usize> {
        run(&SyntheticQuadruped::new(1, 1.0), params, 9, 2000)
            .iter()
            .position(|s| {
                s.roll.abs() > 0.8
                    || s.pitch.abs() > 0.8
                    || s.body_height < 0.08
                    || s.max_joint_temp > 85.0
            })
    }

    #[test]
    fn unsafe_region_trips_mid_episode_later_when_marginal() {
        let mut fast = defaults();
        fast[0] = 4.0;
        fast[1] = 0.75;
        let mut marginal = defaults();
        marginal[0] = 2.5;
        marginal[1] = 0.68; // stride*freq = 1.7
        assert!(!is_safe(&fast) && !is_safe(&marginal));
        let early = first_trip(&fast).expect("fast big strides roll over");
        let late = first_trip(&marginal).expect("marginal strides roll over eventually");
        assert!((5..100).contains(&early), "{early}");
        assert!(late > early + 50, "{late} vs {early}");

        let mut floppy_lift = defaults();
        floppy_lift[2] = 0.5;
        floppy_lift[6] = 5.0;
        assert!(first_trip(&floppy_lift).is_some());

        let mut sag = defaults();
        sag[3] = -0.4;
        sag[6] = 5.0;
        let trip = first_trip(&sag).unwrap();
        assert!((10..40).contains(&trip), "{trip}");
    }

    #[test]
    fn roll_grows_gradually_past_the_daemons_envelope() {
        // Between the first sample above 0.436 rad (25 degrees, the default daemon envelope)
        // and the first above 0.8 rad there are several steps: a host can stop the robot.
        let mut p = defaults();
        p[0] = 3.8;
        p[1] = 0.8;
        for seed in 0..20 {
            let s = run(&SyntheticQuadruped::new(1, 1.0), &p, seed, 300);
            let warn = s.iter().position(|s| s.roll.abs() > 0.436).unwrap();
            let trip = s.iter().position(|s| s.roll.abs() > 0.8).unwrap();
            assert!(trip >= warn + 3, "seed {seed}: warn {warn}, trip {trip}");
        }
    }

    #[test]
    fn hot_gaits_heat_the_joints() {
        let mut p = defaults();
        p[0] = 2.0;
        p[1] = 0.8;
        p[6] = 80.0; // stride*freq = 1.6: no wobble, effort 102
        let s = run(&SyntheticQuadruped::new(1, 0.0), &p, 1, 1000);
        assert!(s.iter().all(|s| s.roll.abs() < 0.8));
        assert!(s.last().unwrap().max_joint_temp > 85.0);
        assert!(s[0].faults & FAULT_TORQUE_SATURATION != 0);
    }
}
