//! `gaittune ctl`: the operator's commands to a running `gaittune run`, from another
//! terminal, over its control socket.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use super::commands::{Command, Reply};
use super::socket;

/// `gaittune ctl [--control PATH] COMMAND`.
#[derive(Debug, clap::Args)]
pub struct CtlOptions {
    /// The daemon's control socket (printed by `gaittune run` at start). Default: the only
    /// one in the runtime directory.
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,
    /// Print the whole answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// An operator command, as typed.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// The daemon's status as JSON: the trial in flight, its parameters, episode and step,
    /// the last telemetry, the robot's state, the best so far, counts, what it waits for.
    Status,
    /// EStop now (latched); the trial in flight is re-queued; the daemon waits for `release`.
    Stop,
    /// ClearEStop after your check of the robot; the study goes on.
    Release,
    /// Pause after the trial in flight (`--now`: abort the episode and re-queue the trial).
    Pause {
        /// Abort the episode in flight and re-queue its trial.
        #[arg(long)]
        now: bool,
    },
    /// End a pause.
    Resume,
    /// Abort the trial in flight; it is recorded PRUNED with the reason `operator` (not as
    /// unsafe).
    Skip,
    /// Your verdict on a finished trial: FAIL, or (`--unsafe`) a constraint violation the
    /// sampler learns from, like a safety stop.
    Fail {
        /// The trial's number.
        trial: u64,
        /// The trial was unsafe (e.g. the robot scraped a leg without tripping a limit).
        #[arg(long = "unsafe")]
        unsafe_: bool,
        /// What you saw, kept with the trial.
        #[arg(long)]
        note: Option<String>,
    },
    /// Run this parameter set next: a JSON or TOML file of name = value (checked against the
    /// search space and the robot's limits first).
    Enqueue {
        /// The parameter file (`.json` or `.toml`; `-` reads JSON from standard input).
        params: PathBuf,
    },
    /// The operator's go for the next episode (with `[robot] operator_go = true`).
    Go,
}

/// Runs `gaittune ctl`; returns the exit status (0: done, 1: the daemon refused).
pub fn run(options: &CtlOptions) -> Result<i32> {
    let command = match &options.command {
        CtlCommand::Status => Command::Status,
        CtlCommand::Stop => Command::Stop,
        CtlCommand::Release => Command::Release,
        CtlCommand::Pause { now } => Command::Pause { now: *now },
        CtlCommand::Resume => Command::Resume,
        CtlCommand::Skip => Command::Skip,
        CtlCommand::Fail {
            trial,
            unsafe_,
            note,
        } => Command::Fail {
            trial: *trial,
            unsafe_: *unsafe_,
            note: note.clone(),
        },
        CtlCommand::Enqueue { params } => Command::Enqueue {
            params: read_params(params)?,
        },
        CtlCommand::Go => Command::Go,
    };
    let path = socket::choose(options.control.as_deref()).map_err(|e| anyhow!(e))?;
    let reply = socket::send(&path, &command).with_context(|| {
        format!(
            "no answer on the control socket {} (is the run still going?)",
            path.display()
        )
    })?;
    print_reply(&reply, &command, options.json)?;
    Ok(if reply.ok { 0 } else { 1 })
}

fn print_reply(reply: &Reply, command: &Command, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reply)?);
    } else if *command == Command::Status {
        println!("{}", serde_json::to_string_pretty(&reply.status)?);
    } else if reply.ok {
        println!("{}", reply.message);
    } else {
        eprintln!("gaittune ctl: refused: {}", reply.message);
    }
    Ok(())
}

/// Reads a parameter set: a JSON object, or a TOML table, of name = value.
fn read_params(path: &Path) -> Result<Map<String, Value>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading parameters from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let value: Value = if is_toml {
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{}: not a TOML table of name = value", path.display()))?;
        serde_json::to_value(table)?
    } else {
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a JSON object of name: value (name a .toml file for TOML)",
                path.display()
            )
        })?
    };
    match value {
        Value::Object(map) => Ok(map),
        other => bail!(
            "{}: expected an object of parameter name → value, found {other}",
            path.display()
        ),
    }
}
