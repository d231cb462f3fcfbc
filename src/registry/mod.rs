//! Model registry in object storage: versions, stages, aliases, tags,
//! promotion, rollback and the full history.
//!
//! The registry is an append-only log of events ([`log`]); the current state
//! ([`state`]) is a fold over it, so "who moved what, when" and "which
//! version was in production at T" ([`ModelRegistry::as_of`]) come from the
//! same data as the current answer. Each command reads the log to its end,
//! checks the request against that state, and commits its events as the
//! next log file with create-if-absent; a writer that loses the race reads
//! the winner's events and checks its request again (up to
//! [`MAX_COMMIT_ATTEMPTS`] times), so concurrent writers leave one linear
//! history. Artifacts are content-addressed ([`artifact`]).
//!
//! Stages: `dev -> staging -> production`, any -> `archived`; at most one
//! version per model in `staging` and in `production` (the one replaced is
//! archived in the same commit). `dev -> production` needs
//! [`PromoteOptions::allow_skip`]. Promoting a version to the stage it
//! already holds succeeds without writing anything ([`Promotion::changed`]
//! is false), so a retried deploy step does not fail. Configured
//! [`PromotionRule`]s (a metric must not be worse than the current
//! holder's) apply unless forced; a forced breach is recorded in the
//! promote event ([`RegistryEvent::forced_rule`], next to its actor).
//! Rollback walks a stage's history back one holder at a time and skips,
//! naming them, versions that were retired for another reason (see
//! [`state`]).

pub mod artifact;
pub mod log;
pub mod model;
pub mod state;
pub mod tables;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

pub use model::{
    ArtifactRef, EventKind, FeatureSpec, ModelMetadata, ModelVersion, RegistryEvent, Selector,
    SkippedVersion, Stage, validate_name,
};
pub use state::{PromoteOptions, PromotionRule, RegistryState};

use crate::error::Result;
use crate::storage::Storage;

/// Commits a command tries before reporting a conflict.
pub const MAX_COMMIT_ATTEMPTS: u32 = 64;

/// Errors of registry requests; each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A name, alias, tag key, stage or value is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// No model of that name.
    #[error("model `{0}` is not registered")]
    UnknownModel(String),
    /// The model exists now but had no version at the time asked about.
    #[error(
        "model `{name}` had no versions as of {}; first registered at {}",
        .time.to_rfc3339(),
        .first_registered.to_rfc3339()
    )]
    NoVersionsYet {
        /// Model name.
        name: String,
        /// The time asked about.
        time: DateTime<Utc>,
        /// When its first version was registered.
        first_registered: DateTime<Utc>,
    },
    /// A rollback of a stage no version holds.
    #[error(
        "model `{name}` has no version in {stage}: nothing to roll back (promote a version instead)"
    )]
    EmptyStage {
        /// Model name.
        name: String,
        /// The stage.
        stage: Stage,
    },
    /// A rollback found no earlier holder it may give the stage back to.
    #[error(
        "model `{name}`: no earlier holder of {stage} to roll back to from version {current}{}",
        skipped_text(.skipped)
    )]
    NothingToRollBack {
        /// Model name.
        name: String,
        /// The stage.
        stage: Stage,
        /// Its current holder, which keeps it.
        current: u64,
        /// Earlier holders that may not have it back, and why.
        skipped: Vec<SkippedVersion>,
    },
    /// The selector matches no version.
    #[error("model `{name}` has no {selector}")]
    NotFound {
        /// Model name.
        name: String,
        /// What was asked for.
        selector: String,
    },
    /// A stage change the lifecycle does not allow.
    #[error("model `{name}` version {version} cannot move from {from} to {to}: {reason}")]
    IllegalTransition {
        /// Model name.
        name: String,
        /// Version.
        version: u64,
        /// Current stage.
        from: Stage,
        /// Requested stage.
        to: Stage,
        /// Why not.
        reason: String,
    },
    /// A configured promotion rule refused the promotion.
    #[error("model `{name}` version {version}: promotion rule: {reason}")]
    RuleViolated {
        /// Model name.
        name: String,
        /// Version.
        version: u64,
        /// The rule and the values.
        reason: String,
    },
    /// Other writers kept winning.
    #[error("gave up after {0} attempts: other writers kept committing first")]
    Conflict(u32),
    /// A local artifact cannot be used.
    #[error("artifact {path}: {reason}")]
    Artifact {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored registry file cannot be read.
    #[error("registry file {path}: {reason}")]
    Corrupt {
        /// Object path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn skipped_text(skipped: &[SkippedVersion]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    format!(" (skipped {})", list.join(", "))
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Promotion {
    /// The version, as it is now.
    #[serde(flatten)]
    pub version: ModelVersion,
    /// False when it already was in the stage (nothing was written).
    pub changed: bool,
    /// The version this promotion archived (the previous holder).
    pub replaced: Option<u64>,
    /// The promotion rules `force` overrode, as recorded in the history.
    pub forced_rule: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rollback {
    /// The version that got the stage back, as it is now.
    #[serde(flatten)]
    pub version: ModelVersion,
    /// The holder it replaced (now archived).
    pub rolled_back_from: u64,
    /// Newer earlier holders passed over, newest first, with the reason.
    pub skipped: Vec<SkippedVersion>,
}

/// A metric condition such as `metrics.auc >= 0.9`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCondition {
    /// Metric name.
    pub metric: String,
    /// One of `>`, `>=`, `<`, `<=`, `=`, `!=`.
    pub op: String,
    /// Threshold.
    pub value: f64,
}

impl std::str::FromStr for MetricCondition {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| RegistryError::Invalid {
            what: "metric condition",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let ops = [">=", "<=", "!=", ">", "<", "="];
        let (pos, op) = ops
            .iter()
            .filter_map(|op| s.find(op).map(|p| (p, *op)))
            .min_by_key(|(p, op)| (*p, std::cmp::Reverse(op.len())))
            .ok_or_else(|| bad("expected e.g. `metrics.auc >= 0.9`"))?;
        let metric = s[..pos].trim();
        let metric = metric.strip_prefix("metrics.").unwrap_or(metric).trim();
        if metric.is_empty() {
            return Err(bad("names no metric"));
        }
        let value = s[pos + op.len()..]
            .trim()
            .parse()
            .map_err(|_| bad("the threshold is not a number"))?;
        Ok(MetricCondition {
            metric: metric.to_string(),
            op: op.to_string(),
            value,
        })
    }
}

impl MetricCondition {
    fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            ">" => v > self.value,
            ">=" => v >= self.value,
            "<" => v < self.value,
            "<=" => v <= self.value,
            "=" => v == self.value,
            _ => v != self.value,
        }
    }
}

/// Sort order of [`ModelRegistry::list_models`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OrderBy {
    /// Name, then version.
    #[default]
    NameVersion,
    /// Newest registration first.
    CreatedDesc,
    /// A metric, best (largest) first; versions without it last.
    MetricDesc(String),
}

/// What [`ModelRegistry::list_models`] returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Model name pattern with `*` and `?` wildcards.
    pub name_pattern: Option<String>,
    /// Only versions in this stage.
    pub stage: Option<Stage>,
    /// Only the version this alias points at.
    pub alias: Option<String>,
    /// Tags that must be present with these values.
    pub tags: Vec<(String, String)>,
    /// Metric conditions, all of which must hold.
    pub metrics: Vec<MetricCondition>,
    /// Trained at or after.
    pub trained_after: Option<DateTime<Utc>>,
    /// Trained before.
    pub trained_before: Option<DateTime<Utc>>,
    /// Model type equals.
    pub model_type: Option<String>,
    /// Order.
    pub order_by: OrderBy,
    /// Skip this many results.
    pub offset: usize,
    /// At most this many results (None: all).
    pub limit: Option<usize>,
}

/// `*` and `?` wildcard match.
fn wildcard(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl ListFilter {
    fn matches(&self, v: &ModelVersion) -> bool {
        let md = &v.metadata;
        self.name_pattern
            .as_deref()
            .is_none_or(|p| wildcard(p, &v.name))
            && self.stage.is_none_or(|s| v.stage == s)
            && self.alias.as_ref().is_none_or(|a| v.aliases.contains(a))
            && self.tags.iter().all(|(k, val)| v.tags.get(k) == Some(val))
            && self
                .metrics
                .iter()
                .all(|c| md.metrics.get(&c.metric).is_some_and(|m| c.holds(*m)))
            && self
                .trained_after
                .is_none_or(|t| md.training_time.is_some_and(|x| x >= t))
            && self
                .trained_before
                .is_none_or(|t| md.training_time.is_some_and(|x| x < t))
            && self
                .model_type
                .as_ref()
                .is_none_or(|t| md.model_type.as_ref() == Some(t))
    }
}

/// The registry over a storage root.
#[derive(Debug)]
pub struct ModelRegistry {
    storage: Storage,
    actor: String,
    rules: Vec<PromotionRule>,
    snapshot_every: u64,
    state: Mutex<RegistryState>,
    lost_races: std::sync::atomic::AtomicU64,
}

impl ModelRegistry {
    /// A registry over `storage`; the actor defaults to `$USER`.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            actor: crate::tracking::env::user().unwrap_or_else(|| "unknown".into()),
            rules: Vec::new(),
            snapshot_every: 100,
            state: Mutex::new(RegistryState::default()),
            lost_races: Default::default(),
        }
    }

    /// Who the history records as doing this registry's changes.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Promotion rules to enforce.
    pub fn with_rules(mut self, rules: Vec<PromotionRule>) -> Self {
        self.rules = rules;
        self
    }

    /// Write a snapshot every `n` commits (default 100; 0 never).
    pub fn with_snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = n;
        self
    }

    /// Commits this registry found taken by another writer (and retried).
    pub fn lost_races(&self) -> u64 {
        self.lost_races.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The storage it uses.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Reads the log to its end and returns the current state.
    pub async fn state(&self) -> Result<RegistryState> {
        self.read(|st| Ok(st.clone())).await
    }

    /// Reads the log to its end and answers `f` from the state, without
    /// copying it.
    async fn read<T>(&self, f: impl FnOnce(&RegistryState) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock().await;
        self.refresh(&mut st).await?;
        f(&st)
    }

    async fn refresh(&self, st: &mut RegistryState) -> Result<()> {
        if st.head == 0 {
            for e in log::read_latest_snapshot(&self.storage).await? {
                st.apply(e);
            }
        }
        for e in log::read_after(&self.storage, st.head).await? {
            st.apply(e);
        }
        Ok(())
    }

    /// Reads to the end of the log, builds events with `command`, and
    /// commits them as the next entry; retries on lost races. `command` also
    /// answers a value about its events (e.g. what a rollback skipped),
    /// returned with the events of the attempt that landed. No events: the
    /// request needs no change, and nothing is written.
    async fn commit<T, F>(&self, command: F) -> Result<(Vec<RegistryEvent>, T)>
    where
        F: Fn(&RegistryState) -> Result<(Vec<RegistryEvent>, T), RegistryError>,
    {
        let commit_id = format!("{:032x}", rand::random::<u128>());
        let mut st = self.state.lock().await;
        let mut failures = 0;
        // The answer of the last attempt whose write failed: it may have landed.
        let mut unsure = None;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            self.refresh(&mut st).await?;
            if let Some(mine) = st.commit_of(&commit_id)
                && let Some(value) = unsure.take()
            {
                return Ok((mine, value)); // an earlier attempt landed despite an error
            }
            let seq = st.head + 1;
            let now = Utc::now();
            let (mut events, value) = command(&st)?;
            if events.is_empty() {
                return Ok((events, value));
            }
            for (i, e) in events.iter_mut().enumerate() {
                e.seq = seq;
                e.idx = i as u32;
                e.time = now;
                e.actor = self.actor.clone();
                e.commit_id = commit_id.clone();
            }
            match log::put_commit(&self.storage, seq, &events).await {
                Ok(log::Put::Created) => {
                    for e in &events {
                        st.apply(e.clone());
                    }
                    if self.snapshot_every > 0
                        && seq % self.snapshot_every == 0
                        && let Err(e) = log::write_snapshot(&self.storage, &st.events).await
                    {
                        tracing::warn!(seq, error = %e, "registry snapshot not written; the log is complete without it");
                    }
                    return Ok((events, value));
                }
                Ok(log::Put::Taken) => {
                    self.lost_races
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if failures < 5 => {
                    failures += 1;
                    unsure = Some(value);
                    tracing::warn!(seq, error = %e, "registry commit failed; reading the log and retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict(MAX_COMMIT_ATTEMPTS).into())
    }

    /// [`Self::commit`] for commands that answer nothing but their events.
    async fn commit_events<F>(&self, command: F) -> Result<Vec<RegistryEvent>>
    where
        F: Fn(&RegistryState) -> Result<Vec<RegistryEvent>, RegistryError>,
    {
        Ok(self.commit(|st| Ok((command(st)?, ()))).await?.0)
    }

    fn version_of(&self, st: &RegistryState, name: &str, version: u64) -> Result<ModelVersion> {
        Ok(st
            .model(name)?
            .resolve(name, &Selector::Version(version))?
            .clone())
    }

    /// Registers the next version of `name` in `dev`, uploading the artifact
    /// (file or folder) first.
    pub async fn register_model(
        &self,
        name: &str,
        artifact: &Path,
        metadata: ModelMetadata,
    ) -> Result<ModelVersion> {
        validate_name("model name", name)?;
        for k in metadata.tags.keys() {
            validate_name("tag key", k)?;
        }
        // JSON has no NaN nor infinity: such a metric would be written as
        // null, and the version could not be read back.
        if let Some((k, v)) = metadata.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(RegistryError::Invalid {
                what: "metric",
                value: k.clone(),
                reason: format!("{v} is not a finite number"),
            }
            .into());
        }
        let art = artifact::upload(&self.storage, artifact).await?;
        let events = self
            .commit_events(|st| state::register(st, name, &metadata, &art))
            .await?;
        let st = self.state.lock().await;
        self.version_of(&st, name, events[0].version)
    }

    /// The version `selector` names.
    pub async fn get_model(&self, name: &str, selector: &Selector) -> Result<ModelVersion> {
        self.read(|st| Ok(st.model(name)?.resolve(name, selector)?.clone()))
            .await
    }

    /// Writes a version's artifact into `dest_dir`, verifying its sha256.
    pub async fn download(&self, version: &ModelVersion, dest_dir: &Path) -> Result<PathBuf> {
        artifact::download(&self.storage, &version.artifact, dest_dir).await
    }

    /// Moves `version` to `stage`, archiving the version it replaces. A
    /// version already in `stage` is left there: the answer says so
    /// ([`Promotion::changed`] false) and nothing is written.
    pub async fn promote_model(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        options: PromoteOptions,
    ) -> Result<Promotion> {
        let events = self
            .commit_events(|st| state::promote(st, name, version, stage, options, &self.rules))
            .await?;
        let st = self.state.lock().await;
        Ok(Promotion {
            version: self.version_of(&st, name, version)?,
            changed: !events.is_empty(),
            replaced: events
                .iter()
                .skip(1)
                .find(|e| e.kind == EventKind::Archive)
                .map(|e| e.version),
            forced_rule: events.first().and_then(|e| e.forced_rule.clone()),
        })
    }

    /// Gives `stage` back to the newest earlier holder still eligible,
    /// skipping (and naming) versions retired for another reason; see
    /// [`state`].
    pub async fn rollback(&self, name: &str, stage: Stage) -> Result<Rollback> {
        let (events, skipped) = self.commit(|st| state::rollback(st, name, stage)).await?;
        let st = self.state.lock().await;
        Ok(Rollback {
            version: self.version_of(&st, name, events[0].version)?,
            rolled_back_from: events[0].from_version.unwrap_or_default(),
            skipped,
        })
    }

    /// Points `alias` at `version` (moving it if it points elsewhere).
    pub async fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        self.commit_events(|st| state::set_alias(st, name, alias, version))
            .await
            .map(drop)
    }

    /// Removes `alias`; returns the version it pointed at (as it is now).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let events = self
            .commit_events(|st| state::delete_alias(st, name, alias))
            .await?;
        let st = self.state.lock().await;
        self.version_of(&st, name, events[0].version)
    }

    /// Sets (Some) or removes (None) a tag of a version.
    pub async fn set_tag(
        &self,
        name: &str,
        version: u64,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.commit_events(|st| state::tag(st, name, version, key, value))
            .await
            .map(drop)
    }

    /// Versions matching `filter`, sorted and paginated.
    pub async fn list_models(&self, filter: &ListFilter) -> Result<Vec<ModelVersion>> {
        let mut out: Vec<ModelVersion> = self
            .read(|st| {
                Ok(st
                    .models
                    .values()
                    .flat_map(|m| m.versions.values())
                    .filter(|v| filter.matches(v))
                    .cloned()
                    .collect())
            })
            .await?;
        match &filter.order_by {
            OrderBy::NameVersion => {}
            OrderBy::CreatedDesc => out.sort_by(|a, b| {
                (b.created_at, &b.name, b.version).cmp(&(a.created_at, &a.name, a.version))
            }),
            OrderBy::MetricDesc(m) => out.sort_by(|a, b| {
                let get = |v: &ModelVersion| v.metadata.metrics.get(m).copied();
                match (get(a), get(b)) {
                    (Some(x), Some(y)) => y.total_cmp(&x),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
                .then_with(|| (&a.name, a.version).cmp(&(&b.name, b.version)))
            }),
        }
        Ok(out
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// Every event of a model, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<RegistryEvent>> {
        self.read(|st| {
            st.model(name)?;
            Ok(st
                .events
                .iter()
                .filter(|e| e.model == name)
                .cloned()
                .collect())
        })
        .await
    }

    /// The version `selector` named at `time` (e.g. which version was in
    /// production then), with its stage and aliases as they were. Before
    /// the model's first version the error says when that came.
    pub async fn as_of(
        &self,
        name: &str,
        selector: &Selector,
        time: DateTime<Utc>,
    ) -> Result<ModelVersion> {
        self.read(|st| {
            let then = st.as_of(time);
            match then.models.get(name) {
                Some(m) if !m.versions.is_empty() => Ok(m.resolve(name, selector)?.clone()),
                _ => {
                    let first = st
                        .model(name)?
                        .versions
                        .values()
                        .map(|v| v.created_at)
                        .min();
                    Err(match first {
                        Some(first_registered) => RegistryError::NoVersionsYet {
                            name: name.to_string(),
                            time,
                            first_registered,
                        },
                        None => RegistryError::UnknownModel(name.to_string()),
                    }
                    .into())
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_wildcards() {
        let c: MetricCondition = "metrics.auc >= 0.9".parse().unwrap();
        assert_eq!(
            (c.metric.as_str(), c.op.as_str(), c.value),
            ("auc", ">=", 0.9)
        );
        assert!(c.holds(0.9) && !c.holds(0.89));
        let c: MetricCondition = "rmse<3".parse().unwrap();
        assert_eq!((c.metric.as_str(), c.op.as_str()), ("rmse", "<"));
        assert!("auc".parse::<MetricCondition>().is_err());
        assert!("auc > high".parse::<MetricCondition>().is_err());
        assert!(wildcard("fraud-*", "fraud-detector"));
        assert!(wildcard("*det?ctor", "fraud-detector"));
        assert!(!wildcard("fraud", "fraud-detector"));
    }
}
