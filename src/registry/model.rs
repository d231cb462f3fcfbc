//! The registry's vocabulary: stages, selectors, model versions, their
//! metadata and artifacts, and the events of the log; plus name validation.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// Where a model version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Newly registered.
    Dev,
    /// Being validated.
    Staging,
    /// Serving.
    Production,
    /// Replaced or retired.
    Archived,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 4] = [
        Stage::Dev,
        Stage::Staging,
        Stage::Production,
        Stage::Archived,
    ];

    /// Its lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dev => "dev",
            Stage::Staging => "staging",
            Stage::Production => "production",
            Stage::Archived => "archived",
        }
    }

    /// Stages that hold at most one version of a model.
    pub fn is_exclusive(self) -> bool {
        matches!(self, Stage::Staging | Stage::Production)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| RegistryError::Invalid {
                what: "stage",
                value: s.to_string(),
                reason: "expected dev, staging, production or archived".into(),
            })
    }
}

/// How a caller names one version of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Version number.
    Version(u64),
    /// The version in a stage (`staging` and `production` hold at most one;
    /// for `dev` and `archived` the newest).
    Stage(Stage),
    /// The version an alias points at.
    Alias(String),
    /// The newest version.
    Latest,
}

impl std::str::FromStr for Selector {
    type Err = RegistryError;
    /// `3` or `v3` (version), a stage name, `latest`, else an alias.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('v').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse()
                .map(Selector::Version)
                .map_err(|_| RegistryError::Invalid {
                    what: "version",
                    value: s.to_string(),
                    reason: "too large".into(),
                });
        }
        if s == "latest" {
            return Ok(Selector::Latest);
        }
        if let Ok(stage) = s.parse() {
            return Ok(Selector::Stage(stage));
        }
        validate_name("alias", s)?;
        Ok(Selector::Alias(s.to_string()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Version(v) => write!(f, "version {v}"),
            Selector::Stage(s) => write!(f, "stage {s}"),
            Selector::Alias(a) => write!(f, "alias {a}"),
            Selector::Latest => f.write_str("latest"),
        }
    }
}

/// One input feature of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Column name.
    pub name: String,
    /// Type, e.g. `double`, `string`.
    #[serde(rename = "type")]
    pub dtype: String,
}

/// What a user states when registering a version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelMetadata {
    /// When training finished.
    pub training_time: Option<DateTime<Utc>>,
    /// Offline performance metrics (`auc`, `accuracy`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Input features with types.
    pub features: Vec<FeatureSpec>,
    /// e.g. `xgboost`, `sklearn.LogisticRegression`.
    pub model_type: Option<String>,
    /// Hyperparameters as given (any JSON).
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// Free text.
    pub description: Option<String>,
    /// Initial tags of the version.
    pub tags: BTreeMap<String, String>,
    /// The experiment-tracking run this version came from.
    pub run_id: Option<String>,
    /// Where the baseline (reference) profile lives.
    pub baseline_profile: Option<String>,
}

/// A stored artifact: a file, or a folder stored as a manifest of files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// `file` or `dir`.
    pub kind: String,
    /// File or folder name as uploaded.
    pub name: String,
    /// sha256 of the file (or of the manifest, for a folder), hex.
    pub sha256: String,
    /// Bytes (all files, for a folder).
    pub size: u64,
}

/// A registered model version as the registry currently sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    /// Model name.
    pub name: String,
    /// Version number, from 1.
    pub version: u64,
    /// Current stage.
    pub stage: Stage,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Tags (initial ones plus later changes).
    pub tags: BTreeMap<String, String>,
    /// Registered metadata.
    pub metadata: ModelMetadata,
    /// The artifact.
    pub artifact: ArtifactRef,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Who registered it.
    pub created_by: String,
    /// Time of the last event that changed it.
    pub updated_at: DateTime<Utc>,
}

impl ModelVersion {
    /// The version's training profile: the tag `baseline_profile` (set by
    /// `mlwatch baseline build`, latest wins) or else the one given in the
    /// metadata at registration.
    pub fn baseline_profile(&self) -> Option<&str> {
        self.tags
            .get("baseline_profile")
            .or(self.metadata.baseline_profile.as_ref())
            .map(String::as_str)
    }
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A version was registered (into `dev`).
    Register,
    /// A version moved to a later stage.
    Promote,
    /// A version was archived (explicitly or because another replaced it).
    Archive,
    /// A version got back a stage it held before the current holder (see
    /// [`super::state`] for which one).
    Rollback,
    /// An alias was set or moved.
    SetAlias,
    /// An alias was removed.
    DeleteAlias,
    /// A tag was set on a version.
    SetTag,
    /// A tag was removed from a version.
    DeleteTag,
}

impl EventKind {
    /// Its snake_case name (the `kind` column).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Register => "register",
            EventKind::Promote => "promote",
            EventKind::Archive => "archive",
            EventKind::Rollback => "rollback",
            EventKind::SetAlias => "set_alias",
            EventKind::DeleteAlias => "delete_alias",
            EventKind::SetTag => "set_tag",
            EventKind::DeleteTag => "delete_tag",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            EventKind::Register,
            EventKind::Promote,
            EventKind::Archive,
            EventKind::Rollback,
            EventKind::SetAlias,
            EventKind::DeleteAlias,
            EventKind::SetTag,
            EventKind::DeleteTag,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of the registry's history (a row of `registry_events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryEvent {
    /// Commit number in the log (1, 2, ...); events of one command share it.
    pub seq: u64,
    /// Position inside the commit.
    pub idx: u32,
    /// When it was committed.
    pub time: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// Model name.
    pub model: String,
    /// What happened.
    pub kind: EventKind,
    /// The version concerned.
    pub version: u64,
    /// Stage before (stage events) .
    pub from_stage: Option<Stage>,
    /// Stage after.
    pub to_stage: Option<Stage>,
    /// Alias (alias events).
    pub alias: Option<String>,
    /// Version the alias pointed at before, or the stage holder a rollback replaced.
    pub from_version: Option<u64>,
    /// Tag key (tag events).
    pub tag_key: Option<String>,
    /// Tag value (`set_tag`).
    pub tag_value: Option<String>,
    /// Registration metadata and artifact, as JSON (`register`).
    pub metadata: Option<String>,
    /// Identifies the writer's commit (to recognise its own after a retry).
    pub commit_id: String,
    /// The promotion rules a `--force` overrode, with the values compared
    /// (`promote` events only; the actor is who forced it). Null otherwise,
    /// and in logs written before the column existed.
    pub forced_rule: Option<String>,
}

/// An earlier holder of a stage that a rollback passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedVersion {
    /// Version number.
    pub version: u64,
    /// Why it was not restored, e.g. `archived explicitly by bob at ...`.
    pub reason: String,
}

impl fmt::Display for SkippedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} ({})", self.version, self.reason)
    }
}

/// Checks a model name, alias or tag key: 1-64 characters (128 for tag
/// keys) of letters, digits, `_`, `-`, `.` (and `/` in tag keys), starting
/// with a letter or digit. Aliases may not be `latest`, a stage name or a
/// version number.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason: &str| {
        Err(RegistryError::Invalid {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        })
    };
    let max = if what == "tag key" { 128 } else { 64 };
    if value.is_empty() || value.chars().count() > max {
        return invalid(&format!("must be 1 to {max} characters"));
    }
    let extra_ok = |c: char| matches!(c, '_' | '-' | '.') || (what == "tag key" && c == '/');
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra_ok(c))
    {
        return invalid(if what == "tag key" {
            "may only hold letters, digits, '_', '-', '.' and '/'"
        } else {
            "may only hold letters, digits, '_', '-' and '.'"
        });
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("must start with a letter or digit");
    }
    if what == "alias" {
        let digits = value.strip_prefix('v').unwrap_or(value);
        if value == "latest"
            || value.parse::<Stage>().is_ok()
            || digits.bytes().all(|b| b.is_ascii_digit())
        {
            return invalid(
                "is reserved (latest, stage names and version numbers select versions)",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_selectors() {
        assert!(validate_name("model name", "fraud-detector_v2.1").is_ok());
        for bad in ["", "-x", "a b", "a/b", "../x", &"x".repeat(65)] {
            assert!(validate_name("model name", bad).is_err(), "{bad:?}");
        }
        for bad in ["latest", "production", "v3", "12"] {
            let e = validate_name("alias", bad).unwrap_err().to_string();
            assert!(e.contains("reserved") && e.contains(bad), "{e}");
        }
        assert!(validate_name("tag key", "team/owner").is_ok());
        assert_eq!("3".parse::<Selector>().unwrap(), Selector::Version(3));
        assert_eq!("v12".parse::<Selector>().unwrap(), Selector::Version(12));
        assert_eq!(
            "production".parse::<Selector>().unwrap(),
            Selector::Stage(Stage::Production)
        );
        assert_eq!("latest".parse::<Selector>().unwrap(), Selector::Latest);
        assert_eq!(
            "champion".parse::<Selector>().unwrap(),
            Selector::Alias("champion".into())
        );
        assert!("bad alias".parse::<Selector>().is_err());
    }
}
