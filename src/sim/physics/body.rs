//! The quadruped's rigid bodies in rapier3d: dimensions, masses, the world it stands in
//! (flat ground, optional small roughness), and reading its state back.
//!
//! # The robot
//!
//! A small quadruped of the Solo-8 / Minitaur class, 2.92 kg in all. World frame: x forward,
//! y left, z up; gravity 9.81 m/s².
//!
//! | part        | shape                               | mass    | count |
//! |-------------|-------------------------------------|---------|-------|
//! | trunk       | box 0.36 × 0.20 × 0.08 m            | 2.00 kg | 1     |
//! | thigh       | capsule, 0.16 m between joints, r 15 mm | 0.15 kg | 4 |
//! | shank+foot  | capsule 0.16 m, r 12 mm, ball foot r 18 mm | 0.08 kg | 4 |
//!
//! The hips sit at (±0.15, ±0.12, 0) m from the trunk's centre. Each leg has two actuated
//! revolute joints about the lateral axis: the **hip** (thigh against trunk) and the **knee**
//! (shank against thigh). Angles are 0 with the segment hanging straight down and positive
//! when the segment turns its lower end forward (+x). The knee bends backwards (the knee
//! joint lies behind the hip–foot line), so raising the knee angle shortens the leg and lifts
//! the foot. Joint limits: hip [−1.5, 1.0] rad, knee [0.0, 2.6] rad (mechanical stops).
//!
//! **Start pose** (the reset routine's pose): hip −0.6 rad, knee 1.2 rad, i.e. a foot right
//! below each hip, hips 0.264 m over the foot centres: the trunk's centre starts ≈ 0.28 m
//! above the ground.
//!
//! Collisions: trunk and feet/shanks against the ground only (the legs do not collide with
//! each other or with the trunk: a simplification, the gait space keeps them apart).
//! Friction: feet 0.9, everything else 0.6 (combined by average with the ground's 0.9).

use rand::rngs::StdRng;
use rand::Rng;
use rapier3d::prelude::*;

/// Trunk length (x), m.
pub const BODY_LENGTH: f32 = 0.36;
/// Trunk width (y), m.
pub const BODY_WIDTH: f32 = 0.20;
/// Trunk thickness (z), m.
pub const BODY_THICKNESS: f32 = 0.08;
/// Trunk mass, kg.
pub const BODY_MASS: f32 = 2.0;
/// Hip x offset from the trunk's centre, m.
pub const HIP_X: f32 = 0.15;
/// Hip y offset from the trunk's centre, m.
pub const HIP_Y: f32 = 0.12;
/// Thigh length (hip to knee), m.
pub const THIGH_LENGTH: f32 = 0.16;
/// Thigh mass, kg.
pub const THIGH_MASS: f32 = 0.15;
/// Thigh capsule radius, m.
pub const THIGH_RADIUS: f32 = 0.015;
/// Shank length (knee to foot centre), m.
pub const SHANK_LENGTH: f32 = 0.16;
/// Shank mass including the foot, kg.
pub const SHANK_MASS: f32 = 0.08;
/// Shank capsule radius, m.
pub const SHANK_RADIUS: f32 = 0.012;
/// Foot ball radius, m.
pub const FOOT_RADIUS: f32 = 0.018;
/// Foot mass (part of [`SHANK_MASS`]), kg.
pub const FOOT_MASS: f32 = 0.02;
/// Whole robot mass, kg.
pub const TOTAL_MASS: f32 = BODY_MASS + 4.0 * (THIGH_MASS + SHANK_MASS);
/// Hip joint limits, rad.
pub const HIP_LIMITS: [f32; 2] = [-1.5, 1.0];
/// Knee joint limits, rad.
pub const KNEE_LIMITS: [f32; 2] = [0.0, 2.6];
/// Start-pose hip angle, rad.
pub const STAND_HIP: f32 = -0.6;
/// Start-pose knee angle, rad.
pub const STAND_KNEE: f32 = 1.2;
/// Foot friction coefficient.
pub const FOOT_FRICTION: f32 = 0.9;
/// Friction of the ground and the other robot parts.
pub const GROUND_FRICTION: f32 = 0.9;
/// Friction of the trunk and leg segments.
pub const BODY_FRICTION: f32 = 0.6;
/// Number of actuated joints.
pub const JOINTS: usize = 8;
/// Leg names in leg order (front left, front right, rear left, rear right).
pub const LEG_NAMES: [&str; 4] = ["fl", "fr", "rl", "rr"];
/// Joint names in joint order (leg-major: hip then knee of each leg).
pub const JOINT_NAMES: [&str; JOINTS] = [
    "fl_hip", "fl_knee", "fr_hip", "fr_knee", "rl_hip", "rl_knee", "rr_hip", "rr_knee",
];

/// Joint axis in both joint frames: −y, so positive angles turn the lower end forward.
const AXIS: Vector = Vector::new(0.0, -1.0, 0.0);
const GROUND: Group = Group::GROUP_1;
const ROBOT: Group = Group::GROUP_2;

/// Limits of joint `j` (even: hip, odd: knee), rad.
pub fn joint_limits(j: usize) -> [f32; 2] {
    if j % 2 == 0 {
        HIP_LIMITS
    } else {
        KNEE_LIMITS
    }
}

/// Hip position of leg `leg` in the trunk frame.
fn hip_anchor(leg: usize) -> Vector {
    let x = if leg < 2 { HIP_X } else { -HIP_X };
    let y = if leg % 2 == 0 { HIP_Y } else { -HIP_Y };
    Vector::new(x, y, 0.0)
}

/// A rotation by `angle` about the joint axis.
fn about_axis(angle: f32) -> Rotation {
    Rotation::from_axis_angle(AXIS, angle)
}

/// How the world differs from the nominal one in an episode (all zero = nominal).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorldNoise {
    /// Largest height of the roughness patches on the ground, m (0 = perfectly flat).
    pub roughness_m: f32,
    /// Standard deviation of the start position (x, y), m.
    pub position_sd_m: f32,
    /// Standard deviation of the start roll, pitch and yaw, rad.
    pub angle_sd_rad: f32,
}

/// The robot in its world: rapier's state plus the handles of its parts.
pub struct RobotWorld {
    /// rapier's world (public so tools can inspect it).
    pub world: PhysicsWorld,
    /// The trunk.
    pub trunk: RigidBodyHandle,
    /// Per joint: (parent body, child body), in joint order.
    pub joint_bodies: [(RigidBodyHandle, RigidBodyHandle); JOINTS],
}

/// One joint's measured state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JointState {
    /// Angle, rad.
    pub q: f32,
    /// Angular velocity, rad/s.
    pub qd: f32,
}

impl RobotWorld {
    /// Builds the world: the ground (with roughness patches if `noise.roughness_m > 0`) and
    /// the robot in its start pose, feet 5 mm above the ground, jittered by `noise` using
    /// `rng`. `dt` is the physics time step, s.
    pub fn new(dt: f32, noise: WorldNoise, rng: &mut StdRng) -> RobotWorld {
        let mut world = PhysicsWorld::new();
        world.gravity = Vector::new(0.0, 0.0, -9.81);
        world.integration_parameters.dt = dt;

        let ground_groups = InteractionGroups::new(GROUND, ROBOT, InteractionTestMode::And);
        let robot_groups = InteractionGroups::new(ROBOT, GROUND, InteractionTestMode::And);
        world.colliders.insert(
            ColliderBuilder::cuboid(50.0, 50.0, 0.5)
                .translation(Vector::new(0.0, 0.0, -0.5))
                .friction(GROUND_FRICTION)
                .collision_groups(ground_groups),
        );
        if noise.roughness_m > 0.0 {
            // Flat patches (boards, mats, tiles) up to `roughness_m` high over the area the
            // robot walks on, none right under the start pose.
            for _ in 0..80 {
                let x = rng.gen_range(-1.0f32..5.0);
                let y = rng.gen_range(-1.5f32..1.5);
                let h = rng.gen_range(0.0..noise.roughness_m).max(1e-4);
                if x.abs() < 0.35 && y.abs() < 0.25 {
                    continue;
                }
                let hx = rng.gen_range(0.05f32..0.2);
                let hy = rng.gen_range(0.05f32..0.2);
                world.colliders.insert(
                    ColliderBuilder::cuboid(hx, hy, h / 2.0)
                        .translation(Vector::new(x, y, h / 2.0))
                        .friction(GROUND_FRICTION)
                        .collision_groups(ground_groups),
                );
            }
        }

        let mut gauss = |sd: f32| -> f32 {
            if sd == 0.0 {
                return 0.0;
            }
            let u1: f32 = rng.gen_range(f32::MIN_POSITIVE..1.0);
            let u2: f32 = rng.gen();
            sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        };
        let hip_height = THIGH_LENGTH * (-STAND_HIP).cos()
            + SHANK_LENGTH * (STAND_HIP + STAND_KNEE).cos()
            + FOOT_RADIUS
            + 0.005;
        let trunk_pose = Pose::from_parts(
            Vector::new(
                gauss(noise.position_sd_m),
                gauss(noise.position_sd_m),
                hip_height,
            ),
            Rotation::from_euler(
                glamx::EulerRot::ZYX,
                gauss(noise.angle_sd_rad),
                gauss(noise.angle_sd_rad),
                gauss(noise.angle_sd_rad),
            ),
        );
        let rb = |pose: Pose| {
            RigidBodyBuilder::dynamic()
                .pose(pose)
                .can_sleep(false)
                .build()
        };
        let trunk = world.bodies.insert(rb(trunk_pose));
        world.colliders.insert_with_parent(
            ColliderBuilder::cuboid(BODY_LENGTH / 2.0, BODY_WIDTH / 2.0, BODY_THICKNESS / 2.0)
                .mass(BODY_MASS)
                .friction(BODY_FRICTION)
                .collision_groups(robot_groups),
            trunk,
            &mut world.bodies,
        );

        let mut joint_bodies = [(trunk, trunk); JOINTS];
        for leg in 0..4 {
            let hip = hip_anchor(leg);
            let thigh_rot = about_axis(STAND_HIP);
            let thigh_local = Pose::from_parts(
                hip + thigh_rot * Vector::new(0.0, 0.0, -THIGH_LENGTH / 2.0),
                thigh_rot,
            );
            let thigh = world.bodies.insert(rb(trunk_pose * thigh_local));
            world.colliders.insert_with_parent(
                ColliderBuilder::capsule_z(THIGH_LENGTH / 2.0, THIGH_RADIUS)
                    .mass(THIGH_MASS)
                    .friction(BODY_FRICTION)
                    .collision_groups(robot_groups),
                thigh,
                &mut world.bodies,
            );
            let knee = hip + thigh_rot * Vector::new(0.0, 0.0, -THIGH_LENGTH);
            let shank_rot = about_axis(STAND_HIP + STAND_KNEE);
            let shank_local = Pose::from_parts(
                knee + shank_rot * Vector::new(0.0, 0.0, -SHANK_LENGTH / 2.0),
                shank_rot,
            );
            let shank = world.bodies.insert(rb(trunk_pose * shank_local));
            world.colliders.insert_with_parent(
                ColliderBuilder::capsule_z(SHANK_LENGTH / 2.0, SHANK_RADIUS)
                    .mass(SHANK_MASS - FOOT_MASS)
                    .friction(BODY_FRICTION)
                    .collision_groups(robot_groups),
                shank,
                &mut world.bodies,
            );
            world.colliders.insert_with_parent(
                ColliderBuilder::ball(FOOT_RADIUS)
                    .translation(Vector::new(0.0, 0.0, -SHANK_LENGTH / 2.0))
                    .mass(FOOT_MASS)
                    .friction(FOOT_FRICTION)
                    .collision_groups(robot_groups),
                shank,
                &mut world.bodies,
            );
            let hip_joint = RevoluteJointBuilder::new(AXIS)
                .local_anchor1(hip)
                .local_anchor2(Vector::new(0.0, 0.0, THIGH_LENGTH / 2.0))
                .limits(HIP_LIMITS)
                .contacts_enabled(false);
            world.impulse_joints.insert(trunk, thigh, hip_joint, true);
            let knee_joint = RevoluteJointBuilder::new(AXIS)
                .local_anchor1(Vector::new(0.0, 0.0, -THIGH_LENGTH / 2.0))
                .local_anchor2(Vector::new(0.0, 0.0, SHANK_LENGTH / 2.0))
                .limits(KNEE_LIMITS)
                .contacts_enabled(false);
            world.impulse_joints.insert(thigh, shank, knee_joint, true);
            joint_bodies[2 * leg] = (trunk, thigh);
            joint_bodies[2 * leg + 1] = (thigh, shank);
        }
        RobotWorld {
            world,
            trunk,
            joint_bodies,
        }
    }

    /// The trunk's pose.
    pub fn trunk_pose(&self) -> Pose {
        *self.world.bodies[self.trunk].position()
    }

    /// The trunk's linear velocity, m/s.
    pub fn trunk_velocity(&self) -> Vector {
        self.world.bodies[self.trunk].linvel()
    }

    /// Angle and angular velocity of joint `j`.
    pub fn joint(&self, j: usize) -> JointState {
        let (p, c) = self.joint_bodies[j];
        let (parent, child) = (&self.world.bodies[p], &self.world.bodies[c]);
        let r1 = *parent.rotation();
        let rel = r1.inverse() * *child.rotation();
        // Component of the relative rotation about the joint axis (−y).
        let (s, w) = if rel.w < 0.0 {
            (rel.y, -rel.w)
        } else {
            (-rel.y, rel.w)
        };
        let q = 2.0 * s.atan2(w);
        let qd = (child.angvel() - parent.angvel()).dot(r1 * AXIS);
        JointState { q, qd }
    }

    /// Applies the joint torques `tau` (N·m, positive turns the child's lower end forward)
    /// as equal and opposite torques on each joint's two bodies, replacing any previous ones.
    pub fn set_torques(&mut self, tau: &[f32; JOINTS]) {
        for (_, body) in self.world.bodies.iter_mut() {
            body.reset_torques(false);
        }
        for (j, &t) in tau.iter().enumerate() {
            let (p, c) = self.joint_bodies[j];
            let axis = *self.world.bodies[p].rotation() * AXIS;
            self.world.bodies[c].add_torque(axis * t, false);
            self.world.bodies[p].add_torque(-axis * t, false);
        }
    }

    /// Advances the physics by one time step.
    pub fn step(&mut self) {
        self.world.step();
    }
}

/// Roll and pitch (rad) of a rotation: ZYX Euler angles, roll about x (left side up is
/// positive), pitch about y (nose down is positive).
pub fn roll_pitch(r: Rotation) -> (f32, f32) {
    let (x, y, z, w) = (r.x, r.y, r.z, r.w);
    let roll = (2.0 * (w * x + y * z)).atan2(1.0 - 2.0 * (x * x + y * y));
    let pitch = (2.0 * (w * y - z * x)).clamp(-1.0, 1.0).asin();
    (roll, pitch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn world() -> RobotWorld {
        RobotWorld::new(0.004, WorldNoise::default(), &mut StdRng::seed_from_u64(1))
    }

    #[test]
    fn start_pose_reads_back_as_built() {
        let w = world();
        for j in 0..JOINTS {
            let s = w.joint(j);
            let want = if j % 2 == 0 { STAND_HIP } else { STAND_KNEE };
            assert!((s.q - want).abs() < 1e-5, "joint {j}: {s:?}");
            assert_eq!(s.qd, 0.0);
        }
        let (roll, pitch) = roll_pitch(w.trunk_pose().rotation);
        assert!(roll.abs() < 1e-6 && pitch.abs() < 1e-6);
        assert!((TOTAL_MASS - 2.92).abs() < 1e-6);
    }

    #[test]
    fn feet_start_just_above_the_ground() {
        let w = world();
        for (_, c) in w.joint_bodies.iter().skip(1).step_by(2) {
            let shank = &w.world.bodies[*c];
            let foot = shank
                .position()
                .transform_point(Vector::new(0.0, 0.0, -SHANK_LENGTH / 2.0));
            assert!((foot.z - FOOT_RADIUS - 0.005).abs() < 1e-4, "{foot:?}");
            // Right below its hip.
            assert!(foot.x.abs() - HIP_X < 1e-4, "{foot:?}");
        }
    }

    #[test]
    fn positive_torque_turns_the_lower_end_forward() {
        let mut w = world();
        // Lift the robot off the ground effect: just check the first steps' joint velocity.
        let mut tau = [0.0; JOINTS];
        tau[0] = 1.0; // front-left hip
        tau[3] = -1.0; // front-right knee
        w.set_torques(&tau);
        w.step();
        assert!(w.joint(0).qd > 0.0, "{:?}", w.joint(0));
        assert!(w.joint(3).qd < 0.0, "{:?}", w.joint(3));
    }

    #[test]
    fn roll_and_pitch_signs() {
        let (roll, _) = roll_pitch(Rotation::from_axis_angle(Vector::X, 0.3));
        assert!((roll - 0.3).abs() < 1e-6);
        let (_, pitch) = roll_pitch(Rotation::from_axis_angle(Vector::Y, 0.2));
        assert!((pitch - 0.2).abs() < 1e-6);
    }
}
