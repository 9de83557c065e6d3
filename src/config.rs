//! The TOML configuration of a tuning run. Every table refuses unknown keys, and every error
//! names the file, the key or line, and what to do about it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::safety::SafetyEnvelope;
use crate::space::SearchSpace;
use crate::trial::Direction;

/// The most control steps an episode may have (`episode.max_steps`): 5.6 hours at 50 Hz.
pub const MAX_EPISODE_STEPS: u32 = 1_000_000;
/// The most episodes a trial may average (`study.episodes_per_trial`).
pub const MAX_EPISODES_PER_TRIAL: u32 = 1000;
/// The `device` value that makes the daemon start the simulated robot itself.
pub const SIM_DEVICE: &str = "sim";

/// A whole run configuration (`gaittune run CONFIG`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config was read from (for messages).
    pub path: PathBuf,
    /// `[study]`.
    pub study: StudyConfig,
    /// `[sampler]`.
    pub sampler: SamplerConfig,
    /// `[pruner]`.
    pub pruner: PrunerConfig,
    /// `[robot]`.
    pub robot: RobotConfig,
    /// `[sim]`: options of the simulated robot when `robot.device = "sim"`.
    pub sim: SimConfig,
    /// `[episode]`.
    pub episode: EpisodeConfig,
    /// `[safety]`.
    pub safety: SafetyEnvelope,
    /// `[space]`, validated.
    pub space: SearchSpace,
}

/// `[study]`: what is tuned, where it is stored, how many trials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Study name; rerunning with the same name continues the study.
    pub name: String,
    /// Storage URL, e.g. `sqlite:gaittune.db` (relative paths are relative to the working
    /// directory).
    #[serde(default = "default_storage")]
    pub storage: String,
    /// `maximize` (episode return) or `minimize`.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// The study's size: the run stops when this many trials are finished (complete, pruned or
    /// failed), counting trials of earlier runs.
    #[serde(default = "default_trials")]
    pub trials: u64,
    /// Episodes per trial; the trial's value is their mean return.
    #[serde(default = "default_one")]
    pub episodes_per_trial: u32,
    /// Master seed: episode seeds and the sampler's default seed derive from it.
    #[serde(default)]
    pub seed: u64,
    /// Enqueue the firmware's default parameters as trial 0 of a new study (the baseline
    /// every later trial is compared with).
    #[serde(default = "default_true")]
    pub baseline: bool,
    /// When the study reaches its size, re-evaluate this many of the best trials (0 = off)…
    #[serde(default)]
    pub reevaluate_top: u32,
    /// …with this many more episodes each; the likely best is chosen by mean return.
    #[serde(default = "default_reevaluate_episodes")]
    pub reevaluate_episodes: u32,
    /// How long a worker's claim on a trial holds without renewal, ms: after this long
    /// without word from its worker (killed, hung, unplugged), another worker sharing the
    /// study may take the trial over. Renewed every third of it while the trial runs.
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
}

/// `[sampler]`.
#[derive(Debug, Clone, Deserialize)]
pub struct SamplerConfig {
    /// Which sampler: `random` (more come with the sampler issue).
    #[serde(default = "default_sampler")]
    pub kind: String,
    /// Sampler seed; defaults to `study.seed`.
    pub seed: Option<u64>,
    /// Feed unsafe trials to the sampler as constraint violations (the default). `false`
    /// hides them from it (shown as failed trials, which samplers ignore): for measuring
    /// what the constraints are worth, never for a robot.
    #[serde(default = "default_true")]
    pub constraints: bool,
    /// Per-kind options tables: `[sampler.tpe]`, `[sampler.cmaes]`, `[sampler.qmc]`; each
    /// sampler parses and checks its own.
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: default_sampler(),
            seed: None,
            constraints: true,
            options: Default::default(),
        }
    }
}

/// `[pruner]`: which pruner stops poor trials early (`none` by default).
#[derive(Debug, Clone, Deserialize)]
pub struct PrunerConfig {
    /// `none`, `median`, `percentile`, `successive_halving`, `hyperband`, `threshold`,
    /// `patient` or `wilcoxon`.
    #[serde(default = "default_pruner")]
    pub kind: String,
    /// Per-kind options tables, e.g. `[pruner.median]`; each pruner checks its own keys.
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        Self {
            kind: default_pruner(),
            options: Default::default(),
        }
    }
}

fn default_pruner() -> String {
    "none".into()
}

/// `[robot]`: how to reach the robot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// Serial device path (e.g. `/dev/ttyACM0`), or `"sim"` to start the simulated robot.
    pub device: String,
    /// Baud rate of a real serial line (ignored by pseudo-terminals).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Wait for a command's answer before resending it, ms.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Resends of an unanswered command before giving up.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// No frame at all from the robot for this long means the link is lost, ms.
    #[serde(default = "default_silence_timeout")]
    pub silence_timeout_ms: u64,
    /// Longest wait for the robot to report Ready (reset done) before an episode, ms.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
    /// Slack on an episode's deadline, ms: an episode whose EpisodeEnd has not come by
    /// `max_steps × step_period × 1.25 + episode_margin_ms` is recovered or run again.
    #[serde(default = "default_episode_margin")]
    pub episode_margin_ms: u64,
    /// After a silence, how long to keep trying the handshake again before giving up, ms.
    #[serde(default = "default_reconnect")]
    pub reconnect_ms: u64,
    /// Hold before every episode until the operator gives the go (`gaittune ctl go`, or the
    /// dashboard's go button): for sessions where a person watches the robot.
    #[serde(default)]
    pub operator_go: bool,
}

/// `[sim]`: the simulated robot the daemon starts when `robot.device = "sim"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Which simulated robot: `synthetic` (analytic landscape, fast, for tests) or
    /// `physics` (a rigid-body quadruped).
    #[serde(default = "default_sim_model")]
    pub model: String,
    /// Extra command-line arguments passed to `gaittune sim` as they are (e.g.
    /// `["--full-params"]`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Robot seed (per-robot variation).
    #[serde(default = "default_one_u64")]
    pub seed: u64,
    /// Noise scale (1 = default realism, 0 = noiseless).
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Wall-clock time per control step, ms (0 = as fast as possible).
    #[serde(default)]
    pub step_delay_ms: f64,
    /// Wall-clock time of the reset between episodes, ms.
    #[serde(default = "default_reset_delay")]
    pub reset_delay_ms: f64,
    /// Host-heartbeat watchdog the simulated firmware enforces, ms.
    #[serde(default = "default_watchdog")]
    pub watchdog_ms: u16,
    /// Write the simulated firmware's protocol events (JSON lines) to this file.
    pub event_log: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: default_sim_model(),
            extra_args: Vec::new(),
            seed: 1,
            noise: default_noise(),
            step_delay_ms: 0.0,
            reset_delay_ms: default_reset_delay(),
            watchdog_ms: default_watchdog(),
            event_log: None,
        }
    }
}

impl SimConfig {
    /// The arguments after `gaittune sim` that the daemon starts the simulated robot with
    /// (the one command line both the start and the up-front check use).
    pub fn sim_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = [
            ("--seed", self.seed.to_string()),
            ("--noise", self.noise.to_string()),
            ("--step-delay-ms", self.step_delay_ms.to_string()),
            ("--reset-delay-ms", self.reset_delay_ms.to_string()),
            ("--watchdog-ms", self.watchdog_ms.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.into(), value.into()])
        .collect();
        args.push("--exit-with-parent".into());
        if let Some(log) = &self.event_log {
            args.push("--event-log".into());
            args.push(log.into());
        }
        if self.model != "synthetic" {
            args.push("--model".into());
            args.push((&self.model).into());
        }
        args.extend(self.extra_args.iter().map(Into::into));
        args
    }
}

/// `[episode]`: what one episode is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeConfig {
    /// Control steps per episode.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Store an intermediate value every this many steps (aligned across trials).
    #[serde(default = "default_report_every")]
    pub report_every: u32,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            max_steps: default_max_steps(),
            report_every: default_report_every(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    study: StudyConfig,
    #[serde(default)]
    sampler: SamplerConfig,
    #[serde(default)]
    pruner: PrunerConfig,
    robot: RobotConfig,
    #[serde(default)]
    sim: Option<SimConfig>,
    #[serde(default)]
    episode: EpisodeConfig,
    #[serde(default)]
    safety: SafetyEnvelope,
    space: toml::Table,
}

fn default_reevaluate_episodes() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
fn default_storage() -> String {
    "sqlite:gaittune.db".into()
}
fn default_direction() -> Direction {
    Direction::Maximize
}
fn default_trials() -> u64 {
    50
}
fn default_one() -> u32 {
    1
}
fn default_one_u64() -> u64 {
    1
}
fn default_sampler() -> String {
    "random".into()
}
fn default_baud() -> u32 {
    115_200
}
fn default_response_timeout() -> u64 {
    250
}
fn default_retries() -> u32 {
    3
}
fn default_silence_timeout() -> u64 {
    2_000
}
fn default_ready_timeout() -> u64 {
    30_000
}
fn default_lease() -> u64 {
    30_000
}
fn default_episode_margin() -> u64 {
    2_000
}
fn default_reconnect() -> u64 {
    10_000
}
fn default_sim_model() -> String {
    "synthetic".into()
}
fn default_noise() -> f64 {
    1.0
}
fn default_reset_delay() -> f64 {
    2.0
}
fn default_watchdog() -> u16 {
    1_000
}
fn default_max_steps() -> u32 {
    200
}
fn default_report_every() -> u32 {
    10
}

/// A configuration that could not be used; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| {
            err(format!(
                "cannot read the config file: {e}. Check the path; ready-made configs are in configs/"
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            err(format!(
                "the config file is not UTF-8 text: byte offset {at} (line {line}) holds 0x{:02x}, which is not valid UTF-8; save the file as UTF-8",
                bytes[at]
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(toml_message(text, &e)))?;
        let space = SearchSpace::from_toml(&raw.space).map_err(|e| {
            // Parsed again with the parameters' types, the error has its place in the file.
            #[derive(Deserialize)]
            struct SpaceOnly {
                #[allow(dead_code)]
                space: crate::space::RawSpace,
            }
            match toml::from_str::<SpaceOnly>(text) {
                Err(typed) => err(toml_message(text, &typed)),
                Ok(_) => {
                    let message = e.to_string();
                    let line = message
                        .strip_prefix("space.")
                        .and_then(|m| m.split_once(':'))
                        .and_then(|(name, _)| key_line(text, &format!("space.{name}"), None));
                    err(match line {
                        Some(line) => format!("{message} (line {line})"),
                        None => message,
                    })
                }
            }
        })?;
        if let Some(sim) = &raw.sim {
            validate_sim(sim, text).map_err(err)?;
        }
        raw.safety.validate().map_err(err)?;
        for (key, value) in &raw.pruner.options {
            if !crate::pruner::KINDS.contains(&key.as_str()) || !value.is_table() {
                return Err(err(format!(
                    "unknown key pruner.{key}: expected kind, or an options table named after a pruner ({})",
                    crate::pruner::KINDS.join(", ")
                )));
            }
        }
        let table = |v: Option<&toml::Value>| v.and_then(|v| v.as_table()).cloned();
        crate::pruner::build(
            &raw.pruner.kind,
            table(raw.pruner.options.get(&raw.pruner.kind)).as_ref(),
        )
        .map_err(|e| err(format!("pruner: {e}")))?;
        crate::sampler::build(
            &raw.sampler.kind,
            0,
            table(raw.sampler.options.get(&raw.sampler.kind)).as_ref(),
        )
        .map_err(|e| err(format!("sampler: {e}")))?;
        for (key, value) in &raw.sampler.options {
            if !crate::sampler::KINDS.contains(&key.as_str()) || !value.is_table() {
                return Err(err(format!(
                    "unknown key sampler.{key}: expected kind, seed, constraints, or an options table named after a sampler ({})",
                    crate::sampler::KINDS.join(", ")
                )));
            }
        }
        if raw.study.name.trim().is_empty() {
            return Err(err("study.name must not be empty".into()));
        }
        if !(1..=MAX_EPISODES_PER_TRIAL).contains(&raw.study.episodes_per_trial) {
            return Err(err(format!(
                "study.episodes_per_trial must be between 1 and {MAX_EPISODES_PER_TRIAL}, got {}",
                raw.study.episodes_per_trial
            )));
        }
        if !(1..=MAX_EPISODE_STEPS).contains(&raw.episode.max_steps) {
            return Err(err(format!(
                "episode.max_steps must be between 1 and {MAX_EPISODE_STEPS} (5.6 hours at 50 Hz), got {}",
                raw.episode.max_steps
            )));
        }
        if raw.episode.report_every == 0 {
            return Err(err("episode.report_every must be at least 1".into()));
        }
        if raw.sim.is_some() && raw.robot.device != SIM_DEVICE {
            return Err(err(format!(
                "[sim] is set but robot.device = {:?}: [sim] only applies with device = \"sim\"; remove it or set device = \"sim\"",
                raw.robot.device
            )));
        }
        if raw.robot.response_timeout_ms == 0 || raw.robot.silence_timeout_ms == 0 {
            return Err(err(
                "robot.response_timeout_ms and robot.silence_timeout_ms must be > 0".into(),
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            study: raw.study,
            sampler: raw.sampler,
            pruner: raw.pruner,
            robot: raw.robot,
            sim: raw.sim.unwrap_or_default(),
            episode: raw.episode,
            safety: raw.safety,
            space,
        })
    }

    /// The options table of the selected sampler, `[sampler.<kind>]`, if present.
    pub fn sampler_options(&self) -> Option<&toml::Table> {
        self.sampler
            .options
            .get(&self.sampler.kind)
            .and_then(|v| v.as_table())
    }

    /// The options table of the selected pruner, `[pruner.<kind>]`, if present.
    pub fn pruner_options(&self) -> Option<&toml::Table> {
        self.pruner
            .options
            .get(&self.pruner.kind)
            .and_then(|v| v.as_table())
    }

    /// Whether the daemon should start the simulated robot itself.
    pub fn uses_sim(&self) -> bool {
        self.robot.device == SIM_DEVICE
    }
}

/// A TOML error as `table.key (line N): what is wrong`, the line and key found from the
/// error's place in `text` (the plain message when it has none).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim_end().replace('\n', "; ");
    for (ty, range) in [
        ("u8", "an integer from 0 to 255"),
        ("u16", "an integer from 0 to 65535"),
        ("u32", "an integer from 0 to 4294967295"),
        ("u64", "an integer >= 0"),
        ("i64", "an integer"),
        ("f64", "a number"),
    ] {
        message = message.replace(&format!("expected {ty}"), &format!("expected {range}"));
    }
    let Some(span) = e.span() else {
        return e.to_string().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let lines: Vec<&str> = text.lines().collect();
    let header = table_header;
    let this = lines.get(line_no - 1).copied().unwrap_or("");
    let key = match header(this) {
        Some(table) => table,
        None => {
            let table = lines[..(line_no - 1).min(lines.len())]
                .iter()
                .rev()
                .find_map(|l| header(l));
            let key = this
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string());
            match (table, key) {
                (Some(t), Some(k)) => format!("{t}.{k}"),
                (None, Some(k)) => k,
                (Some(t), None) => t,
                (None, None) => String::new(),
            }
        }
    };
    if key.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("{key} (line {line_no}): {message}")
    }
}

/// The table a `[table]` (or `[[table]]`) header line names, a trailing comment allowed.
fn table_header(line: &str) -> Option<String> {
    let t = line.split_once('#').map_or(line, |(head, _)| head).trim();
    (t.starts_with('[') && t.ends_with(']'))
        .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_string())
}

/// The line of `key =` in table `[table]` of `text` (of the table's header if `key` is
/// `None`), 1-based.
fn key_line(text: &str, table: &str, key: Option<&str>) -> Option<usize> {
    let mut in_table = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = table_header(l) {
            in_table = name == table;
            if in_table && key.is_none() {
                return Some(i + 1);
            }
        } else if in_table {
            if let (Some(key), Some((k, _))) = (key, t.split_once('=')) {
                if k.trim().trim_matches('"') == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

/// Checks every `[sim]` value as `gaittune sim` would, before anything is started or
/// created; the message names the key and its line.
fn validate_sim(sim: &SimConfig, text: &str) -> Result<(), String> {
    let at = |key: &str| match key_line(text, "sim", Some(key)) {
        Some(line) => format!("sim.{key} (line {line})"),
        None => format!("sim.{key}"),
    };
    use clap::ValueEnum;
    if crate::sim::SimModel::from_str(&sim.model, false).is_err() {
        return Err(format!(
            "{}: unknown model {:?}; expected \"synthetic\" or \"physics\"",
            at("model"),
            sim.model
        ));
    }
    if !sim.noise.is_finite() || sim.noise < 0.0 {
        return Err(format!(
            "{}: must be a finite number >= 0 (1 = default realism, 0 = noiseless), got {}",
            at("noise"),
            sim.noise
        ));
    }
    for (key, v) in [
        ("step_delay_ms", sim.step_delay_ms),
        ("reset_delay_ms", sim.reset_delay_ms),
    ] {
        if !(0.0..=3_600_000.0).contains(&v) {
            return Err(format!(
                "{}: must be a number of milliseconds between 0 and 3600000, got {v}",
                at(key)
            ));
        }
    }
    if sim.watchdog_ms == 0 {
        return Err(format!(
            "{}: must be at least 1 ms (the protocol recommends 200 to 5000)",
            at("watchdog_ms")
        ));
    }
    if let Some(log) = &sim.event_log {
        let dir = log.parent().filter(|d| !d.as_os_str().is_empty());
        if log.is_dir() || dir.is_some_and(|d| !d.is_dir()) {
            return Err(format!(
                "{}: {} is not a file in an existing directory; create the directory or point it elsewhere",
                at("event_log"),
                log.display()
            ));
        }
    }
    // The whole command line the daemon will give `gaittune sim`, as it will parse it.
    #[derive(clap::Parser)]
    struct SimCli {
        #[command(flatten)]
        opts: crate::sim::SimOptions,
    }
    use clap::Parser;
    let mut args = vec![std::ffi::OsString::from("gaittune sim")];
    args.extend(sim.sim_args());
    let parsed = SimCli::try_parse_from(&args).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        format!("{}: {first}", at("extra_args"))
    })?;
    parsed
        .opts
        .validate()
        .map_err(|e| format!("{}: {e}", at("extra_args")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[study]
name = "t"
[robot]
device = "sim"
[space.freq_hz]
type = "float"
low = 0.5
high = 3.0
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.study.storage, "sqlite:gaittune.db");
        assert_eq!(c.episode.max_steps, 200);
        assert!(c.uses_sim());
        assert_eq!(c.sampler.kind, "random");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = GOOD.replace("name = \"t\"", "name = \"t\"\ntrails = 5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("trails"), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(e.starts_with("test.toml"), "{e}");
    }

    #[test]
    fn sizes_are_bounded_with_the_key_named() {
        let text = GOOD.replace("[robot]", "[episode]\nmax_steps = 4000000000\n[robot]");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("episode.max_steps") && e.contains("1000000"),
            "{e}"
        );
        let text = GOOD.replace("name = \"t\"", "name = \"t\"\nepisodes_per_trial = 5000");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("study.episodes_per_trial"), "{e}");
        let text = GOOD.replace("[robot]", "[episode]\nmax_steps = 1000000\n[robot]");
        assert!(parse(&text).is_ok(), "the bound itself is allowed");
    }

    #[test]
    fn low_above_high_is_named() {
        let text = GOOD.replace("high = 3.0", "high = 0.1");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("freq_hz"), "{e}");
    }

    #[test]
    fn unknown_sampler_key_is_named() {
        let text = GOOD.replace("[robot]", "[sampler]\nkindd = \"tpe\"\n[robot]");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("kindd"), "{e}");
    }

    #[test]
    fn missing_file_says_so() {
        let e = Config::load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/x.toml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn sim_table_needs_sim_device() {
        let text =
            GOOD.replace("device = \"sim\"", "device = \"/dev/ttyUSB0\"") + "[sim]\nseed = 3\n";
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("[sim]"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key_and_line() {
        let text = GOOD.replace("low = 0.5", "low = \"text\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("space.freq_hz.low (line 8)") && e.contains("expected a number"),
            "{e}"
        );
        assert!(!e.contains("untagged"), "{e}");
        let text = GOOD.replace("[space", "[episode]\nmax_steps = -3\n[space");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("episode.max_steps (line 7)"), "{e}");
        assert!(e.contains("an integer from 0 to 4294967295"), "{e}");
    }

    #[test]
    fn a_comment_after_a_table_header_does_not_hide_the_table() {
        let text = GOOD.replace("[space", "[episode]   # limits\nmax_steps = -3\n[space");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("episode.max_steps (line 7)"), "{e}");
        let sim = "[sim]  # the simulated robot\nnoise = -1.0\n";
        let e = parse(&format!("{GOOD}{sim}")).unwrap_err().to_string();
        let line = GOOD.lines().count() + 2;
        assert!(e.contains(&format!("sim.noise (line {line})")), "{e}");
    }

    #[test]
    fn invalid_utf8_names_its_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let mut bytes = GOOD.as_bytes().to_vec();
        let at = GOOD.find("\"t\"").unwrap() + 1;
        bytes[at] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("byte offset {at} (line 3)")) && e.contains("0xff"),
            "{e}"
        );
        assert!(!e.contains("Check the path"), "{e}");
    }

    #[test]
    fn every_sim_value_is_checked_naming_its_key() {
        for (line, key) in [
            ("model = \"fizz\"", "sim.model (line 7)"),
            ("noise = -1.0", "sim.noise (line 7)"),
            ("noise = nan", "sim.noise (line 7)"),
            ("step_delay_ms = -5.0", "sim.step_delay_ms (line 7)"),
            ("reset_delay_ms = 1e12", "sim.reset_delay_ms (line 7)"),
            ("watchdog_ms = 0", "sim.watchdog_ms (line 7)"),
            ("watchdog_ms = 70000", "sim.watchdog_ms (line 7)"),
            ("seed = -1", "sim.seed (line 7)"),
            (
                "event_log = \"/nonexistent/dir/e.jsonl\"",
                "sim.event_log (line 7)",
            ),
            (
                "extra_args = [\"--full-params\"]",
                "sim.extra_args (line 7)",
            ),
            ("extra_args = [\"--nope\"]", "sim.extra_args (line 7)"),
            // A flag the daemon already gives from its own key.
            (
                "extra_args = [\"--seed\", \"3\"]",
                "sim.extra_args (line 7)",
            ),
            (
                "extra_args = [\"--quirk\", \"no-such-quirk\"]",
                "sim.extra_args (line 7)",
            ),
        ] {
            let text = GOOD.replace("[space", &format!("[sim]\n{line}\n[space"));
            let e = parse(&text).expect_err(line).to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
        let ok = GOOD.replace(
            "[space",
            "[sim]\nmodel = \"physics\"\nextra_args = [\"--full-params\"]\n[space",
        );
        parse(&ok).unwrap();
    }

    #[test]
    fn shipped_configs_parse() {
        for name in ["sim-quadruped.toml", "robot-example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(name);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
