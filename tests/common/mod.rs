//! Helpers for integration tests: they drive the real `gaittune` binary against the real
//! simulated robot over a real pseudo-terminal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gaittune"))
}

/// A temporary working directory for one test.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn storage_url(&self) -> String {
        format!("sqlite:{}", self.path("study.db").display())
    }

    pub fn event_log(&self) -> PathBuf {
        self.path("events.jsonl")
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `gaittune run CONFIG [args]`, waited for.
    pub fn run(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("run")
            .arg(config)
            .args(args)
            .current_dir(self.dir.path())
            .env("GAITTUNE_LOG", "warn")
            .output()
            .expect("run gaittune")
    }

    /// `gaittune run CONFIG`, which must succeed; returns its standard output (the panic
    /// message shows both streams).
    pub fn run_ok(&self, config: &Path) -> String {
        let out = self.run(config, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "gaittune run failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `gaittune run CONFIG [args]` with extra environment variables, waited for.
    pub fn run_env(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(bin())
            .arg("run")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run gaittune")
    }

    /// `gaittune run CONFIG` in the background.
    pub fn spawn_run(&self, config: &Path) -> Child {
        Command::new(bin())
            .arg("run")
            .arg(config)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gaittune")
    }

    /// `gaittune export --format json`, parsed.
    pub fn export(&self, study: &str) -> Vec<Value> {
        let out = Command::new(bin())
            .args([
                "export",
                "--storage",
                &self.storage_url(),
                "--study",
                study,
                "--format",
                "json",
            ])
            .output()
            .expect("export");
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("export prints JSON")
            .as_array()
            .expect("an array of trials")
            .clone()
    }

    /// The simulated robot's protocol events so far.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.event_log())
    }
}

/// Parses a JSON-lines event log (missing file = no events).
pub fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

/// Events named `name`.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; panics with `what` on timeout.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `gaittune sim` started by hand, serving on a pseudo-terminal.
pub struct HandSim {
    pub child: Child,
    pub device: String,
}

impl HandSim {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("sim")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gaittune sim");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("sim prints its pty");
        std::thread::spawn(move || for _ in reader.lines() {});
        let device = line
            .strip_prefix("PTY ")
            .unwrap_or_else(|| panic!("sim printed {line:?}"))
            .trim()
            .to_string();
        Self { child, device }
    }
}

impl Drop for HandSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config text used by most tests: the simulated quadruped, a small study.
pub fn sim_config(
    storage: &str,
    event_log: &Path,
    trials: u64,
    max_steps: u32,
    step_delay_ms: f64,
) -> String {
    format!(
        r#"
[study]
name = "it"
storage = "{storage}"
direction = "maximize"
trials = {trials}
seed = 3

[robot]
device = "sim"

[sim]
seed = 1
step_delay_ms = {step_delay_ms}
reset_delay_ms = 1.0
event_log = "{log}"

[episode]
max_steps = {max_steps}
report_every = 10

[safety]
max_roll_deg = 25.0
max_pitch_deg = 25.0
min_body_height_m = 0.15
max_joint_temp_c = 70.0

[space.freq_hz]
type = "float"
low = 0.5
high = 3.0

[space.stride_amp]
type = "float"
low = 0.05
high = 0.5

[space.duty_factor]
type = "float"
low = 0.4
high = 0.8

[space.kp]
type = "float"
low = 10.0
high = 60.0
log = true

[space.gait]
type = "categorical"
choices = [0, 1, 2]
"#,
        log = event_log.display()
    )
}

/// Trials in state `state`.
pub fn in_state<'a>(trials: &'a [Value], state: &str) -> Vec<&'a Value> {
    trials.iter().filter(|t| t["state"] == state).collect()
}

/// Runs `cmd` to completion, killing it (and failing the test with what it printed) if it
/// takes longer than `limit`: a daemon that hangs fails the test instead of hanging it.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let out = rx
                .recv()
                .expect("the killed child is reaped")
                .expect("output");
            panic!(
                "still running after {limit:?} (hung?), killed. stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Workdir {
    /// A `gaittune sim` started by hand with `args`, logging to this directory's event log.
    pub fn hand_sim(&self, args: &[&str]) -> HandSim {
        let log = self.event_log();
        let mut all = args.to_vec();
        all.extend(["--event-log", log.to_str().unwrap()]);
        HandSim::start(&all)
    }

    /// Starts `gaittune run CONFIG`, waits until the robot has started an episode, and kills
    /// the daemon with SIGKILL (no handler runs, no EStop is sent).
    pub fn kill_run_mid_episode(&self, config: &Path) {
        let mut child = self.spawn_run(config);
        wait_for(Duration::from_secs(60), "an episode to start", || {
            !named(&self.events(), "episode_start").is_empty()
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The standard test config against a robot started by hand on `device` (no `[sim]`
    /// table), with a 1 s silence timeout.
    pub fn hand_config(&self, device: &str, trials: u64, max_steps: u32) -> PathBuf {
        let text = sim_config(
            &self.storage_url(),
            &self.event_log(),
            trials,
            max_steps,
            0.0,
        )
        .replace(
            "device = \"sim\"",
            &format!("device = \"{device}\"\nsilence_timeout_ms = 1000"),
        );
        let start = text.find("[sim]").unwrap();
        let end = text.find("[episode]").unwrap();
        self.write_config(&format!("{}{}", &text[..start], &text[end..]))
    }

    /// `gaittune run CONFIG [args]`, failing the test if it runs longer than `limit`.
    pub fn run_within(&self, config: &Path, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg(config)
            .args(args)
            .current_dir(self.dir.path())
            .env("GAITTUNE_LOG", "warn");
        output_within(cmd, limit)
    }
}

/// Checks that the stored study is what the robot ran: every stored episode of a finished
/// trial equals the robot's last `episode_end` for that trial and episode (return bit for
/// bit, steps, status), every COMPLETE value is the mean of its stored returns, and no trial
/// is left RUNNING.
pub fn assert_study_matches_robot(trials: &[Value], events: &[Value]) {
    assert!(in_state(trials, "RUNNING").is_empty(), "{trials:?}");
    for t in trials {
        let state = t["state"].as_str().unwrap();
        if state != "COMPLETE" && state != "PRUNED" {
            continue;
        }
        let number = t["number"].as_u64().unwrap();
        let episodes = t["episodes"].as_array().unwrap();
        for e in episodes {
            let episode = e["episode"].as_u64().unwrap();
            let robot = events
                .iter()
                .rfind(|ev| {
                    ev["event"] == "episode_end"
                        && ev["trial"].as_u64() == Some(number)
                        && ev["episode"].as_u64() == Some(episode)
                })
                .unwrap_or_else(|| {
                    panic!("trial {number} episode {episode} was stored but the robot never ended it: {t}")
                });
            assert_eq!(
                (
                    e["return"].as_f64(),
                    e["steps"].as_u64(),
                    e["status"].as_str()
                ),
                (
                    robot["return"].as_f64(),
                    robot["step"].as_u64(),
                    robot["status"].as_str()
                ),
                "trial {number} episode {episode}: stored {e} but the robot logged {robot}"
            );
        }
        if state == "COMPLETE" {
            let mean = episodes
                .iter()
                .map(|e| e["return"].as_f64().unwrap())
                .sum::<f64>()
                / episodes.len() as f64;
            let value = t["value"].as_f64().unwrap();
            assert!(
                (value - mean).abs() <= 1e-9 * mean.abs().max(1.0),
                "trial {number}: value {value} is not the mean {mean} of its episodes"
            );
        }
    }
}
