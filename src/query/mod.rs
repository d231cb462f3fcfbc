//! The SQL catalog over the output tables.
//!
//! [`new_context`] makes a DataFusion session with mlwatch's SQL functions;
//! [`register_tables`] registers every output table (a Hive-partitioned
//! Parquet listing under the storage root) by name, with its schema given up
//! front so that a table with no files yet is simply empty.

pub mod named;
pub(crate) mod prepared;

use std::sync::Arc;

use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Result;
use crate::stats::ks::KsMethod;
use crate::storage::Storage;
use crate::storage::tables::output_tables;

/// A session with every mlwatch SQL function registered.
pub fn new_context(ks_method: KsMethod) -> SessionContext {
    let cfg = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(2);
    context_with(cfg, ks_method)
}

fn context_with(cfg: SessionConfig, ks_method: KsMethod) -> SessionContext {
    let ctx = SessionContext::new_with_config(cfg);
    crate::udf::register_all(&ctx, ks_method);
    ctx
}

/// A context for the queries run on each closed window: its tables hold a
/// few rows per column (a sample as one list), so one partition; two would
/// split each aggregate into partial states exchanged between partitions.
/// Dynamic filters are off: [`prepared::Prepared`] re-runs the plans.
pub(crate) fn window_context(ks_method: KsMethod) -> SessionContext {
    let mut cfg = SessionConfig::new().with_target_partitions(1);
    let optimizer = &mut cfg.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    context_with(cfg, ks_method)
}

/// The registry's event log table.
pub const REGISTRY_EVENTS: &str = "registry_events";
/// The registry's models, folded from the log.
pub const MODELS: &str = "models";
/// The registry's versions, folded from the log.
pub const MODEL_VERSIONS: &str = "model_versions";

/// Every table and view a context gets from [`register_tables`],
/// [`register_registry_tables`] and [`crate::tracking::register_tables`],
/// in that order: the list `mlwatch sql --help` prints.
pub fn table_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = output_tables().iter().map(|t| t.name).collect();
    names.extend([REGISTRY_EVENTS, MODELS, MODEL_VERSIONS]);
    let tracking = crate::tracking::tables::stored_tables();
    names.extend(tracking.iter().map(|(name, _)| *name));
    names.extend(crate::tracking::tables::VIEWS.iter().map(|(name, _)| *name));
    names
}

/// Registers the registry's tables: `registry_events` (the log files) and
/// `models`, `model_versions` (the state folded from them, as of now).
pub async fn register_registry_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    use crate::registry::{ModelRegistry, log, tables};
    storage.register_listing(
        ctx,
        REGISTRY_EVENTS,
        log::LOG_DIR,
        log::event_schema(),
        &[],
        None,
    )?;
    let state = ModelRegistry::new(storage.clone()).state().await?;
    for (name, batch) in [
        (MODELS, tables::models(&state)?),
        (MODEL_VERSIONS, tables::model_versions(&state)?),
    ] {
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}

/// Registers `drift_results` and `dead_letters` from `storage` on `ctx`.
pub fn register_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    for t in output_tables() {
        storage.register_listing(ctx, t.name, t.name, t.file_schema, &t.partitions, None)?;
    }
    Ok(())
}
