//! `mlwatch baseline`: training profiles kept with registry versions.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::event::ModelCatalog;
use crate::monitor::baseline;
use crate::registry::ModelRegistry;
use crate::storage::Storage;

/// Arguments of `mlwatch baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Storage root (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL", global = true)]
    pub data: Option<String>,
    /// Configuration file (the model's declared columns, storage).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The baseline command.
    #[command(subcommand)]
    pub command: BaselineCommand,
}

/// Baseline commands.
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Profile training data once and record the profile on a registry
    /// version (tag `baseline_profile`); `mlwatch run` then tests that
    /// version's windows against it. Prints the profile as JSON.
    Build {
        /// Model (declared in the config and registered in the registry).
        #[arg(long)]
        model: String,
        /// Registry version of the model.
        #[arg(long)]
        version: u64,
        /// Training data: Parquet, CSV or JSON lines (path, file:// or s3://).
        #[arg(long, value_name = "FILE")]
        input: String,
    },
}

pub(super) async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    match args.command {
        BaselineCommand::Build {
            model,
            version,
            input,
        } => {
            let catalog = ModelCatalog::from_config(&config);
            let Some(m) = catalog.index(&model) else {
                anyhow::bail!(
                    "--model {model}: not declared in the configuration (declared: {})",
                    catalog
                        .models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let storage = Storage::open(&url, &config.storage.options)?;
            let registry = ModelRegistry::new(storage.clone())
                .with_snapshot_every(config.registry.snapshot_every);
            registry
                .get_model(&model, &crate::registry::Selector::Version(version))
                .await
                .with_context(|| format!("--model {model} --version {version}"))?;
            let built = baseline::build(
                &storage,
                baseline::BuildRequest {
                    model: &model,
                    version,
                    location: &input,
                    columns: &catalog.models[m].columns,
                    options: &config.storage.options,
                    sample_size: config.baseline.sample_size,
                    max_categories: config.window.max_categories,
                },
            )
            .await
            .with_context(|| format!("--input {input}"))?;
            registry
                .set_tag(&model, version, baseline::TAG, Some(&built.path))
                .await?;
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&built)?))
        }
    }
}
