//! The crate's error type: one variant per subsystem, each carrying fields.

use std::path::PathBuf;

/// Result alias used across mlwatch.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error mlwatch returns from its library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// A server could not listen on the address it was given.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address (`--listen`, `--metrics-listen`).
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Kafka client error (connection, subscription, commit).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Arrow error while decoding or building batches.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Parquet encoding error.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// DataFusion planning or execution error.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// An object store could not be set up (e.g. an S3 option it refuses).
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A storage operation failed finally or after its retries; names the
    /// operation and the object path.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// A table file (a reference, a `mlwatch stats` input) cannot be read;
    /// names the file.
    #[error("{0}")]
    File(#[from] crate::files::FileError),
    /// A statistical kernel rejected its input.
    #[error("statistics: {0}")]
    Stats(#[from] crate::stats::StatsError),
    /// Reading a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A reference sample cannot be used.
    #[error("reference for model `{model}` ({location}): {reason}")]
    Reference {
        /// The model.
        model: String,
        /// Where the reference was read from.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A background task (window writer, demo producer) stopped abnormally.
    #[error("{task}: {reason}")]
    Task {
        /// Which task.
        task: &'static str,
        /// What happened.
        reason: String,
    },
    /// A model-registry request was refused or its files are unreadable.
    #[error("registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// An experiment-tracking request was refused.
    #[error("tracking: {0}")]
    Tracking(#[from] crate::tracking::TrackingError),
    /// The stored checkpoint cannot be read.
    #[error("checkpoint {location}: {reason}")]
    Checkpoint {
        /// Object path of the checkpoint.
        location: String,
        /// What is wrong.
        reason: String,
    },
}
