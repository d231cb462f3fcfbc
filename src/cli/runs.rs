//! `mlwatch runs`: experiment tracking from scripts and the shell.
//!
//! Each logging command is its own process: it reopens the run, checks the
//! request (params are immutable, paths must be relative), writes one small
//! file, and exits. A training loop that logs many points should log them
//! in batches (`log-metric` takes several `KEY=VALUE` pairs) or use the
//! Rust API, which buffers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;

use super::sql::{Format as SqlFormat, render};
use crate::storage::Storage;
use crate::tracking::{ExperimentTracker, RunStatus};

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON lines.
    Json,
}

/// Arguments of `mlwatch runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Storage root (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL", global = true)]
    pub data: Option<String>,
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// The command.
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// Tracking commands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Start a run; prints its id. The run stays RUNNING until `end`, whatever
    /// happens to the shell that started it (as in MLflow); with `--owner-pid`
    /// it is marked KILLED once that process has exited without ending it.
    Start {
        /// Experiment name.
        #[arg(long, short)]
        experiment: String,
        /// Run name (default: run-<id prefix>).
        #[arg(long)]
        name: Option<String>,
        /// Tag `key=value` (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Process that owns the run (e.g. `$$` in a shell script, the
        /// training job's pid): once it has exited without `end`, the next
        /// `list`/`search`/`show` on this host marks the run KILLED.
        #[arg(long, value_name = "PID")]
        owner_pid: Option<u32>,
    },
    /// Log params `key=value` (immutable once logged).
    LogParam {
        /// Run id.
        run: String,
        /// `key=value` pairs.
        #[arg(required = true)]
        params: Vec<String>,
    },
    /// Log metric points `key=value` at a step.
    LogMetric {
        /// Run id.
        run: String,
        /// `key=value` pairs.
        #[arg(required = true)]
        metrics: Vec<String>,
        /// Step (iteration, epoch).
        #[arg(long, default_value_t = 0)]
        step: i64,
    },
    /// Store a file as an artifact of the run (content-addressed).
    LogArtifact {
        /// Run id.
        run: String,
        /// Local file.
        file: PathBuf,
        /// Path inside the run's artifacts (default: the file name).
        #[arg(long)]
        path: Option<String>,
    },
    /// Set tags `key=value`.
    SetTag {
        /// Run id.
        run: String,
        /// `key=value` pairs.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// End a run. Ending it again with the same status does nothing; another
    /// status is refused (the first end wins, also between concurrent calls).
    End {
        /// Run id.
        run: String,
        /// Final status.
        #[arg(long, value_enum, default_value_t = RunStatus::Finished)]
        status: RunStatus,
    },
    /// List runs, newest first.
    List {
        /// Only this experiment.
        #[arg(long, short)]
        experiment: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Search runs with an MLflow-style filter, e.g.
    /// "metrics.accuracy > 0.9 and (params.model = 'xgb' or tags.team = 'risk') order by metrics.accuracy desc".
    Search {
        /// The filter (may be empty; may end in `order by ...`).
        filter: String,
        /// Only this experiment.
        #[arg(long, short)]
        experiment: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the SQL the filter becomes instead of running it.
        #[arg(long)]
        show_sql: bool,
    },
    /// One run: attributes, params, latest metrics, tags, artifacts.
    Show {
        /// Run id.
        run: String,
    },
    /// Merge each tracking table's small files into one.
    Compact,
    /// Chart a metric by step, one line per run, as SVG.
    Plot {
        /// Metric key.
        #[arg(long)]
        metric: String,
        /// Run ids.
        #[arg(required = true)]
        runs: Vec<String>,
        /// Output file (.svg).
        #[arg(long, default_value = "metric.svg")]
        out: PathBuf,
    },
    /// Params and final metrics of runs side by side; `*` marks rows that differ.
    Compare {
        /// Run ids.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<String>,
    },
}

fn pairs(flag: &str, items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("{flag} `{s}`: expected KEY=VALUE"))
        })
        .collect()
}

fn hex_id(run: &str) -> anyhow::Result<&str> {
    if run.len() == 32 && run.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(run)
    } else {
        anyhow::bail!("run id `{run}` is not 32 hex digits")
    }
}

pub(super) async fn run(args: RunsArgs) -> anyhow::Result<()> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    // Commands that only read never create the store.
    let read_only = match &args.command {
        RunsCommand::Search { show_sql, .. } => !show_sql,
        RunsCommand::List { .. }
        | RunsCommand::Show { .. }
        | RunsCommand::Compare { .. }
        | RunsCommand::Plot { .. } => true,
        _ => false,
    };
    let storage = if read_only {
        Storage::open_existing(&url, &config.storage.options)?
    } else {
        Storage::open(&url, &config.storage.options)?
    };
    let tracker = ExperimentTracker::new(storage)
        .with_compaction(config.tracking.compaction(&config.kafka.tracking_topic));
    let fmt = match args.format {
        Format::Table => SqlFormat::Table,
        Format::Json => SqlFormat::Json,
    };
    let text = match args.command {
        RunsCommand::Start {
            experiment,
            name,
            tags,
            owner_pid,
        } => {
            let tags = pairs("--tag", &tags)?;
            if let Some(pid) = owner_pid
                && crate::tracking::markers::process_start(pid).is_none()
            {
                anyhow::bail!("--owner-pid {pid}: no such process on this host");
            }
            let mut run = tracker
                .start_run_owned_by(&experiment, name.as_deref(), &tags, owner_pid)
                .await?;
            run.flush().await?;
            match args.format {
                Format::Table => format!("{}\n", run.id()),
                Format::Json => format!(
                    "{}\n",
                    serde_json::json!({"run_id": run.id(), "run_name": run.name()})
                ),
            }
        }
        RunsCommand::LogParam { run, params } => {
            let params = pairs("param", &params)?;
            let mut r = tracker.resume(hex_id(&run)?).await?;
            r.log_params(&params)?;
            r.flush().await?;
            String::new()
        }
        RunsCommand::LogMetric { run, metrics, step } => {
            let mut points = Vec::new();
            for (k, v) in pairs("metric", &metrics)? {
                let v: f64 = v
                    .parse()
                    .with_context(|| format!("metric `{k}`: `{v}` is not a number"))?;
                if !v.is_finite() {
                    anyhow::bail!("metric `{k}`: `{v}` is not a finite number");
                }
                points.push((k, v));
            }
            let mut r = tracker.resume(hex_id(&run)?).await?;
            let refs: Vec<(&str, f64, i64)> =
                points.iter().map(|(k, v)| (k.as_str(), *v, step)).collect();
            r.log_metrics(&refs).await?;
            r.flush().await?;
            String::new()
        }
        RunsCommand::LogArtifact { run, file, path } => {
            super::input_file("<FILE>", &file)?;
            let mut r = tracker.resume(hex_id(&run)?).await?;
            let sha = r.log_artifact(&file, path.as_deref()).await?;
            r.flush().await?;
            format!("{sha}\n")
        }
        RunsCommand::SetTag { run, tags } => {
            let tags = pairs("tag", &tags)?;
            let mut r = tracker.resume(hex_id(&run)?).await?;
            r.set_tags(&tags)?;
            r.flush().await?;
            String::new()
        }
        RunsCommand::End { run, status } => {
            tracker.end_run(hex_id(&run)?, status).await?;
            String::new()
        }
        RunsCommand::List { experiment, limit } => {
            let out = tracker.search("", experiment.as_deref()).await?;
            limited(out, limit, fmt)?
        }
        RunsCommand::Search {
            filter,
            experiment,
            limit,
            show_sql,
        } => {
            if show_sql {
                format!(
                    "{}\n",
                    crate::tracking::filter::translate(&filter, experiment.as_deref())?.sql
                )
            } else {
                let out = tracker.search(&filter, experiment.as_deref()).await?;
                limited(out, limit, fmt)?
            }
        }
        RunsCommand::Show { run } => show(&tracker, hex_id(&run)?, args.format).await?,
        RunsCommand::Compare { runs } => compare(&tracker, &runs, args.format).await?,
        RunsCommand::Plot { metric, runs, out } => {
            plot(&tracker, &metric, &runs, &out).await?;
            format!("{}\n", out.display())
        }
        RunsCommand::Compact => {
            let done = tracker.compact().await?;
            match args.format {
                Format::Json => done
                    .iter()
                    .map(|c| Ok(format!("{}\n", serde_json::to_string(c)?)))
                    .collect::<anyhow::Result<String>>()?,
                Format::Table if done.is_empty() => "nothing to compact\n".into(),
                Format::Table => done
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {} files -> {} ({} rows)\n",
                            c.table, c.files, c.outputs, c.rows
                        )
                    })
                    .collect(),
            }
        }
    };
    super::print_out(&text)
}

/// At most `limit` of the runs in `batches`, rendered; says on stderr when
/// the limit cut the answer, and prints "no runs" for none (table format).
fn limited(
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    limit: usize,
    fmt: SqlFormat,
) -> anyhow::Result<String> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if total == 0 {
        return Ok(match fmt {
            SqlFormat::Table => "no runs\n".into(),
            _ => String::new(),
        });
    }
    let mut kept = Vec::new();
    let mut left = limit;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        kept.push(b.slice(0, n));
        left -= n;
    }
    if total > limit {
        eprintln!("showing {limit} of {total} runs; use --limit to see more");
    }
    render(&kept, fmt)
}

/// `runs show`: the run's attributes, params, latest metrics, tags and
/// artifacts; as text sections, or one JSON object with a member per section.
async fn show(tracker: &ExperimentTracker, id: &str, format: Format) -> anyhow::Result<String> {
    let ctx = tracker.reaped_context().await?;
    let sections = [
        ("run", format!("SELECT * FROM runs WHERE run_id = '{id}'")),
        (
            "params",
            format!("SELECT key, value FROM params WHERE run_id = '{id}' ORDER BY key"),
        ),
        (
            "metrics",
            format!(
                "SELECT key, value, step FROM latest_metrics WHERE run_id = '{id}' ORDER BY key"
            ),
        ),
        (
            "tags",
            format!("SELECT key, value FROM tags WHERE run_id = '{id}' ORDER BY key"),
        ),
        (
            "artifacts",
            format!("SELECT path, size, sha256 FROM artifacts WHERE run_id = '{id}' ORDER BY path"),
        ),
    ];
    let mut text = String::new();
    let mut json = serde_json::Map::new();
    for (title, sql) in sections {
        let df = ctx.sql(&sql).await?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let b = df.collect().await?;
        let empty = b.iter().all(|b| b.num_rows() == 0);
        if title == "run" && empty {
            return Err(crate::tracking::TrackingError::UnknownRun(id.to_string()).into());
        }
        match format {
            Format::Table => {
                text.push_str(&format!("{title}:\n"));
                if empty {
                    text.push_str(&format!("{}\n(none)\n", columns.join("  ")));
                } else {
                    text.push_str(&render(&b, SqlFormat::Table)?);
                }
            }
            Format::Json => {
                let rows: Vec<serde_json::Value> = render(&b, SqlFormat::Json)?
                    .lines()
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()?;
                let value = match title {
                    "run" => rows.into_iter().next().unwrap_or_default(),
                    // key -> value maps, as MLflow's run.data
                    "params" | "tags" => serde_json::Value::Object(
                        rows.into_iter()
                            .filter_map(|r| {
                                Some((r.get("key")?.as_str()?.to_string(), r.get("value")?.clone()))
                            })
                            .collect(),
                    ),
                    "metrics" => serde_json::Value::Object(
                        rows.into_iter()
                            .filter_map(|mut r| {
                                let key = r.get("key")?.as_str()?.to_string();
                                r.as_object_mut()?.remove("key");
                                Some((key, r))
                            })
                            .collect(),
                    ),
                    _ => serde_json::Value::Array(rows),
                };
                json.insert(title.to_string(), value);
            }
        }
    }
    Ok(match format {
        Format::Table => text,
        Format::Json => format!("{}\n", serde_json::Value::Object(json)),
    })
}

/// The SQL list `'id', ...` of `runs` and their names, or an error naming
/// the first id that is malformed or unknown.
async fn run_names(
    ctx: &datafusion::prelude::SessionContext,
    runs: &[String],
) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    for r in runs {
        hex_id(r)?;
    }
    let list = crate::tracking::sql_list(runs);
    let names = crate::tracking::text_map(
        ctx,
        &format!("SELECT run_id, run_name FROM runs WHERE run_id IN ({list})"),
    )
    .await?;
    if let Some(missing) = runs.iter().find(|r| !names.contains_key(*r)) {
        return Err(crate::tracking::TrackingError::UnknownRun(missing.clone()).into());
    }
    Ok((list, names))
}

async fn plot(
    tracker: &ExperimentTracker,
    metric: &str,
    runs: &[String],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let ctx = tracker.context().await?;
    let (list, names) = run_names(&ctx, runs).await?;
    let key = metric.replace('\'', "''");
    let mut series: BTreeMap<String, (String, Vec<(i64, f64)>)> = names
        .into_iter()
        .map(|(id, name)| (id, (name, Vec::new())))
        .collect();
    for b in ctx
        .sql(&format!(
            "SELECT run_id, step, value FROM metrics WHERE run_id IN ({list}) AND key = '{key}' \
             ORDER BY run_id, step, timestamp"
        ))
        .await?
        .collect()
        .await?
    {
        let steps = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let values = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if let Some(s) = series.get_mut(b.column(0).as_string::<i32>().value(i)) {
                s.1.push((steps.value(i), values.value(i)));
            }
        }
    }
    let ordered: Vec<crate::tracking::plot::Series> =
        runs.iter().map(|r| series[r].clone()).collect();
    crate::tracking::plot::metric_chart(metric, &ordered, out)?;
    Ok(())
}

async fn compare(
    tracker: &ExperimentTracker,
    runs: &[String],
    format: Format,
) -> anyhow::Result<String> {
    let ctx = tracker.context().await?;
    let (list, names) = run_names(&ctx, runs).await?;
    // (row label) -> run id -> value
    let mut table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (prefix, source) in [("params", "params"), ("metrics", "latest_metrics")] {
        let sql = format!("SELECT run_id, key, value FROM {source} WHERE run_id IN ({list})");
        for b in ctx.sql(&sql).await?.collect().await? {
            let (ids, keys, values) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
                b.column(2),
            );
            for i in 0..b.num_rows() {
                // Params are text, metrics numbers (printed as Rust does).
                let value = match values.as_string_opt::<i32>() {
                    Some(v) => v.value(i).to_string(),
                    None if values.is_null(i) => continue,
                    None => values.as_primitive::<Float64Type>().value(i).to_string(),
                };
                table
                    .entry(format!("{prefix}.{}", keys.value(i)))
                    .or_default()
                    .insert(ids.value(i).to_string(), value);
            }
        }
    }
    let differs = |row: &BTreeMap<String, String>| {
        let vals: BTreeSet<Option<&String>> = runs.iter().map(|r| row.get(r)).collect();
        vals.len() > 1
    };
    Ok(match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = table
                .iter()
                .map(|(k, row)| {
                    serde_json::json!({
                        "key": k,
                        "differs": differs(row),
                        "values": runs.iter().map(|r| row.get(r)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            format!(
                "{}\n",
                serde_json::json!({"runs": runs, "run_names": runs.iter().map(|r| &names[r]).collect::<Vec<_>>(), "rows": rows})
            )
        }
        Format::Table => {
            let mut rows = vec![
                std::iter::once(String::new())
                    .chain(std::iter::once("key".to_string()))
                    .chain(runs.iter().map(|r| names[r].clone()))
                    .collect::<Vec<_>>(),
            ];
            for (k, row) in &table {
                rows.push(
                    std::iter::once(if differs(row) {
                        "*".to_string()
                    } else {
                        String::new()
                    })
                    .chain(std::iter::once(k.clone()))
                    .chain(
                        runs.iter()
                            .map(|r| row.get(r).cloned().unwrap_or_else(|| "-".into())),
                    )
                    .collect(),
                );
            }
            super::align(rows)
        }
    })
}
