//! # mlwatch
//!
//! Kafka-native monitoring of machine-learning models in production.
//!
//! Events flow `ingest` (rdkafka consumer) → [`event`] (JSON to Arrow) →
//! [`window`] (event-time windows, bounded samples) → [`monitor`] (drift
//! tests through DataFusion, using the [`udf`] SQL functions over the pure
//! [`stats`] kernels) → [`storage`] (atomic Parquet writes to an object
//! store), and [`query`] exposes the output tables to SQL. The [`pipeline`]
//! ties the stages together and owns checkpointing; [`demo`] runs it
//! against an in-process broker. See `ARCHITECTURE.md`.

pub mod ab;
pub mod alerts;
pub mod archive;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod event;
pub mod files;
pub mod labels;
pub mod monitor;
pub mod pipeline;
pub mod query;
pub mod registry;
pub mod stats;
pub mod storage;
pub mod telemetry;
pub mod tracking;
pub mod udf;
pub mod window;

pub use config::Config;
pub use error::{Error, Result};
