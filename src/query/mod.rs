//! The SQL catalog over the output tables.
//!
//! [`new_context`] makes a DataFusion session with mlwatch's SQL functions;
//! [`register_tables`] registers every output table (a Hive-partitioned
//! Parquet listing under the storage root) by name, with its schema given up
//! front so that a table with no files yet is simply empty.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Result;
use crate::stats::ks::KsMethod;
use crate::storage::Storage;
use crate::storage::tables::{DEAD_LETTER_FILE_SCHEMA, DEAD_LETTERS, DRIFT_FILE_SCHEMA, DRIFT_RESULTS};

/// A session with every mlwatch SQL function registered.
pub fn new_context(ks_method: KsMethod) -> SessionContext {
    let cfg = SessionConfig::new().with_information_schema(true).with_target_partitions(2);
    let ctx = SessionContext::new_with_config(cfg);
    crate::udf::register_all(&ctx, ks_method);
    ctx
}

/// Registers `drift_results` and `dead_letters` from `storage` on `ctx`.
pub fn register_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    ctx.register_object_store(storage.base_url(), storage.store().clone());
    let tables: [(&str, SchemaRef, Vec<(String, DataType)>); 2] = [
        (
            DRIFT_RESULTS,
            DRIFT_FILE_SCHEMA.clone(),
            vec![("model".into(), DataType::Utf8), ("date".into(), DataType::Utf8)],
        ),
        (
            DEAD_LETTERS,
            DEAD_LETTER_FILE_SCHEMA.clone(),
            vec![("topic".into(), DataType::Utf8), ("partition".into(), DataType::Int32)],
        ),
    ];
    for (name, schema, partition_cols) in tables {
        let url = ListingTableUrl::parse(storage.table_url(name))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_cols);
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        let table = ListingTable::try_new(config)?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}
