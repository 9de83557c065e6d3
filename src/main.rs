//! The `gaittune` command: run a tuning study, run the simulated robot, inject faults on its
//! line, export results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gaittune::config::Config;
use gaittune::control::{self, EXIT_INTERRUPTED};
use gaittune::daemon::{self, RunOutcome, RunOverrides};

/// Tunes a quadruped's gait controller on the robot, over a serial line, safely.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// What `run` and `reevaluate` share: which study, and the operator's word on a latched robot.
#[derive(clap::Args)]
struct StudyArgs {
    /// The config file, e.g. configs/sim-quadruped.toml.
    config: PathBuf,
    /// Storage URL, e.g. sqlite:study.db (overrides study.storage).
    #[arg(long)]
    storage: Option<String>,
    /// Study name (overrides study.name).
    #[arg(long)]
    study: Option<String>,
    /// Release a robot found latched stopped (EStop, safety trip, watchdog). Only when you
    /// have checked it is safe to move.
    #[arg(long)]
    release_latch: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run (or continue) a tuning study described by a config file.
    Run {
        #[command(flatten)]
        args: StudyArgs,
        /// Study size in finished trials (overrides study.trials).
        #[arg(long)]
        trials: Option<u64>,
    },
    /// Re-evaluate a study's best trials with more episodes each and report the likely best
    /// by mean return (no new trials).
    Reevaluate {
        #[command(flatten)]
        args: StudyArgs,
        /// How many of the best trials.
        #[arg(long, default_value_t = 3)]
        top: u32,
        /// Episodes per trial.
        #[arg(long, default_value_t = 3)]
        episodes: u32,
    },
    /// Run the simulated robot: the firmware side of the protocol on a pseudo-terminal.
    Sim(gaittune::sim::SimOptions),
    /// A fault-injecting proxy between a host and a robot: drops, duplicates, corrupts,
    /// delays and reorders frames, stalls the line, reboots the robot.
    #[command(after_help = gaittune::chaos::FAULT_HELP)]
    Chaos(gaittune::chaos::ChaosOptions),
    /// Print a study's trials as JSON or CSV.
    Export {
        /// Storage URL, e.g. sqlite:gaittune.db.
        #[arg(long)]
        storage: String,
        /// Study name.
        #[arg(long)]
        study: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// Runs the daemon on a study; `reevaluate` = (top, episodes) forces a re-evaluation pass.
fn run_study(
    args: StudyArgs,
    trials: Option<u64>,
    reevaluate: Option<(u32, u32)>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let interrupts = control::install()?;
    let outcome = daemon::run(
        config,
        RunOverrides {
            trials,
            storage: args.storage,
            study: args.study,
            release_latch: args.release_latch,
            reevaluate_top: reevaluate.map(|r| r.0),
            reevaluate_episodes: reevaluate.map(|r| r.1),
        },
        interrupts,
    )?;
    Ok(match outcome {
        RunOutcome::Finished => ExitCode::SUCCESS,
        RunOutcome::Interrupted => ExitCode::from(EXIT_INTERRUPTED as u8),
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GAITTUNE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gaittune: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run { args, trials } => run_study(args, trials, None),
        Cmd::Reevaluate {
            args,
            top,
            episodes,
        } => run_study(args, Some(0), Some((top, episodes))),
        Cmd::Sim(opts) => {
            gaittune::sim::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos(opts) => {
            gaittune::chaos::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            storage,
            study,
            format,
        } => {
            let text =
                gaittune::export::export_study(&storage, &study, matches!(format, Format::Csv))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
