//! `mlwatch run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::pipeline::{self, RunControl, StopMode};

/// Arguments of `mlwatch run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML); layered over the embedded defaults.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this long without records, closing every open window
    /// (for backfills and tests), e.g. "10s".
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub until_idle: Option<Duration>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Serve Prometheus `/metrics`, `/health` and the dashboard's pages on
    /// this address while running (e.g. 127.0.0.1:9464; port 0 picks one,
    /// printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    if args.print_config {
        println!("{}", config.to_masked_json());
        return Ok(());
    }
    if let Some(listen) = &args.metrics_listen {
        let handle = crate::telemetry::install()?;
        let storage = crate::storage::Storage::open(&config.storage.url, &config.storage.options)?;
        let router = crate::dashboard::server::router(
            crate::dashboard::Dashboard::new(storage),
            Some(handle),
        );
        let (listener, addr) = crate::dashboard::server::bind(listen).await?;
        eprintln!("metrics: http://{addr}/metrics (dashboard: http://{addr}/)");
        tokio::spawn(async move {
            if let Err(e) =
                crate::dashboard::server::serve(listener, router, std::future::pending()).await
            {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let (tx, rx) = watch::channel(None);
    // Schedules run beside the stream until it stops.
    let (schedules_stop, schedules_rx) = watch::channel(false);
    let schedules = (!config.schedules.is_empty()).then(|| {
        tokio::spawn(crate::backfill::schedule::run_all(
            config.clone(),
            schedules_rx,
        ))
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: draining, writing the checkpoint and committing");
        let _ = tx.send(Some(StopMode::Interrupt));
        // Keep the sender alive so the pipeline sees a stable value.
        std::future::pending::<()>().await;
    });
    let summary = pipeline::run(
        config,
        RunControl {
            stop: rx,
            idle_exit: args.until_idle,
            progress: None,
        },
    )
    .await;
    let _ = schedules_stop.send(true);
    if let Some(s) = schedules {
        s.await??;
    }
    eprintln!("{}", serde_json::to_string(&summary?)?);
    Ok(())
}

pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
