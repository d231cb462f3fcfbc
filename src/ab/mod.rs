//! A/B(/n) experiments of model versions: their definitions and the
//! assignment of units to variants.
//!
//! **Assignment.** A unit goes to a variant by its bucket, a number in
//! `0..10000`:
//!
//! ```text
//! bucket = first 8 bytes of SHA-256(salt + "/" + unit_id), big-endian, mod 10000
//! ```
//!
//! (UTF-8; the salt is the experiment's `salt`, by default its name). In
//! Python: `int.from_bytes(hashlib.sha256(f"{salt}/{unit_id}".encode()).digest()[:8], "big") % 10000`.
//! The variants own consecutive bucket ranges in their declared order, each
//! `weight * 100` buckets wide (weights are percentages with at most two
//! decimals): with 50/50, buckets `0..5000` are the first variant's and
//! `5000..10000` the second's. The same unit and salt always give the same
//! variant, in any process or language. Changing weights moves only the
//! units whose bucket a range boundary passes over: from 50/50 to 80/20,
//! exactly the 30% of units in `5000..8000` move, all from the second
//! variant to the first (the fewest possible for two variants; with more,
//! a unit only moves between neighbouring ranges). A new salt reshuffles
//! every unit (a new experiment).

pub mod analysis;
pub mod evaluate;
pub mod report;
pub mod summary;

use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, ExperimentConfig};

/// Buckets a unit can fall in.
pub const BUCKETS: u32 = 10_000;

/// The bucket of `unit_id` under `salt` (see the module docs).
pub fn bucket(salt: &str, unit_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"/");
    h.update(unit_id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// A variant with its bucket range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arm {
    /// Variant name.
    pub name: String,
    /// Model version it serves.
    pub version: String,
    /// Share of the units, percent.
    pub weight: f64,
    /// First bucket.
    pub from: u32,
    /// One past the last bucket.
    pub to: u32,
    /// Whether it is the control.
    pub control: bool,
}

/// An experiment as mlwatch runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Assignment salt.
    pub salt: String,
    /// Variants in allocation order, with their bucket ranges.
    pub arms: Vec<Arm>,
    /// First event time, RFC 3339.
    pub start: String,
    /// Last event time, RFC 3339.
    pub end: Option<String>,
    /// Decision metric.
    pub primary_metric: String,
    /// Guardrail metrics and their allowed relative degradation.
    pub guardrails: std::collections::BTreeMap<String, f64>,
    /// Minimum detectable effect.
    pub mde: f64,
    /// Significance level.
    pub alpha: f64,
    /// Power.
    pub power: f64,
}

/// Where one unit goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Experiment.
    pub experiment: String,
    /// The unit.
    pub unit_id: String,
    /// Its bucket.
    pub bucket: u32,
    /// Its variant.
    pub variant: String,
    /// The model version the variant serves.
    pub version: String,
}

/// Width in buckets of a weight (percent, two decimals).
fn width(weight: f64) -> u32 {
    (weight * 100.0).round() as u32
}

/// Checks a definition; the message names the experiment and key.
pub fn validate(name: &str, e: &ExperimentConfig, config: &Config) -> Result<(), String> {
    let key = |k: &str| format!("`experiments.{name}.{k}`");
    if !crate::config::valid_name(name) {
        return Err(format!(
            "`experiments.{name}`: names use letters, digits, '_', '-' and '.'"
        ));
    }
    if !config.models.contains_key(&e.model) {
        return Err(format!(
            "{}: model `{}` is not declared in [models]",
            key("model"),
            e.model
        ));
    }
    if e.variants.len() < 2 {
        return Err(format!(
            "{}: declare at least two variants",
            key("variants")
        ));
    }
    let mut names = BTreeSet::new();
    for v in &e.variants {
        if !names.insert(v.name.as_str()) {
            return Err(format!(
                "{}: `{}` is declared twice",
                key("variants"),
                v.name
            ));
        }
        if v.name.is_empty() || v.version.is_empty() {
            return Err(format!(
                "{}: every variant needs a name and a version",
                key("variants")
            ));
        }
        if !(v.weight > 0.0 && v.weight.is_finite())
            || (v.weight * 100.0 - (v.weight * 100.0).round()).abs() > 1e-6
        {
            return Err(format!(
                "{}: weight {} of `{}` must be a positive percentage with at most two decimals",
                key("variants"),
                v.weight,
                v.name
            ));
        }
    }
    let total: u32 = e.variants.iter().map(|v| width(v.weight)).sum();
    if total != BUCKETS {
        let listed: Vec<String> = e
            .variants
            .iter()
            .map(|v| format!("{} = {}", v.name, v.weight))
            .collect();
        return Err(format!(
            "{}: weights must sum to 100, not {} ({})",
            key("variants"),
            f64::from(total) / 100.0,
            listed.join(", ")
        ));
    }
    if !names.contains(e.control.as_str()) {
        return Err(format!(
            "{}: `{}` is not one of the variants ({})",
            key("control"),
            e.control,
            names.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if e.end.is_some_and(|end| end <= e.start) {
        return Err(format!("{}: must be after `start`", key("end")));
    }
    if !(e.mde > 0.0 && e.mde.is_finite()) {
        return Err(format!("{}: must be a positive number", key("mde")));
    }
    for (k, v) in [("alpha", e.alpha), ("power", e.power)] {
        if !(v > 0.0 && v < 1.0) {
            return Err(format!("{}: must be in (0, 1)", key(k)));
        }
    }
    let task = config.models.get(&e.model).and_then(|m| m.task);
    let primary = analysis::known_metrics(task, true);
    if !primary.contains(&e.primary_metric.as_str()) {
        return Err(format!(
            "{}: `{}` cannot be decided on for this model (one of {}{})",
            key("primary_metric"),
            e.primary_metric,
            primary.join(", "),
            if task.is_none() {
                "; label metrics need the model's `task`"
            } else if e.primary_metric == "roc_auc" {
                "; roc_auc is estimated on a sample of `window.sample_size` scores per class, \
                 too few to reach a plan: use it as a guardrail"
            } else {
                ""
            }
        ));
    }
    let known = analysis::known_metrics(task, false);
    // Two experiments on one model at once must not share a variant name,
    // nor both count events without a variant by version: each would
    // count the other's traffic.
    for (other, o) in &config.experiments {
        if other == name || o.model != e.model {
            continue;
        }
        let overlap =
            e.end.is_none_or(|end| o.start < end) && o.end.is_none_or(|end| e.start < end);
        if !overlap {
            continue;
        }
        if let Some(v) = e
            .variants
            .iter()
            .find(|v| o.variants.iter().any(|w| w.name == v.name))
        {
            return Err(format!(
                "{}: variant `{}` is also a variant of `experiments.{other}` on the same model at the same time; events carry only the variant name, so give them different names",
                key("variants"),
                v.name
            ));
        }
    }
    for (metric, d) in &e.guardrails {
        if !known.contains(&metric.as_str()) {
            return Err(format!(
                "{}: `{metric}` is not a metric of this model (one of {})",
                key("guardrails"),
                known.join(", ")
            ));
        }
        if !(*d >= 0.0 && d.is_finite()) {
            return Err(format!(
                "{}: must be a non-negative share",
                key(&format!("guardrails.{metric}"))
            ));
        }
    }
    Ok(())
}

impl Experiment {
    /// The experiment `name` of `config` (validated when the config was
    /// loaded).
    pub fn from_config(name: &str, e: &ExperimentConfig) -> Self {
        let mut from = 0;
        let arms = e
            .variants
            .iter()
            .map(|v| {
                let to = from + width(v.weight);
                let arm = Arm {
                    name: v.name.clone(),
                    version: v.version.clone(),
                    weight: v.weight,
                    from,
                    to,
                    control: v.name == e.control,
                };
                from = to;
                arm
            })
            .collect();
        let rfc =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Self {
            name: name.to_string(),
            model: e.model.clone(),
            salt: e.salt.clone().unwrap_or_else(|| name.to_string()),
            arms,
            start: rfc(e.start),
            end: e.end.map(rfc),
            primary_metric: e.primary_metric.clone(),
            guardrails: e.guardrails.clone(),
            mde: e.mde,
            alpha: e.alpha,
            power: e.power,
        }
    }

    /// Every experiment of `config`, by name.
    pub fn all(config: &Config) -> Vec<Self> {
        config
            .experiments
            .iter()
            .map(|(n, e)| Self::from_config(n, e))
            .collect()
    }

    /// The arm of bucket `b`.
    pub fn arm_of(&self, b: u32) -> &Arm {
        self.arms
            .iter()
            .find(|a| (a.from..a.to).contains(&b))
            .unwrap_or_else(|| &self.arms[self.arms.len() - 1])
    }

    /// Where `unit_id` goes.
    pub fn assign(&self, unit_id: &str) -> Assignment {
        let b = bucket(&self.salt, unit_id);
        let arm = self.arm_of(b);
        Assignment {
            experiment: self.name.clone(),
            unit_id: unit_id.to_string(),
            bucket: b,
            variant: arm.name.clone(),
            version: arm.version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(variants: &str, extra: &str) -> crate::error::Result<Config> {
        Config::from_toml_str(&format!(
            "[models.m]\nreference = \"r.csv\"\ntask = \"binary\"\n[models.m.features]\nx = \"numeric\"\n\
             [experiments.e]\nmodel = \"m\"\ncontrol = \"a\"\nstart = \"2026-01-01T00:00:00Z\"\n\
             primary_metric = \"accuracy\"\nmde = 0.02\n{extra}\nvariants = [{variants}]"
        ))
    }

    #[test]
    fn buckets_match_python_hashlib() {
        // int.from_bytes(hashlib.sha256(f"{salt}/{unit}".encode()).digest()[:8], "big") % 10000
        assert_eq!(bucket("checkout-2026", "user-1"), 2378);
        assert_eq!(bucket("checkout-2026", "user-2"), 8990);
        assert_eq!(bucket("exp", "42"), 949);
        assert_eq!(bucket("s", ""), 4462);
    }

    #[test]
    fn bad_definitions_are_refused_with_their_key() {
        let two = r#"{ name = "a", version = "1", weight = 50 }, { name = "b", version = "2", weight = 60 }"#;
        let err = config(two, "").unwrap_err().to_string();
        assert!(
            err.contains("experiments.e.variants") && err.contains("sum to 100"),
            "{err}"
        );
        let ok = r#"{ name = "a", version = "1", weight = 50 }, { name = "b", version = "2", weight = 50 }"#;
        let err = config(ok, "").map(|_| ()).and_then(|_| {
            Config::from_toml_str(
                "[models.m]\nreference = \"r.csv\"\ntask = \"binary\"\n[models.m.features]\nx = \"numeric\"\n\
                 [experiments.e]\nmodel = \"m\"\ncontrol = \"z\"\nstart = \"2026-01-01T00:00:00Z\"\n\
                 primary_metric = \"accuracy\"\nmde = 0.02\nvariants = [{ name = \"a\", version = \"1\", weight = 50 }, { name = \"b\", version = \"2\", weight = 50 }]",
            )
            .map(|_| ())
        });
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("experiments.e.control") && err.contains("`z`"),
            "{err}"
        );
        let dup = r#"{ name = "a", version = "1", weight = 50 }, { name = "a", version = "2", weight = 50 }"#;
        assert!(
            config(dup, "")
                .unwrap_err()
                .to_string()
                .contains("declared twice")
        );
        let odd = r#"{ name = "a", version = "1", weight = 33.333 }, { name = "b", version = "2", weight = 66.667 }"#;
        assert!(
            config(odd, "")
                .unwrap_err()
                .to_string()
                .contains("two decimals")
        );
        let auc = config(ok, "").map(|_| ()).and_then(|_| {
            Config::from_toml_str(
                "[models.m]\nreference = \"r.csv\"\ntask = \"binary\"\n[models.m.features]\nx = \"numeric\"\n\
                 [experiments.e]\nmodel = \"m\"\ncontrol = \"a\"\nstart = \"2026-01-01T00:00:00Z\"\n\
                 primary_metric = \"roc_auc\"\nmde = 0.02\nvariants = [{ name = \"a\", version = \"1\", weight = 50 }, { name = \"b\", version = \"2\", weight = 50 }]",
            )
            .map(|_| ())
        });
        let err = auc.unwrap_err().to_string();
        assert!(
            err.contains("experiments.e.primary_metric") && err.contains("use it as a guardrail"),
            "{err}"
        );
        let err = config(ok, "salt = \"s\"\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn ranges_follow_the_weights_in_order() {
        let c = config(
            r#"{ name = "a", version = "1", weight = 34 }, { name = "b", version = "2", weight = 33 }, { name = "c", version = "3", weight = 33 }"#,
            "",
        )
        .unwrap();
        let e = Experiment::from_config("e", &c.experiments["e"]);
        let ranges: Vec<(u32, u32)> = e.arms.iter().map(|a| (a.from, a.to)).collect();
        assert_eq!(ranges, vec![(0, 3400), (3400, 6700), (6700, 10000)]);
        assert_eq!(e.salt, "e");
        assert!(e.arms[0].control);
    }

    #[test]
    fn a_weight_change_moves_only_the_units_a_boundary_passes() {
        let arms = |w: (u32, u32)| {
            let c = config(
                &format!(
                    r#"{{ name = "a", version = "1", weight = {} }}, {{ name = "b", version = "2", weight = {} }}"#,
                    w.0, w.1
                ),
                "",
            )
            .unwrap();
            Experiment::from_config("e", &c.experiments["e"])
        };
        let (before, after) = (arms((50, 50)), arms((80, 20)));
        let n = 100_000;
        let mut moved = 0;
        for i in 0..n {
            let u = format!("user-{i}");
            let (x, y) = (before.assign(&u), after.assign(&u));
            if x.variant != y.variant {
                assert_eq!((x.variant.as_str(), y.variant.as_str()), ("b", "a"));
                assert!((5_000..8_000).contains(&x.bucket));
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(n);
        assert!((share - 0.30).abs() < 0.01, "{share}");
    }
}
