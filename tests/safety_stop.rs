//! The safety envelope: an unsafe step makes the daemon send EStop at once and prune the
//! trial as unsafe; the study goes on.

mod common;
use common::*;

#[test]
fn unsafe_gaits_are_estopped_within_a_step_and_pruned() {
    let w = Workdir::new();
    // Fast, large strides: the simulated robot rolls over within an episode. The robot runs
    // at the real firmware's 20 ms control period, so "within a step" means what it means on
    // hardware.
    let text = sim_config(&w.storage_url(), &w.event_log(), 3, 300, 20.0)
        .replace("low = 0.5\nhigh = 3.0", "low = 3.5\nhigh = 4.0")
        .replace("low = 0.05\nhigh = 0.5", "low = 0.7\nhigh = 0.8");
    let config = w.write_config(&text);
    let stdout = w.run_ok(&config);
    assert!(
        stdout.contains("PRUNED(unsafe)"),
        "progress shows the unsafe prune:\n{stdout}"
    );

    let trials = w.export("it");
    assert_eq!(trials.len(), 3);
    let events = w.events();
    let estops = named(&events, "estop");
    for t in &trials {
        assert_eq!(t["state"], "PRUNED", "{t}");
        assert_eq!(t["prune_reason"], "unsafe", "{t}");
        let detail = &t["attrs"]["unsafe"];
        assert_eq!(
            detail["source"], "envelope",
            "the daemon, not the firmware, caught it: {t}"
        );
        let violation_step = detail["step"].as_u64().unwrap();
        let trial_no = t["number"].as_u64().unwrap();
        let estop = estops
            .iter()
            .find(|e| e["trial"].as_u64() == Some(trial_no))
            .unwrap_or_else(|| panic!("the robot saw no EStop for trial {trial_no}: {events:?}"));
        // The robot logs how many Step frames it had sent when EStop arrived. The violating
        // step is index `violation_step`, so violation_step + 1 frames were out; at most one
        // more may leave before EStop lands.
        let sent_before_estop = estop["step"]
            .as_u64()
            .expect("EStop arrived during the episode");
        let seen_at = sent_before_estop.saturating_sub(1);
        assert!(
            seen_at <= violation_step + 1,
            "EStop reached the robot at step {seen_at}, violation was at step {violation_step}"
        );
    }
    // After each stop the daemon released the latch and went on.
    assert_eq!(named(&events, "clear_estop").len(), 3);
}
