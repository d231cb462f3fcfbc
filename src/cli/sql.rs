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
    /// A Parquet file (needs `--out`).
    Parquet,
}

/// Arguments of `mlwatch sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL statement (the tables are listed below); without one (and
    /// without --query) an interactive shell opens: statements end with
    /// `;`, `\d` lists the tables, `\d TABLE` shows one's columns,
    /// `\format FORMAT` switches the output, `\q` quits.
    #[arg(value_name = "STATEMENT", conflicts_with = "named")]
    pub statement: Option<String>,
    /// Run a query shipped in `sql/` by name (`--query list` lists them
    /// with their parameters).
    #[arg(long = "query", value_name = "NAME")]
    pub named: Option<String>,
    /// A parameter of the named query, `key=value` (repeatable); `$key` in
    /// its SQL.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "named")]
    pub params: Vec<String>,
    /// Write the result to this file instead of stdout (needed by parquet).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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
    if args.named.as_deref() == Some("list") {
        if !args.params.is_empty() || args.out.is_some() {
            anyhow::bail!("--query list takes no --param or --out");
        }
        let mut out = String::new();
        for q in query::named::shipped() {
            out.push_str(&serde_json::to_string(&q)?);
            out.push('\n');
        }
        return super::print_out(&out);
    }
    if matches!(args.format, Format::Parquet) && args.out.is_none() {
        anyhow::bail!("--format parquet: give the file with --out FILE");
    }
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    // Read-only: a storage root that does not exist is an error, not created.
    let storage = Storage::open_existing(&url, &config.storage.options)?;
    tracing::debug!(%url, "registering the tables");
    let ctx = query::new_context(config.drift.ks_method);
    query::register_tables(&ctx, &storage)?;
    query::register_registry_tables(&ctx, &storage).await?;
    crate::tracking::register_tables(&ctx, &storage).await?;
    let (sql, params) = match (&args.statement, &args.named) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(name)) => {
            let q = query::named::find(name)?;
            let params = Some(query::named::bind(&q, &args.params)?);
            (q.sql.to_string(), params)
        }
        (None, None) => {
            if args.out.is_some() || matches!(args.format, Format::Parquet) {
                anyhow::bail!(
                    "--out and --format parquet need a statement or --query (the shell prints)"
                );
            }
            return super::sql_shell::run(&ctx, &url, args.format).await;
        }
    };
    let batches = execute(&ctx, &sql, params.as_ref()).await?;
    match (&args.out, args.format) {
        (Some(path), Format::Parquet) => write_parquet(path, &batches),
        (Some(path), f) => {
            let text = render(&batches, f)?;
            write_atomic(path, |file| {
                use std::io::Write;
                file.write_all(text.as_bytes())?;
                Ok(())
            })
        }
        (None, f) => super::print_out(&render(&batches, f)?),
    }
}

/// Writes `path` whole or not at all: into a file beside it, renamed over
/// it once complete (a failed write leaves the previous file as it was).
/// Anything but a new or regular file (`/dev/stdout`, a pipe, a symlink) is
/// written in place.
fn write_atomic(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let named = |e: &dyn std::fmt::Display| anyhow::anyhow!("--out {}: {e}", path.display());
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| named(&e))?;
        return write(&mut f);
    }
    let name = path
        .file_name()
        .ok_or_else(|| named(&"not a file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .map_err(|e| named(&e))
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all().map_err(|e| named(&e))
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| named(&e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Runs `sql` (with `params` bound, typed as the plan infers) and
/// collects its batches; no rows is one empty batch, so a header is still
/// printed. Statements that write (`INSERT`, `COPY`) are refused: the
/// tables belong to mlwatch.
pub(super) async fn execute(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    params: Option<&std::collections::BTreeMap<String, String>>,
) -> anyhow::Result<Vec<RecordBatch>> {
    let options = datafusion::execution::context::SQLOptions::new().with_allow_dml(false);
    let mut df = ctx.sql_with_options(sql, options).await?;
    if let Some(p) = params.filter(|p| !p.is_empty()) {
        let values = query::named::typed(df.logical_plan(), p)?;
        df = df.with_param_values(values)?;
    }
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await?;
    if batches.is_empty() {
        // No rows: still a header (table, CSV), never an empty box.
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// Writes `batches` to a local Parquet file (whole or not at all).
pub(super) fn write_parquet(path: &std::path::Path, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| anyhow::anyhow!("no result to write"))?;
    write_atomic(path, |file| {
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
        Ok(())
    })
}

/// `b` with its nested columns (lists, structs, maps) as their text, for
/// CSV, which has no nested values.
fn flat_for_csv(b: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use datafusion::arrow::array::{Array, ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if !b
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The help text after the options: every table `mlwatch sql` registers,
/// from the catalog itself.
pub fn tables_help() -> String {
    format!(
        "Tables: {}.\nA table's columns: DESCRIBE <table>.",
        query::table_names().join(", ")
    )
}

/// Renders batches in `format` (Parquet is binary: see `write_parquet`).
pub fn render(batches: &[RecordBatch], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Parquet => anyhow::bail!("parquet is written to a file (--out FILE)"),
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
                    w.write(&flat_for_csv(b)?)?;
                }
            }
            String::from_utf8(buf)?
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                // NULL as `null`: every row has every key.
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf)?
        }
    })
}
