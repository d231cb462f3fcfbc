//! `mlwatch registry`: the model registry from the command line.

use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::registry::{
    EventKind, FeatureSpec, ListFilter, MetricCondition, ModelMetadata, ModelRegistry,
    ModelVersion, OrderBy, PromoteOptions, Promotion, RegistryEvent, Rollback, Selector, Stage,
};

/// How the CLI's time flags are described in `--help`.
const TIME_HELP: &str = "RFC 3339 (2026-11-29T10:00:00+01:00), or a date and time without a zone, read as UTC (2026-11-29T10:00:00, 2026-11-29 10:00, 2026-11-29)";
use crate::storage::Storage;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON.
    Json,
}

/// Arguments of `mlwatch registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Storage root (path or URL); defaults to storage.url of the config.
    #[arg(long, value_name = "URL", global = true)]
    pub data: Option<String>,
    /// Configuration file (storage, registry rules).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Who the history records (default: $USER, else the OS user name).
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// The registry command.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// Registry commands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Register a new version (in stage dev) with its artifact and metadata.
    Register {
        /// Model name.
        name: String,
        /// Artifact file or folder to upload.
        #[arg(long)]
        artifact: PathBuf,
        /// Metadata as a JSON file (training_time, metrics, features,
        /// model_type, hyperparameters, description, tags, run_id,
        /// baseline_profile); the flags below add to it.
        #[arg(long, value_name = "FILE")]
        metadata: Option<PathBuf>,
        /// A metric, `name=value` (repeatable).
        #[arg(long = "metric", value_name = "NAME=VALUE")]
        metrics: Vec<String>,
        /// A hyperparameter, `name=value` (repeatable; JSON values are parsed).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// A feature, `name:type` (repeatable).
        #[arg(long = "feature", value_name = "NAME:TYPE")]
        features: Vec<String>,
        /// A tag, `key=value` (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Model type, e.g. xgboost.
        #[arg(long)]
        model_type: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Tracking run the model came from.
        #[arg(long)]
        run_id: Option<String>,
        /// When training finished.
        #[arg(long, value_parser = parse_time, long_help = format!("When training finished: {TIME_HELP}."))]
        training_time: Option<DateTime<Utc>>,
    },
    /// Show one version: a number, a stage, an alias, or `latest`.
    Get {
        /// Model name.
        name: String,
        /// Version selector.
        #[arg(default_value = "latest")]
        selector: String,
        /// Answer as of this time (a time without a zone is UTC).
        #[arg(long, value_parser = parse_time, long_help = format!("Answer as of this time: {TIME_HELP}."))]
        as_of: Option<DateTime<Utc>>,
    },
    /// Move a version to staging, production or archived (a version already
    /// there stays, and the command succeeds without writing anything).
    Promote {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Target stage.
        stage: String,
        /// Allow dev -> production without staging.
        #[arg(long)]
        allow_skip: bool,
        /// Ignore the configured promotion rules (the history records who
        /// forced which rule).
        #[arg(long)]
        force: bool,
    },
    /// Give a stage back to the previous holder: each rollback goes one step
    /// further back through the stage's history, skipping (and naming)
    /// versions archived for another reason.
    Rollback {
        /// Model name.
        name: String,
        /// Stage (production or staging).
        #[arg(default_value = "production")]
        stage: String,
    },
    /// Set or move an alias (or remove it with --delete).
    Alias {
        /// Model name.
        name: String,
        /// Alias, e.g. champion.
        alias: String,
        /// Version to point at.
        #[arg(required_unless_present = "delete")]
        version: Option<u64>,
        /// Remove the alias.
        #[arg(long, conflicts_with = "version")]
        delete: bool,
    },
    /// Set a tag on a version (or remove it with --delete).
    Tag {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Tag key.
        key: String,
        /// Tag value.
        #[arg(required_unless_present = "delete")]
        value: Option<String>,
        /// Remove the tag.
        #[arg(long, conflicts_with = "value")]
        delete: bool,
    },
    /// List versions matching filters.
    List {
        /// Model name pattern (`*`, `?`).
        #[arg(long)]
        name: Option<String>,
        /// Stage.
        #[arg(long)]
        stage: Option<String>,
        /// Alias.
        #[arg(long)]
        alias: Option<String>,
        /// Tag `key=value` (repeatable, all must match).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Metric condition such as `metrics.auc >= 0.9` (repeatable).
        #[arg(long = "metric", value_name = "CONDITION")]
        metrics: Vec<String>,
        /// Trained at or after (a time without a zone is UTC).
        #[arg(long, value_parser = parse_time, long_help = format!("Trained at or after: {TIME_HELP}."))]
        trained_after: Option<DateTime<Utc>>,
        /// Trained before (a time without a zone is UTC).
        #[arg(long, value_parser = parse_time, long_help = format!("Trained before: {TIME_HELP}."))]
        trained_before: Option<DateTime<Utc>>,
        /// Model type.
        #[arg(long)]
        model_type: Option<String>,
        /// `name` (default), `created` (newest first) or `metric:NAME` (best first).
        #[arg(long, default_value = "name")]
        order_by: String,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Every event of a model: register, promote, archive, rollback, alias, tag.
    History {
        /// Model name.
        name: String,
    },
    /// Download a version's artifact, verified by sha256.
    Download {
        /// Model name.
        name: String,
        /// Version selector.
        #[arg(default_value = "latest")]
        selector: String,
        /// Destination folder.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// RFC 3339 (`T` or a space between date and time), or a date with an
/// optional time and no zone, read as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = t.strip_suffix(['Z', 'z']).unwrap_or(t);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("`{s}` is not a time: expected {TIME_HELP}"))
}

fn split_pair<'a>(flag: &str, s: &'a str, sep: char) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once(sep)
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .with_context(|| format!("{flag} `{s}`: expected NAME{sep}VALUE"))
}

fn stage(s: &str) -> anyhow::Result<Stage> {
    Ok(s.parse()?)
}

/// Opens the registry the arguments describe.
pub async fn open(args: &RegistryArgs) -> anyhow::Result<ModelRegistry> {
    let config = super::load_config(args.config.as_ref())?;
    let url = args.data.clone().unwrap_or(config.storage.url.clone());
    let storage = match args.command {
        // Read-only: a storage root that does not exist is an error, not created.
        RegistryCommand::Get { .. }
        | RegistryCommand::List { .. }
        | RegistryCommand::History { .. }
        | RegistryCommand::Download { .. } => {
            Storage::open_existing(&url, &config.storage.options)?
        }
        _ => Storage::open(&url, &config.storage.options)?,
    };
    let mut registry = ModelRegistry::new(storage)
        .with_rules(config.registry.rules.clone())
        .with_snapshot_every(config.registry.snapshot_every);
    if let Some(actor) = &args.actor {
        registry = registry.with_actor(actor);
    }
    Ok(registry)
}

pub(super) async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let registry = open(&args).await?;
    let out = match args.command {
        RegistryCommand::Register {
            name,
            artifact,
            metadata,
            metrics,
            params,
            features,
            tags,
            model_type,
            description,
            run_id,
            training_time,
        } => {
            super::input_path("--artifact", &artifact)?;
            let mut md: ModelMetadata = match &metadata {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("--metadata {}", p.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("--metadata {}", p.display()))?
                }
                None => ModelMetadata::default(),
            };
            for m in &metrics {
                let (k, v) = split_pair("--metric", m, '=')?;
                let v: f64 = v
                    .parse()
                    .with_context(|| format!("--metric `{m}`: the value is not a number"))?;
                if !v.is_finite() {
                    anyhow::bail!("--metric `{m}`: the value must be a finite number");
                }
                md.metrics.insert(k.to_string(), v);
            }
            for p in &params {
                let (k, v) = split_pair("--param", p, '=')?;
                let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
                md.hyperparameters.insert(k.to_string(), v);
            }
            for f in &features {
                let (k, v) = split_pair("--feature", f, ':')?;
                md.features.push(FeatureSpec {
                    name: k.to_string(),
                    dtype: v.to_string(),
                });
            }
            for t in &tags {
                let (k, v) = split_pair("--tag", t, '=')?;
                md.tags.insert(k.to_string(), v.to_string());
            }
            md.model_type = model_type.or(md.model_type);
            md.description = description.or(md.description);
            md.run_id = run_id.or(md.run_id);
            md.training_time = training_time.or(md.training_time);
            Output::Version(registry.register_model(&name, &artifact, md).await?)
        }
        RegistryCommand::Get {
            name,
            selector,
            as_of,
        } => {
            let sel: Selector = selector.parse()?;
            Output::Version(match as_of {
                Some(t) => registry.as_of(&name, &sel, t).await?,
                None => registry.get_model(&name, &sel).await?,
            })
        }
        RegistryCommand::Promote {
            name,
            version,
            stage: to,
            allow_skip,
            force,
        } => {
            let options = PromoteOptions { allow_skip, force };
            Output::Promoted(
                registry
                    .promote_model(&name, version, stage(&to)?, options)
                    .await?,
            )
        }
        RegistryCommand::Rollback { name, stage: s } => {
            Output::RolledBack(registry.rollback(&name, stage(&s)?).await?)
        }
        RegistryCommand::Alias {
            name,
            alias,
            version,
            delete,
        } => match (delete, version) {
            (true, _) => Output::AliasDeleted(AliasDeleted {
                version: registry.delete_alias(&name, &alias).await?,
                deleted_alias: alias,
            }),
            (false, Some(v)) => {
                registry.set_alias(&name, &alias, v).await?;
                Output::Version(registry.get_model(&name, &Selector::Version(v)).await?)
            }
            (false, None) => bail!("give a version or --delete"),
        },
        RegistryCommand::Tag {
            name,
            version,
            key,
            value,
            delete,
        } => {
            let value = if delete { None } else { value.as_deref() };
            registry.set_tag(&name, version, &key, value).await?;
            Output::Version(
                registry
                    .get_model(&name, &Selector::Version(version))
                    .await?,
            )
        }
        RegistryCommand::List {
            name,
            stage: st,
            alias,
            tags,
            metrics,
            trained_after,
            trained_before,
            model_type,
            order_by,
            limit,
            offset,
        } => {
            let mut filter = ListFilter {
                name_pattern: name,
                stage: st.as_deref().map(stage).transpose()?,
                alias,
                trained_after,
                trained_before,
                model_type,
                limit,
                offset,
                ..Default::default()
            };
            for t in &tags {
                let (k, v) = split_pair("--tag", t, '=')?;
                filter.tags.push((k.to_string(), v.to_string()));
            }
            for m in &metrics {
                filter.metrics.push(m.parse::<MetricCondition>()?);
            }
            filter.order_by = match order_by.as_str() {
                "name" => OrderBy::NameVersion,
                "created" => OrderBy::CreatedDesc,
                o => match o.strip_prefix("metric:") {
                    Some(m) if !m.is_empty() => OrderBy::MetricDesc(m.to_string()),
                    _ => bail!("--order-by `{o}`: expected name, created or metric:NAME"),
                },
            };
            Output::List(registry.list_models(&filter).await?)
        }
        RegistryCommand::History { name } => Output::History(registry.history(&name).await?),
        RegistryCommand::Download {
            name,
            selector,
            out,
        } => {
            let v = registry.get_model(&name, &selector.parse()?).await?;
            let path = registry.download(&v, &out).await?;
            Output::Downloaded(v, path)
        }
    };
    super::print_out(&out.render(args.format))
}

/// `alias NAME --delete`: the version the alias pointed at.
#[derive(Serialize)]
struct AliasDeleted {
    /// The alias removed.
    deleted_alias: String,
    /// The version it pointed at, as it is now.
    #[serde(flatten)]
    version: ModelVersion,
}

enum Output {
    Version(ModelVersion),
    Promoted(Promotion),
    RolledBack(Rollback),
    AliasDeleted(AliasDeleted),
    List(Vec<ModelVersion>),
    History(Vec<RegistryEvent>),
    Downloaded(ModelVersion, PathBuf),
}

fn version_table(v: &ModelVersion) -> String {
    let mut rows = vec![
        vec!["name".into(), v.name.clone()],
        vec!["version".into(), v.version.to_string()],
        vec!["stage".into(), v.stage.to_string()],
        vec!["aliases".into(), v.aliases.join(",")],
        vec!["metrics".into(), metrics_text(v)],
        vec![
            "model_type".into(),
            v.metadata.model_type.clone().unwrap_or_default(),
        ],
        vec![
            "run_id".into(),
            v.metadata.run_id.clone().unwrap_or_default(),
        ],
        vec![
            "tags".into(),
            v.tags
                .iter()
                .map(|(k, t)| format!("{k}={t}"))
                .collect::<Vec<_>>()
                .join(" "),
        ],
        vec![
            "artifact".into(),
            format!(
                "{} ({}, {} bytes, sha256 {})",
                v.artifact.name, v.artifact.kind, v.artifact.size, v.artifact.sha256
            ),
        ],
        vec![
            "created".into(),
            format!("{} by {}", v.created_at.to_rfc3339(), v.created_by),
        ],
    ];
    if let Some(t) = v.metadata.training_time {
        rows.push(vec!["training_time".into(), t.to_rfc3339()]);
    }
    super::align(rows)
}

fn metrics_text(v: &ModelVersion) -> String {
    v.metadata
        .metrics
        .iter()
        .map(|(k, m)| format!("{k}={m}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Output {
    fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let v = match self {
                    Output::Version(v) => json!(v),
                    Output::Promoted(p) => json!(p),
                    Output::RolledBack(r) => json!(r),
                    Output::AliasDeleted(d) => json!(d),
                    Output::List(l) => json!(l),
                    Output::History(h) => json!(h),
                    Output::Downloaded(v, p) => json!({
                        "name": v.name, "version": v.version, "path": p,
                        "sha256": v.artifact.sha256, "size": v.artifact.size,
                    }),
                };
                format!("{}\n", serde_json::to_string_pretty(&v).expect("json"))
            }
            Format::Table => match self {
                Output::Version(v) => version_table(v),
                Output::Promoted(p) => {
                    let v = &p.version;
                    let mut head = if p.changed {
                        format!("{} version {} is now in {}", v.name, v.version, v.stage)
                    } else {
                        format!(
                            "{} version {} is already in {}: nothing to do, nothing written",
                            v.name, v.version, v.stage
                        )
                    };
                    if let Some(r) = p.replaced {
                        head += &format!(" (version {r} archived)");
                    }
                    if let Some(rule) = &p.forced_rule {
                        head += &format!("\nforced past promotion rule: {rule}");
                    }
                    format!("{head}\n\n{}", version_table(v))
                }
                Output::RolledBack(r) => {
                    let v = &r.version;
                    let mut head = format!(
                        "{} {} rolled back from version {} to version {}\n",
                        v.name, v.stage, r.rolled_back_from, v.version
                    );
                    for s in &r.skipped {
                        head += &format!("skipped version {}: {}\n", s.version, s.reason);
                    }
                    format!("{head}\n{}", version_table(v))
                }
                Output::AliasDeleted(d) => format!(
                    "alias {} of {} removed; it pointed at version {}\n\n{}",
                    d.deleted_alias,
                    d.version.name,
                    d.version.version,
                    version_table(&d.version)
                ),
                Output::List(l) => {
                    let mut rows = vec![
                        ["name", "version", "stage", "aliases", "metrics", "created"]
                            .map(String::from)
                            .to_vec(),
                    ];
                    rows.extend(l.iter().map(|v| {
                        vec![
                            v.name.clone(),
                            v.version.to_string(),
                            v.stage.to_string(),
                            v.aliases.join(","),
                            metrics_text(v),
                            v.created_at.to_rfc3339(),
                        ]
                    }));
                    super::align(rows)
                }
                Output::History(h) => {
                    let mut rows = vec![
                        [
                            "seq", "time", "actor", "event", "version", "from", "to", "note",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ];
                    rows.extend(h.iter().map(|e| {
                        let (from, to) = match e.kind {
                            EventKind::SetAlias | EventKind::DeleteAlias => (
                                e.from_version.map(|v| format!("v{v}")).unwrap_or_default(),
                                e.alias.clone().unwrap_or_default(),
                            ),
                            EventKind::SetTag | EventKind::DeleteTag => (
                                e.tag_key.clone().unwrap_or_default(),
                                e.tag_value.clone().unwrap_or_default(),
                            ),
                            _ => (
                                e.from_stage.map(|s| s.to_string()).unwrap_or_default(),
                                e.to_stage.map(|s| s.to_string()).unwrap_or_default(),
                            ),
                        };
                        let note = match (&e.forced_rule, e.kind, e.from_version) {
                            (Some(rule), _, _) => format!("forced past promotion rule: {rule}"),
                            (None, EventKind::Rollback, Some(v)) => {
                                format!("rolled back from v{v}")
                            }
                            _ => String::new(),
                        };
                        vec![
                            e.seq.to_string(),
                            e.time.to_rfc3339(),
                            e.actor.clone(),
                            e.kind.as_str().to_string(),
                            e.version.to_string(),
                            from,
                            to,
                            note,
                        ]
                    }));
                    super::align(rows)
                }
                Output::Downloaded(v, p) => format!(
                    "{} version {} -> {} ({} bytes, sha256 {} verified)\n",
                    v.name,
                    v.version,
                    p.display(),
                    v.artifact.size,
                    v.artifact.sha256
                ),
            },
        }
    }
}
