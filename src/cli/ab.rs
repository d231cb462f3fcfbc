//! `mlwatch ab`: A/B(/n) experiments declared in the configuration.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::ab::Experiment;
use crate::registry::{ModelRegistry, Selector};
use crate::storage::Storage;

/// Arguments of `mlwatch ab`.
#[derive(Debug, Args)]
pub struct AbArgs {
    /// Configuration file (its `[experiments.NAME]` tables).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Storage root (path or URL) of the registry the variants' versions are
    /// checked against; defaults to storage.url of the config.
    #[arg(long, value_name = "URL", global = true)]
    pub data: Option<String>,
    /// The experiment command.
    #[command(subcommand)]
    pub command: AbCommand,
}

/// Experiment commands.
#[derive(Debug, Subcommand)]
pub enum AbCommand {
    /// Every experiment, one JSON object per line, after checking that each
    /// variant's model version is in the registry.
    List,
    /// One experiment as JSON: variants with their bucket ranges, metrics,
    /// MDE, alpha, power.
    Show {
        /// Experiment name.
        experiment: String,
    },
    /// The variant of each unit id (arguments, or one per line on stdin),
    /// one JSON object per line: the deterministic bucket of (salt, unit id)
    /// and the variant owning it (see README: reproducible in any language).
    Assign {
        /// Experiment name.
        experiment: String,
        /// Unit ids; none: read them from stdin, one per line.
        unit_ids: Vec<String>,
    },
    /// The experiment's current decision with the numbers behind it, its
    /// cumulative results against the control and its decisions over time,
    /// from the `ab_decisions` and `ab_results` tables.
    Report {
        /// Experiment name.
        experiment: String,
        /// Output format; html is one self-contained page (inline SVG
        /// charts of each variant's effect with its intervals over time).
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Formats of `mlwatch ab report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned text.
    Text,
    /// The report as JSON.
    Json,
    /// A self-contained HTML page.
    Html,
}

pub(super) async fn run(args: AbArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let find = |name: &str| -> anyhow::Result<Experiment> {
        match config.experiments.get(name) {
            Some(e) => Ok(Experiment::from_config(name, e)),
            None => anyhow::bail!(
                "experiment `{name}` is not declared (declared: {})",
                if config.experiments.is_empty() {
                    "none; add an [experiments.NAME] table".to_string()
                } else {
                    config
                        .experiments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        }
    };
    match args.command {
        AbCommand::List => {
            let url = args.data.clone().unwrap_or(config.storage.url.clone());
            let registry = ModelRegistry::new(Storage::open(&url, &config.storage.options)?);
            let mut out = String::new();
            for e in Experiment::all(&config) {
                check_versions(&registry, &e).await?;
                out.push_str(&serde_json::to_string(&e)?);
                out.push('\n');
            }
            super::print_out(&out)
        }
        AbCommand::Show { experiment } => {
            let e = find(&experiment)?;
            let url = args.data.clone().unwrap_or(config.storage.url.clone());
            let registry = ModelRegistry::new(Storage::open(&url, &config.storage.options)?);
            check_versions(&registry, &e).await?;
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&e)?))
        }
        AbCommand::Report {
            experiment,
            format,
            out,
        } => {
            let url = args.data.clone().unwrap_or(config.storage.url.clone());
            let storage = Storage::open(&url, &config.storage.options)?;
            let ctx = crate::query::new_context(Default::default());
            crate::query::register_tables(&ctx, &storage)?;
            let report = crate::ab::report::build(&ctx, &experiment).await?;
            let body = match format {
                ReportFormat::Text => crate::ab::report::text(&report),
                ReportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
                ReportFormat::Html => crate::ab::report::html(&report)?,
            };
            match out {
                Some(path) => std::fs::write(&path, body)
                    .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display())),
                None => super::print_out(&body),
            }
        }
        AbCommand::Assign {
            experiment,
            unit_ids,
        } => {
            let e = find(&experiment)?;
            let mut out = String::new();
            let mut emit = |id: &str| -> anyhow::Result<()> {
                out.push_str(&serde_json::to_string(&e.assign(id))?);
                out.push('\n');
                if out.len() > 1 << 16 {
                    super::print_out(&std::mem::take(&mut out))?;
                }
                Ok(())
            };
            if unit_ids.is_empty() {
                for line in std::io::stdin().lock().lines() {
                    let line = line?;
                    let id = line.trim_end_matches('\r');
                    if !id.is_empty() {
                        emit(id)?;
                    }
                }
            } else {
                for id in &unit_ids {
                    emit(id)?;
                }
            }
            super::print_out(&out)
        }
    }
}

/// Fails naming the variant whose model version the registry does not have.
async fn check_versions(registry: &ModelRegistry, e: &Experiment) -> anyhow::Result<()> {
    for arm in &e.arms {
        let v = arm.version.trim_start_matches('v');
        let Ok(n) = v.parse::<u64>() else {
            anyhow::bail!(
                "experiments.{}.variants: version `{}` of `{}` is not a registry version number",
                e.name,
                arm.version,
                arm.name
            );
        };
        if let Err(err) = registry.get_model(&e.model, &Selector::Version(n)).await {
            anyhow::bail!(
                "experiments.{}.variants: version {} of `{}` is not in the registry ({err}); register it with `mlwatch registry register {}`",
                e.name,
                arm.version,
                arm.name,
                e.model
            );
        }
    }
    Ok(())
}
