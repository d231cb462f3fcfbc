//! Command-line interface (clap). One file per command group.

mod ab;
mod backfill;
mod baseline;
mod demo;
pub mod registry;
mod report;
mod run;
mod runs;
mod serve;
mod sql;
mod sql_shell;
mod stats;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Kafka-native monitoring of ML models: drift, A/B tests, registry, tracking.
#[derive(Debug, Parser)]
#[command(name = "mlwatch", version, about, long_about = None)]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace). MLWATCH_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The tracing filter implied by `-v`.
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "mlwatch=info,warn",
            1 => "mlwatch=debug,info",
            _ => "trace",
        }
    }
}

/// mlwatch commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume events from Kafka and write windowed drift results (long-running; Ctrl-C drains and exits).
    Run(run::RunArgs),
    /// Run SQL over the drift, registry and tracking tables (listed in `sql --help`).
    #[command(after_help = sql::tables_help())]
    Sql(sql::SqlArgs),
    /// Run the whole pipeline on an in-process Kafka broker with synthetic data.
    Demo(demo::DemoArgs),
    /// Statistical tests on files (CSV, Parquet, JSON lines, or one value per line).
    Stats(stats::StatsArgs),
    /// Training profiles kept with registry versions (the subcommands are listed from the parser).
    #[command(about = listing::<baseline::BaselineCommand>("Baselines"))]
    Baseline(baseline::BaselineArgs),
    /// Model registry (the subcommands are listed from the parser).
    #[command(about = listing::<registry::RegistryCommand>("Model registry"))]
    Registry(registry::RegistryArgs),
    /// Experiment tracking (the subcommands are listed from the parser).
    #[command(about = listing::<runs::RunsCommand>("Experiment tracking"))]
    Runs(runs::RunsArgs),
    /// Serve the dashboard: pages per model, experiment, the registry and
    /// tracked runs, `/health`; reads the tables `sql` reads.
    Serve(serve::ServeArgs),
    /// Write the dashboard's pages as one self-contained HTML file.
    Report(report::ReportArgs),
    /// Re-run archived or exported events through the evaluators, replacing
    /// the results of the windows they cover.
    Backfill(backfill::BackfillCliArgs),
    /// Run the `[[schedules]]` of the configuration (backfills on cron).
    Schedule(backfill::ScheduleArgs),
    /// A/B(/n) experiments (the subcommands are listed from the parser).
    #[command(about = listing::<ab::AbCommand>("A/B experiments"))]
    Ab(ab::AbArgs),
}

/// `what: a, b, c` with the names of every subcommand of `S`, so that a
/// group's one-line help cannot miss a command added later.
fn listing<S: clap::Subcommand>(what: &str) -> String {
    let group = S::augment_subcommands(clap::Command::new("group"));
    let names: Vec<&str> = group.get_subcommands().map(|c| c.get_name()).collect();
    format!("{what}: {}", names.join(", "))
}

/// Runs the parsed command.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a).await,
        Command::Sql(a) => sql::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Stats(a) => stats::run(a).await,
        Command::Registry(a) => registry::run(a).await,
        Command::Baseline(a) => baseline::run(a).await,
        Command::Runs(a) => runs::run(a).await,
        Command::Ab(a) => ab::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Report(a) => report::run(a).await,
        Command::Backfill(a) => backfill::run(a).await,
        Command::Schedule(a) => backfill::schedule(a).await,
    }
}

/// Writes command output to stdout; a closed pipe (`| head`) ends the
/// output quietly instead of panicking.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Rows of cells as left-aligned text columns, two spaces apart.
pub(crate) fn align(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}

/// Loads the config from an optional file (shared by commands); a missing
/// file is named as the `--config` argument.
pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<crate::Config> {
    if let Some(p) = path {
        input_file("--config", p)?;
    }
    Ok(crate::Config::load(path.map(|p| p.as_path()))?)
}

/// Checks that the file argument `arg` (a flag such as `--config`, or a
/// positional's name such as `<FILE>`, as the usage line shows it) names a
/// file, so that the error says which argument was wrong.
pub(crate) fn input_file(arg: &str, path: &Path) -> anyhow::Result<()> {
    if input_path(arg, path)?.is_dir() {
        anyhow::bail!("{arg} {}: is a folder, not a file", path.display());
    }
    Ok(())
}

/// As [`input_file`], for an argument that may be a file or a folder.
pub(crate) fn input_path(arg: &str, path: &Path) -> anyhow::Result<std::fs::Metadata> {
    std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("{arg} {}: no such file or folder", path.display())
        } else {
            anyhow::Error::new(e).context(format!("{arg} {}", path.display()))
        }
    })
}
