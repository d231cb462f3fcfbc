//! Compaction of the tracking tables: many small files (one per `log-*`
//! call) merged into a few large ones, so reads stay fast, with readers and
//! writers running at the same time and a crash at any point never showing
//! a row twice or losing one.
//!
//! **Protocol.** Per table, one compactor at a time holds a lease
//! (`_compactions/<table>/lease-<n>.json`, taken by creating generation
//! `n + 1` with create-if-absent once `n` is released or expired). For each
//! group of small files it
//! 1. writes a record `_compactions/<table>/<id>.json` naming the merged
//!    file and its inputs;
//! 2. writes the merged file `<table>/compacted-<id>.parquet` (one atomic
//!    put: the commit point);
//! 3. after a grace period (so queries that listed the inputs before step 2
//!    can finish reading them) deletes the inputs, then the record.
//!
//! Readers ([`live_files`]) list the table and its records and hide the
//! inputs of every record whose merged file exists: before step 2 they see
//! the inputs, after it the merged file, never both. A crash before step 2
//! leaves a record without output, which hides nothing and is removed by
//! the next compactor; a crash in step 3 leaves hidden inputs, removed by
//! the next compactor once the grace period has passed.
//!
//! Merging sorts each group by key then run (so `key = ...` filters skip
//! row groups) and drops exact duplicate rows of every table but `metrics`
//! (where two equal points can both be meant).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::tables;
use crate::error::Result;
use crate::storage::Storage;
use crate::storage::objects::{ListFilter, Listed};
use futures::future::BoxFuture;

/// Folder of compaction records and leases.
pub const COMPACTIONS: &str = "tracking/_compactions";

/// When and how the tracking tables are compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Reads compact a table first when it holds more small files than
    /// this (0: never; `mlwatch runs compact` still works).
    pub after_files: usize,
    /// Input bytes merged into one file (about 2-3x that in memory).
    pub group_bytes: u64,
    /// How long merged inputs stay (hidden) before they are deleted, so
    /// that queries which listed them can finish.
    pub grace: Duration,
    /// How long a compactor holds a table before another may take over
    /// (a compactor that crashed blocks that table this long).
    pub lease: Duration,
    /// Kafka topic of tracking events: its files past the consumers'
    /// checkpoints are left for a replay to overwrite.
    pub tracking_topic: String,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            after_files: 200,
            group_bytes: super::COMPACT_GROUP_BYTES,
            grace: Duration::from_secs(120),
            lease: Duration::from_secs(600),
            tracking_topic: "mlwatch.tracking".into(),
        }
    }
}

/// What one table's compaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compacted {
    /// Table.
    pub table: String,
    /// Small files merged.
    pub files: usize,
    /// Files written.
    pub outputs: usize,
    /// Rows in the merged files.
    pub rows: usize,
}

/// A compaction record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The merged file (relative to the storage root).
    output: String,
    /// The files it replaces.
    inputs: Vec<String>,
    /// When the inputs were deleted (µs since the epoch).
    #[serde(default)]
    inputs_deleted_us: Option<i64>,
}

/// A lease file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseState {
    holder: String,
    expires_us: i64,
    released: bool,
}

fn table_dir(table: &str) -> String {
    format!("{}/{table}", tables::ROOT)
}

fn records_dir(table: &str) -> String {
    format!("{COMPACTIONS}/{table}")
}

/// A table's files as readers see them.
#[derive(Debug, Default)]
pub(crate) struct TableFiles {
    /// Visible Parquet files.
    pub(crate) live: Vec<Listed>,
    /// Records: (path, record, merged file exists, age).
    records: Vec<(String, Record, bool, Duration)>,
}

/// The compaction records of `table`, each with whether its merged file is
/// among `listed` and its age. Call it *after* listing the table: a record
/// is written before its merged file, so a merged file in the listing always
/// has its record here, and a record is deleted only well after its inputs
/// (see [`compact`]), so inputs in the listing still have theirs.
async fn records(
    storage: &Storage,
    table: &str,
    listed: &HashSet<&str>,
) -> Result<Vec<(String, Record, bool, Duration)>> {
    let now = Utc::now();
    let files = storage.list(&records_dir(table)).await?;
    futures::stream::iter(files.into_iter().filter(|f| {
        let name = f.rel.rsplit('/').next().unwrap_or_default();
        name.ends_with(".json") && !name.starts_with("lease-")
    }))
    .map(|f| async move {
        // None: removed by a cleaner meanwhile.
        let record: Option<Record> = super::read_json(storage, &f.rel).await?;
        let age = (now - f.last_modified).to_std().unwrap_or_default();
        Ok::<_, crate::Error>(record.map(|r| (f.rel, r, age)))
    })
    .buffer_unordered(16)
    .try_filter_map(|r| futures::future::ready(Ok(r)))
    .map_ok(|(rel, record, age)| {
        let committed = listed.contains(record.output.as_str());
        (rel, record, committed, age)
    })
    .try_collect()
    .await
}

/// Lists `table` as readers see it, with its compaction records.
pub(crate) async fn table_files(storage: &Storage, table: &str) -> Result<TableFiles> {
    let files = storage.list(&table_dir(table)).await?;
    let names: HashSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
    let records = records(storage, table, &names).await?;
    let hidden: HashSet<&str> = records
        .iter()
        .filter(|r| r.2)
        .flat_map(|r| r.1.inputs.iter().map(String::as_str))
        .collect();
    Ok(TableFiles {
        live: files
            .iter()
            .filter(|f| !hidden.contains(f.rel.as_str()) && f.rel.ends_with(".parquet"))
            .cloned()
            .collect(),
        records,
    })
}

/// The [`ListFilter`] readers list the tracking tables through: it hides
/// the inputs of merges that are committed in the same listing.
#[derive(Debug)]
pub(crate) struct HideMerged {
    storage: Storage,
}

impl HideMerged {
    /// A filter reading compaction records from `storage`.
    pub(crate) fn new(storage: Storage) -> Self {
        Self { storage }
    }
}

impl ListFilter for HideMerged {
    fn hidden<'a>(&'a self, listed: &'a [Listed]) -> BoxFuture<'a, Result<HashSet<String>>> {
        Box::pin(async move {
            let prefix = format!("{}/", tables::ROOT);
            let mut by_table: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
            for l in listed {
                if let Some(table) = l
                    .rel
                    .strip_prefix(&prefix)
                    .and_then(|r| r.split('/').next())
                    && !table.starts_with('_')
                {
                    by_table.entry(table).or_default().insert(l.rel.as_str());
                }
            }
            let mut hidden = HashSet::new();
            for (table, names) in by_table {
                hidden.extend(
                    records(&self.storage, table, &names)
                        .await?
                        .into_iter()
                        .filter(|r| r.2)
                        .flat_map(|r| r.1.inputs),
                );
            }
            Ok(hidden)
        })
    }
}

/// The lease files of a table, oldest generation first.
async fn lease_generations(storage: &Storage, dir: &str) -> Result<Vec<(u64, String)>> {
    let mut gens: Vec<(u64, String)> = storage
        .list(dir)
        .await?
        .into_iter()
        .filter_map(|f| {
            let name = f.rel.rsplit('/').next()?.to_string();
            let n = name
                .strip_prefix("lease-")?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((n, f.rel))
        })
        .collect();
    gens.sort();
    Ok(gens)
}

/// A compactor's hold on one table.
struct Lease {
    storage: Storage,
    dir: String,
    generation: u64,
    path: String,
    holder: String,
    expires_us: i64,
    length: Duration,
}

impl Lease {
    /// Takes the table's lease, or `None` when another compactor holds it.
    async fn take(storage: &Storage, table: &str, lease: Duration) -> Result<Option<Lease>> {
        let dir = records_dir(table);
        let gens = lease_generations(storage, &dir).await?;
        let next = match gens.last() {
            None => 1,
            Some((n, rel)) => {
                if let Some(state) = super::read_json::<LeaseState>(storage, rel).await?
                    && !state.released
                    && state.expires_us > Utc::now().timestamp_micros()
                {
                    return Ok(None);
                }
                n + 1
            }
        };
        let holder = format!(
            "{}-{}-{:08x}",
            super::env::hostname(std::path::Path::new(".")).unwrap_or_default(),
            std::process::id(),
            rand::random::<u32>()
        );
        let expires_us = Utc::now().timestamp_micros() + lease.as_micros() as i64;
        let path = format!("{dir}/lease-{next:012}.json");
        let state = LeaseState {
            holder: holder.clone(),
            expires_us,
            released: false,
        };
        if !storage
            .put_if_absent(
                &path,
                Bytes::from(serde_json::to_vec(&state).expect("json")),
            )
            .await?
        {
            return Ok(None); // another compactor took this generation
        }
        let taken = Lease {
            storage: storage.clone(),
            dir,
            generation: next,
            path,
            holder,
            expires_us,
            length: lease,
        };
        // A generation that was deleted as history can be created again by a
        // compactor that listed before the deletion: only the newest counts.
        if taken.newest().await? != Some(next) {
            taken.release().await?;
            return Ok(None);
        }
        // Older generations are history now.
        let old: Vec<String> = gens.into_iter().map(|(_, rel)| rel).collect();
        storage.delete_all(&old).await?;
        Ok(Some(taken))
    }

    /// The newest lease generation of the table.
    async fn newest(&self) -> Result<Option<u64>> {
        Ok(lease_generations(&self.storage, &self.dir)
            .await?
            .last()
            .map(|g| g.0))
    }

    /// Fails unless the lease is still ours with time to spare: checked
    /// before each commit, so a compactor that stalled past its lease never
    /// commits beside the one that took over.
    async fn check(&self) -> Result<()> {
        let margin = (self.length / 4).as_micros() as i64;
        let ours = super::read_json::<LeaseState>(&self.storage, &self.path)
            .await?
            .is_some_and(|s| s.holder == self.holder && !s.released)
            && self.newest().await? == Some(self.generation);
        if ours && Utc::now().timestamp_micros() + margin < self.expires_us {
            Ok(())
        } else {
            Err(crate::Error::Config(format!(
                "compaction lease {} lost or about to expire; stopping",
                self.path
            )))
        }
    }

    async fn release(self) -> Result<()> {
        let state = LeaseState {
            holder: self.holder,
            expires_us: self.expires_us,
            released: true,
        };
        self.storage
            .put(
                &self.path,
                Bytes::from(serde_json::to_vec(&state).expect("json")),
            )
            .await
    }
}

/// Files of runs from the tracking topic (`<run>-k<partition>-<offset>`) that
/// a consumer restarting from its checkpoint would write again: those at or
/// after the checkpoint's next offset of their partition, in every consumer
/// group's checkpoint (all of them when there is none). A replay overwrites
/// such a file by name, so it must still be there, not merged away.
async fn replayable_files(storage: &Storage, topic: &str) -> Result<impl Fn(&str) -> bool> {
    let mut safe: BTreeMap<i64, i64> = BTreeMap::new();
    let mut groups = 0;
    for f in storage.list(crate::storage::tables::CHECKPOINTS).await? {
        let Some(ckpt) = super::read_json::<serde_json::Value>(storage, &f.rel).await? else {
            continue;
        };
        groups += 1;
        let offsets = ckpt["offsets"].as_array().cloned().unwrap_or_default();
        for o in offsets {
            if let (Some(t), Some(p), Some(next)) = (o[0].as_str(), o[1].as_i64(), o[2].as_i64())
                && t == topic
            {
                let e = safe.entry(p).or_insert(next);
                *e = (*e).min(next);
            }
        }
    }
    Ok(move |rel: &str| {
        let Some(label) = rel
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".parquet"))
            .and_then(|n| n.get(33..))
            .and_then(|l| l.strip_prefix('k'))
        else {
            return false;
        };
        let Some((p, o)) = label.split_once('-') else {
            return false;
        };
        match (p.parse::<i64>(), o.parse::<i64>()) {
            (Ok(p), Ok(o)) => groups == 0 || safe.get(&p).is_none_or(|next| o >= *next),
            _ => false,
        }
    })
}

/// Where a test stops a compaction, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAt {
    /// Run to the end.
    Never,
    /// After the record, before the merged file.
    AfterRecord,
    /// After the merged file, before deleting the inputs.
    AfterCommit,
}

/// Compacts each table that has more small files than `policy.after_files`
/// (every table with two or more when `force`). Tables whose lease another
/// compactor holds are skipped.
pub(crate) async fn compact(
    storage: &Storage,
    policy: &CompactionPolicy,
    force: bool,
    stop: StopAt,
) -> Result<Vec<Compacted>> {
    let mut report = Vec::new();
    for (table, schema) in tables::stored_tables() {
        let files = table_files(storage, table).await?;
        let small = files
            .live
            .iter()
            .filter(|f| f.size < policy.group_bytes / 2)
            .count();
        // Records past their grace period mean hidden files to delete.
        let cleanup = files.records.iter().any(|r| !r.2 || r.3 >= policy.grace);
        let due = if force {
            small > 1 || cleanup
        } else {
            cleanup || (policy.after_files > 0 && small > policy.after_files)
        };
        if !due {
            continue;
        }
        let Some(lease) = Lease::take(storage, table, policy.lease).await? else {
            tracing::info!(table, "another process is compacting; skipped");
            continue;
        };
        let done = compact_table(storage, table, &schema, policy, &lease, stop).await;
        if stop == StopAt::Never {
            lease.release().await?;
        }
        if let Some(c) = done? {
            report.push(c);
        }
    }
    Ok(report)
}

async fn compact_table(
    storage: &Storage,
    table: &str,
    schema: &SchemaRef,
    policy: &CompactionPolicy,
    lease: &Lease,
    stop: StopAt,
) -> Result<Option<Compacted>> {
    // Listed again under the lease: another compactor may have finished.
    let files = table_files(storage, table).await?;
    // Clean up after earlier compactions.
    let now = Utc::now().timestamp_micros();
    for (rel, record, committed, age) in &files.records {
        match record.inputs_deleted_us {
            _ if !committed => {
                // Its compactor is gone (we hold the lease): the merge never
                // became visible, the inputs are still live.
                storage.delete(rel).await?;
            }
            None if *age >= policy.grace && policy.grace.is_zero() => {
                storage.delete_all(&record.inputs).await?;
                storage.delete(rel).await?;
            }
            None if *age >= policy.grace => {
                storage.delete_all(&record.inputs).await?;
                let done = Record {
                    inputs_deleted_us: Some(now),
                    ..record.clone()
                };
                storage
                    .put(rel, Bytes::from(serde_json::to_vec(&done).expect("json")))
                    .await?;
            }
            // A reader that listed the inputs just before they went still
            // needs the record to hide them: it goes a grace period later.
            Some(t) if now - t >= policy.grace.as_micros() as i64 => storage.delete(rel).await?,
            _ => {}
        }
    }
    // A merged file whose record still exists is not merged again: the
    // record hides its inputs only while the file is there (no chains).
    let recorded: HashSet<&str> = files.records.iter().map(|r| r.1.output.as_str()).collect();
    let replayable = replayable_files(storage, &policy.tracking_topic).await?;
    let mut small: Vec<&Listed> = files
        .live
        .iter()
        .filter(|f| {
            f.size < policy.group_bytes / 2
                && !recorded.contains(f.rel.as_str())
                && !replayable(&f.rel)
        })
        .collect();
    small.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut groups: Vec<Vec<&Listed>> = Vec::new();
    let mut size = 0;
    for f in small {
        match groups.last_mut() {
            Some(g) if size + f.size <= policy.group_bytes => {
                size += f.size;
                g.push(f);
            }
            _ => {
                size = f.size;
                groups.push(vec![f]);
            }
        }
    }
    let mut c = Compacted {
        table: table.to_string(),
        files: 0,
        outputs: 0,
        rows: 0,
    };
    for group in groups.into_iter().filter(|g| g.len() > 1) {
        let id = format!(
            "{}-{:016x}",
            Utc::now().timestamp_micros(),
            rand::random::<u64>()
        );
        let record_path = format!("{}/{id}.json", records_dir(table));
        let record = Record {
            output: format!("{}/compacted-{id}.parquet", table_dir(table)),
            inputs: group.iter().map(|f| f.rel.clone()).collect(),
            inputs_deleted_us: None,
        };
        storage
            .put(
                &record_path,
                Bytes::from(serde_json::to_vec(&record).expect("json")),
            )
            .await?;
        if stop == StopAt::AfterRecord {
            return Ok(None);
        }
        let (bytes, rows) = merge(storage, table, schema, &record.inputs).await?;
        lease.check().await?;
        storage.put(&record.output, bytes).await?;
        if stop == StopAt::AfterCommit {
            return Ok(None);
        }
        if policy.grace.is_zero() {
            // No reader to wait for (tests, a store nobody else uses).
            storage.delete_all(&record.inputs).await?;
            storage.delete(&record_path).await?;
        }
        c.files += group.len();
        c.outputs += 1;
        c.rows += rows;
    }
    Ok((c.files > 0).then_some(c))
}

/// Reads `inputs` (32 at a time) and returns them as one Parquet file in
/// 64k-row groups, sorted by key then run then the other columns, exact
/// duplicates dropped (except in `metrics`); and its row count.
async fn merge(
    storage: &Storage,
    table: &str,
    schema: &SchemaRef,
    inputs: &[String],
) -> Result<(Bytes, usize)> {
    let reads: Vec<_> = inputs.iter().map(|f| storage.get(f)).collect();
    let contents: Vec<Bytes> = futures::stream::iter(reads)
        .buffered(32)
        .try_collect()
        .await?;
    let mut batches = Vec::new();
    for bytes in contents {
        for b in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            batches.push(b?);
        }
    }
    let merged = concat_batches(schema, &batches)?;
    drop(batches);
    // Sort columns: key and run first, then every other column.
    let mut order: Vec<usize> = Vec::new();
    for name in ["key", "run_id"] {
        if let Ok(i) = schema.index_of(name) {
            order.push(i);
        }
    }
    let rest: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !order.contains(i))
        .collect();
    order.extend(rest);
    let converter = RowConverter::new(
        order
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect(),
    )?;
    let columns: Vec<_> = order.iter().map(|i| merged.column(*i).clone()).collect();
    let rows = converter.convert_columns(&columns)?;
    let mut idx: Vec<u32> = (0..merged.num_rows() as u32).collect();
    idx.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    if table != "metrics" {
        idx.dedup_by(|a, b| rows.row(*a as usize) == rows.row(*b as usize));
    }
    let indices = datafusion::arrow::array::UInt32Array::from(idx);
    let sorted = RecordBatch::try_new(
        schema.clone(),
        merged
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?,
    )?;
    let n = sorted.num_rows();
    let bytes = crate::storage::encode_parquet_grouped(schema.clone(), &[sorted], Some(65_536))?;
    Ok((bytes, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::{ExperimentTracker, RunStatus};

    /// Row counts and a checksum of every table, as SQL sees them.
    async fn totals(t: &ExperimentTracker) -> Result<Vec<String>> {
        let ctx = t.tables_context().await?;
        let sql = "SELECT (SELECT count(*) FROM run_log) AS r, (SELECT count(*) FROM params) AS p, \
                   (SELECT count(*) FROM metrics) AS m, (SELECT round(sum(value), 9) FROM metrics) AS s, \
                   (SELECT count(*) FROM tag_log) AS t, (SELECT count(*) FROM runs) AS n";
        let b = ctx.sql(sql).await?.collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&b)?
            .to_string()
            .lines()
            .map(str::to_string)
            .collect())
    }

    async fn store_with_runs(n: usize) -> Result<(tempfile::TempDir, ExperimentTracker)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
        let t = ExperimentTracker::new(storage).with_compaction(CompactionPolicy {
            after_files: 0,
            ..Default::default()
        });
        for i in 0..n {
            let mut run = t.start_run("c", None, &[]).await?;
            run.log_params(&[("i".into(), i.to_string())])?;
            run.set_tags(&[("t".into(), "x".into())])?;
            run.log_metrics(&[("loss", 1.0 / (i as f64 + 1.0), 0), ("loss", 0.5, 1)])
                .await?;
            run.end(RunStatus::Finished).await?;
        }
        Ok((dir, t))
    }

    /// Makes every lease look expired, as time would.
    async fn expire_leases(storage: &Storage) -> Result<()> {
        for f in storage.list(COMPACTIONS).await? {
            if !f
                .rel
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .starts_with("lease-")
            {
                continue;
            }
            if let Some(mut state) =
                crate::tracking::read_json::<LeaseState>(storage, &f.rel).await?
            {
                state.expires_us = 0;
                storage
                    .put(
                        &f.rel,
                        Bytes::from(serde_json::to_vec(&state).expect("json")),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    fn files(dir: &std::path::Path, table: &str) -> usize {
        std::fs::read_dir(dir.join("tracking").join(table))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A compaction stopped after any step, as by a crash, leaves every
    /// answer as it was; the next compaction finishes the job.
    #[tokio::test]
    async fn a_crash_at_any_step_never_shows_a_row_twice_or_loses_one() -> Result<()> {
        for stop in [StopAt::AfterRecord, StopAt::AfterCommit] {
            let (dir, t) = store_with_runs(12).await?;
            let before = totals(&t).await?;
            let policy = CompactionPolicy {
                after_files: 0,
                grace: Duration::ZERO,
                ..Default::default()
            };
            compact(&t.storage, &policy, true, stop).await?;
            assert_eq!(totals(&t).await?, before, "after a crash {stop:?}");
            if stop == StopAt::AfterCommit {
                // Both the merged file and its inputs are on disk.
                assert_eq!(files(dir.path(), "run_log"), 24 + 1);
            }
            // The crashed compactor's lease blocks the table until it expires.
            assert!(
                compact(&t.storage, &policy, true, StopAt::Never)
                    .await?
                    .is_empty()
            );
            expire_leases(&t.storage).await?;
            compact(&t.storage, &policy, true, StopAt::Never).await?;
            assert_eq!(totals(&t).await?, before, "after recovering from {stop:?}");
            for table in ["run_log", "params", "metrics", "tag_log"] {
                assert_eq!(files(dir.path(), table), 1, "{table} after {stop:?}");
            }
            assert!(
                t.storage
                    .list(&records_dir("run_log"))
                    .await?
                    .iter()
                    .all(|f| f.rel.contains("lease-")),
                "records left after {stop:?}"
            );
        }
        Ok(())
    }

    /// Readers running while compactions commit see every row exactly once;
    /// with a grace period the inputs stay (hidden) until a later pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_during_compaction_see_each_row_once() -> Result<()> {
        let (dir, t) = store_with_runs(40).await?;
        let before = totals(&t).await?;
        let largest = t
            .storage
            .list("tracking/metrics")
            .await?
            .iter()
            .map(|f| f.size)
            .max()
            .unwrap_or(1);
        // Groups of about four files: ten commits per table.
        let policy = CompactionPolicy {
            after_files: 0,
            group_bytes: 4 * largest,
            grace: Duration::from_secs(3600),
            ..Default::default()
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (t, before, stop) = (t.clone(), before.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(totals(&t).await?, before, "read {reads}");
                    reads += 1;
                }
                Ok::<_, crate::Error>(reads)
            })
        };
        // Let the reader start, then commit merges under it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        compact(&t.storage, &policy, true, StopAt::Never).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.await.expect("reader")?;
        assert!(reads >= 1, "{reads}");
        assert_eq!(totals(&t).await?, before);
        // Inputs are still there, hidden; a pass after the grace removes them
        // (and a pass after another grace their records).
        assert_eq!(
            files(dir.path(), "metrics"),
            40 + table_files(&t.storage, "metrics").await?.live.len()
        );
        let done = CompactionPolicy {
            grace: Duration::ZERO,
            ..policy
        };
        compact(&t.storage, &done, true, StopAt::Never).await?;
        assert_eq!(totals(&t).await?, before);
        assert_eq!(
            files(dir.path(), "metrics"),
            table_files(&t.storage, "metrics").await?.live.len()
        );
        compact(&t.storage, &done, true, StopAt::Never).await?;
        assert!(
            t.storage
                .list(&records_dir("metrics"))
                .await?
                .iter()
                .all(|f| f.rel.contains("lease-")),
            "records left"
        );
        Ok(())
    }

    /// A second compaction within the grace period does not merge the first
    /// one's output again (its record hides the inputs only while that file
    /// exists), and the clean-up passes keep every answer.
    #[tokio::test]
    async fn merged_files_are_not_merged_again_while_recorded() -> Result<()> {
        let (dir, t) = store_with_runs(10).await?;
        let before = totals(&t).await?;
        let grace = CompactionPolicy {
            after_files: 0,
            grace: Duration::from_secs(3600),
            ..Default::default()
        };
        compact(&t.storage, &grace, true, StopAt::Never).await?;
        // New small files beside the merged one.
        let (_d2, _) = (0, 0);
        for _ in 0..3 {
            let mut run = t.start_run("c", None, &[]).await?;
            run.log_metrics(&[("loss", 0.25, 0)]).await?;
            run.end(RunStatus::Finished).await?;
        }
        let more = totals(&t).await?;
        assert_ne!(more, before);
        let merged: Vec<String> = table_files(&t.storage, "metrics")
            .await?
            .live
            .into_iter()
            .filter(|f| f.rel.contains("compacted-"))
            .map(|f| f.rel)
            .collect();
        assert_eq!(merged.len(), 1);
        compact(&t.storage, &grace, true, StopAt::Never).await?;
        assert!(t.storage.get_opt(&merged[0]).await?.is_some(), "re-merged");
        assert_eq!(totals(&t).await?, more);
        // Past the grace: inputs deleted, then records; the answers stay.
        let done = CompactionPolicy {
            grace: Duration::ZERO,
            ..grace
        };
        for _ in 0..3 {
            compact(&t.storage, &done, true, StopAt::Never).await?;
            assert_eq!(totals(&t).await?, more);
        }
        assert_eq!(files(dir.path(), "metrics"), 1);
        Ok(())
    }

    /// Files of the tracking topic that a consumer would write again after a
    /// restart (past its checkpoint, or with no checkpoint) are not merged.
    #[tokio::test]
    async fn replayable_kafka_files_are_left_alone() -> Result<()> {
        let (dir, t) = store_with_runs(4).await?;
        let schema = tables::metric_schema();
        let point = |v: f64| tables::MetricPoint {
            key: "m".into(),
            value: v,
            step: 0,
            timestamp: 1,
        };
        let run = "ab".repeat(16);
        for (p, o) in [(0, 5), (0, 40), (1, 7)] {
            let batch = tables::metric_batch(&run, &[point(o as f64)])?;
            let rel = tables::file_path("metrics", &run, &format!("k{p}-{o}"));
            t.storage
                .put(
                    &rel,
                    crate::storage::encode_parquet(schema.clone(), &[batch])?,
                )
                .await?;
        }
        let policy = CompactionPolicy {
            after_files: 0,
            grace: Duration::ZERO,
            ..Default::default()
        };
        // No checkpoint: every topic file may be replayed.
        compact(&t.storage, &policy, true, StopAt::Never).await?;
        assert_eq!(files(dir.path(), "metrics"), 1 + 3);
        // A checkpoint past offset 5 of partition 0 and 7 of partition 1.
        let ckpt = serde_json::json!({"offsets": [["mlwatch.tracking", 0, 20], ["mlwatch.tracking", 1, 8], ["other", 0, 99]]});
        t.storage
            .put("_checkpoints/g.json", Bytes::from(ckpt.to_string()))
            .await?;
        compact(&t.storage, &policy, true, StopAt::Never).await?;
        let left: Vec<String> = std::fs::read_dir(dir.path().join("tracking/metrics"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter().any(|n| n.ends_with("-k0-40.parquet")),
            "{left:?}"
        );
        Ok(())
    }

    /// Reads compact a table once it passes the threshold, and answer the
    /// same.
    #[tokio::test]
    async fn reads_compact_past_the_threshold() -> Result<()> {
        let (dir, t) = store_with_runs(15).await?;
        let before = totals(&t).await?;
        let search = t.search("params.i >= 3", None).await?;
        assert_eq!(files(dir.path(), "params"), 15);
        let auto = t.clone().with_compaction(CompactionPolicy {
            after_files: 10,
            grace: Duration::ZERO,
            ..Default::default()
        });
        let after = auto.search("params.i >= 3", None).await?;
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&after)?.to_string(),
            datafusion::arrow::util::pretty::pretty_format_batches(&search)?.to_string()
        );
        assert_eq!(files(dir.path(), "params"), 1);
        assert_eq!(files(dir.path(), "metrics"), 1);
        assert_eq!(totals(&t).await?, before);
        Ok(())
    }
}
