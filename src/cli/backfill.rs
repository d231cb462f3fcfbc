//! `mlwatch backfill` and `mlwatch schedule`.

use std::path::PathBuf;

use clap::Args;

use crate::backfill::jobs::{Job, MANUAL, Outcome};
use crate::backfill::{self, BackfillArgs, Progress};

/// Arguments of `mlwatch backfill`.
#[derive(Debug, Args)]
pub struct BackfillCliArgs {
    /// Configuration file (TOML); layered over the embedded defaults.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start: RFC 3339, `yyyy-mm-dd[THH:MM[:SS]]` (UTC), epoch ms, `now`, or
    /// relative to now (`-1d`, `-6h`). Every window overlapping
    /// [--from, --to) is replaced whole.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from: String,
    /// End (exclusive), as --from.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        default_value = "now"
    )]
    pub to: String,
    /// Only this model (repeatable; default: every declared model).
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
    /// Only this model version: its rows are replaced, other versions' kept
    /// (A/B tables are left alone).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Read this instead of the archive: a folder in the archive's layout
    /// (local or s3://), or JSON-lines files (a path, URL or glob ending in
    /// .jsonl, .json or .ndjson).
    #[arg(long, value_name = "URL|GLOB")]
    pub input: Option<String>,
}

pub(super) async fn run(a: BackfillCliArgs) -> anyhow::Result<()> {
    let config = super::load_config(a.config.as_ref())?;
    let now = chrono::Utc::now().timestamp_millis();
    let args = BackfillArgs {
        from: a.from,
        to: a.to,
        models: a.models,
        version: a.version,
        input: a.input,
        now_ms: now,
    };
    // Arguments are checked before a job is recorded.
    let window_ms = config.window.size.as_millis() as i64;
    backfill::range::Covered::new(
        backfill::range::parse_time(&args.from, now).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        backfill::range::parse_time(&args.to, now).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        window_ms,
        0,
    )
    .map_err(|e| match e {
        crate::Error::Config(why) => {
            anyhow::anyhow!("--from {} --to {}: {why}", args.from, args.to)
        }
        e => e.into(),
    })?;
    let storage = crate::storage::Storage::open(&config.storage.url, &config.storage.options)?;
    let mut job = Job {
        schedule: MANUAL.into(),
        scheduled_ms: now,
        attempt: 1,
        started_ms: now,
        finished_ms: None,
        outcome: Outcome::Running,
        error: None,
        summary: None,
    };
    job.save(&storage).await?;
    let result = backfill::run(&config, &args, Progress::Auto).await;
    job.finished_ms = Some(chrono::Utc::now().timestamp_millis());
    match result {
        Ok(summary) => {
            job.outcome = Outcome::Succeeded;
            job.summary = Some(summary.clone());
            job.save(&storage).await?;
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&summary)?))
        }
        Err(e) => {
            job.outcome = Outcome::Failed;
            job.error = Some(e.to_string());
            job.save(&storage).await?;
            Err(e.into())
        }
    }
}

/// Arguments of `mlwatch schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Configuration file (TOML) with `[[schedules]]`.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run what is due now (a missed or interrupted run included), print
    /// the jobs and exit, instead of running until stopped.
    #[arg(long)]
    pub once: bool,
}

pub(super) async fn schedule(a: ScheduleArgs) -> anyhow::Result<()> {
    let config = super::load_config(a.config.as_ref())?;
    if config.schedules.is_empty() {
        anyhow::bail!(
            "no [[schedules]] in the configuration{}",
            a.config
                .as_ref()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        );
    }
    if a.once {
        let mut passes = Vec::new();
        for s in &config.schedules {
            passes.push(backfill::schedule::run_due(&config, s).await?);
        }
        return super::print_out(&format!("{}\n", serde_json::to_string_pretty(&passes)?));
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::run::shutdown_signal().await;
        let _ = tx.send(true);
        std::future::pending::<()>().await;
    });
    backfill::schedule::run_all(config, rx).await?;
    Ok(())
}
