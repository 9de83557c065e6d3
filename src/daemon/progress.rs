//! The running tally of one trial: intermediate values at fixed steps, placed by the robot's
//! own step index (a duplicated Step counts once, a lost one leaves a recorded gap), kept in
//! memory until the episode they belong to has ended, and rolled back when an episode has to
//! be run again. No I/O: the trial loop persists what [`TrialProgress::take_pending`] hands
//! over.

use std::collections::BTreeMap;

use firmware_protocol::Step;

/// Intermediate values and gaps of one trial (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct TrialProgress {
    max_steps: u64,
    report_every: u64,
    tally: Tally,
    /// The tally at the start of the episode in flight.
    mark: Tally,
    /// Values reported since the last [`TrialProgress::take_pending`].
    pending: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    reward_sum: f64,
    steps_seen: u64,
    last_boundary: u64,
    last_report: Option<f64>,
    intermediate: BTreeMap<u64, f64>,
    gaps: Vec<[u64; 3]>,
}

impl TrialProgress {
    /// A trial whose episodes run `max_steps` steps, reporting every `report_every` steps
    /// (counted across its episodes, so every trial reports at the same steps).
    pub fn new(max_steps: u32, report_every: u32) -> Self {
        Self {
            max_steps: max_steps as u64,
            report_every: report_every.max(1) as u64,
            tally: Tally::default(),
            mark: Tally::default(),
            pending: Vec::new(),
        }
    }

    /// Call when episode `episode` starts (again): a later rollback returns here.
    pub fn begin_episode(&mut self) {
        self.mark = self.tally.clone();
        self.pending.clear();
    }

    /// Forgets everything the episode in flight reported (its result was lost).
    pub fn rollback_episode(&mut self) {
        self.tally = self.mark.clone();
        self.pending.clear();
    }

    /// Forgets the whole trial (it runs again from its first episode).
    pub fn reset(&mut self) {
        self.tally = Tally::default();
        self.mark = Tally::default();
        self.pending.clear();
    }

    /// Takes in one new step of `episode`; returns the intermediate value due at a report
    /// step, as (step, projected episode return), if this step reached one.
    pub fn on_step(&mut self, episode: u32, step: &Step) -> Option<(u64, f64)> {
        let t = &mut self.tally;
        t.reward_sum += step.reward as f64;
        t.steps_seen += 1;
        let position = episode as u64 * self.max_steps + step.step as u64 + 1;
        let boundary = position / self.report_every * self.report_every;
        if boundary == 0 || boundary <= t.last_boundary {
            return None;
        }
        t.last_boundary = boundary;
        let projected = t.reward_sum / t.steps_seen as f64 * self.max_steps as f64;
        t.last_report = Some(projected);
        t.intermediate.insert(boundary, projected);
        self.pending.push((boundary, projected));
        Some((boundary, projected))
    }

    /// Records that steps `from..to` of `episode` never arrived.
    pub fn on_gap(&mut self, episode: u32, from: u32, to: u32) {
        self.tally
            .gaps
            .push([episode as u64, from as u64, to as u64]);
    }

    /// The intermediate values so far, by step (what the pruner sees).
    pub fn intermediate(&self) -> &BTreeMap<u64, f64> {
        &self.tally.intermediate
    }

    /// The latest intermediate value.
    pub fn last_report(&self) -> Option<f64> {
        self.tally.last_report
    }

    /// Steps received so far (a lost step is not counted).
    pub fn steps_seen(&self) -> u64 {
        self.tally.steps_seen
    }

    /// The trial's position in steps when it was last reported (where a pruned trial stopped).
    pub fn last_reported_step(&self) -> u64 {
        self.tally.last_boundary
    }

    /// Every gap so far, as `[episode, from, to]`.
    pub fn gaps(&self) -> &[[u64; 3]] {
        &self.tally.gaps
    }

    /// Hands over the values reported since the last call, to be persisted.
    pub fn take_pending(&mut self) -> Vec<(u64, f64)> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(index: u32, reward: f32) -> Step {
        Step {
            timestamp_us: 0,
            trial: 1,
            episode: 0,
            step: index,
            reward,
            roll: 0.0,
            pitch: 0.0,
            body_height: 0.3,
            max_joint_temp: 40.0,
            faults: 0,
        }
    }

    #[test]
    fn reports_land_on_the_boundaries_of_the_robots_step_index() {
        let mut p = TrialProgress::new(100, 10);
        p.begin_episode();
        let mut reports = Vec::new();
        for i in 0..100u32 {
            if let Some(r) = p.on_step(0, &step(i, 1.0)) {
                reports.push(r.0);
            }
        }
        assert_eq!(reports, (1..=10).map(|k| k * 10).collect::<Vec<_>>());
        assert_eq!(p.last_report(), Some(100.0));
        // The second episode continues the count.
        p.begin_episode();
        assert_eq!(p.on_step(1, &step(9, 1.0)).map(|r| r.0), Some(110));
    }

    #[test]
    fn a_lost_step_leaves_a_gap_and_the_next_boundary_still_reports() {
        let mut p = TrialProgress::new(50, 10);
        p.begin_episode();
        for i in 0..9 {
            assert!(p.on_step(0, &step(i, 2.0)).is_none());
        }
        // Step 9 (the one at boundary 10) and 10..12 are lost.
        p.on_gap(0, 9, 13);
        let (at, value) = p.on_step(0, &step(13, 2.0)).unwrap();
        assert_eq!(at, 10, "the boundary the trial has passed");
        assert_eq!(value, 2.0 * 50.0);
        assert!(p.on_step(0, &step(14, 2.0)).is_none());
        assert_eq!(p.gaps(), &[[0, 9, 13]]);
        assert_eq!(p.steps_seen(), 11);
    }

    #[test]
    fn rolling_back_an_episode_forgets_exactly_its_reports() {
        let mut p = TrialProgress::new(20, 10);
        p.begin_episode();
        for i in 0..20 {
            p.on_step(0, &step(i, 1.0));
        }
        assert_eq!(p.take_pending().len(), 2);
        p.begin_episode();
        for i in 0..15 {
            p.on_step(1, &step(i, 5.0));
        }
        p.on_gap(1, 15, 16);
        assert_eq!(p.intermediate().len(), 3);
        p.rollback_episode();
        assert_eq!(
            p.intermediate().keys().copied().collect::<Vec<_>>(),
            [10, 20]
        );
        assert!(p.take_pending().is_empty());
        assert!(p.gaps().is_empty());
        assert_eq!(p.steps_seen(), 20);
        // Re-running it reports the same boundaries again.
        for i in 0..20 {
            p.on_step(1, &step(i, 5.0));
        }
        assert_eq!(
            p.take_pending().iter().map(|r| r.0).collect::<Vec<_>>(),
            [30, 40]
        );
        p.reset();
        assert!(p.intermediate().is_empty());
    }
}
