//! Training profiles: what each window is tested against.
//!
//! A profile per monitored column: a numeric column's non-missing values,
//! sorted; a categorical column's counts per category (at most
//! `window.max_categories` kept, the rest counted as `other`, as in the
//! windows). The `prediction` column is profiled when the reference has one
//! (the model's predictions on its training data).
//!
//! [`Profiles`] holds them for every model, named `<model>/<baseline>/<column>`
//! in the map the `drift_reference*` SQL functions read, and is shared by
//! the evaluators (drift tests, data quality).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{ColumnDef, ModelCatalog};
use crate::stats::drift::Reference;
use crate::stats::summary::CategoryCounts;
use crate::storage::Storage;
use crate::udf::drift::Baselines;

/// Which profile windows of the config's reference are tested against, as
/// the `baseline` column says.
pub const CONFIG_BASELINE: &str = "config";

/// One column's profile and its name in the baselines map.
#[derive(Debug, Clone)]
pub struct ColumnProfile {
    /// The smallest and largest finite value of a numeric column in the
    /// training data (not only in the profile's sample).
    pub range: Option<(f64, f64)>,
    /// `<model>/<baseline>/<column>`.
    pub name: String,
    /// The profile.
    pub reference: Arc<Reference>,
}

/// A column's profile and, for a numeric one, its range in the training data.
pub(crate) type Profiled = (Reference, Option<(f64, f64)>);

/// A model's profiles for one baseline.
#[derive(Debug, Clone)]
pub struct ModelProfile {
    /// Where they come from (`config`, ...).
    pub baseline: String,
    /// Per column of the model (`None`: the reference lacks it).
    pub columns: Vec<Option<ColumnProfile>>,
}

/// Every model's profiles.
pub struct Profiles {
    baselines: Baselines,
    /// From each model's `reference` file.
    by_model: Vec<Arc<ModelProfile>>,
    /// Registry baselines by (model, version string of the events).
    registry: RwLock<RegistryProfiles>,
    source: Option<RegistrySource>,
}

/// Registry baselines in use: (model index, version) → (profile path, profile).
type RegistryProfiles = BTreeMap<(usize, String), (String, Arc<ModelProfile>)>;

/// Where registry baselines are looked up.
struct RegistrySource {
    storage: Storage,
    catalog: Arc<ModelCatalog>,
    max_categories: usize,
}

/// A registry baseline in use: (model, version, profile path).
pub type Adopted = (String, String, String);

/// The registry version number of an event's `version` ("3" or "v3").
pub(crate) fn registry_version(version: &str) -> Option<u64> {
    version.strip_prefix('v').unwrap_or(version).parse().ok()
}

impl Profiles {
    /// Loads each model's reference file.
    pub async fn load_config(config: &Config, catalog: &ModelCatalog) -> Result<Self> {
        let mut map = BTreeMap::new();
        let mut by_model = Vec::with_capacity(catalog.models.len());
        for schema in &catalog.models {
            let model = &config.models[&schema.name];
            let loaded = load(
                &config.storage.options,
                &schema.name,
                &model.reference,
                &schema.columns,
                (config.baseline.sample_size, config.window.max_categories),
            )
            .await?;
            let columns = schema
                .columns
                .iter()
                .zip(loaded)
                .map(|(def, profile)| {
                    let Some((p, range)) = profile else {
                        tracing::warn!(model = %schema.name, column = %def.name, reference = %model.reference,
                            "the reference has no such column; the column is not tested");
                        return None;
                    };
                    let name = format!("{}/{CONFIG_BASELINE}/{}", schema.name, def.name);
                    let reference = Arc::new(p);
                    map.insert(name.clone(), reference.clone());
                    Some(ColumnProfile {
                        name,
                        reference,
                        range,
                    })
                })
                .collect();
            by_model.push(Arc::new(ModelProfile {
                baseline: CONFIG_BASELINE.to_string(),
                columns,
            }));
        }
        Ok(Self {
            baselines: Arc::new(RwLock::new(map)),
            by_model,
            registry: RwLock::new(BTreeMap::new()),
            source: None,
        })
    }

    /// Also looks up registry baselines in `storage` (every `refresh`).
    pub fn with_registry(
        mut self,
        storage: Storage,
        catalog: Arc<ModelCatalog>,
        config: &Config,
    ) -> Self {
        self.source = Some(RegistrySource {
            storage,
            catalog,
            max_categories: config.window.max_categories,
        });
        self
    }

    /// The registry baselines in use, for the checkpoint.
    pub fn adopted(&self) -> Vec<Adopted> {
        let Some(src) = &self.source else {
            return Vec::new();
        };
        let map = self.registry.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((m, v), (path, _))| {
                (src.catalog.models[*m].name.clone(), v.clone(), path.clone())
            })
            .collect()
    }

    /// Loads the profile at `path` for (`model`, `version`) and uses it for
    /// that version's windows from now on.
    pub async fn adopt(&self, model: &str, version: &str, path: &str) -> Result<()> {
        let Some(src) = &self.source else {
            return Ok(());
        };
        let Some(m) = src.catalog.index(model) else {
            return Ok(()); // no longer monitored
        };
        let schema = &src.catalog.models[m];
        let loaded =
            super::baseline::read(&src.storage, path, &schema.columns, src.max_categories).await?;
        let baseline = format!(
            "registry:v{}",
            registry_version(version).unwrap_or_default()
        );
        let mut names = self.baselines.write().unwrap_or_else(|e| e.into_inner());
        let columns = schema
            .columns
            .iter()
            .zip(loaded)
            .map(|(def, p)| {
                p.map(|(p, range)| {
                    let name = format!("{model}/{baseline}/{}", def.name);
                    let reference = Arc::new(p);
                    names.insert(name.clone(), reference.clone());
                    ColumnProfile {
                        name,
                        reference,
                        range,
                    }
                })
            })
            .collect();
        drop(names);
        let profile = Arc::new(ModelProfile { baseline, columns });
        self.registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((m, version.to_string()), (path.to_string(), profile));
        tracing::info!(
            model,
            version,
            path,
            "testing against the registry baseline"
        );
        Ok(())
    }

    /// Re-reads the registry and adopts the profile of every monitored
    /// version in `seen` (model, version) that has a new or changed one. A
    /// registry that cannot be read is logged and retried at the next
    /// refresh.
    pub async fn refresh(&self, seen: &[(usize, String)]) {
        let Some(src) = &self.source else {
            return;
        };
        let state = match crate::registry::ModelRegistry::new(src.storage.clone())
            .state()
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "registry not readable; baselines unchanged");
                return;
            }
        };
        for (m, version) in seen {
            let name = &src.catalog.models[*m].name;
            let Some(path) = registry_version(version)
                .and_then(|v| state.models.get(name)?.versions.get(&v))
                .and_then(|v| v.baseline_profile())
            else {
                continue;
            };
            let current = self
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(*m, version.clone()))
                .map(|(p, _)| p.clone());
            if current.as_deref() == Some(path) {
                continue;
            }
            if let Err(e) = self.adopt(name, version, path).await {
                tracing::warn!(model = %name, version = %version, path = %path, error = %e,
                    "baseline profile not readable; keeping the previous one");
            }
        }
    }

    /// The map the `drift_reference*` functions read.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// The profile windows of `model` and `version` are tested against:
    /// the version's registry baseline if it has one, else the config's.
    pub fn for_version(&self, model: usize, version: &str) -> Arc<ModelProfile> {
        let map = self.registry.read().unwrap_or_else(|e| e.into_inner());
        match map.get(&(model, version.to_string())) {
            Some((_, p)) => p.clone(),
            None => self.by_model[model].clone(),
        }
    }
}

/// Reads `location` and profiles each of `columns` (`None` for a column
/// the file lacks). A feature missing from a file that has rows is an
/// error; the prediction may be absent.
async fn load(
    options: &BTreeMap<String, String>,
    model: &str,
    location: &str,
    columns: &[ColumnDef],
    (sample_size, max_categories): (usize, usize),
) -> Result<Vec<Option<Profiled>>> {
    let err = |reason: String| Error::Reference {
        model: model.to_string(),
        location: location.to_string(),
        reason,
    };
    let batches = crate::files::TableFile::open(location, options)
        .await
        .map_err(|e| err(e.to_string()))?
        .read()
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(columns.len());
    for def in columns {
        let name = &def.name;
        let arrays: Vec<_> = batches
            .iter()
            .filter_map(|b| b.column_by_name(name))
            .collect();
        if arrays.is_empty() {
            if def.kind == crate::event::ColumnKind::Feature && !batches.is_empty() {
                return Err(err(format!(
                    "feature `{name}` has no column in the reference"
                )));
            }
            out.push(None);
            continue;
        }
        // Bounded as `mlwatch baseline build` keeps it; the range from every value.
        let stats = super::baseline::profile_column(&arrays, def.ty, sample_size, max_categories)
            .map_err(|e| err(format!("column `{name}`: {e}")))?;
        let profile = match (stats.sample, stats.counts) {
            (Some(sample), _) => (
                Reference::Numeric {
                    sorted: sample.sorted_values(),
                    count: Some(stats.moments.count),
                },
                stats.range,
            ),
            (None, counts) => (
                Reference::Categorical(
                    counts.unwrap_or_else(|| CategoryCounts::new(max_categories)),
                ),
                None,
            ),
        };
        out.push(Some(profile));
    }
    Ok(out)
}
