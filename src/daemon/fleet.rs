//! `gaittune run CONFIG --workers N`: N simulated robots on one study. Each worker is a
//! daemon of its own (a child process `gaittune run CONFIG --worker-index i`, with its own
//! simulated robot, seed `sim.seed + i`), exactly as N daemons started by hand would be:
//! they share the study only through its storage and the trial leases. This process prints
//! their progress prefixed `[w<i>]`, passes stop signals on, and exits with the worst status.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::control::Interrupts;

/// How the workers are started: the arguments every child gets besides `--worker-index`.
#[derive(Debug, Clone, Default)]
pub struct FleetArgs {
    /// Arguments after `run` that every worker gets (the config path, `--storage`, ...).
    pub run_args: Vec<String>,
}

/// Starts `workers` daemons on the study of `config` and waits for them; returns the exit
/// status to end with (0 when every worker finished its part).
pub fn run_workers(
    config: &Config,
    args: &FleetArgs,
    workers: u32,
    interrupts: &Interrupts,
) -> Result<i32> {
    if !config.uses_sim() {
        bail!(
            "{}: --workers starts simulated robots (robot.device = \"sim\"); for real robots run one daemon per robot, each with its own config, all pointing at the same storage URL",
            config.path.display()
        );
    }
    let exe = std::env::current_exe().context("finding the gaittune executable")?;
    let mut children: Vec<Child> = Vec::new();
    let mut printers = Vec::new();
    for i in 0..workers {
        let mut child = Command::new(&exe)
            .arg("run")
            .args(&args.run_args)
            .args(["--worker-index", &i.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        printers.push(std::thread::spawn(move || prefix_lines(i, out, false)));
        printers.push(std::thread::spawn(move || prefix_lines(i, err, true)));
        children.push(child);
    }
    outln!("{workers} workers on study '{}'", config.study.name);
    let mut statuses = vec![None; children.len()];
    let mut forwarded = false;
    while statuses.iter().any(Option::is_none) {
        if interrupts.requested() && !forwarded {
            // A terminal's Ctrl-C reaches every worker already; a signal sent to this
            // process alone is passed on.
            if let Some(signal) = interrupts.signal() {
                for c in &children {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
                }
            }
            forwarded = true;
        }
        for (c, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = c.try_wait().context("waiting for a worker")?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in printers {
        let _ = p.join();
    }
    if interrupts.requested() {
        return Ok(interrupts.exit_code());
    }
    let failed: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.filter(|s| !s.success())
                .map(|s| format!("worker {i} ({s})"))
        })
        .collect();
    if failed.is_empty() {
        Ok(0)
    } else {
        let _ = writeln!(std::io::stderr(), "gaittune: {} failed", failed.join(", "));
        Ok(statuses
            .iter()
            .flatten()
            .filter_map(|s| s.code())
            .find(|&c| c != 0)
            .unwrap_or(1))
    }
}

/// Copies a worker's output, line by line, with its `[w<i>]` prefix.
fn prefix_lines(i: u32, stream: impl Read, to_stderr: bool) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if to_stderr {
            let _ = writeln!(std::io::stderr(), "[w{i}] {line}");
        } else {
            outln!("[w{i}] {line}");
        }
    }
}
