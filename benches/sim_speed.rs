//! Speed of the physics quadruped (`gaittune sim --model physics`): control steps per second,
//! physics steps per second and the real-time factor (simulated time over compute time) on
//! one core, for the baseline gait and for a fast gait, with and without noise (the noise
//! adds ground roughness patches). Also the cost of an episode's start (world build and
//! settling).
//!
//!     cargo bench --bench sim_speed

use std::time::{Duration, Instant};

use gaittune::sim::firmware::RobotModel;
use gaittune::sim::physics::{PhysicsQuadruped, CONTROL_DT, PARAMS, SUBSTEPS};

const EPISODES: u64 = 6;
const STEPS: u32 = 500;

fn measure(name: &str, noise: f64, values: &[f32]) {
    let model = PhysicsQuadruped::new(1, noise, false);
    // Warm-up.
    let mut ep = model.start_episode(values, 0);
    for k in 0..50 {
        std::hint::black_box(model.step(&mut ep, k));
    }
    let mut start_time = Duration::ZERO;
    let mut step_time = Duration::ZERO;
    let mut steps = 0u64;
    for seed in 1..=EPISODES {
        let t0 = Instant::now();
        let mut ep = model.start_episode(values, seed);
        start_time += t0.elapsed();
        let t1 = Instant::now();
        for k in 0..STEPS {
            std::hint::black_box(model.step(&mut ep, k));
            steps += 1;
        }
        step_time += t1.elapsed();
    }
    let per_s = steps as f64 / step_time.as_secs_f64();
    let rtf = per_s * CONTROL_DT as f64;
    let with_start = steps as f64 * CONTROL_DT as f64 / (step_time + start_time).as_secs_f64();
    println!(
        "{name:<28} {per_s:>9.0} control steps/s  {:>9.0} physics steps/s  real-time factor {rtf:>6.1} ({with_start:.1} with episode starts, {:.1} ms per start)",
        per_s * SUBSTEPS as f64,
        start_time.as_secs_f64() * 1e3 / EPISODES as f64
    );
}

fn main() {
    let baseline: Vec<f32> = PARAMS.iter().map(|p| p.default).collect();
    let mut fast = baseline.clone();
    fast[0] = 0.15;
    fast[2] = 0.15;
    fast[8] = 2.0; // swing_hz
    fast[9] = 2.0; // stance_hz
    println!(
        "physics quadruped, {EPISODES} episodes x {STEPS} steps of {} ms ({SUBSTEPS} physics steps each), one core",
        CONTROL_DT * 1e3
    );
    measure("baseline gait, noise 0", 0.0, &baseline);
    measure("baseline gait, noise 1", 1.0, &baseline);
    measure("2 Hz trot, noise 1", 1.0, &fast);
}
