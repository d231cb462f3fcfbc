//! The SQL catalog over the output tables.
//!
//! [`new_context`] makes a DataFusion session with mlwatch's SQL functions;
//! [`register_tables`] registers every output table (a Hive-partitioned
//! Parquet listing under the storage root) by name, with its schema given up
//! front so that a table with no files yet is simply empty.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
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
    let ctx = SessionContext::new_with_config(cfg);
    crate::udf::register_all(&ctx, ks_method);
    ctx
}

/// Registers the registry's tables: `registry_events` (the log files) and
/// `models`, `model_versions` (the state folded from them, as of now).
pub async fn register_registry_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    use crate::registry::{ModelRegistry, log, tables};
    ctx.register_object_store(storage.base_url(), storage.store().clone());
    let url = ListingTableUrl::parse(storage.table_url(log::LOG_DIR))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(log::event_schema());
    ctx.register_table("registry_events", Arc::new(ListingTable::try_new(config)?))?;
    let state = ModelRegistry::new(storage.clone()).state().await?;
    for (name, batch) in [
        ("models", tables::models(&state)?),
        ("model_versions", tables::model_versions(&state)?),
    ] {
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}

/// Registers `drift_results` and `dead_letters` from `storage` on `ctx`.
pub fn register_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    ctx.register_object_store(storage.base_url(), storage.store().clone());
    for t in output_tables() {
        let url = ListingTableUrl::parse(storage.table_url(t.name))?;
        let partitions = t
            .partitions
            .into_iter()
            .map(|(n, ty)| (n.to_string(), ty))
            .collect();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partitions);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(t.file_schema);
        ctx.register_table(t.name, Arc::new(ListingTable::try_new(config)?))?;
    }
    Ok(())
}
