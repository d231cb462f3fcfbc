//! The registry's current state, derived by folding the event log, and the
//! commands that turn a request into events after checking it against that
//! state. Commands are pure: a rejected request returns an error and no
//! events, so nothing is written; a request that is already satisfied
//! (promoting a version to the stage it holds) returns no events either,
//! and succeeds.
//!
//! # Stage history and rollback
//!
//! Each exclusive stage (`staging`, `production`) keeps its history: the
//! versions that held it, oldest first, each listed once, at its latest
//! hold. A promotion into the stage moves the version to the top. A
//! rollback takes the current holder off the top and gives the stage to the
//! newest earlier holder that is still *eligible*: archived because another
//! version took this stage from it (a displacement, recorded as the second
//! event of a promote or rollback commit). Versions above it that are not
//! eligible (archived explicitly, or now in another stage) are skipped,
//! leave the history with the rolled-back-from version, and are reported
//! by name and reason. So rollbacks walk back one holder at a time (v4 ->
//! v3 -> v2 -> v1), never flip between the last two, never revive a version
//! someone retired on purpose, and a version rolled back from is not
//! restored again unless it is promoted again. A rollback needs a current
//! holder (rolling back an empty stage is an error: promote explicitly) and
//! an eligible earlier one.
//!
//! The history is derived from the events alone, so logs written before
//! these rules fold the same way (an old rollback to a version no longer in
//! the history puts it on top).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use super::RegistryError;
use super::model::{
    ArtifactRef, EventKind, ModelMetadata, ModelVersion, RegistryEvent, Selector, SkippedVersion,
    Stage,
};

/// One model: its versions, aliases and the history of its exclusive stages.
#[derive(Debug, Clone, Default)]
pub struct ModelState {
    /// Versions by number.
    pub versions: BTreeMap<u64, ModelVersion>,
    /// Alias -> version.
    pub aliases: BTreeMap<String, u64>,
    /// For `staging` and `production`: the versions that held the stage,
    /// oldest first, each once (see the module docs; a rollback walks it
    /// back).
    pub stage_history: BTreeMap<Stage, Vec<u64>>,
    /// The last stage change of each version that has one.
    pub(crate) last_moves: BTreeMap<u64, StageChange>,
}

/// A version's last stage change, as far as rollback needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageChange {
    /// Set when it was archived because another version took this stage.
    pub displaced_from: Option<Stage>,
    /// Who moved it.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
}

impl ModelState {
    /// Why `version` cannot get `stage` back from a rollback (None: it can).
    fn not_restorable(&self, version: u64, stage: Stage) -> Option<String> {
        let Some(v) = self.versions.get(&version) else {
            return Some("it is not registered".into());
        };
        let when = |m: &StageChange| {
            format!(
                "by {} at {}",
                m.actor,
                m.time.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        };
        match self.last_moves.get(&version) {
            Some(m) if v.stage == Stage::Archived && m.displaced_from == Some(stage) => None,
            Some(m) if v.stage == Stage::Archived => Some(match m.displaced_from {
                Some(other) => format!(
                    "archived {} when another version replaced it in {other}",
                    when(m)
                ),
                None => format!("archived explicitly {}", when(m)),
            }),
            Some(m) => Some(format!("now in {} (moved there {})", v.stage, when(m))),
            None => Some(format!("now in {}", v.stage)),
        }
    }

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
        // An archive right after a promotion or rollback into the stage the
        // version leaves, in the same commit, is a displacement.
        let displaced_from = self
            .events
            .last()
            .filter(|p| {
                e.kind == EventKind::Archive
                    && p.seq == e.seq
                    && p.model == e.model
                    && matches!(p.kind, EventKind::Promote | EventKind::Rollback)
                    && p.version != e.version
                    && p.to_stage.is_some()
                    && p.to_stage == e.from_stage
            })
            .and_then(|p| p.to_stage);
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
                            let h = model.stage_history.entry(to).or_default();
                            let at = h.iter().position(|x| *x == e.version);
                            match (e.kind, at) {
                                // Everything above the restored version leaves.
                                (EventKind::Rollback, Some(i)) => h.truncate(i + 1),
                                (_, at) => {
                                    if let Some(i) = at {
                                        h.remove(i);
                                    }
                                    h.push(e.version);
                                }
                            }
                        }
                        model.last_moves.insert(
                            e.version,
                            StageChange {
                                displaced_from,
                                actor: e.actor.clone(),
                                time: e.time,
                            },
                        );
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
    /// Ignore the configured promotion rules; a rule this overrides is
    /// recorded in the promote event's `forced_rule`.
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
        forced_rule: None,
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

/// Why `from -> to` (`from != to`) is not allowed (None when it is).
fn transition_error(from: Stage, to: Stage, allow_skip: bool) -> Option<String> {
    use Stage::*;
    match (from, to) {
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
/// None when it is already in `to`: a retried request succeeds and writes
/// nothing.
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
    if v.stage == to {
        return Ok(Vec::new());
    }
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
    let breaches = match current.and_then(|c| model.versions.get(&c)) {
        Some(cur) => rule_breaches(v, cur, to, rules),
        None => Vec::new(),
    };
    let forced_rule = (!breaches.is_empty()).then(|| breaches.join("; "));
    if let Some(reason) = forced_rule.as_ref().filter(|_| !options.force) {
        return Err(RegistryError::RuleViolated {
            name: name.to_string(),
            version,
            reason: format!("{reason}; use --force to override"),
        });
    }
    let mut events = vec![RegistryEvent {
        forced_rule,
        ..stage_event(name, EventKind::Promote, version, v.stage, to)
    }];
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

/// The configured rules for `stage` that `candidate` breaks against the
/// current holder, each as `metric `auc` is 0.79 against 0.85 for version 2
/// in production (higher is better)`.
fn rule_breaches(
    candidate: &ModelVersion,
    current: &ModelVersion,
    stage: Stage,
    rules: &[PromotionRule],
) -> Vec<String> {
    let mut out = Vec::new();
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
            out.push(format!(
                "metric `{}` is {} against {} for version {} in {stage} ({} is better)",
                rule.metric,
                ours.map_or("missing".to_string(), |o| o.to_string()),
                theirs,
                current.version,
                if rule.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
            ));
        }
    }
    out
}

/// Events of giving `stage` back to the newest earlier holder that is
/// still eligible (see the module docs), archiving the current holder; and
/// the versions skipped on the way, with the reason.
pub(crate) fn rollback(
    state: &RegistryState,
    name: &str,
    stage: Stage,
) -> Result<(Vec<RegistryEvent>, Vec<SkippedVersion>), RegistryError> {
    let model = state.model(name)?;
    if !stage.is_exclusive() {
        return Err(RegistryError::Invalid {
            what: "stage",
            value: stage.to_string(),
            reason: "only staging and production can be rolled back".into(),
        });
    }
    let current = model
        .holder(stage)
        .ok_or_else(|| RegistryError::EmptyStage {
            name: name.to_string(),
            stage,
        })?;
    let mut skipped = Vec::new();
    let mut restored = None;
    let earlier = model.stage_history.get(&stage).into_iter().flatten().rev();
    for &v in earlier.filter(|v| **v != current) {
        match model.not_restorable(v, stage) {
            None => {
                restored = Some(v);
                break;
            }
            Some(reason) => skipped.push(SkippedVersion { version: v, reason }),
        }
    }
    let Some(restored) = restored else {
        return Err(RegistryError::NothingToRollBack {
            name: name.to_string(),
            stage,
            current,
            skipped,
        });
    };
    let prev = &model.versions[&restored];
    let events = vec![
        RegistryEvent {
            from_version: Some(current),
            ..stage_event(name, EventKind::Rollback, restored, prev.stage, stage)
        },
        stage_event(name, EventKind::Archive, current, stage, Stage::Archived),
    ];
    Ok((events, skipped))
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
        let (ev, skipped) = rollback(&s, "fraud", Stage::Production).unwrap();
        assert!(skipped.is_empty());
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

    /// Applies a command's events as `actor`.
    fn run_as(state: &mut RegistryState, actor: &str, events: Vec<RegistryEvent>) {
        let events = events
            .into_iter()
            .map(|e| RegistryEvent {
                actor: actor.to_string(),
                ..e
            })
            .collect();
        run(state, events);
    }

    fn with_versions(n: usize) -> RegistryState {
        let mut s = RegistryState::default();
        for _ in 0..n {
            let ev = register(&s, "m", &auc(0.8), &artifact()).unwrap();
            run(&mut s, ev);
        }
        s
    }

    fn to(s: &mut RegistryState, v: u64, stage: Stage) {
        let skip = PromoteOptions {
            allow_skip: true,
            force: false,
        };
        let ev = promote(s, "m", v, stage, skip, &[]).unwrap();
        run(s, ev);
    }

    /// Rolls production back; the version restored and the ones skipped.
    fn back(s: &mut RegistryState, stage: Stage) -> (u64, Vec<u64>) {
        let (ev, skipped) = rollback(s, "m", stage).unwrap();
        let restored = ev[0].version;
        run(s, ev);
        (restored, skipped.iter().map(|k| k.version).collect())
    }

    #[test]
    fn rollback_walks_the_stage_history_back() {
        let mut s = with_versions(4);
        for v in 1..=4 {
            to(&mut s, v, Stage::Production);
        }
        assert_eq!(
            s.model("m").unwrap().stage_history[&Stage::Production],
            [1, 2, 3, 4]
        );
        for expected in [3, 2, 1] {
            assert_eq!(back(&mut s, Stage::Production), (expected, vec![]));
            assert_eq!(
                s.model("m").unwrap().holder(Stage::Production),
                Some(expected)
            );
        }
        let e = rollback(&s, "m", Stage::Production).unwrap_err();
        assert!(
            matches!(e, RegistryError::NothingToRollBack { current: 1, ref skipped, .. } if skipped.is_empty()),
            "{e}"
        );
        // The same history folds from the log alone.
        let again = RegistryState::from_events(s.events.clone());
        assert_eq!(
            again.model("m").unwrap().stage_history,
            s.model("m").unwrap().stage_history
        );
        // A re-promoted version moves to the top once, not twice.
        to(&mut s, 3, Stage::Production);
        to(&mut s, 2, Stage::Production);
        assert_eq!(
            s.model("m").unwrap().stage_history[&Stage::Production],
            [1, 3, 2]
        );
        assert_eq!(back(&mut s, Stage::Production), (3, vec![]));
        assert_eq!(back(&mut s, Stage::Production), (1, vec![]));
    }

    #[test]
    fn rollback_skips_versions_retired_for_another_reason() {
        let mut s = with_versions(5);
        for v in 1..=3 {
            to(&mut s, v, Stage::Production);
        }
        // 3 is archived by hand, production is empty: nothing to roll back.
        let ev = promote(&s, "m", 3, Stage::Archived, PromoteOptions::default(), &[]).unwrap();
        run_as(&mut s, "bob", ev);
        let e = rollback(&s, "m", Stage::Production).unwrap_err();
        assert!(matches!(e, RegistryError::EmptyStage { .. }), "{e}");
        assert!(e.to_string().contains("no version in production"), "{e}");
        // 4 goes out; rolling it back skips 3 and names why.
        to(&mut s, 4, Stage::Production);
        let (ev, skipped) = rollback(&s, "m", Stage::Production).unwrap();
        assert_eq!((ev[0].version, ev[0].from_version), (2, Some(4)));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].version, 3);
        assert!(
            skipped[0]
                .reason
                .starts_with("archived explicitly by bob at 1970-"),
            "{}",
            skipped[0].reason
        );
        run(&mut s, ev);
        // 3 stays archived, and is gone from the history with 4.
        let m = s.model("m").unwrap();
        assert_eq!(m.versions[&3].stage, Stage::Archived);
        assert_eq!(m.stage_history[&Stage::Production], [1, 2]);
        // A staging holder that went on to production is not pulled back.
        to(&mut s, 5, Stage::Staging);
        let ev = promote(
            &s,
            "m",
            5,
            Stage::Production,
            PromoteOptions::default(),
            &[],
        )
        .unwrap();
        run(&mut s, ev);
        let ev = promote(&s, "m", 4, Stage::Staging, PromoteOptions::default(), &[]).unwrap();
        run(&mut s, ev);
        let e = rollback(&s, "m", Stage::Staging).unwrap_err();
        assert!(
            e.to_string().contains("version 5 (now in production"),
            "{e}"
        );
        assert_eq!(back(&mut s, Stage::Production), (2, vec![]));
    }

    #[test]
    fn promotion_to_the_held_stage_is_empty_and_forcing_is_recorded() {
        let mut s = with_versions(2);
        let ev = register(&s, "m", &auc(0.7), &artifact()).unwrap();
        run(&mut s, ev);
        to(&mut s, 1, Stage::Production);
        let opts = PromoteOptions::default();
        assert!(
            promote(&s, "m", 1, Stage::Production, opts, &[])
                .unwrap()
                .is_empty()
        );
        to(&mut s, 2, Stage::Archived);
        assert!(
            promote(&s, "m", 2, Stage::Archived, opts, &[])
                .unwrap()
                .is_empty()
        );
        let rules = [PromotionRule {
            metric: "auc".into(),
            higher_is_better: true,
            stage: Stage::Production,
        }];
        to(&mut s, 3, Stage::Staging);
        let e = promote(&s, "m", 3, Stage::Production, opts, &rules).unwrap_err();
        assert!(e.to_string().ends_with("use --force to override"), "{e}");
        let force = PromoteOptions {
            force: true,
            ..opts
        };
        let ev = promote(&s, "m", 3, Stage::Production, force, &rules).unwrap();
        assert_eq!(
            ev[0].forced_rule.as_deref(),
            Some("metric `auc` is 0.7 against 0.8 for version 1 in production (higher is better)")
        );
        assert_eq!(ev[1].forced_rule, None);
        // Forcing when no rule is broken records nothing.
        let ev = promote(&s, "m", 2, Stage::Staging, force, &rules).unwrap();
        assert_eq!(ev[0].forced_rule, None);
    }
}
