//! `mlwatch serve`.

use std::path::PathBuf;

use clap::Args;

use crate::dashboard::{Dashboard, server};
use crate::storage::Storage;

/// The dashboard's default address: loopback only.
pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8686";

/// Arguments of `mlwatch serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (for storage.url and its options).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Storage root (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Address to listen on (port 0 picks a free one; the URL is printed).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    let storage = Storage::open_existing(&url, &config.storage.options)?;
    let router = server::router(Dashboard::new(storage), crate::telemetry::handle());
    let (listener, addr) = server::bind(&args.listen).await?;
    println!("http://{addr}/");
    use std::io::Write;
    std::io::stdout().flush()?;
    eprintln!("mlwatch dashboard on {url}: http://{addr}/ (Ctrl-C stops)");
    server::serve(listener, router, super::run::shutdown_signal()).await?;
    Ok(())
}
