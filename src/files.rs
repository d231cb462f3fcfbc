//! Reading user files as Arrow tables: the models' reference samples and the
//! inputs of `mlwatch stats`.
//!
//! A location is a local path, a `file://` URL or an `s3://` URL. Files in
//! S3 are read through [`Storage`] (opened on the bucket with the same
//! options and environment as `storage.url`), so object_store stays inside
//! `storage` and its retries apply. The format is chosen by the extension,
//! in any case: `.parquet`; `.csv` (with a header row; column types
//! inferred); `.jsonl`, `.ndjson` or `.json` (JSON lines: one object per
//! line). `read_lines` reads any other file as one value per line.
//!
//! `TableFile` opens a file once (format, existence, schema) and reads it
//! whole or a column at a time; `read_table` reads one in a call;
//! `column_f64` and `column_str` take one column out of the batches.
//! Every error is a [`FileError`] naming the location.

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};

use crate::error::Result;
use crate::storage::Storage;

/// The extensions [`Format::of`] knows, as error messages list them.
pub(crate) const ACCEPTED_EXTENSIONS: &str = ".parquet, .csv, .jsonl, .ndjson, .json";

/// A table file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// JSON lines (newline-delimited JSON objects).
    JsonLines,
}

impl Format {
    /// The format a file name's extension says (in any case), if any.
    pub(crate) fn of(location: &str) -> Option<Format> {
        match extension(location)?.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Parquet => "Parquet",
            Format::Csv => "CSV",
            Format::JsonLines => "JSON lines",
        })
    }
}

/// Why a file cannot be read; each names the location as given.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The name ends in no extension a table format is known by.
    #[error(
        "{location}: cannot tell the format from the file name (accepted: {ACCEPTED_EXTENSIONS})"
    )]
    UnknownFormat {
        /// The location.
        location: String,
    },
    /// The location is a URL this module cannot read.
    #[error("{location}: {reason} (use a path, file:// or s3://)")]
    UnsupportedLocation {
        /// The location.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing is there.
    #[error("{location}: no such file")]
    NotFound {
        /// The location.
        location: String,
    },
    /// A folder is there.
    #[error("{location}: is a folder, not a file")]
    NotAFile {
        /// The location.
        location: String,
    },
    /// A local file could not be read.
    #[error("{location}: {source}")]
    Io {
        /// The location.
        location: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid in its format (or the store failed mid-read).
    #[error("{location}: cannot read as {format}: {source}")]
    Read {
        /// The location.
        location: String,
        /// The format its name gives.
        format: Format,
        /// DataFusion's error.
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The table has no such column.
    #[error("{location}: no column `{column}` (columns: {})", .available.join(", "))]
    MissingColumn {
        /// The location.
        location: String,
        /// The column asked for.
        column: String,
        /// The columns the table has.
        available: Vec<String>,
    },
    /// The column's values cannot be turned into the type asked for.
    #[error("{location}: column `{column}` is not {wanted}: {source}")]
    ColumnType {
        /// The location.
        location: String,
        /// The column.
        column: String,
        /// `numeric` or `text`.
        wanted: &'static str,
        /// Arrow's cast error.
        source: datafusion::arrow::error::ArrowError,
    },
    /// A line of a text file is not a number.
    #[error("{location} line {line}: `{text}` is not a number")]
    NotANumber {
        /// The location.
        location: String,
        /// 1-based line number.
        line: usize,
        /// The line, trimmed.
        text: String,
    },
    /// A file's bytes are not UTF-8 text.
    #[error("{location}: not UTF-8 text")]
    NotText {
        /// The location.
        location: String,
    },
}

/// Where a file is.
enum Source {
    Local(PathBuf),
    Store { storage: Storage, rel: String },
}

/// The last extension of the file name in `location` (after any URL
/// query or fragment is cut off).
fn extension(location: &str) -> Option<&str> {
    let name = location.rsplit(['/', '\\']).next()?;
    let name = name.split(['?', '#']).next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

fn resolve(location: &str, options: &BTreeMap<String, String>) -> Result<Source> {
    let unsupported = |reason: String| FileError::UnsupportedLocation {
        location: location.to_string(),
        reason,
    };
    if !location.contains("://") {
        return Ok(Source::Local(PathBuf::from(location)));
    }
    let url = url::Url::parse(location).map_err(|e| unsupported(format!("not a URL: {e}")))?;
    match url.scheme() {
        "file" => {
            Ok(Source::Local(url.to_file_path().map_err(|_| {
                unsupported("not a usable file path".into())
            })?))
        }
        scheme @ ("s3" | "s3a") => {
            let bucket = url
                .host_str()
                .ok_or_else(|| unsupported("names no bucket".into()))?;
            let storage = Storage::open_existing(&format!("{scheme}://{bucket}"), options)?;
            let rel = url.path().trim_start_matches('/').to_string();
            Ok(Source::Store { storage, rel })
        }
        other => Err(unsupported(format!("scheme `{other}` is not supported")).into()),
    }
}

/// A table file, opened: its format known, its existence checked and its
/// schema read (inferred once for CSV and JSON lines).
pub(crate) struct TableFile {
    location: String,
    format: Format,
    ctx: SessionContext,
    schema: SchemaRef,
}

impl std::fmt::Debug for TableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFile")
            .field("location", &self.location)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The table name a [`TableFile`] registers its file under.
const TABLE: &str = "file";

impl TableFile {
    /// Opens `location` (a path, `file://` or `s3://` URL); `options` are
    /// the S3 options of `storage.options` (the environment is read too).
    pub(crate) async fn open(
        location: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<TableFile> {
        let format = Format::of(location).ok_or_else(|| FileError::UnknownFormat {
            location: location.to_string(),
        })?;
        let ctx = SessionContext::new();
        let url = match resolve(location, options)? {
            Source::Local(path) => {
                local_file(location, &path)?;
                path.to_str()
                    .ok_or_else(|| FileError::UnsupportedLocation {
                        location: location.to_string(),
                        reason: "the path is not UTF-8".into(),
                    })?
                    .to_string()
            }
            Source::Store { storage, rel } => {
                if storage.head(&rel).await?.is_none() {
                    return Err(FileError::NotFound {
                        location: location.to_string(),
                    }
                    .into());
                }
                storage.register_store(&ctx);
                storage.object_url(&rel)
            }
        };
        // The extension as written: DataFusion keeps only the files that
        // end in it, case included.
        let ext = format!(".{}", extension(location).unwrap_or_default());
        let read_err = |e: datafusion::error::DataFusionError| FileError::Read {
            location: location.to_string(),
            format,
            source: Box::new(e),
        };
        match format {
            Format::Parquet => {
                ctx.register_parquet(
                    TABLE,
                    &url,
                    ParquetReadOptions::default().file_extension(&ext),
                )
                .await
            }
            Format::Csv => {
                ctx.register_csv(
                    TABLE,
                    &url,
                    CsvReadOptions::new().has_header(true).file_extension(&ext),
                )
                .await
            }
            Format::JsonLines => {
                ctx.register_json(TABLE, &url, JsonReadOptions::default().file_extension(&ext))
                    .await
            }
        }
        .map_err(read_err)?;
        let schema = ctx.table_provider(TABLE).await.map_err(read_err)?.schema();
        Ok(TableFile {
            location: location.to_string(),
            format,
            ctx,
            schema,
        })
    }

    /// The location as given.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// The columns.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Every row.
    pub(crate) async fn read(&self) -> Result<Vec<RecordBatch>> {
        let df = self.ctx.table(TABLE).await.map_err(|e| self.read_err(e))?;
        Ok(df.collect().await.map_err(|e| self.read_err(e))?)
    }

    /// The column `name` alone (only it is decoded where the format
    /// allows); a missing column is a [`FileError::MissingColumn`].
    pub(crate) async fn read_column(&self, name: &str) -> Result<Vec<RecordBatch>> {
        if self.schema.index_of(name).is_err() {
            return Err(missing_column(&self.location, name, &self.schema).into());
        }
        let df = self.ctx.table(TABLE).await.map_err(|e| self.read_err(e))?;
        let df = df.select_columns(&[name]).map_err(|e| self.read_err(e))?;
        Ok(df.collect().await.map_err(|e| self.read_err(e))?)
    }

    fn read_err(&self, e: datafusion::error::DataFusionError) -> FileError {
        FileError::Read {
            location: self.location.clone(),
            format: self.format,
            source: Box::new(e),
        }
    }
}

/// The bytes of the file at `location` (a path, `file://` or `s3://` URL),
/// e.g. to fingerprint it.
pub(crate) async fn read_bytes(
    location: &str,
    options: &BTreeMap<String, String>,
) -> Result<bytes::Bytes> {
    match resolve(location, options)? {
        Source::Local(path) => {
            local_file(location, &path)?;
            std::fs::read(&path)
                .map(bytes::Bytes::from)
                .map_err(|source| {
                    FileError::Io {
                        location: location.to_string(),
                        source,
                    }
                    .into()
                })
        }
        Source::Store { storage, rel } => storage.get(&rel).await,
    }
}

/// Reads every row of the table file at `location` (see the module docs
/// for locations and formats; S3 options from the environment).
pub(crate) async fn read_table(location: &str) -> Result<Vec<RecordBatch>> {
    TableFile::open(location, &BTreeMap::new())
        .await?
        .read()
        .await
}

/// Reads a text file (any name) as its non-empty lines, trimmed.
pub(crate) async fn read_lines(location: &str) -> Result<Vec<String>> {
    let text = match resolve(location, &BTreeMap::new())? {
        Source::Local(path) => {
            local_file(location, &path)?;
            std::fs::read_to_string(&path).map_err(|source| match source.kind() {
                std::io::ErrorKind::InvalidData => FileError::NotText {
                    location: location.to_string(),
                },
                _ => FileError::Io {
                    location: location.to_string(),
                    source,
                },
            })?
        }
        Source::Store { storage, rel } => {
            let bytes = storage
                .get_opt(&rel)
                .await?
                .ok_or_else(|| FileError::NotFound {
                    location: location.to_string(),
                })?;
            String::from_utf8(bytes.to_vec()).map_err(|_| FileError::NotText {
                location: location.to_string(),
            })?
        }
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads a text file of one number per line (see [`read_lines`]).
pub(crate) async fn read_numbers(location: &str) -> Result<Vec<f64>> {
    let lines = read_lines(location).await?;
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.into_iter().enumerate() {
        match l.parse::<f64>() {
            Ok(v) => out.push(v),
            Err(_) => {
                return Err(FileError::NotANumber {
                    location: location.to_string(),
                    line: i + 1,
                    text: l,
                }
                .into());
            }
        }
    }
    Ok(out)
}

/// The values of column `name` as `f64`, nulls and NaN left out (so
/// possibly empty). Arrow's cast decides what is a number: text that does
/// not parse becomes null, so a text column yields no values; a type with
/// no cast to `f64` (lists, structs) is a [`FileError::ColumnType`].
/// `location` names the file in errors; a missing column lists the columns
/// there are. No batches means no values.
pub(crate) fn column_f64(batches: &[RecordBatch], name: &str, location: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for c in column_arrays(batches, name, location)? {
        let c = cast(c, &DataType::Float64).map_err(|source| FileError::ColumnType {
            location: location.to_string(),
            column: name.to_string(),
            wanted: "numeric",
            source,
        })?;
        out.extend(
            c.as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .filter(|v| !v.is_nan()),
        );
    }
    Ok(out)
}

/// The values of column `name` as text, nulls left out (see [`column_f64`]).
pub(crate) fn column_str(
    batches: &[RecordBatch],
    name: &str,
    location: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in column_arrays(batches, name, location)? {
        let c = cast(c, &DataType::Utf8).map_err(|source| FileError::ColumnType {
            location: location.to_string(),
            column: name.to_string(),
            wanted: "text",
            source,
        })?;
        out.extend(c.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

fn column_arrays<'a>(
    batches: &'a [RecordBatch],
    name: &str,
    location: &str,
) -> Result<Vec<&'a std::sync::Arc<dyn Array>>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    if schema.index_of(name).is_err() {
        return Err(missing_column(location, name, &schema).into());
    }
    Ok(batches
        .iter()
        .filter_map(|b| b.column_by_name(name))
        .collect())
}

fn missing_column(location: &str, name: &str, schema: &SchemaRef) -> FileError {
    FileError::MissingColumn {
        location: location.to_string(),
        column: name.to_string(),
        available: schema.fields().iter().map(|f| f.name().clone()).collect(),
    }
}

/// Checks that a local `path` is a file.
fn local_file(location: &str, path: &std::path::Path) -> Result<(), FileError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(FileError::NotAFile {
            location: location.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::NotFound {
            location: location.to_string(),
        }),
        Err(source) => Err(FileError::Io {
            location: location.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// `tests/data/files` of the checkout the tests run from (cargo's
    /// run-time `CARGO_MANIFEST_DIR`, as in `tests/it/main.rs`).
    fn data(name: &str) -> String {
        let root = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        root.join("tests/data/files")
            .join(name)
            .to_str()
            .expect("UTF-8 checkout path")
            .to_string()
    }

    #[track_caller]
    fn file_error(r: Result<impl std::fmt::Debug>) -> (FileError, String) {
        match r {
            Err(Error::File(e)) => {
                let text = e.to_string();
                (e, text)
            }
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    /// Every format and location form gives the same rows.
    #[tokio::test]
    async fn every_format_reads_the_same_rows() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temp dir");
        // An upper-case extension is still a CSV file.
        let upper = tmp.path().join("SAMPLE.CSV");
        std::fs::copy(data("sample.csv"), &upper).expect("copy");
        let file_url = url::Url::from_file_path(data("sample.jsonl"))
            .expect("absolute path")
            .to_string();
        for loc in [
            data("sample.csv"),
            data("sample.jsonl"),
            data("sample.parquet"),
            upper.to_str().expect("UTF-8").to_string(),
            file_url,
        ] {
            let batches = read_table(&loc).await?;
            assert_eq!(column_f64(&batches, "x", &loc)?, [1.5, 2.5, 4.0], "{loc}");
            assert_eq!(
                column_str(&batches, "label", &loc)?,
                ["a", "b", "a", "c"],
                "{loc}"
            );
            assert_eq!(
                column_f64(&batches, "n", &loc)?,
                [1.0, 2.0, 3.0, 4.0],
                "{loc}"
            );
            let file = TableFile::open(&loc, &BTreeMap::new()).await?;
            // JSON inference orders the columns by name.
            let mut names: Vec<&str> = file
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            names.sort_unstable();
            assert_eq!(names, ["label", "n", "x"], "{loc}");
            let only = file.read_column("label").await?;
            assert!(only.iter().all(|b| b.num_columns() == 1));
            assert_eq!(column_str(&only, "label", &loc)?.len(), 4);
        }
        assert_eq!(read_numbers(&data("values.txt")).await?, [1.5, 2.5, 4.0]);
        assert_eq!(read_lines(&data("values.txt")).await?, ["1.5", "2.5", "4"]);
        assert!(column_f64(&[], "x", "none")?.is_empty());
        Ok(())
    }

    /// Each failure is a [`FileError`] naming the location and the reason.
    #[tokio::test]
    async fn errors_name_the_location_and_the_reason() -> Result<()> {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| tmp.path().join(name).to_str().expect("UTF-8").to_string();
        let opts = BTreeMap::new();

        let (e, text) = file_error(TableFile::open(&data("values.txt"), &opts).await);
        assert!(matches!(e, FileError::UnknownFormat { .. }));
        assert!(
            text.contains("values.txt") && text.contains(ACCEPTED_EXTENSIONS),
            "{text}"
        );

        let missing = path("missing.csv");
        let (e, text) = file_error(read_table(&missing).await);
        assert!(matches!(e, FileError::NotFound { .. }), "{text}");
        assert_eq!(text, format!("{missing}: no such file"));
        let (e, _) = file_error(read_lines(&path("missing.txt")).await);
        assert!(matches!(e, FileError::NotFound { .. }));

        let folder = path("folder.parquet");
        std::fs::create_dir(&folder).expect("mkdir");
        let (e, _) = file_error(read_table(&folder).await);
        assert!(matches!(e, FileError::NotAFile { .. }));

        let (e, text) = file_error(read_table("http://example.invalid/a.csv").await);
        assert!(matches!(e, FileError::UnsupportedLocation { .. }));
        assert!(text.contains("scheme `http`"), "{text}");

        // Not Parquet inside: the format is named with the location.
        let fake = path("fake.parquet");
        std::fs::write(&fake, "x,y\n1,2\n").expect("write");
        let (e, text) = file_error(read_table(&fake).await);
        assert!(
            matches!(
                e,
                FileError::Read {
                    format: Format::Parquet,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.starts_with(&format!("{fake}: cannot read as Parquet")),
            "{text}"
        );

        let csv = data("sample.csv");
        let file = TableFile::open(&csv, &opts).await?;
        let (e, text) = file_error(file.read_column("y").await);
        assert!(
            matches!(e, FileError::MissingColumn { ref available, .. } if available == &["x", "label", "n"])
        );
        assert_eq!(text, format!("{csv}: no column `y` (columns: x, label, n)"));
        let batches = file.read().await?;
        let (e, _) = file_error(column_f64(&batches, "y", &csv));
        assert!(matches!(e, FileError::MissingColumn { .. }));
        // Text that is not a number casts to null, as Arrow casts.
        assert!(column_f64(&batches, "label", &csv)?.is_empty());

        let bad = path("bad.txt");
        std::fs::write(&bad, "1\n\n2,5\n").expect("write");
        let (e, text) = file_error(read_numbers(&bad).await);
        assert!(matches!(e, FileError::NotANumber { line: 2, .. }));
        assert_eq!(text, format!("{bad} line 2: `2,5` is not a number"));
        Ok(())
    }

    /// Files in S3 are read through storage (`.ci/run` starts moto and sets
    /// `MLWATCH_TEST_S3_URL` and the AWS variables).
    #[tokio::test]
    async fn files_in_s3_are_read_through_storage() -> Result<()> {
        let Ok(bucket) = std::env::var("MLWATCH_TEST_S3_URL") else {
            eprintln!("MLWATCH_TEST_S3_URL is not set: S3 file test skipped (.ci/run sets it)");
            return Ok(());
        };
        let prefix = format!("files-{}", std::process::id());
        let storage = Storage::open(&format!("{bucket}/{prefix}"), &BTreeMap::new())?;
        for name in ["sample.csv", "sample.jsonl", "sample.parquet", "values.txt"] {
            let bytes = std::fs::read(data(name)).expect("test data");
            storage.put(name, bytes.into()).await?;
        }
        for name in ["sample.csv", "sample.jsonl", "sample.parquet"] {
            let loc = format!("{bucket}/{prefix}/{name}");
            let batches = read_table(&loc).await?;
            assert_eq!(column_f64(&batches, "x", &loc)?, [1.5, 2.5, 4.0], "{loc}");
        }
        let values = format!("{bucket}/{prefix}/values.txt");
        assert_eq!(read_numbers(&values).await?, [1.5, 2.5, 4.0]);
        let missing = format!("{bucket}/{prefix}/missing.csv");
        let (e, _) = file_error(read_table(&missing).await);
        assert!(matches!(e, FileError::NotFound { .. }));
        for name in ["sample.csv", "sample.jsonl", "sample.parquet", "values.txt"] {
            storage.delete(name).await?;
        }
        Ok(())
    }
}
