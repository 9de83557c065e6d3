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

    /// `gaittune run CONFIG [args]`, failing the test (with what it printed) if it runs
    /// longer than `limit`: a daemon that hangs fails the test instead of hanging it.
    pub fn run_within(&self, config: &Path, args: &[&str], limit: Duration) -> Output {
        run_within(self, config, args, limit).finished()
    }
}
// ---------------------------------------------------------------- chaos: proxy, runs, checks

mod robot_check;
#[allow(unused_imports)]
pub use robot_check::{assert_study_matches_robot, study_mismatches};

use std::io::{Read, Write};
use std::process::ExitStatus;

use firmware_protocol::{
    decode, encode, FrameAccumulator, HostMsg, ParamValues, RobotMsg, MAX_FRAME,
};

/// Reads a child's first stdout line within `limit` (then drains the rest in the
/// background); `None` if it printed nothing in time.
fn first_line_within(child: &mut Child, limit: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        for _ in reader.lines() {}
    });
    rx.recv_timeout(limit).ok().filter(|l| !l.is_empty())
}

/// Sends SIGTERM, then SIGKILL if the process is still there after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// `gaittune chaos` in front of a `gaittune sim` it started: the sim logs its events to
/// the workdir's event log, the proxy its faults to `chaos.jsonl`.
pub struct ChaosProxy {
    /// The `gaittune chaos` process.
    pub child: Child,
    /// The pty it serves hosts on.
    pub device: String,
    /// Its fault log (--log).
    pub log: PathBuf,
}

impl ChaosProxy {
    /// Starts `gaittune chaos --seed SEED --fault F... -- gaittune sim --event-log … SIM_ARGS`.
    pub fn start(w: &Workdir, seed: u64, faults: &[&str], sim_args: &[&str]) -> ChaosProxy {
        let log = w.path("chaos.jsonl");
        let mut cmd = Command::new(bin());
        cmd.arg("chaos")
            .args(["--seed", &seed.to_string(), "--log"])
            .arg(&log);
        for f in faults {
            cmd.args(["--fault", f]);
        }
        cmd.arg("--")
            .arg(bin())
            .arg("sim")
            .arg("--event-log")
            .arg(w.event_log())
            .args(sim_args);
        Self::spawn(cmd, log)
    }

    /// Starts `gaittune chaos ARGS` (which must print its pty).
    pub fn spawn(mut cmd: Command, log: PathBuf) -> ChaosProxy {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gaittune chaos");
        let line = first_line_within(&mut child, Duration::from_secs(20));
        let device = match line.as_deref().and_then(|l| l.strip_prefix("PTY ")) {
            Some(path) => path.trim().to_string(),
            None => {
                terminate(&mut child, Duration::from_secs(5));
                panic!("gaittune chaos printed {line:?}, expected 'PTY <path>'");
            }
        };
        ChaosProxy { child, device, log }
    }

    /// The faults injected so far (its --log).
    pub fn injected(&self) -> Vec<Value> {
        read_events(&self.log)
    }

    /// The pid of the robot process the proxy started.
    pub fn robot_pid(&self) -> Option<i32> {
        let children = format!("/proc/{0}/task/{0}/children", self.child.id());
        std::fs::read_to_string(children)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// Injected faults of kind `fault`.
pub fn faults_of<'a>(injected: &'a [Value], fault: &str) -> Vec<&'a Value> {
    injected.iter().filter(|i| i["fault"] == fault).collect()
}

/// How a bounded `gaittune run` went.
pub struct BoundedRun {
    /// Its exit status; `None` if it was killed for running over its time.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl BoundedRun {
    /// Both streams, for a failure message.
    pub fn output(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The run as an [`Output`]; fails the test if it had to be killed.
    pub fn finished(self) -> Output {
        let Some(status) = self.status else {
            panic!(
                "still running after {:?} (hung?), killed.\n{}",
                self.elapsed,
                self.output()
            );
        };
        Output {
            status,
            stdout: self.stdout.into_bytes(),
            stderr: self.stderr.into_bytes(),
        }
    }
}

/// `gaittune run CONFIG [args]`, killed (SIGTERM, then SIGKILL) if it runs longer than
/// `limit`.
pub fn run_within(w: &Workdir, config: &Path, args: &[&str], limit: Duration) -> BoundedRun {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .arg("run")
        .arg(config)
        .args(args)
        .current_dir(w.dir.path())
        .env("GAITTUNE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gaittune run");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = None;
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        terminate(&mut child, Duration::from_secs(5));
    }
    let _ = child.wait();
    BoundedRun {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A host scripted by hand over a pty: sends frames, reads robot frames with their arrival
/// time, and sends a heartbeat every 100 ms while it reads.
pub struct ScriptHost {
    file: std::fs::File,
    seq: u16,
    rx: FrameAccumulator,
    last_beat: Instant,
    /// Decoded, not yet handed out.
    pending: std::collections::VecDeque<(Instant, RobotMsg)>,
}

impl ScriptHost {
    /// Opens the pty at `path` raw and sends a lone 0x00 (SPEC §2.5).
    pub fn open(path: &str) -> ScriptHost {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, SpecialCharacterIndices};
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(path)
            .expect("open the pty");
        let mut t = tcgetattr(&file).unwrap();
        cfmakeraw(&mut t);
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 1;
        tcsetattr(&file, SetArg::TCSANOW, &t).unwrap();
        let mut host = ScriptHost {
            file,
            seq: 0,
            rx: FrameAccumulator::new(),
            last_beat: Instant::now(),
            pending: Default::default(),
        };
        host.file.write_all(&[0]).unwrap();
        host
    }

    /// Sends `msg` with the next sequence number; returns it.
    pub fn send(&mut self, msg: &HostMsg) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(self.seq, msg, &mut buf).unwrap();
        self.file.write_all(&buf[..n]).unwrap();
        self.seq
    }

    /// Reads robot messages until `done` holds for one (included), or panics naming `what`
    /// after `limit`.
    pub fn recv_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&RobotMsg) -> bool,
    ) -> Vec<(Instant, RobotMsg)> {
        let start = Instant::now();
        let mut got = Vec::new();
        loop {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; received {:?}",
                got.iter().map(|(_, m)| m).collect::<Vec<_>>()
            );
            self.read_some();
            while let Some((t, m)) = self.pending.pop_front() {
                let stop = done(&m);
                got.push((t, m));
                if stop {
                    return got;
                }
            }
        }
    }

    /// Reads robot messages for `d`.
    pub fn recv_for(&mut self, d: Duration) -> Vec<(Instant, RobotMsg)> {
        let start = Instant::now();
        while start.elapsed() < d {
            self.read_some();
        }
        self.pending.drain(..).collect()
    }

    /// Reads what arrives within 100 ms into `pending`.
    fn read_some(&mut self) {
        if self.last_beat.elapsed() >= Duration::from_millis(100) {
            self.send(&HostMsg::Heartbeat { host_time_ms: 0 });
            self.last_beat = Instant::now();
        }
        let mut buf = [0u8; 1024];
        let n = self.file.read(&mut buf).unwrap_or(0);
        let now = Instant::now();
        for &b in &buf[..n] {
            if let Some(Ok(stuffed)) = self.rx.push(b) {
                if let Ok(frame) = decode::<RobotMsg>(stuffed) {
                    self.pending.push_back((now, frame.msg));
                }
            }
        }
    }

    /// Hello (protocol version 1), every ParamInfo, then SetParams of the defaults and
    /// Ready.
    pub fn handshake_and_apply_defaults(&mut self) {
        self.send(&HostMsg::Hello {
            protocol_version: 1,
        });
        let mut count = 0;
        self.recv_until(Duration::from_secs(10), "Info", |m| match m {
            RobotMsg::Info { param_count, .. } => {
                count = *param_count;
                true
            }
            _ => false,
        });
        let mut defaults = Vec::new();
        for index in 0..count {
            self.send(&HostMsg::GetParamInfo { index });
            self.recv_until(Duration::from_secs(10), "ParamInfo", |m| match m {
                RobotMsg::ParamInfo { default, .. } => {
                    defaults.push(*default);
                    true
                }
                _ => false,
            });
        }
        self.send(&HostMsg::SetParams {
            values: ParamValues::from_slice(&defaults).unwrap(),
        });
        self.recv_until(Duration::from_secs(10), "Ready after SetParams", |m| {
            matches!(m, RobotMsg::Ready)
        });
    }

    /// StartEpisode; returns when it was sent.
    pub fn start(&mut self, trial: u32, episode: u16, max_steps: u32) -> Instant {
        self.send(&HostMsg::StartEpisode {
            trial,
            episode,
            max_steps,
            seed: 7,
        });
        Instant::now()
    }
}

/// The Step frames among `msgs`, as (episode, step).
pub fn steps_of(msgs: &[(Instant, RobotMsg)]) -> Vec<(u16, u32)> {
    msgs.iter()
        .filter_map(|(_, m)| match m {
            RobotMsg::Step(s) => Some((s.episode, s.step)),
            _ => None,
        })
        .collect()
}

/// The PostgreSQL server tests use unless `GAITTUNE_TEST_POSTGRES` names another.
pub const DEFAULT_TEST_URL: &str = "postgresql://postgres@127.0.0.1:5432/test";

/// The PostgreSQL test server's URL if one answers: `GAITTUNE_TEST_POSTGRES`, or the
/// default. Without one a test prints SKIPPED and passes, unless `CI=true`: then it fails.
pub fn postgres_server() -> Option<String> {
    let url = std::env::var("GAITTUNE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_TEST_URL.into());
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(_) => Some(url),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("no PostgreSQL at {url} and CI=true: {e:?}")
        }
        Err(_) => {
            // Straight to stderr: the test harness would swallow eprintln! of a pass.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "SKIPPED: no PostgreSQL at {url} (set GAITTUNE_TEST_POSTGRES or start one)\n"
                ),
            );
            None
        }
    }
}

/// Deletes the study when the test ends, passed or not, so the shared database stays clean.
pub struct DropStudy<'a> {
    pub url: &'a str,
    pub name: &'a str,
}

impl Drop for DropStudy<'_> {
    fn drop(&mut self) {
        if let Ok(storage) = gaittune::storage::open(self.url) {
            if let Ok(Some(study)) = storage.load_study(self.name) {
                let _ = storage.delete_study(study.id);
            }
        }
    }
}
