//! The registry's current state, derived by folding the event log, and the
//! commands that turn a request into events after checking it against that
//! state. Commands are pure: a rejected request returns an error and no
//! events, so nothing is written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::RegistryError;
use super::model::{
    ArtifactRef, EventKind, ModelMetadata, ModelVersion, RegistryEvent, Selector, Stage,
};

/// One model: its versions, aliases and who held each exclusive stage.
#[derive(Debug, Clone, Default)]
pub struct ModelState {
    /// Versions by number.
    pub versions: BTreeMap<u64, ModelVersion>,
    /// Alias -> version.
    pub aliases: BTreeMap<String, u64>,
    /// For `staging` and `production`: versions in the order they took the stage.
    pub holders: BTreeMap<Stage, Vec<u64>>,
}

impl ModelState {
    /// The version now in an exclusive stage.
    pub fn holder(&self, stage: Stage) -> Option<u64> {
        self.versions
            .values()
            .find(|v| v.stage == stage)
            .map(|v| v.version)
    }

    /// Resolves a selector.
    pub fn resolve(&self, name: &str, selector: &Selector) -> Result<&ModelVersion, RegistryError> {
        let found = match selector {
            Selector::Version(v) => self.versions.get(v),
            Selector::Latest => self.versions.values().next_back(),
            Selector::Stage(s) => self.versions.values().rev().find(|v| v.stage == *s),
            Selector::Alias(a) => self.aliases.get(a).and_then(|v| self.versions.get(v)),
        };
        found.ok_or_else(|| RegistryError::NotFound {
            name: name.to_string(),
            selector: selector.to_string(),
        })
    }
}

/// Every model, and the events that made them.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    /// Models by name.
    pub models: BTreeMap<String, ModelState>,
    /// The whole history, in commit order.
    pub events: Vec<RegistryEvent>,
    /// Last commit applied.
    pub head: u64,
}

impl RegistryState {
    /// Folds events (in order) into a state.
    pub fn from_events(events: impl IntoIterator<Item = RegistryEvent>) -> Self {
        let mut s = Self::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    /// The state as it was at `time`: every commit whose events are all at
    /// or before it (commit order decides; clocks of different writers only
    /// choose the cut).
    pub fn as_of(&self, time: DateTime<Utc>) -> Self {
        let cut = self
            .events
            .iter()
            .rposition(|e| e.time <= time)
            .map_or(0, |i| self.events[i].seq);
        Self::from_events(self.events.iter().filter(|e| e.seq <= cut).cloned())
    }

    /// A model, or an error naming it.
    pub fn model(&self, name: &str) -> Result<&ModelState, RegistryError> {
        self.models
            .get(name)
            .ok_or_else(|| RegistryError::UnknownModel(name.to_string()))
    }

    /// Events of a commit written by `commit_id`, if it landed.
    pub fn commit_of(&self, commit_id: &str) -> Option<Vec<RegistryEvent>> {
        let found: Vec<RegistryEvent> = self
            .events
            .iter()
            .rev()
            .take(64)
            .filter(|e| e.commit_id == commit_id)
            .cloned()
            .collect();
        (!found.is_empty()).then(|| found.into_iter().rev().collect())
    }

    /// Applies one event. Events come from commands checked against the
    /// state they were built on, so they always apply; an event naming an
    /// unknown version (a log written by something else) is kept in the
    /// history and otherwise ignored.
    pub fn apply(&mut self, e: RegistryEvent) {
        self.head = self.head.max(e.seq);
        let model = self.models.entry(e.model.clone()).or_default();
        if e.kind == EventKind::Register {
            if let Some(mv) = registered_version(&e) {
                model.versions.insert(e.version, mv);
            }
        } else if let Some(v) = model.versions.get_mut(&e.version) {
            v.updated_at = e.time;
            match e.kind {
                EventKind::Promote | EventKind::Archive | EventKind::Rollback => {
                    if let Some(to) = e.to_stage {
                        v.stage = to;
                        if to.is_exclusive() {
                            model.holders.entry(to).or_default().push(e.version);
                        }
                    }
                }
                EventKind::SetAlias => {
                    if let Some(a) = &e.alias {
                        if let Some(old) = model.aliases.insert(a.clone(), e.version)
                            && let Some(o) = model.versions.get_mut(&old)
                        {
                            o.aliases.retain(|x| x != a);
                        }
                        if let Some(v) = model.versions.get_mut(&e.version) {
                            v.aliases.push(a.clone());
                            v.aliases.sort();
                        }
                    }
                }
                EventKind::DeleteAlias => {
                    if let Some(a) = &e.alias {
                        model.aliases.remove(a);
                        v.aliases.retain(|x| x != a);
                    }
                }
                EventKind::SetTag => {
                    if let (Some(k), Some(val)) = (&e.tag_key, &e.tag_value) {
                        v.tags.insert(k.clone(), val.clone());
                    }
                }
                EventKind::DeleteTag => {
                    if let Some(k) = &e.tag_key {
                        v.tags.remove(k);
                    }
                }
                EventKind::Register => {}
            }
        }
        self.events.push(e);
    }
}

/// The JSON stored in a `register` event.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Registration {
    pub metadata: ModelMetadata,
    pub artifact: ArtifactRef,
}

fn registered_version(e: &RegistryEvent) -> Option<ModelVersion> {
    let r: Registration = serde_json::from_str(e.metadata.as_deref()?).ok()?;
    Some(ModelVersion {
        name: e.model.clone(),
        version: e.version,
        stage: Stage::Dev,
        aliases: Vec::new(),
        tags: r.metadata.tags.clone(),
        metadata: r.metadata,
        artifact: r.artifact,
        created_at: e.time,
        created_by: e.actor.clone(),
        updated_at: e.time,
    })
}

/// A rule checked when a version enters a stage: its metric must not be
/// worse than the current holder's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionRule {
    /// Metric name in the versions' metadata.
    pub metric: String,
    /// Whether larger values are better (AUC) or smaller (log loss).
    #[serde(default = "yes")]
    pub higher_is_better: bool,
    /// The stage the rule guards.
    #[serde(default = "production")]
    pub stage: Stage,
}

fn yes() -> bool {
    true
}

fn production() -> Stage {
    Stage::Production
}

/// Options of a promotion.
#[derive(Debug, Clone, Copy, Default)]
pub struct PromoteOptions {
    /// Allow dev -> production (and archived -> production) without staging.
    pub allow_skip: bool,
    /// Ignore the configured promotion rules.
    pub force: bool,
}

/// An event before the log gives it a sequence number, time and actor.
pub(crate) fn draft(model: &str, kind: EventKind, version: u64) -> RegistryEvent {
    RegistryEvent {
        seq: 0,
        idx: 0,
        time: DateTime::<Utc>::UNIX_EPOCH,
        actor: String::new(),
        model: model.to_string(),
        kind,
        version,
        from_stage: None,
        to_stage: None,
        alias: None,
        from_version: None,
        tag_key: None,
        tag_value: None,
        metadata: None,
        commit_id: String::new(),
    }
}

fn stage_event(
    model: &str,
    kind: EventKind,
    version: u64,
    from: Stage,
    to: Stage,
) -> RegistryEvent {
    RegistryEvent {
        from_stage: Some(from),
        to_stage: Some(to),
        ..draft(model, kind, version)
    }
}

/// Events of registering the next version of `name`.
pub(crate) fn register(
    state: &RegistryState,
    name: &str,
    metadata: &ModelMetadata,
    artifact: &ArtifactRef,
) -> Result<Vec<RegistryEvent>, RegistryError> {
    let version = state
        .models
        .get(name)
        .and_then(|m| m.versions.keys().next_back())
        .map_or(1, |v| v + 1);
    let json = serde_json::to_string(&Registration {
        metadata: metadata.clone(),
        artifact: artifact.clone(),
    })
    .map_err(|e| RegistryError::Invalid {
        what: "metadata",
        value: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(vec![RegistryEvent {
        to_stage: Some(Stage::Dev),
        metadata: Some(json),
        ..draft(name, EventKind::Register, version)
    }])
}

/// Why `from -> to` is not allowed (None when it is).
fn transition_error(from: Stage, to: Stage, allow_skip: bool) -> Option<String> {
    use Stage::*;
    match (from, to) {
        _ if from == to => Some(format!("it is already in {to}")),
        (_, Archived) => None,
        (_, Dev) => Some("a version never goes back to dev".into()),
        (Dev | Archived, Staging) => None,
        (Production, Staging) => {
            Some("production does not go back to staging; use rollback or archive".into())
        }
        (Staging, Production) => None,
        (Dev | Archived, Production) if allow_skip => None,
        (Dev | Archived, Production) => Some(format!(
            "{from} -> production skips staging; allow it explicitly (--allow-skip)"
        )),
        _ => Some(format!("{from} -> {to} is not a promotion")),
    }
}

/// Events of moving `version` to `to`, archiving the version it replaces.
pub(crate) fn promote(
    state: &RegistryState,
    name: &str,
    version: u64,
    to: Stage,
    options: PromoteOptions,
    rules: &[PromotionRule],
) -> Result<Vec<RegistryEvent>, RegistryError> {
    let model = state.model(name)?;
    let v = model.resolve(name, &Selector::Version(version))?;
    if let Some(reason) = transition_error(v.stage, to, options.allow_skip) {
        return Err(RegistryError::IllegalTransition {
            name: name.to_string(),
            version,
            from: v.stage,
            to,
            reason,
        });
    }
    let current = if to.is_exclusive() {
        model.holder(to)
    } else {
        None
    };
    if !options.force
        && let Some(cur) = current.and_then(|c| model.versions.get(&c))
    {
        check_rules(name, v, cur, to, rules)?;
    }
    let mut events = vec![stage_event(name, EventKind::Promote, version, v.stage, to)];
    if to == Stage::Archived {
        events[0].kind = EventKind::Archive;
    }
    if let Some(cur) = current {
        events.push(stage_event(
            name,
            EventKind::Archive,
            cur,
            to,
            Stage::Archived,
        ));
    }
    Ok(events)
}

fn check_rules(
    name: &str,
    candidate: &ModelVersion,
    current: &ModelVersion,
    stage: Stage,
    rules: &[PromotionRule],
) -> Result<(), RegistryError> {
    for rule in rules.iter().filter(|r| r.stage == stage) {
        let Some(theirs) = current.metadata.metrics.get(&rule.metric) else {
            continue;
        };
        let ours = candidate.metadata.metrics.get(&rule.metric);
        let worse = match ours {
            None => true,
            Some(o) if rule.higher_is_better => o < theirs,
            Some(o) => o > theirs,
        };
        if worse {
            return Err(RegistryError::RuleViolated {
                name: name.to_string(),
                version: candidate.version,
                reason: format!(
                    "metric `{}` is {} against {} for version {} in {stage} ({} is better); use --force to override",
                    rule.metric,
                    ours.map_or("missing".to_string(), |o| o.to_string()),
                    theirs,
                    current.version,
                    if rule.higher_is_better {
                        "higher"
                    } else {
                        "lower"
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Events of giving `stage` back to the version that held it before the
/// current holder (or to the last holder when none holds it now).
pub(crate) fn rollback(
    state: &RegistryState,
    name: &str,
    stage: Stage,
) -> Result<Vec<RegistryEvent>, RegistryError> {
    let model = state.model(name)?;
    if !stage.is_exclusive() {
        return Err(RegistryError::Invalid {
            what: "stage",
            value: stage.to_string(),
            reason: "only staging and production can be rolled back".into(),
        });
    }
    let current = model.holder(stage);
    let previous = model
        .holders
        .get(&stage)
        .into_iter()
        .flatten()
        .rev()
        .find(|v| Some(**v) != current && model.versions.contains_key(v))
        .copied()
        .ok_or_else(|| RegistryError::NotFound {
            name: name.to_string(),
            selector: format!("a version that held {stage} before the current one"),
        })?;
    let prev = &model.versions[&previous];
    let mut events = vec![RegistryEvent {
        from_version: current,
        ..stage_event(name, EventKind::Rollback, previous, prev.stage, stage)
    }];
    if let Some(cur) = current {
        events.push(stage_event(
            name,
            EventKind::Archive,
            cur,
            stage,
            Stage::Archived,
        ));
    }
    Ok(events)
}

/// Events of pointing `alias` at `version` (moving it if set elsewhere).
pub(crate) fn set_alias(
    state: &RegistryState,
    name: &str,
    alias: &str,
    version: u64,
) -> Result<Vec<RegistryEvent>, RegistryError> {
    super::model::validate_name("alias", alias)?;
    let model = state.model(name)?;
    model.resolve(name, &Selector::Version(version))?;
    Ok(vec![RegistryEvent {
        alias: Some(alias.to_string()),
        from_version: model.aliases.get(alias).copied(),
        ..draft(name, EventKind::SetAlias, version)
    }])
}

/// Events of removing `alias`.
pub(crate) fn delete_alias(
    state: &RegistryState,
    name: &str,
    alias: &str,
) -> Result<Vec<RegistryEvent>, RegistryError> {
    let model = state.model(name)?;
    let version = *model
        .aliases
        .get(alias)
        .ok_or_else(|| RegistryError::NotFound {
            name: name.to_string(),
            selector: format!("alias {alias}"),
        })?;
    Ok(vec![RegistryEvent {
        alias: Some(alias.to_string()),
        from_version: Some(version),
        ..draft(name, EventKind::DeleteAlias, version)
    }])
}

/// Events of setting (value `Some`) or deleting a tag of a version.
pub(crate) fn tag(
    state: &RegistryState,
    name: &str,
    version: u64,
    key: &str,
    value: Option<&str>,
) -> Result<Vec<RegistryEvent>, RegistryError> {
    super::model::validate_name("tag key", key)?;
    let v = state
        .model(name)?
        .resolve(name, &Selector::Version(version))?;
    if value.is_none() && !v.tags.contains_key(key) {
        return Err(RegistryError::NotFound {
            name: name.to_string(),
            selector: format!("tag {key} on version {version}"),
        });
    }
    let kind = if value.is_some() {
        EventKind::SetTag
    } else {
        EventKind::DeleteTag
    };
    Ok(vec![RegistryEvent {
        tag_key: Some(key.to_string()),
        tag_value: value.map(str::to_string),
        ..draft(name, kind, version)
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> ArtifactRef {
        ArtifactRef {
            kind: "file".into(),
            name: "m.bin".into(),
            sha256: "00".into(),
            size: 1,
        }
    }

    /// Applies a command's events the way the log does.
    fn run(state: &mut RegistryState, events: Vec<RegistryEvent>) {
        let seq = state.head + 1;
        for (i, mut e) in events.into_iter().enumerate() {
            e.seq = seq;
            e.idx = i as u32;
            e.time = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(seq as i64);
            state.apply(e);
        }
    }

    fn auc(v: f64) -> ModelMetadata {
        ModelMetadata {
            metrics: [("auc".to_string(), v)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle_rules_rollback_and_as_of() {
        let mut s = RegistryState::default();
        for a in [0.80, 0.85, 0.79] {
            let ev = register(&s, "fraud", &auc(a), &artifact()).unwrap();
            run(&mut s, ev);
        }
        let rules = [PromotionRule {
            metric: "auc".into(),
            higher_is_better: true,
            stage: Stage::Production,
        }];
        let opts = PromoteOptions::default();
        // dev -> production needs the explicit flag, and writes nothing.
        let e = promote(&s, "fraud", 1, Stage::Production, opts, &rules).unwrap_err();
        assert!(e.to_string().contains("skips staging"), "{e}");
        for (v, st) in [
            (1, Stage::Staging),
            (1, Stage::Production),
            (2, Stage::Staging),
            (2, Stage::Production),
        ] {
            let ev = promote(&s, "fraud", v, st, opts, &rules).unwrap();
            run(&mut s, ev);
        }
        let m = s.model("fraud").unwrap();
        assert_eq!(m.holder(Stage::Production), Some(2));
        assert_eq!(m.versions[&1].stage, Stage::Archived);
        // Version 3 has a worse AUC than production's: refused unless forced.
        let ev = promote(&s, "fraud", 3, Stage::Staging, opts, &rules).unwrap();
        run(&mut s, ev);
        let e = promote(&s, "fraud", 3, Stage::Production, opts, &rules).unwrap_err();
        assert!(
            e.to_string().contains("auc") && e.to_string().contains("0.79"),
            "{e}"
        );
        let t_v2 = s.events.last().unwrap().time;
        // Roll production back: 1 returns, 2 is archived.
        let ev = rollback(&s, "fraud", Stage::Production).unwrap();
        run(&mut s, ev);
        let m = s.model("fraud").unwrap();
        assert_eq!(m.holder(Stage::Production), Some(1));
        assert_eq!(m.versions[&2].stage, Stage::Archived);
        // As of before the rollback, 2 was in production.
        let then = s.as_of(t_v2);
        assert_eq!(
            then.model("fraud").unwrap().holder(Stage::Production),
            Some(2)
        );
        // Aliases move; unknown versions are rejected by number.
        for v in [1, 3] {
            let ev = set_alias(&s, "fraud", "champion", v).unwrap();
            run(&mut s, ev);
        }
        let m = s.model("fraud").unwrap();
        assert_eq!(m.aliases["champion"], 3);
        assert!(m.versions[&1].aliases.is_empty());
        let e = set_alias(&s, "fraud", "champion", 9).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        assert!(promote(&s, "nope", 1, Stage::Staging, opts, &[]).is_err());
    }
}
