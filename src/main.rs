//! The `gaittune` command: run a tuning study, run the simulated robot, inject faults on its
//! line, export results.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gaittune::config::Config;
use gaittune::control::{self, Interrupts};
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
    /// Serve the operator's control socket here (default: in the runtime directory, named
    /// after the study; the path is printed at start). `gaittune ctl` talks to it.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Write every trial and robot event (steps included) as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Serve the live dashboard (telemetry, history, STOP and the other controls) here, e.g.
    /// 127.0.0.1:8080 (port 0: any free one); open the URL it prints, token included.
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<std::net::SocketAddr>,
    /// Allow --dashboard on an address other hosts can reach (anyone with the printed URL
    /// can then operate the robot).
    #[arg(long, requires = "dashboard")]
    dashboard_public: bool,
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
        /// Run N simulated robots on the study at once, each a daemon of its own (as N
        /// daemons started by hand on the same storage would be).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        workers: Option<u32>,
        /// Set by --workers for each of its daemons.
        #[arg(long, hide = true)]
        worker_index: Option<u32>,
        /// Run the simulated robot at wall-clock speed (20 ms per step, a 1.5 s reset), as a
        /// hardware session would: for rehearsing a session with the operator's controls.
        #[arg(long)]
        realtime: bool,
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
    /// Check a firmware (or the simulator) against SPEC.md, frame by frame: prints one row per
    /// check and leaves the robot latched stopped. Exit 0 all passed, 1 a check failed, 2 the
    /// checks could not run.
    Probe(gaittune::probe::ProbeOptions),
    /// A fault-injecting proxy between a host and a robot: drops, duplicates, corrupts,
    /// delays and reorders frames, stalls the line, reboots the robot.
    #[command(after_help = gaittune::chaos::FAULT_HELP)]
    Chaos(gaittune::chaos::ChaosOptions),
    /// Operate a running `gaittune run` from another terminal: status, stop, release, pause,
    /// resume, skip, fail, enqueue, go.
    Ctl(gaittune::control::ctl::CtlOptions),
    /// List the studies of a storage (read-only), or delete or copy one.
    Studies {
        /// Storage URL, e.g. sqlite:gaittune.db.
        #[arg(long)]
        storage: String,
        #[command(subcommand)]
        action: Option<StudiesCmd>,
    },
    /// Bring an Optuna study (a journal file, or an RDB SQLite file) into a new gaittune
    /// study: its trials as they finished, or their parameter sets enqueued to run.
    Import {
        /// The Optuna file: a JournalStorage file or an RDB SQLite file.
        file: PathBuf,
        /// Storage URL of the gaittune study to create, e.g. sqlite:gaittune.db.
        #[arg(long)]
        storage: String,
        /// Name of the gaittune study (default: the Optuna study's).
        #[arg(long)]
        study: Option<String>,
        /// Which Optuna study of the file (needed when it holds several).
        #[arg(long)]
        from_study: Option<String>,
        /// `finished`: trials keep their states and values; `enqueued`: their parameter sets
        /// become WAITING trials, to run on the robot.
        #[arg(long = "as", value_enum, default_value_t = ImportMode::Finished)]
        mode: ImportMode,
    },
    /// Write a study's report: one self-contained HTML file (history, intermediate values,
    /// parallel coordinates, importances, slice plots, baseline against best, the best gait).
    Report {
        /// Storage URL, e.g. sqlite:gaittune.db (opened read-only).
        #[arg(long)]
        storage: String,
        /// Study name.
        #[arg(long)]
        study: String,
        /// Where to write the HTML file.
        #[arg(short, long, value_name = "FILE", default_value = "report.html")]
        out: PathBuf,
    },
    /// Print a study's trials as JSON, CSV or an Optuna journal file.
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
    worker_index: Option<u32>,
    realtime: bool,
    interrupts: Interrupts,
) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config)?;
    if reevaluate.is_some() {
        // Re-evaluating needs a study with trials: never create one (nor its storage).
        let url = args.storage.as_deref().unwrap_or(&config.study.storage);
        let name = args.study.as_deref().unwrap_or(&config.study.name);
        let shown = gaittune::storage::shown_url(url);
        let no_file = gaittune::storage::sqlite_path(url)
            .is_some_and(|path| !std::path::Path::new(path).exists());
        let found = if no_file {
            None
        } else {
            gaittune::storage::open_read_only(url)
                .and_then(|s| s.load_study(name))
                .with_context(|| format!("re-evaluating study '{name}' in {shown}"))?
        };
        if found.is_none() {
            anyhow::bail!(
                "there is no study '{name}' in {shown}, so nothing to re-evaluate: run `gaittune run {}` first, or give the study's --storage and --study",
                args.config.display()
            );
        }
    }
    if realtime {
        if !config.uses_sim() {
            anyhow::bail!("--realtime slows the simulated robot to wall-clock speed; a real robot runs in real time already (remove --realtime)");
        }
        if !config.sim.extra_args.iter().any(|a| a == "--realtime") {
            config.sim.extra_args.push("--realtime".into());
        }
        config.sim.reset_delay_ms = config.sim.reset_delay_ms.max(1500.0);
    }
    let stopped_by = interrupts.clone();
    let outcome = daemon::run(
        config,
        RunOverrides {
            trials,
            storage: args.storage,
            study: args.study,
            release_latch: args.release_latch,
            reevaluate_top: reevaluate.map(|r| r.0),
            reevaluate_episodes: reevaluate.map(|r| r.1),
            worker_index,
            control: daemon::ControlOptions {
                socket: args.control,
                events: args.events,
                dashboard: args.dashboard,
                dashboard_public: args.dashboard_public,
            },
        },
        interrupts,
    )?;
    Ok(match outcome {
        RunOutcome::Finished => ExitCode::SUCCESS,
        RunOutcome::Interrupted => ExitCode::from(stopped_by.exit_code() as u8),
    })
}

/// What `gaittune studies` does besides listing.
#[derive(Subcommand)]
enum StudiesCmd {
    /// Delete a study and all its trials (asks first).
    Delete {
        /// The study's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Copy a study, with all its trials, to another storage (or under another name).
    Copy {
        /// The study's name.
        name: String,
        /// The storage to copy it to, e.g. postgresql://user@host/db.
        #[arg(long)]
        to: String,
        /// The copy's name (default: the same).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
    },
}

/// `gaittune studies`.
fn studies(storage: &str, action: Option<StudiesCmd>) -> anyhow::Result<ExitCode> {
    let shown = gaittune::storage::shown_url(storage);
    match action {
        None => {
            let listed = gaittune::admin::list(storage)?;
            gaittune::out!("{}", gaittune::admin::table(&listed));
        }
        Some(StudiesCmd::Delete { name, yes }) => {
            if !yes
                && !confirm(&format!(
                    "delete study '{name}' and all its trials from {shown}?"
                ))?
            {
                gaittune::outln!("nothing deleted");
                return Ok(ExitCode::FAILURE);
            }
            let n = gaittune::admin::delete(storage, &name)?;
            gaittune::outln!("deleted study '{name}' ({n} trials) from {shown}");
        }
        Some(StudiesCmd::Copy { name, to, as_name }) => {
            let n = gaittune::admin::copy(storage, &name, &to, as_name.as_deref())?;
            gaittune::outln!(
                "copied study '{name}' ({n} trials) to {} as '{}'",
                gaittune::storage::shown_url(&to),
                as_name.as_deref().unwrap_or(&name)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `question` on the terminal; only "y" or "yes" agrees. Without a terminal, refuses
/// and says to pass --yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} Not asking without a terminal: pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `gaittune export --format`.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Every trial with everything stored about it, as a JSON array.
    Json,
    /// One row per trial, columns as Optuna's trials_dataframe().
    Csv,
    /// Optuna's JournalStorage file: `optuna-dashboard study.log`, or
    /// `optuna.storages.JournalStorage(JournalFileBackend("study.log"))`.
    OptunaJournal,
}

/// How `gaittune import` brings trials in.
#[derive(Clone, Copy, ValueEnum)]
enum ImportMode {
    /// As they finished in Optuna.
    Finished,
    /// Their parameter sets as WAITING trials.
    Enqueued,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // First, while this is the only thread: every thread started later inherits the mask.
    let interrupts = match cli.command {
        Cmd::Run { .. } | Cmd::Reevaluate { .. } | Cmd::Probe(_) => {
            let then = match cli.command {
                Cmd::Probe(_) => "finishing with a last EStop",
                _ => "saving the study and re-queueing the trial in flight",
            };
            match control::install(then) {
                Ok(interrupts) => Some(interrupts),
                Err(e) => {
                    eprintln!("gaittune: error: setting up signal handling: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Cmd::Sim(_)
        | Cmd::Chaos(_)
        | Cmd::Ctl(_)
        | Cmd::Studies { .. }
        | Cmd::Report { .. }
        | Cmd::Import { .. }
        | Cmd::Export { .. } => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            // GAITTUNE_LOG first, then the convention RUST_LOG, then warnings only.
            tracing_subscriber::EnvFilter::try_from_env("GAITTUNE_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command, interrupts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gaittune: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, "outer: inner", leaving out a cause its parent's message already
/// quotes.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut parent = String::new();
    for cause in e.chain() {
        let line = cause.to_string();
        if !parent.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        parent = line;
    }
    text
}

/// This process's arguments after `run`, without `--workers N`: what each worker gets.
fn run_args_without_workers() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip_while(|a| a != "run").skip(1);
    while let Some(a) = args.next() {
        if a == "--workers" {
            args.next();
        } else if !a.starts_with("--workers=") {
            out.push(a);
        }
    }
    out
}

/// Runs `cmd`; `interrupts` is the signal handling `main` installed for `run` and
/// `reevaluate`.
fn execute(cmd: Cmd, interrupts: Option<Interrupts>) -> anyhow::Result<ExitCode> {
    let installed = || interrupts.context("signal handling was not installed");
    match cmd {
        Cmd::Run {
            args,
            workers: Some(workers),
            worker_index: None,
            ..
        } if workers > 1 => {
            let interrupts = installed()?;
            let config = Config::load(&args.config)?;
            let fleet = daemon::fleet::FleetArgs {
                run_args: run_args_without_workers(),
            };
            let code = daemon::fleet::run_workers(&config, &fleet, workers, &interrupts)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Run {
            args,
            trials,
            worker_index,
            realtime,
            ..
        } => run_study(args, trials, None, worker_index, realtime, installed()?),
        Cmd::Reevaluate {
            args,
            top,
            episodes,
        } => run_study(
            args,
            Some(0),
            Some((top, episodes)),
            None,
            false,
            installed()?,
        ),
        Cmd::Sim(opts) => {
            // Started by the daemon, the simulated robot inherits its blocked stop signals.
            control::unblock_stop_signals().context("unblocking the stop signals")?;
            gaittune::sim::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe(opts) => {
            let interrupts = installed()?;
            let report = gaittune::probe::run(&opts, interrupts.clone());
            if opts.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            Ok(ExitCode::from(
                if report.exit_code == gaittune::probe::EXIT_INTERRUPTED {
                    interrupts.exit_code() as u8
                } else {
                    report.exit_code
                },
            ))
        }
        Cmd::Chaos(opts) => {
            gaittune::chaos::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ctl(opts) => Ok(ExitCode::from(gaittune::control::ctl::run(&opts)? as u8)),
        Cmd::Studies { storage, action } => studies(&storage, action),
        Cmd::Import {
            file,
            storage,
            study,
            from_study,
            mode,
        } => {
            use gaittune::optuna::import;
            let source =
                import::read_file(&file, from_study.as_deref()).map_err(anyhow::Error::msg)?;
            let name = study.unwrap_or_else(|| source.name.clone());
            let target = gaittune::storage::open(&storage).with_context(|| {
                format!("opening storage {}", gaittune::storage::shown_url(&storage))
            })?;
            let mode = match mode {
                ImportMode::Finished => import::ImportAs::Finished,
                ImportMode::Enqueued => import::ImportAs::Enqueued,
            };
            let (imported, skipped) =
                import::import_into(&*target, &name, &source, mode).map_err(anyhow::Error::msg)?;
            println!(
                "imported {imported} trials of Optuna study '{}' from {} into study '{name}' ({}){}",
                source.name,
                file.display(),
                gaittune::storage::shown_url(&storage),
                if skipped > 0 {
                    format!("; {skipped} trials without every parameter of the space skipped")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report {
            storage,
            study,
            out,
        } => {
            let html = gaittune::report::build(&storage, &study)?;
            std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            println!("report of study '{study}' written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            storage,
            study,
            format,
        } => {
            let format = match format {
                Format::Json => gaittune::export::ExportFormat::Json,
                Format::Csv => gaittune::export::ExportFormat::Csv,
                Format::OptunaJournal => gaittune::export::ExportFormat::OptunaJournal,
            };
            let text = gaittune::export::export_study(&storage, &study, format)?;
            print_export(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints an export. A reader that stopped early (`| head`) is not an error; any other
/// failure to deliver the export is.
fn print_export(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the export to standard output"),
    }
}
