//! The operator's controls from a second terminal: every `gaittune ctl` command against a
//! running `gaittune run` and its simulated robot, checked on the robot's own event log and
//! in the study record.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// `gaittune ctl --control SOCKET ARGS…`.
fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("ctl")
        .arg("--control")
        .arg(socket)
        .args(args)
        .output()
        .expect("run gaittune ctl")
}

/// `ctl`, which must succeed; returns what it printed.
fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "gaittune ctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(socket: &Path) -> Value {
    serde_json::from_str(&ctl_ok(socket, &["status"])).expect("status is JSON")
}

/// `gaittune run CONFIG --control SOCKET` in the background.
fn spawn_with_control(w: &Workdir, config: &Path, socket: &Path) -> std::process::Child {
    Command::new(bin())
        .arg("run")
        .arg(config)
        .arg("--control")
        .arg(socket)
        .current_dir(w.dir.path())
        .env("GAITTUNE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gaittune run")
}

fn finished_ok(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the run failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn trial(trials: &[Value], number: u64) -> &Value {
    trials
        .iter()
        .find(|t| t["number"] == number)
        .unwrap_or_else(|| panic!("no trial {number} in {trials:?}"))
}

/// `ctl stop`, then waits until the daemon holds for the operator's release.
fn stop_and_wait_for_the_hold(socket: &Path) {
    let said = ctl_ok(socket, &["stop"]);
    assert!(said.contains("EStop sent"), "{said}");
    wait_for(Duration::from_secs(10), "the daemon to hold", || {
        status(socket)["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("release"))
    });
}

fn wait_until_socket(socket: &Path) {
    wait_for(Duration::from_secs(60), "the control socket", || {
        socket.exists() && ctl(socket, &["status"]).status.success()
    });
}

#[test]
fn stop_latches_the_robot_requeues_the_trial_and_release_goes_on() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    // 300 steps x 4 ms: episodes long enough to stop in the middle of one.
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 3, 300, 4.0));
    let child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);
    wait_for(Duration::from_secs(60), "the second episode", || {
        named(&w.events(), "episode_start").len() >= 2
    });
    let in_flight = status(&socket)["trial"]
        .as_u64()
        .expect("a trial in flight");

    stop_and_wait_for_the_hold(&socket);
    let events = w.events();
    let estops = named(&events, "estop");
    assert!(
        !estops.is_empty() && estops[0]["step"].is_u64(),
        "EStop reached the robot during the episode: {estops:?}"
    );
    assert!(
        named(&events, "clear_estop").is_empty(),
        "nothing releases the robot before the operator does"
    );
    let s = status(&socket);
    assert_eq!(s["stopped_by_operator"], true);
    assert!(s["stopped_by"].as_str().unwrap().starts_with("ctl (uid "));
    let trials = w.export("it");
    let stopped = trial(&trials, in_flight);
    assert_eq!(stopped["state"], "WAITING", "{stopped}");
    assert_eq!(stopped["attrs"]["operator"][0]["action"], "stop");

    // The robot stays latched while the operator looks at it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(named(&w.events(), "clear_estop").is_empty());
    assert!(named(&w.events(), "episode_start").len() == 2);

    let said = ctl_ok(&socket, &["release"]);
    assert!(said.contains("acknowledged ClearEStop"), "{said}");
    assert_eq!(named(&w.events(), "clear_estop").len(), 1);
    let refused = ctl(&socket, &["release"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a second release is refused"
    );

    let stdout = finished_ok(child);
    assert!(stdout.contains("stop by ctl"), "{stdout}");
    let trials = w.export("it");
    assert_eq!(in_state(&trials, "COMPLETE").len(), 3, "{trials:?}");
    let rerun = trial(&trials, in_flight);
    assert_eq!(rerun["state"], "COMPLETE");
    assert_eq!(
        rerun["attrs"]["operator"][0]["action"], "stop",
        "who stopped it stays in its record"
    );
    assert!(
        !socket.exists(),
        "the socket is removed at the end of the run"
    );
}

#[test]
fn skip_pause_enqueue_fail_and_pause_now() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 5, 300, 4.0));
    let child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);

    // Skip the first trial in the middle of its episode.
    wait_for(Duration::from_secs(60), "an episode under way", || {
        status(&socket)["step"].as_u64().is_some_and(|s| s > 20)
    });
    let skipped = status(&socket)["trial"].as_u64().unwrap();
    let said = ctl_ok(&socket, &["skip"]);
    assert!(
        said.contains(&format!("skipping trial {skipped}")),
        "{said}"
    );
    wait_for(Duration::from_secs(20), "the skip to be recorded", || {
        w.export("it")
            .iter()
            .any(|t| t["number"] == skipped && t["state"] == "PRUNED")
    });
    assert!(
        !named(&w.events(), "abort").is_empty(),
        "the episode was aborted"
    );

    // Pause after the trial in flight (once the next one is under way); meanwhile enqueue a
    // gait and judge a finished trial.
    wait_for(Duration::from_secs(60), "the next trial under way", || {
        let s = status(&socket);
        s["trial"].as_u64().is_some_and(|t| t != skipped)
    });
    let said = ctl_ok(&socket, &["pause"]);
    assert!(said.contains("after the trial in flight"), "{said}");
    wait_for(Duration::from_secs(60), "the pause", || {
        status(&socket)["waiting_for"]
            .as_str()
            .is_some_and(|w| w.starts_with("resume"))
    });
    let episodes_when_paused = named(&w.events(), "episode_start").len();

    let gait = w.path("gait.toml");
    std::fs::write(
        &gait,
        "freq_hz = 1.25\nstride_amp = 0.2\nduty_factor = 0.6\nkp = 20.0\ngait = 1\n",
    )
    .unwrap();
    let said = ctl_ok(&socket, &["enqueue", gait.to_str().unwrap()]);
    let enqueued: u64 = said
        .split("trial ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no trial number in {said}"));
    let bad = w.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"freq_hz": 9.0, "stride_amp": 0.2, "duty_factor": 0.6, "kp": 20.0, "gait": 1}"#,
    )
    .unwrap();
    let refused = ctl(&socket, &["enqueue", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("freq_hz"),
        "the refusal names the parameter: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let trials = w.export("it");
    let judged = in_state(&trials, "COMPLETE")[0]["number"].as_u64().unwrap();
    let said = ctl_ok(
        &socket,
        &[
            "fail",
            &judged.to_string(),
            "--unsafe",
            "--note",
            "scraped the front left leg",
        ],
    );
    assert!(said.contains("unsafe"), "{said}");
    let refused = ctl(&socket, &["fail", &enqueued.to_string()]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "an unfinished trial gets no verdict"
    );

    // Paused: nothing starts.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        named(&w.events(), "episode_start").len(),
        episodes_when_paused
    );
    ctl_ok(&socket, &["resume"]);

    // The enqueued gait runs next; pause it at once, then let it finish.
    wait_for(Duration::from_secs(30), "the enqueued gait to run", || {
        let s = status(&socket);
        s["trial"] == enqueued && s["step"].as_u64().is_some_and(|s| s > 20)
    });
    let said = ctl_ok(&socket, &["pause", "--now"]);
    assert!(said.contains("re-queued"), "{said}");
    wait_for(Duration::from_secs(20), "the trial re-queued", || {
        trial(&w.export("it"), enqueued)["state"] == "WAITING"
    });
    ctl_ok(&socket, &["resume"]);
    let stdout = finished_ok(child);
    assert!(stdout.contains("skip by ctl"), "{stdout}");

    let trials = w.export("it");
    let s = trial(&trials, skipped);
    assert_eq!(s["prune_reason"], "operator", "{s}");
    assert!(
        s["attrs"].get("unsafe").is_none(),
        "a skipped trial is no constraint violation"
    );
    assert_eq!(s["attrs"]["operator"][0]["action"], "skip");

    let j = trial(&trials, judged);
    assert_eq!(j["state"], "PRUNED");
    assert_eq!(
        j["prune_reason"], "unsafe",
        "the samplers see it unsafe: {j}"
    );
    assert_eq!(j["attrs"]["unsafe"]["source"], "operator");
    assert_eq!(
        j["attrs"]["operator"][0]["note"],
        "scraped the front left leg"
    );

    let e = trial(&trials, enqueued);
    assert_eq!(e["state"], "COMPLETE", "{e}");
    assert_eq!(e["params"]["freq_hz"], 1.25);
    let actions: Vec<&str> = e["attrs"]["operator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["enqueue", "pause"]);
}

#[test]
fn operator_go_holds_every_episode_and_the_default_socket_is_found() {
    let w = Workdir::new();
    let runtime = w.path("runtime");
    let mut text = sim_config(&w.storage_url(), &w.event_log(), 2, 50, 0.0);
    text = text.replace("device = \"sim\"", "device = \"sim\"\noperator_go = true");
    let config = w.write_config(&text);
    let child = Command::new(bin())
        .arg("run")
        .arg(&config)
        .current_dir(w.dir.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let socket = runtime.join("gaittune").join("it.sock");
    wait_until_socket(&socket);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600, "the socket is the owner's alone");
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    // `ctl` finds the only socket in the runtime directory by itself.
    let go_ctl = || {
        Command::new(bin())
            .args(["ctl", "go"])
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap()
    };
    for episode in 1..=2 {
        wait_for(Duration::from_secs(60), "the hold for go", || {
            status(&socket)["waiting_for"] == "operator go"
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            named(&w.events(), "episode_start").len(),
            episode - 1,
            "no episode starts before the go"
        );
        let out = go_ctl();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(Duration::from_secs(30), "the episode after the go", || {
            named(&w.events(), "episode_start").len() >= episode
        });
    }
    let stdout = finished_ok(child);
    assert!(
        stdout.contains("waiting for the operator's go"),
        "the hold is said: {stdout}"
    );
    assert_eq!(in_state(&w.export("it"), "COMPLETE").len(), 2);
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // pid (comm) state ppid …; comm may hold spaces.
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[test]
fn a_robot_switched_off_during_a_pause_is_reconnected_on_resume() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    // The default silence timeout (2 s): longer than each of the pause's listening spans.
    let text = sim_config(&w.storage_url(), &w.event_log(), 3, 100, 2.0);
    let config = w.write_config(&text);
    let child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);
    ctl_ok(&socket, &["pause"]);
    wait_for(Duration::from_secs(60), "the pause", || {
        status(&socket)["waiting_for"]
            .as_str()
            .is_some_and(|w| w.starts_with("resume"))
    });
    let robot = children_of(child.id());
    assert_eq!(robot.len(), 1, "the simulated robot is the run's one child");
    let robot = nix::unistd::Pid::from_raw(robot[0]);
    // "Switched off": silent for well past the silence timeout and its watchdog.
    nix::sys::signal::kill(robot, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    nix::sys::signal::kill(robot, nix::sys::signal::Signal::SIGCONT).unwrap();
    ctl_ok(&socket, &["resume"]);
    let stdout = finished_ok(child);
    assert!(stdout.contains("switched off or unplugged"), "{stdout}");
    assert!(stdout.contains("the robot answers again"), "{stdout}");
    assert_eq!(in_state(&w.export("it"), "COMPLETE").len(), 3);
}

#[test]
fn a_go_given_before_a_stop_does_not_start_the_episode_after_the_release() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    let text = sim_config(&w.storage_url(), &w.event_log(), 1, 300, 4.0)
        .replace("device = \"sim\"", "device = \"sim\"\noperator_go = true");
    let config = w.write_config(&text);
    let child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);
    let holding = || status(&socket)["waiting_for"] == "operator go";
    wait_for(Duration::from_secs(60), "the hold for go", holding);
    ctl_ok(&socket, &["go"]);
    wait_for(Duration::from_secs(30), "the episode", || {
        status(&socket)["step"].as_u64().is_some_and(|s| s > 10)
    });
    // A go for the next episode, then a stop: the go must not outlive the stop.
    ctl_ok(&socket, &["go"]);
    ctl_ok(&socket, &["stop"]);
    ctl_ok(&socket, &["release"]);
    wait_for(Duration::from_secs(30), "the hold for go again", holding);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        named(&w.events(), "episode_start").len(),
        1,
        "after a release the robot waits for a new go"
    );
    ctl_ok(&socket, &["go"]);
    finished_ok(child);
    assert_eq!(named(&w.events(), "episode_start").len(), 2);
    assert_eq!(in_state(&w.export("it"), "COMPLETE").len(), 1);
}

#[test]
fn an_idle_control_client_does_not_keep_the_run_from_ending() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 2, 100, 2.0));
    let mut child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);
    // Connected, says nothing, never hangs up.
    let _idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let start = std::time::Instant::now();
    let ended = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if ended.is_none() {
        common::terminate(&mut child, Duration::from_secs(5));
        let _ = child.kill();
    }
    let status = ended.expect("the run ended while a control client stayed connected");
    assert!(status.success(), "{status}");
    assert_eq!(in_state(&w.export("it"), "COMPLETE").len(), 2);
}

#[test]
fn a_stop_during_re_evaluation_latches_the_robot_and_release_finishes_it() {
    let w = Workdir::new();
    let socket = w.path("ctl.sock");
    // 300 steps x 4 ms: re-evaluation episodes long enough to stop in the middle of one.
    let text = sim_config(&w.storage_url(), &w.event_log(), 3, 300, 4.0).replace(
        "seed = 3\n",
        "seed = 3\nreevaluate_top = 1\nreevaluate_episodes = 3\n",
    );
    let config = w.write_config(&text);
    let child = spawn_with_control(&w, &config, &socket);
    wait_until_socket(&socket);
    // Three trial episodes, then the first re-evaluation episode.
    wait_for(Duration::from_secs(60), "the re-evaluation", || {
        named(&w.events(), "episode_start").len() >= 4
    });
    stop_and_wait_for_the_hold(&socket);
    assert!(
        named(&w.events(), "clear_estop").is_empty(),
        "nothing releases the robot before the operator does"
    );
    ctl_ok(&socket, &["release"]);

    let stdout = finished_ok(child);
    assert!(stdout.contains("stop by ctl"), "{stdout}");
    assert!(stdout.contains("likely best"), "{stdout}");
    let trials = w.export("it");
    let reevaluated: Vec<&Value> = trials
        .iter()
        .filter(|t| !t["attrs"]["reeval"].is_null())
        .collect();
    assert_eq!(reevaluated.len(), 1, "{trials:?}");
    assert_eq!(
        reevaluated[0]["attrs"]["reeval"]["returns"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "every re-evaluation episode ran to its end: {}",
        reevaluated[0]
    );
}
