//! Pruning through the real daemon: poor trials are aborted on the robot after the warmup
//! guard and recorded as PRUNED(poor); unsafe trials stay unsafe and never serve as reference.

mod common;
use common::*;

#[test]
fn the_median_pruner_aborts_poor_trials_after_the_warmup() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 16, 150, 3.0).replace(
        "[robot]",
        "[pruner]\nkind = \"median\"\n[pruner.median]\nn_startup_trials = 3\nn_warmup_steps = 30\n\n[robot]",
    );
    let config = w.write_config(&text);
    let stdout = w.run_ok(&config);
    let trials = w.export("it");
    assert_eq!(trials.len(), 16);
    let poor: Vec<_> = trials
        .iter()
        .filter(|t| t["prune_reason"] == "poor")
        .collect();
    assert!(
        !poor.is_empty(),
        "a random search over this space has poor trials: {stdout}"
    );
    assert!(stdout.contains("PRUNED(poor)"), "{stdout}");
    for t in &poor {
        let at = t["attrs"]["pruned_at_step"].as_u64().unwrap();
        assert!(at >= 30, "pruned at step {at}, inside the warmup: {t}");
        assert!(at < 150, "pruned before the episode's end: {t}");
        assert_eq!(t["episodes"][0]["status"], "Aborted", "{t}");
        assert_eq!(t["state"], "PRUNED");
    }
    // The first three finished trials are the startup: never pruned as poor.
    let mut finished = trials.iter().filter(|t| t["prune_reason"] != "unsafe");
    for _ in 0..3 {
        assert_ne!(finished.next().unwrap()["prune_reason"], "poor");
    }
    // Every poor trial was an Abort on the robot, not an EStop.
    let events = w.events();
    assert_eq!(named(&events, "abort").len(), poor.len());
}

#[test]
fn an_unknown_pruner_option_is_named() {
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 2, 20, 0.0).replace(
        "[robot]",
        "[pruner]\nkind = \"median\"\n[pruner.median]\nwarmup = 3\n\n[robot]",
    );
    let config = w.write_config(&text);
    let out = w.run(&config, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warmup") && stderr.contains("pruner"),
        "{stderr}"
    );
}

#[test]
fn a_robot_that_lurches_while_aborting_is_stopped_recorded_unsafe_and_released() {
    // Every trial is pruned at step 10 (threshold pruner), and the robot reports one more
    // step with a 0.7 rad roll while it stops. That step must still be guarded: EStop,
    // the trial recorded as unsafe (not poor), the latch cleared, the study goes on.
    let w = Workdir::new();
    let text = sim_config(&w.storage_url(), &w.event_log(), 4, 100, 1.0)
        .replace(
            "[robot]",
            "[pruner]\nkind = \"threshold\"\n[pruner.threshold]\nlower = 1e9\nn_warmup_steps = 10\n\n[robot]",
        )
        .replace("[sim]\n", "[sim]\nextra_args = [\"--quirk\", \"stumble-on-abort\"]\n")
        .replace("seed = 3\n", "seed = 3\nbaseline = false\n");
    let config = w.write_config(&text);
    let stdout = w.run_ok(&config);
    let trials = w.export("it");
    assert_eq!(trials.len(), 4);
    let events = w.events();
    let aborts = named(&events, "abort");
    assert!(!aborts.is_empty(), "the pruner aborted no trial: {stdout}");
    for t in &trials {
        assert_eq!(t["state"], "PRUNED", "{t}");
        assert_eq!(t["prune_reason"], "unsafe", "{t}");
        assert!(t["attrs"]["unsafe"]["limit"].is_string(), "{t}");
    }
    // Every stop was released before the next trial: as many ClearEStops as EStopped
    // trials, and the run ended without a latched robot.
    let estopped = trials
        .iter()
        .filter(|t| t["attrs"]["unsafe"]["source"] == "envelope")
        .count();
    assert!(estopped >= aborts.len(), "{stdout}");
    assert!(named(&events, "estop").len() >= estopped);
    assert!(
        named(&events, "clear_estop").len() >= estopped,
        "{events:?}"
    );
}
