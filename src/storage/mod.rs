//! Object storage by URL and the Parquet tables mlwatch writes.
//!
//! A [`Storage`] is an `object_store` plus a root prefix. Local folders,
//! `file://`, `s3://` and `memory://` URLs are supported. Every object is
//! written with a single `put` (object_store stages local files and renames
//! them; S3 PUTs are atomic), so readers never see a half-written file.
//! Every store operation goes through the one retry policy of [`retry`]:
//! transient failures are retried with capped exponential backoff and
//! logged, final ones are returned at once, and either is reported as a
//! [`StorageError`] naming the operation and the object path. DataFusion
//! reaches the store only through `Storage::register_listing` (and
//! `Storage::register_store` for single files).

mod listing;
pub mod objects;
pub mod retry;
pub mod tables;

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{Error, Result};
use retry::RetryPolicy;
pub use retry::{StorageError, StorageOp};

/// An object store and the root under which mlwatch keeps its tables.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// URL of the store's root (scheme + authority), for DataFusion.
    base_url: Url,
    /// Prefix inside the store.
    root: ObjPath,
    /// How store operations are retried.
    retry: RetryPolicy,
}

impl Storage {
    /// Opens storage from a local path or URL (`file://`, `s3://`, `memory://`).
    /// Local folders are created if missing.
    pub fn open(
        location: &str,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::open_with(location, options, true)
    }

    /// Opens storage that must already exist, for commands that only read:
    /// a local folder that is missing (or is not a folder) is an
    /// [`Error::Io`] naming it, and nothing is created. `s3://` and
    /// `memory://` URLs are opened as by [`Storage::open`].
    pub fn open_existing(
        location: &str,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::open_with(location, options, false)
    }

    fn open_with(
        location: &str,
        options: &std::collections::BTreeMap<String, String>,
        create: bool,
    ) -> Result<Self> {
        let url = to_url(location)?;
        match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|_| {
                    Error::Config(format!(
                        "storage.url `{location}` is not a usable file path"
                    ))
                })?;
                if create {
                    std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                } else {
                    existing_folder(&path)?;
                }
                let store = object_store::local::LocalFileSystem::new();
                let root = ObjPath::from_filesystem_path(&path)
                    .map_err(|e| Error::Config(format!("storage.url `{location}`: {e}")))?;
                Ok(Self {
                    store: Arc::new(store),
                    base_url: Url::parse("file:///").expect("static url"),
                    root,
                    retry: RetryPolicy::DEFAULT,
                })
            }
            "memory" => Ok(Self {
                store: Arc::new(object_store::memory::InMemory::new()),
                // No host: table URLs are `memory:///<path>/`, all under one store.
                base_url: Url::parse("memory:///").expect("static url"),
                root: ObjPath::from(url.path().trim_matches('/')),
                retry: RetryPolicy::DEFAULT,
            }),
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| {
                    Error::Config(format!("storage.url `{location}` names no bucket"))
                })?;
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in options {
                    let key = k.parse().map_err(|_| {
                        Error::Config(format!(
                            "storage.options.{k}: not an S3 option known to object_store"
                        ))
                    })?;
                    b = b.with_config(key, v);
                }
                let store = b.build()?;
                Ok(Self {
                    store: Arc::new(store),
                    base_url: Url::parse(&format!("s3://{bucket}/")).expect("bucket url"),
                    root: ObjPath::from(url.path().trim_matches('/')),
                    retry: RetryPolicy::DEFAULT,
                })
            }
            other => Err(Error::Config(format!(
                "storage.url `{location}`: scheme `{other}` is not supported (use a path, file://, s3:// or memory://)"
            ))),
        }
    }

    /// Object path of `rel` under the root.
    fn path(&self, rel: &str) -> ObjPath {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Listing URL of a table folder, for DataFusion.
    fn table_url(&self, table: &str) -> String {
        format!("{}/", self.object_url(table))
    }

    /// URL of the object `rel`, for DataFusion (after
    /// [`Storage::register_store`]).
    pub(crate) fn object_url(&self, rel: &str) -> String {
        format!("{}{}", self.base_url, self.path(rel))
    }

    /// Writes bytes to `rel` atomically (replacing any object there),
    /// retrying transient failures.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(rel);
        self.retry
            .run(StorageOp::Put, &path, || {
                self.store.put(&path, PutPayload::from_bytes(bytes.clone()))
            })
            .await?;
        Ok(())
    }

    /// Creates `rel` only if no object is there (`PutMode::Create`:
    /// If-None-Match on S3, a no-replace link locally). `Ok(true)` when this
    /// call created it, `Ok(false)` when it already existed.
    ///
    /// Transient failures are retried. An attempt that failed that way may
    /// still have landed, so when a retry then finds the object taken, the
    /// object is read back: the same bytes count as created by this call
    /// (or by an identical write, which no caller can tell apart from its
    /// own: registry commits name their commit id, blobs are named by their
    /// content, control objects hold the value written).
    pub async fn put_if_absent(&self, rel: &str, bytes: Bytes) -> Result<bool> {
        let path = self.path(rel);
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let mut tries = 0u32;
        let created = self
            .retry
            .run(StorageOp::PutIfAbsent, &path, || {
                tries += 1;
                self.store
                    .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts.clone())
            })
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(e) if e.is_taken() && tries > 1 => {
                Ok(self.get_opt(rel).await?.is_some_and(|b| b == bytes))
            }
            Err(e) if e.is_taken() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `rel`, or `None` when it does not exist.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.get_bytes(rel).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The Parquet metadata (footer) of `rel`, of `size` bytes, read
    /// without the rest of the file: the file's last 64 KiB, and the rest of
    /// the footer when it is longer.
    pub(crate) async fn parquet_metadata(
        &self,
        rel: &str,
        size: u64,
    ) -> Result<datafusion::parquet::file::metadata::ParquetMetaData> {
        self.parquet_metadata_from_tail(rel, size, 64 << 10).await
    }

    /// As [`Storage::parquet_metadata`], reading the last `tail` bytes first.
    pub(crate) async fn parquet_metadata_from_tail(
        &self,
        rel: &str,
        size: u64,
        tail: u64,
    ) -> Result<datafusion::parquet::file::metadata::ParquetMetaData> {
        use datafusion::parquet::errors::ParquetError;
        use datafusion::parquet::file::FOOTER_SIZE;
        use datafusion::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
        let path = self.path(rel);
        let get = |range: std::ops::Range<u64>| {
            let path = &path;
            self.retry.run(StorageOp::Get, path, move || {
                self.store.get_range(path, range.clone())
            })
        };
        let footer = FOOTER_SIZE as u64;
        if size < footer {
            return Err(ParquetError::General(format!("{rel}: {size} bytes, not Parquet")).into());
        }
        let tail = get(size.saturating_sub(tail.max(footer))..size).await?;
        let end: [u8; FOOTER_SIZE] = tail[tail.len() - FOOTER_SIZE..]
            .try_into()
            .expect("the tail ends with the footer");
        let len = FooterTail::try_new(&end)?.metadata_length() as u64;
        if len + footer > size {
            return Err(ParquetError::General(format!(
                "{rel}: a footer of {len} bytes in a file of {size}"
            ))
            .into());
        }
        let held = tail.len() as u64 - footer;
        let meta = if len <= held {
            tail.slice((held - len) as usize..held as usize)
        } else {
            get(size - footer - len..size - footer).await?
        };
        Ok(ParquetMetaDataReader::decode_metadata(&meta)?)
    }

    /// Reads `rel`; the whole read (request and body) is one attempt.
    async fn get_bytes(&self, rel: &str) -> std::result::Result<Bytes, StorageError> {
        let path = self.path(rel);
        self.retry
            .run(StorageOp::Get, &path, || async {
                self.store.get(&path).await?.bytes().await
            })
            .await
    }

    /// Encodes batches as one Parquet file (zstd) and writes it atomically.
    pub async fn write_parquet(&self, rel: &str, batches: &[RecordBatch]) -> Result<()> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let bytes = encode_parquet(first.schema(), batches)?;
        self.put(rel, bytes).await
    }
}

/// Decodes a Parquet file held in memory.
pub fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Parquet bytes for batches sharing `schema`.
pub fn encode_parquet(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<Bytes> {
    encode_parquet_grouped(schema, batches, None)
}

/// As [`encode_parquet`], with at most `rows_per_group` rows per row group
/// (small groups over sorted data let readers skip groups by statistics).
pub fn encode_parquet_grouped(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    rows_per_group: Option<usize>,
) -> Result<Bytes> {
    let mut props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default()));
    if let Some(n) = rows_per_group.filter(|n| *n > 0) {
        props = props.set_max_row_group_row_count(Some(n));
    }
    let props = props.build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// As [`encode_parquet`], the rows sorted by the columns `sorted_by`
/// (ascending, no nulls) and the file saying so (each row group's
/// `sorting_columns`), for readers that merge files instead of sorting them.
pub(crate) fn encode_parquet_sorted(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batch: &RecordBatch,
    sorted_by: &[&str],
) -> Result<Bytes> {
    use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    let keys = sorted_by
        .iter()
        .map(|name| {
            let values = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Config(format!("no column `{name}` to sort by")))?
                .clone();
            Ok(SortColumn {
                values,
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let order = lexsort_to_indices(&keys, None)?;
    let sorted = take_record_batch(batch, &order)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_sorting_columns(Some(sorting_columns(&schema, sorted_by)?))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    w.write(&sorted)?;
    w.close()?;
    Ok(Bytes::from(buf))
}

/// The Parquet `sorting_columns` of a file of `schema` sorted by the
/// top-level columns `sorted_by` (ascending, no nulls): their leaf
/// positions in the Parquet schema.
pub(crate) fn sorting_columns(
    schema: &datafusion::arrow::datatypes::Schema,
    sorted_by: &[&str],
) -> Result<Vec<datafusion::parquet::file::metadata::SortingColumn>> {
    let descr = datafusion::parquet::arrow::ArrowSchemaConverter::new().convert(schema)?;
    sorted_by
        .iter()
        .map(|name| {
            let idx = descr
                .columns()
                .iter()
                .position(|c| c.path().parts() == [name.to_string()])
                .ok_or_else(|| Error::Config(format!("no leaf column `{name}` to sort by")))?;
            Ok(datafusion::parquet::file::metadata::SortingColumn {
                column_idx: idx as i32,
                descending: false,
                nulls_first: false,
            })
        })
        .collect()
}

/// Checks that `path` is a folder, without creating anything: a missing
/// path is an [`Error::Io`] of kind `NotFound`, a file one of kind
/// `NotADirectory`, each naming the path.
fn existing_folder(path: &std::path::Path) -> Result<()> {
    // Without the trailing `/` of a folder URL, so that a file is reported
    // as a file rather than as "not a directory" in its path.
    let path: std::path::PathBuf = path.components().collect();
    let io = |kind, what: &str| Error::Io {
        path: path.clone(),
        source: std::io::Error::new(kind, what.to_string()),
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io(
            std::io::ErrorKind::NotADirectory,
            "not a folder, so not an mlwatch storage root",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(io(
            std::io::ErrorKind::NotFound,
            "no such folder (nothing to read; a read-only command does not create it)",
        )),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// Turns a local path or URL string into a URL.
pub fn to_url(location: &str) -> Result<Url> {
    if location.contains("://") {
        return Url::parse(location)
            .map_err(|e| Error::Config(format!("storage.url `{location}`: {e}")));
    }
    let path = std::path::Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    Url::from_directory_path(&abs)
        .map_err(|_| Error::Config(format!("storage.url `{location}` is not a valid path")))
}
