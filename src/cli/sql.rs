//! `mlwatch sql`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use datafusion::arrow::array::RecordBatch;

use crate::query;
use crate::storage::Storage;

/// Output formats of `mlwatch sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
}

/// Arguments of `mlwatch sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL statement (the tables are listed below).
    pub query: String,
    /// Storage root to query (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Configuration file (for storage.url and its options).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub(super) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.unwrap_or(config.storage.url.clone());
    // Read-only: a storage root that does not exist is an error, not created.
    let storage = Storage::open_existing(&url, &config.storage.options)?;
    tracing::debug!(%url, "registering the tables");
    let ctx = query::new_context(config.drift.ks_method);
    query::register_tables(&ctx, &storage)?;
    query::register_registry_tables(&ctx, &storage).await?;
    crate::tracking::register_tables(&ctx, &storage).await?;
    let df = ctx.sql(&args.query).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await?;
    if batches.is_empty() {
        // No rows: still a header (table, CSV), never an empty box.
        batches.push(RecordBatch::new_empty(schema));
    }
    super::print_out(&render(&batches, args.format)?)
}

/// The help text after the options: every table `mlwatch sql` registers,
/// from the catalog itself.
pub fn tables_help() -> String {
    format!(
        "Tables: {}.\nA table's columns: DESCRIBE <table>.",
        query::table_names().join(", ")
    )
}

/// Renders batches in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => format!(
            "{}\n",
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?
        ),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf)?
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf)?
        }
    })
}
