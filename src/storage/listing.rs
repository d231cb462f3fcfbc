//! Storage folders as DataFusion tables: the one place that hands the store
//! to DataFusion.
//!
//! DataFusion finds a table's store by the scheme and authority of its URL:
//! one store per base URL (`file:///`, `memory:///`, `s3://<bucket>/`) in a
//! session. [`Storage::register_listing`] registers this storage's store
//! under its base URL, then the table, so the store that serves every
//! listing table of a session under one base URL is the one registered
//! last. A `filter` makes that store a [`Storage::filtered`] view; a
//! [`ListFilter`] hides only what it names, so tables registered before it
//! on the same base URL list through it unchanged, but a table registered
//! *after* it without a filter would drop it. Register filtered tables last
//! (`mlwatch sql` registers the tracking tables after the others).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;

use super::Storage;
use super::objects::ListFilter;
use crate::error::Result;

impl Storage {
    /// Hands this storage's store to `ctx` for every URL under its base URL
    /// (replacing the store registered there before), so that DataFusion
    /// can read [`Storage::object_url`]s.
    pub(crate) fn register_store(&self, ctx: &SessionContext) {
        ctx.register_object_store(&self.base_url, self.store.clone());
    }

    /// Registers the Parquet files under the folder `rel_dir` (relative to
    /// the root, listed recursively) as the table `name`: columns
    /// `file_schema`, then the Hive partition columns `partitions`
    /// (`model=<m>/date=<d>/...`) in that order. The schema is given rather
    /// than inferred, so a folder with no files yet is an empty table. With
    /// a `filter`, listings leave out what it hides (see the module docs
    /// for the order of registrations).
    pub(crate) fn register_listing(
        &self,
        ctx: &SessionContext,
        name: &str,
        rel_dir: &str,
        file_schema: SchemaRef,
        partitions: &[(&str, DataType)],
        filter: Option<Arc<dyn ListFilter>>,
    ) -> Result<()> {
        match filter {
            Some(f) => self.filtered(f).register_store(ctx),
            None => self.register_store(ctx),
        }
        let url = ListingTableUrl::parse(self.table_url(rel_dir))?;
        let partitions = partitions
            .iter()
            .map(|(n, ty)| (n.to_string(), ty.clone()))
            .collect();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partitions);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(file_schema);
        ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use futures::future::BoxFuture;

    use super::*;
    use crate::storage::objects::Listed;

    /// Hides every file named `hidden.parquet`.
    #[derive(Debug)]
    struct HideNamed;

    impl ListFilter for HideNamed {
        fn hidden<'a>(&'a self, listed: &'a [Listed]) -> BoxFuture<'a, Result<HashSet<String>>> {
            Box::pin(async move {
                Ok(listed
                    .iter()
                    .filter(|l| l.rel.ends_with("/hidden.parquet"))
                    .map(|l| l.rel.clone())
                    .collect())
            })
        }
    }

    async fn count(ctx: &SessionContext, sql: &str) -> Result<Vec<(String, i64)>> {
        let batches = ctx.sql(sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let k = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)?;
            let k = k
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>();
            let n = b.column(1).as_any().downcast_ref::<Int64Array>();
            for i in 0..b.num_rows() {
                out.push((
                    k.map_or_else(String::new, |k| k.value(i).to_string()),
                    n.map_or(-1, |n| n.value(i)),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    #[tokio::test]
    async fn listing_tables_have_partitions_empty_folders_and_filters() -> Result<()> {
        let s = Storage::open("memory:///root", &Default::default())?;
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
        for rel in ["t/k=a/1.parquet", "t/k=b/1.parquet", "t/k=b/hidden.parquet"] {
            s.write_parquet(rel, std::slice::from_ref(&batch)).await?;
        }
        s.put("t/k=a/notes.txt", Bytes::from_static(b"not parquet"))
            .await?;
        let ctx = SessionContext::new();
        s.register_listing(&ctx, "empty", "none", schema.clone(), &[], None)?;
        s.register_listing(
            &ctx,
            "t",
            "t",
            schema.clone(),
            &[("k", DataType::Utf8)],
            None,
        )?;
        let sql = "SELECT k, count(*) AS n FROM t GROUP BY k";
        assert_eq!(count(&ctx, sql).await?, [("a".into(), 2), ("b".into(), 4)]);
        assert_eq!(
            count(&ctx, "SELECT 'x', count(*) FROM empty").await?,
            [("x".into(), 0)]
        );
        // A new session with the filter: the hidden file is left out.
        let ctx = SessionContext::new();
        let filter: Arc<dyn ListFilter> = Arc::new(HideNamed);
        s.register_listing(
            &ctx,
            "t",
            "t",
            schema,
            &[("k", DataType::Utf8)],
            Some(filter),
        )?;
        assert_eq!(count(&ctx, sql).await?, [("a".into(), 2), ("b".into(), 2)]);
        Ok(())
    }
}
