//! The physics quadruped: a rigid-body robot in rapier3d behind the simulated firmware
//! (`gaittune sim --model physics`).
//!
//! - [`body`]: the robot's bodies, joints, dimensions and masses, and its world;
//! - [`controller`]: the open-loop oscillator gait and the motors' PD loops;
//! - [`thermal`]: I²R heating and cooling of every motor;
//! - [`plot`]: an SVG picture of one episode (`gaittune sim --replay … --plot …`).
//!
//! # Time
//!
//! The firmware's control step is 20 ms; each runs [`SUBSTEPS`] physics steps of 4 ms, and
//! the PD loops, oscillators and thermal model run at that 250 Hz rate. Before step 0 the
//! robot stands for [`SETTLE_S`] in its start pose (motors holding it), so every episode
//! starts from the same rested stance.
//!
//! # Parameters
//!
//! Default space (10, tied by leg symmetry; all legs share amplitudes and offsets, the
//! front-left leg is the phase reference):
//!
//! | name          | min  | max   | default | meaning                                     |
//! |---------------|------|-------|---------|---------------------------------------------|
//! | `hip_amp`     | 0    | 0.8   | 0.15    | hip amplitude a, rad                        |
//! | `hip_offset`  | −1.2 | 0.2   | −0.6    | hip offset b, rad                           |
//! | `knee_amp`    | 0    | 0.8   | 0.15    | knee amplitude, rad                         |
//! | `knee_offset` | 0.4  | 2.0   | 1.2     | knee offset, rad                            |
//! | `knee_phase`  | 0    | 2π    | π/2     | knee phase offset from its hip, rad         |
//! | `phase_fr`    | 0    | 2π    | π       | front-right leg phase offset, rad           |
//! | `phase_rl`    | 0    | 2π    | π       | rear-left leg phase offset, rad             |
//! | `phase_rr`    | 0    | 2π    | 0       | rear-right leg phase offset, rad            |
//! | `swing_hz`    | 0.25 | 3.0   | 1.0     | ω_swing / 2π, Hz                            |
//! | `stance_hz`   | 0.25 | 3.0   | 1.0     | ω_stance / 2π, Hz                           |
//!
//! The defaults are a hand-set slow trot (diagonal legs together, knee lifting while the hip
//! swings forward) that walks forward at a few cm/s.
//!
//! With `--full-params` every joint has its own `<joint>_amp`, `<joint>_off`, `<joint>_ph`
//! (joints `fl_hip`, `fl_knee`, `fr_hip`, … `rr_knee`; same ranges as above, phases
//! absolute) plus `swing_hz` and `stance_hz`: 26 parameters, defaults equal to the tied
//! defaults.
//!
//! # Reward
//!
//! Per control step: `reward = v_x − ENERGY_COST · mean(Σⱼ τⱼ²)`, where v_x is the trunk's
//! forward displacement over the step divided by 20 ms (m/s, +x is forward), and the mean
//! of the summed squared joint torques (N·m)² is taken over the step's physics sub-steps;
//! [`ENERGY_COST`] = 0.002 m/s per (N·m)². The episode return is the sum over steps, so
//! return / steps is the mean forward speed minus the mean energy penalty.
//!
//! # Telemetry and safety
//!
//! Roll and pitch of the trunk (rad, ZYX Euler; nose down is positive pitch), trunk centre
//! height above the nominal ground (m, ≈ 0.27 standing), the hottest motor winding (°C,
//! [`thermal`]), and fault bits: `FAULT_TORQUE_SATURATION` when any motor's PD command
//! exceeded its torque–speed limit during the step, `FAULT_JOINT_LIMIT` when any joint came
//! within 0.02 rad of a mechanical stop. The firmware's own hard limits stop the motors and
//! report SafetyTrip: |roll| or |pitch| above 0.8 rad, the trunk below 0.08 m (its belly on
//! the ground), a winding above 85 °C.
//!
//! # Noise (`--noise`, 1 = default realism, 0 = none)
//!
//! Per episode, from the StartEpisode seed combined with the robot seed: ground roughness
//! patches up to 6 mm·noise high, start position jitter (sd 1 cm·noise) and roll, pitch, yaw
//! jitter (sd 0.02 rad·noise); per step: IMU noise on roll and pitch (sd 0.005 rad·noise),
//! height (sd 2 mm·noise), temperature (sd 0.1 °C·noise), forward-speed estimate (sd
//! 0.01 m/s·noise). Per robot (`--seed` only): each motor's strength (gains and torque
//! limit) is scaled by 1 + 0.03·noise·N(0, 1), clamped to ±10 %.
//!
//! # Determinism
//!
//! rapier3d is built with `enhanced-determinism`; all randomness comes from seeded
//! `StdRng`s: the same robot seed, noise, parameters and episode seed give the same
//! telemetry, bit for bit.

pub mod body;
pub mod controller;
pub mod plot;
pub mod thermal;

use std::f32::consts::PI;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firmware_protocol::{FAULT_JOINT_LIMIT, FAULT_TORQUE_SATURATION};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::firmware::{ParamSpec, RobotModel, Telemetry};
use body::{joint_limits, RobotWorld, WorldNoise, JOINTS};
use controller::{motor, Gait, JointOscillator, Oscillators};
use thermal::Thermal;

/// Control period, s (the firmware's 20 ms step).
pub const CONTROL_DT: f32 = 0.02;
/// Physics steps per control step.
pub const SUBSTEPS: usize = 10;
/// Physics time step, s.
pub const PHYSICS_DT: f32 = CONTROL_DT / SUBSTEPS as f32;
/// Standing time before step 0 of every episode, s.
pub const SETTLE_S: f32 = 0.3;
/// Energy penalty weight, (m/s) per (N·m)² of summed squared joint torque.
pub const ENERGY_COST: f32 = 0.002;
/// A joint this close to a mechanical stop (rad) sets the joint-limit fault.
const LIMIT_MARGIN: f32 = 0.02;
const TWO_PI: f32 = 2.0 * PI;

/// The ten declared parameters of the default (symmetry-tied) space, in index order.
pub const PARAMS: [ParamSpec; 10] = [
    ParamSpec::new("hip_amp", 0.0, 0.8, 0.15),
    ParamSpec::new("hip_offset", -1.2, 0.2, -0.6),
    ParamSpec::new("knee_amp", 0.0, 0.8, 0.15),
    ParamSpec::new("knee_offset", 0.4, 2.0, 1.2),
    ParamSpec::new("knee_phase", 0.0, TWO_PI, PI / 2.0),
    ParamSpec::new("phase_fr", 0.0, TWO_PI, PI),
    ParamSpec::new("phase_rl", 0.0, TWO_PI, PI),
    ParamSpec::new("phase_rr", 0.0, TWO_PI, 0.0),
    ParamSpec::new("swing_hz", 0.25, 3.0, 1.0),
    ParamSpec::new("stance_hz", 0.25, 3.0, 1.0),
];

/// The 26 declared parameters of the full space (`--full-params`), in index order.
pub fn full_params() -> Vec<ParamSpec> {
    const NAMES: [[&str; 3]; JOINTS] = [
        ["fl_hip_amp", "fl_hip_off", "fl_hip_ph"],
        ["fl_knee_amp", "fl_knee_off", "fl_knee_ph"],
        ["fr_hip_amp", "fr_hip_off", "fr_hip_ph"],
        ["fr_knee_amp", "fr_knee_off", "fr_knee_ph"],
        ["rl_hip_amp", "rl_hip_off", "rl_hip_ph"],
        ["rl_knee_amp", "rl_knee_off", "rl_knee_ph"],
        ["rr_hip_amp", "rr_hip_off", "rr_hip_ph"],
        ["rr_knee_amp", "rr_knee_off", "rr_knee_ph"],
    ];
    let tied = tied_gait(&PARAMS.map(|p| p.default));
    let mut specs = Vec::with_capacity(3 * JOINTS + 2);
    for (j, [amp, off, ph]) in NAMES.iter().enumerate() {
        let osc = tied.joints[j];
        let (amp_spec, off_spec) = if j % 2 == 0 {
            (PARAMS[0], PARAMS[1])
        } else {
            (PARAMS[2], PARAMS[3])
        };
        specs.push(ParamSpec::new(amp, amp_spec.min, amp_spec.max, osc.amp));
        specs.push(ParamSpec::new(off, off_spec.min, off_spec.max, osc.offset));
        specs.push(ParamSpec::new(
            ph,
            0.0,
            TWO_PI,
            osc.phase.rem_euclid(TWO_PI),
        ));
    }
    specs.push(PARAMS[8]);
    specs.push(PARAMS[9]);
    specs
}

/// The gait of the ten tied parameters in index order.
fn tied_gait(v: &[f32]) -> Gait {
    let leg_phase = [0.0, v[5], v[6], v[7]];
    let mut joints = [JointOscillator {
        amp: 0.0,
        offset: 0.0,
        phase: 0.0,
    }; JOINTS];
    for (leg, phase) in leg_phase.iter().enumerate() {
        joints[2 * leg] = JointOscillator {
            amp: v[0],
            offset: v[1],
            phase: *phase,
        };
        joints[2 * leg + 1] = JointOscillator {
            amp: v[2],
            offset: v[3],
            phase: phase + v[4],
        };
    }
    Gait {
        joints,
        swing_hz: v[8],
        stance_hz: v[9],
    }
}

/// The gait of the 26 full parameters in index order.
fn full_gait(v: &[f32]) -> Gait {
    let mut joints = [JointOscillator {
        amp: 0.0,
        offset: 0.0,
        phase: 0.0,
    }; JOINTS];
    for (j, osc) in joints.iter_mut().enumerate() {
        *osc = JointOscillator {
            amp: v[3 * j],
            offset: v[3 * j + 1],
            phase: v[3 * j + 2],
        };
    }
    Gait {
        joints,
        swing_hz: v[3 * JOINTS],
        stance_hz: v[3 * JOINTS + 1],
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
fn gauss(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The physics quadruped ([module docs](self)).
#[derive(Debug, Clone)]
pub struct PhysicsQuadruped {
    robot_seed: u64,
    noise: f32,
    full: bool,
    specs: Vec<ParamSpec>,
    strength: [f32; JOINTS],
}

impl PhysicsQuadruped {
    /// A robot with per-robot variation from `robot_seed`, noise scale `noise` (1 = default
    /// realism, 0 = noiseless), and the full per-joint parameter space if `full_params`.
    pub fn new(robot_seed: u64, noise: f64, full_params: bool) -> Self {
        let noise = noise.max(0.0) as f32;
        let mut rng = StdRng::seed_from_u64(mix(robot_seed) ^ 0x6D6F_746F_7273);
        let strength = std::array::from_fn(|_| {
            let g = gauss(&mut rng);
            1.0 + (0.03 * noise * g).clamp(-0.1, 0.1)
        });
        Self {
            robot_seed,
            noise,
            full: full_params,
            specs: if full_params {
                self::full_params()
            } else {
                PARAMS.to_vec()
            },
            strength,
        }
    }

    /// The gait a vector of declared parameter values (index order) describes; missing
    /// values take their defaults.
    pub fn gait(&self, values: &[f32]) -> Gait {
        let v: Vec<f32> = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| values.get(i).copied().unwrap_or(s.default))
            .collect();
        if self.full {
            full_gait(&v)
        } else {
            tied_gait(&v)
        }
    }

    /// Per-motor strength factors (1 = nominal).
    pub fn strengths(&self) -> &[f32; JOINTS] {
        &self.strength
    }
}

/// The state of one running episode of the physics quadruped.
pub struct PhysicsEpisode {
    robot: RobotWorld,
    osc: Oscillators,
    thermal: Thermal<JOINTS>,
    strength: [f32; JOINTS],
    rng: StdRng,
    noise: f32,
    steps: u32,
    compute: Duration,
}

impl PhysicsEpisode {
    /// Current trunk position (x, y, z), m.
    pub fn trunk_position(&self) -> [f32; 3] {
        let p = self.robot.trunk_pose().translation;
        [p.x, p.y, p.z]
    }

    /// Current joint angles, rad, in joint order ([`body::JOINT_NAMES`]).
    pub fn joint_angles(&self) -> [f32; JOINTS] {
        std::array::from_fn(|j| self.robot.joint(j).q)
    }

    /// Current motor winding temperatures, °C, in joint order.
    pub fn temperatures(&self) -> [f32; JOINTS] {
        *self.thermal.temps()
    }

    /// Control steps simulated so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Wall time spent computing them.
    pub fn compute_time(&self) -> Duration {
        self.compute
    }

    /// Simulated time over compute time (0 before the first step).
    pub fn real_time_factor(&self) -> f64 {
        let c = self.compute.as_secs_f64();
        if c > 0.0 {
            self.steps as f64 * CONTROL_DT as f64 / c
        } else {
            0.0
        }
    }

    /// One physics sub-step with the given joint targets: PD, limits, physics, heat.
    /// Returns (Σ τ², any motor saturated).
    fn substep(&mut self, targets: &[f32; JOINTS]) -> (f32, bool) {
        let mut tau = [0.0; JOINTS];
        let mut saturated = false;
        for j in 0..JOINTS {
            let s = self.robot.joint(j);
            let m = motor(targets[j], s.q, s.qd, self.strength[j]);
            tau[j] = m.torque;
            saturated |= m.saturated;
        }
        self.robot.set_torques(&tau);
        self.robot.step();
        self.thermal.advance(&tau, PHYSICS_DT);
        (tau.iter().map(|t| t * t).sum(), saturated)
    }

    /// Whether any joint is within the margin of a mechanical stop.
    fn at_joint_limit(&self) -> bool {
        (0..JOINTS).any(|j| {
            let q = self.robot.joint(j).q;
            let [lo, hi] = joint_limits(j);
            q < lo + LIMIT_MARGIN || q > hi - LIMIT_MARGIN
        })
    }

    /// Runs one control step and returns its telemetry.
    fn control_step(&mut self) -> Telemetry {
        let started = Instant::now();
        let x0 = self.robot.trunk_pose().translation.x;
        let mut effort = 0.0;
        let mut faults = 0;
        for _ in 0..SUBSTEPS {
            let targets = self.osc.targets();
            let (tau2, saturated) = self.substep(&targets);
            self.osc.advance(PHYSICS_DT);
            effort += tau2 / SUBSTEPS as f32;
            if saturated {
                faults |= FAULT_TORQUE_SATURATION;
            }
        }
        if self.at_joint_limit() {
            faults |= FAULT_JOINT_LIMIT;
        }
        let pose = self.robot.trunk_pose();
        let n = self.noise;
        let v = (pose.translation.x - x0) / CONTROL_DT + n * 0.01 * gauss(&mut self.rng);
        let (roll, pitch) = body::roll_pitch(pose.rotation);
        let telemetry = Telemetry {
            reward: v - ENERGY_COST * effort,
            roll: roll + n * 0.005 * gauss(&mut self.rng),
            pitch: pitch + n * 0.005 * gauss(&mut self.rng),
            body_height: pose.translation.z + n * 0.002 * gauss(&mut self.rng),
            max_joint_temp: self.thermal.max() + n * 0.1 * gauss(&mut self.rng),
            faults,
        };
        self.steps += 1;
        self.compute += started.elapsed();
        telemetry
    }
}

/// Control steps simulated by every finished episode of this process.
static TOTAL_STEPS: AtomicU64 = AtomicU64::new(0);
/// Compute time of those steps, ns.
static TOTAL_COMPUTE_NS: AtomicU64 = AtomicU64::new(0);

/// Control steps simulated by every finished episode of this process, and their compute
/// time (for the real-time factor logged on exit).
pub fn totals() -> (u64, Duration) {
    (
        TOTAL_STEPS.load(Ordering::Relaxed),
        Duration::from_nanos(TOTAL_COMPUTE_NS.load(Ordering::Relaxed)),
    )
}

impl Drop for PhysicsEpisode {
    fn drop(&mut self) {
        TOTAL_STEPS.fetch_add(self.steps as u64, Ordering::Relaxed);
        TOTAL_COMPUTE_NS.fetch_add(self.compute.as_nanos() as u64, Ordering::Relaxed);
        if self.steps > 0 {
            tracing::debug!(
                "physics episode: {} steps ({:.1} s simulated) in {:.3} s of compute, real-time factor {:.1}",
                self.steps,
                self.steps as f32 * CONTROL_DT,
                self.compute.as_secs_f64(),
                self.real_time_factor()
            );
        }
    }
}

impl RobotModel for PhysicsQuadruped {
    type Episode = PhysicsEpisode;

    fn params(&self) -> &[ParamSpec] {
        &self.specs
    }

    fn start_episode(&self, values: &[f32], seed: u64) -> PhysicsEpisode {
        let started = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed ^ mix(self.robot_seed));
        let n = self.noise;
        let world_noise = WorldNoise {
            roughness_m: 0.006 * n,
            position_sd_m: 0.01 * n,
            angle_sd_rad: 0.02 * n,
        };
        let robot = RobotWorld::new(PHYSICS_DT, world_noise, &mut rng);
        let mut ep = PhysicsEpisode {
            robot,
            osc: Oscillators::new(self.gait(values)),
            thermal: Thermal::default(),
            strength: self.strength,
            rng,
            noise: n,
            steps: 0,
            compute: Duration::ZERO,
        };
        // The reset routine's last part: stand still in the start pose, motors holding it.
        let stand: [f32; JOINTS] = std::array::from_fn(|j| {
            if j % 2 == 0 {
                body::STAND_HIP
            } else {
                body::STAND_KNEE
            }
        });
        for _ in 0..(SETTLE_S / PHYSICS_DT).round() as usize {
            ep.substep(&stand);
        }
        ep.thermal = Thermal::default();
        ep.compute = started.elapsed();
        ep
    }

    fn step(&self, ep: &mut PhysicsEpisode, _step: u32) -> Telemetry {
        ep.control_step()
    }
}

/// One recorded control step of an episode: what [`replay`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Time at the end of the step, s.
    pub t: f32,
    /// Trunk position (x, y, z), m.
    pub position: [f32; 3],
    /// Joint angles, rad, in joint order.
    pub joints: [f32; JOINTS],
    /// What the firmware sent for this step.
    pub telemetry: Telemetry,
}

/// How a replayed episode ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Every step that ran.
    pub frames: Vec<Frame>,
    /// The firmware safety limit that stopped it, if any: (reason, value, step index).
    pub trip: Option<(&'static str, f32, u32)>,
    /// Trunk position before step 0, m.
    pub start: [f32; 3],
}

impl Replay {
    /// Mean forward speed of the trunk over the episode, m/s (0 if no step ran).
    pub fn mean_forward_speed(&self) -> f32 {
        match self.frames.last() {
            Some(f) => (f.position[0] - self.start[0]) / f.t,
            None => 0.0,
        }
    }

    /// Sum of the step rewards.
    pub fn episode_return(&self) -> f32 {
        self.frames.iter().map(|f| f.telemetry.reward).sum()
    }
}

/// The firmware's hard limit a telemetry frame breaks, if any: (reason, value). Same checks,
/// order and constants as the simulated firmware.
pub fn firmware_trip(t: &Telemetry) -> Option<(&'static str, f32)> {
    use super::firmware::{
        LIMIT_MAX_JOINT_TEMP_C, LIMIT_MIN_BODY_HEIGHT_M, LIMIT_PITCH_RAD, LIMIT_ROLL_RAD,
    };
    let over = |x: f32, limit: f32| x.is_nan() || x > limit;
    if over(t.roll.abs(), LIMIT_ROLL_RAD) {
        Some(("Roll", t.roll))
    } else if over(t.pitch.abs(), LIMIT_PITCH_RAD) {
        Some(("Pitch", t.pitch))
    } else if over(-t.body_height, -LIMIT_MIN_BODY_HEIGHT_M) {
        Some(("BodyHeight", t.body_height))
    } else if over(t.max_joint_temp, LIMIT_MAX_JOINT_TEMP_C) {
        Some(("JointTemperature", t.max_joint_temp))
    } else {
        None
    }
}

/// Runs one episode offline, as the firmware would (stopping at the first safety trip),
/// recording every step.
pub fn replay(model: &PhysicsQuadruped, values: &[f32], seed: u64, max_steps: u32) -> Replay {
    let mut ep = model.start_episode(values, seed);
    let start = ep.trunk_position();
    let mut frames = Vec::with_capacity(max_steps as usize);
    let mut trip = None;
    for k in 0..max_steps {
        let telemetry = model.step(&mut ep, k);
        frames.push(Frame {
            t: (k + 1) as f32 * CONTROL_DT,
            position: ep.trunk_position(),
            joints: ep.joint_angles(),
            telemetry,
        });
        if let Some((reason, value)) = firmware_trip(&telemetry) {
            trip = Some((reason, value, k));
            break;
        }
    }
    Replay {
        frames,
        trip,
        start,
    }
}

/// Parameter values (index order) from a name → value map: unknown names are an error
/// naming them and the declared ones; missing names take their defaults.
pub fn values_from_map(
    specs: &[ParamSpec],
    map: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Vec<f32>> {
    for (name, v) in map {
        if !specs.iter().any(|s| s.name == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
            anyhow::bail!(
                "unknown parameter {name:?}: this robot declares {} (use --full-params for the per-joint set)",
                known.join(", ")
            );
        }
        if !v.is_number() {
            anyhow::bail!("parameter {name:?} must be a number, got {v}");
        }
    }
    Ok(specs
        .iter()
        .map(|s| {
            map.get(s.name)
                .and_then(|v| v.as_f64())
                .map_or(s.default, |v| (v as f32).clamp(s.min, s.max))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(m: &PhysicsQuadruped) -> Vec<f32> {
        m.params().iter().map(|p| p.default).collect()
    }

    #[test]
    fn full_space_defaults_describe_the_same_gait() {
        let tied = PhysicsQuadruped::new(1, 0.0, false);
        let full = PhysicsQuadruped::new(1, 0.0, true);
        assert_eq!(full.params().len(), 26);
        let a = tied.gait(&defaults(&tied));
        let b = full.gait(&defaults(&full));
        for j in 0..JOINTS {
            assert_eq!(a.joints[j].amp, b.joints[j].amp);
            assert_eq!(a.joints[j].offset, b.joints[j].offset);
            let d = (a.joints[j].phase - b.joints[j].phase).rem_euclid(TWO_PI);
            assert!(d < 1e-5 || TWO_PI - d < 1e-5, "joint {j}");
        }
        for s in full.params() {
            assert!(s.min <= s.default && s.default <= s.max, "{s:?}");
            assert!(s.name.len() <= 24);
        }
    }

    #[test]
    fn noiseless_motors_are_nominal_and_noisy_ones_spread() {
        assert_eq!(PhysicsQuadruped::new(1, 0.0, false).strengths(), &[1.0; 8]);
        let s = *PhysicsQuadruped::new(1, 1.0, false).strengths();
        assert!(s.iter().any(|&x| x != 1.0));
        assert!(s.iter().all(|&x| (0.9..=1.1).contains(&x)));
        assert_eq!(&s, PhysicsQuadruped::new(1, 1.0, false).strengths());
    }

    #[test]
    fn same_seed_same_telemetry_other_seed_differs() {
        let m = PhysicsQuadruped::new(3, 1.0, false);
        let run = |seed| {
            let mut ep = m.start_episode(&defaults(&m), seed);
            (0..40).map(|k| m.step(&mut ep, k)).collect::<Vec<_>>()
        };
        let a = run(11);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
    }

    #[test]
    fn the_robot_stands_in_its_start_pose() {
        // Zero amplitudes at the start pose's offsets: the robot stands still, level.
        let m = PhysicsQuadruped::new(1, 0.0, false);
        let mut v = defaults(&m);
        v[0] = 0.0;
        v[2] = 0.0;
        let r = replay(&m, &v, 1, 50);
        assert!(r.trip.is_none());
        let last = r.frames.last().unwrap();
        assert!((0.24..0.30).contains(&last.position[2]), "{last:?}");
        assert!(
            last.telemetry.roll.abs() < 0.02 && last.telemetry.pitch.abs() < 0.05,
            "{last:?}"
        );
        assert!(last.position[0].abs() < 0.03, "{last:?}");
    }

    #[test]
    fn unknown_replay_parameters_are_named() {
        let m = PhysicsQuadruped::new(1, 0.0, false);
        let map = serde_json::json!({"hip_amp": 0.5, "bogus": 1.0});
        let e = values_from_map(m.params(), map.as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"bogus\""), "{e}");
        let map = serde_json::json!({"hip_amp": 0.5});
        let v = values_from_map(m.params(), map.as_object().unwrap()).unwrap();
        assert_eq!(v[0], 0.5);
        assert_eq!(v[1], PARAMS[1].default);
    }
}
