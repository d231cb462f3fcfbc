//! `mlwatch report`.

use std::path::PathBuf;

use clap::Args;

use crate::dashboard::Dashboard;
use crate::dashboard::report::ReportScope;
use crate::storage::Storage;

/// Arguments of `mlwatch report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Configuration file (for storage.url and its options).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Storage root (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Only this model (repeatable; default: every model with results).
    #[arg(long, value_name = "NAME")]
    pub model: Vec<String>,
    /// Only this experiment (repeatable; default: every experiment).
    #[arg(long, value_name = "NAME")]
    pub experiment: Vec<String>,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub(super) async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    let storage = Storage::open_existing(&url, &config.storage.options)?;
    let scope = ReportScope {
        models: args.model,
        experiments: args.experiment,
    };
    let (html, held) = Dashboard::new(storage).report_of(&scope).await?;
    std::fs::write(&args.out, &html)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", args.out.display()))?;
    super::print_out(&format!(
        "{}\n",
        serde_json::json!({"out": args.out.display().to_string(), "bytes": html.len(), "models": held.models, "experiments": held.experiments})
    ))?;
    Ok(())
}
