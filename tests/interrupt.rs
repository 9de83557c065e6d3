//! Ctrl-C: EStop reaches the robot before the daemon exits, the trial in flight is re-queued,
//! completed trials are intact, and a rerun finishes the study.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn sigint_estops_requeues_and_the_rerun_finishes() {
    let w = Workdir::new();
    // 300 steps x 4 ms: episodes long enough to interrupt in the middle of one.
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 4, 300, 4.0));
    let child = w.spawn_run(&config);
    let pid = child.id() as i32;
    // Wait until the second trial's episode is under way (the first one is complete).
    wait_for(
        Duration::from_secs(60),
        "the second episode to start",
        || named(&w.events(), "episode_start").len() >= 2,
    );
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    // Read the robot's log the moment the daemon is gone.
    let events = w.events();
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let estops = named(&events, "estop");
    assert!(!estops.is_empty(), "the robot never saw EStop: {events:?}");
    assert!(
        estops[0]["step"].is_u64(),
        "EStop arrived during the episode: {:?}",
        estops[0]
    );

    let trials = w.export("it");
    let complete = in_state(&trials, "COMPLETE");
    let waiting = in_state(&trials, "WAITING");
    assert_eq!(
        waiting.len(),
        1,
        "the trial in flight is WAITING: {trials:?}"
    );
    assert!(!complete.is_empty());
    let interrupted = waiting[0]["number"].as_u64().unwrap();
    assert_eq!(
        waiting[0]["attrs"]["operator"][0],
        serde_json::json!({"action": "interrupt", "by": "signal SIGINT", "at": waiting[0]["attrs"]["operator"][0]["at"]}),
        "the record says what stopped it"
    );
    assert!(in_state(&trials, "RUNNING").is_empty());

    let out = w.run(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = w.export("it");
    assert_eq!(after.len(), 4, "{after:?}");
    for t in &complete {
        let n = t["number"].as_u64().unwrap() as usize;
        assert_eq!(&after[n], *t, "a completed trial changed");
    }
    let rerun = &after[interrupted as usize];
    assert!(
        rerun["state"] == "COMPLETE" || rerun["state"] == "PRUNED",
        "{rerun}"
    );
    assert_eq!(
        rerun["params"], waiting[0]["params"],
        "the re-queued trial ran with its own parameters"
    );
}
