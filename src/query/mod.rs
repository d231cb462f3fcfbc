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
