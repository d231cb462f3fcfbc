//! Names, schemas and file layout of the output tables. Column names used in
//! several places live here, once.
//!
//! | table | layout under the storage root |
//! |---|---|
//! | `drift_results` | `drift_results/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `data_quality` | `data_quality/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `drift_summary` | `drift_summary/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `performance` | `performance/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `concept_drift` | `concept_drift/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `alerts` | `alerts/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `ab_results` | `ab_results/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `ab_decisions` | `ab_decisions/model=<m>/date=<yyyy-mm-dd>/window-<start_ms>-<end_ms>.parquet` |
//! | `dead_letters`  | `dead_letters/topic=<t>/partition=<p>/<first_offset>.parquet` |
//! | `predictions`, `features`, `outcomes` | the archive ([`crate::archive`]) |
//! | `jobs` | `jobs/schedule=<name>/<scheduled_ms>-<attempt>.parquet` ([`crate::backfill::jobs`]) |
//!
//! File names are derived from what they hold (the window; the first offset
//! of a checkpoint interval), so reprocessing after a crash overwrites a file
//! instead of adding a second copy.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Table of drift test results, one row per window, model, version and feature.
pub const DRIFT_RESULTS: &str = "drift_results";
/// Table of dataset-level drift verdicts, one row per window, model and version.
pub const DRIFT_SUMMARY: &str = "drift_summary";
/// Table of data-quality measures, one row per window, model, version and column.
pub const DATA_QUALITY: &str = "data_quality";
/// Table of the prediction's distribution against its baseline, one row per
/// window, model, version and bin (or category).
pub const PREDICTION_DISTRIBUTION: &str = "prediction_distribution";
/// Table of model performance, one row per window, model, version, variant and metric.
pub const PERFORMANCE: &str = "performance";
/// Table of error-stream detections, one row per detection.
pub const CONCEPT_DRIFT: &str = "concept_drift";
/// Table of A/B results, one row per experiment, scope, window, variant and metric.
pub const AB_RESULTS: &str = "ab_results";
/// Table of A/B decisions, one row per experiment and window.
pub const AB_DECISIONS: &str = "ab_decisions";
/// Table of alerts, one row per alert.
pub const ALERTS: &str = "alerts";
/// Table of records that could not be used, with the reason.
pub const DEAD_LETTERS: &str = "dead_letters";
/// Folder of checkpoints (not a table).
pub const CHECKPOINTS: &str = "_checkpoints";
/// An output table: name, schema of its files, Hive partition columns.
pub struct TableDef {
    /// Table name (also its folder under the storage root).
    pub name: &'static str,
    /// Schema of the rows stored in its files.
    pub file_schema: SchemaRef,
    /// Columns taken from `key=value` folders, in order.
    pub partitions: Vec<(&'static str, DataType)>,
}

/// Every table `mlwatch sql` registers.
pub fn output_tables() -> Vec<TableDef> {
    vec![
        TableDef {
            name: DRIFT_RESULTS,
            file_schema: DRIFT_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: DRIFT_SUMMARY,
            file_schema: DRIFT_SUMMARY_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: DATA_QUALITY,
            file_schema: DATA_QUALITY_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: PREDICTION_DISTRIBUTION,
            file_schema: PREDICTION_DISTRIBUTION_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: PERFORMANCE,
            file_schema: PERFORMANCE_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: CONCEPT_DRIFT,
            file_schema: CONCEPT_DRIFT_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: AB_RESULTS,
            file_schema: AB_RESULTS_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: AB_DECISIONS,
            file_schema: AB_DECISIONS_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: ALERTS,
            file_schema: ALERTS_FILE_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: crate::archive::PREDICTIONS,
            file_schema: crate::archive::PREDICTIONS_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: crate::archive::FEATURES,
            file_schema: crate::archive::FEATURES_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: crate::archive::OUTCOMES,
            file_schema: crate::archive::OUTCOMES_SCHEMA.clone(),
            partitions: vec![(col::MODEL, DataType::Utf8), ("date", DataType::Utf8)],
        },
        TableDef {
            name: crate::backfill::jobs::JOBS,
            file_schema: crate::backfill::jobs::JOBS_SCHEMA.clone(),
            partitions: vec![("schedule", DataType::Utf8)],
        },
        TableDef {
            name: DEAD_LETTERS,
            file_schema: DEAD_LETTER_FILE_SCHEMA.clone(),
            partitions: vec![
                (col::TOPIC, DataType::Utf8),
                (col::PARTITION, DataType::Int32),
            ],
        },
    ]
}

/// Column names.
pub mod col {
    pub const WINDOW_START: &str = "window_start";
    pub const WINDOW_END: &str = "window_end";
    pub const MODEL: &str = "model";
    pub const VERSION: &str = "version";
    pub const FEATURE: &str = "feature";
    pub const KIND: &str = "kind";
    pub const METHOD: &str = "method";
    pub const STATISTIC: &str = "statistic";
    pub const P_VALUE: &str = "p_value";
    pub const P_VALUE_ADJUSTED: &str = "p_value_adjusted";
    pub const DISTANCE: &str = "distance";
    pub const BASELINE: &str = "baseline";
    pub const CAPPED: &str = "capped";
    pub const COLUMNS_TESTED: &str = "columns_tested";
    pub const COLUMNS_DRIFTED: &str = "columns_drifted";
    pub const SHARE: &str = "share";
    pub const DATASET_DRIFTED: &str = "dataset_drifted";
    pub const THRESHOLD: &str = "threshold";
    pub const DRIFTED: &str = "drifted";
    pub const N_REFERENCE: &str = "n_reference";
    pub const N_CURRENT: &str = "n_current";
    pub const TOPIC: &str = "topic";
    pub const PARTITION: &str = "partition";
    pub const OFFSET: &str = "offset";
    pub const PAYLOAD: &str = "payload";
    pub const REASON: &str = "reason";
    pub const ERROR: &str = "error";
    pub const VALUE: &str = "value";
    pub const VARIANT: &str = "variant";
    pub const METRIC: &str = "metric";
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of the rows stored in `drift_results` files (`model` and `date` are
/// added from the path by readers that understand Hive partitions). Columns
/// added after the first release are nullable, so older files still read.
pub static DRIFT_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::KIND, DataType::Utf8, true),
        Field::new(col::FEATURE, DataType::Utf8, false),
        Field::new(col::METHOD, DataType::Utf8, false),
        Field::new(col::STATISTIC, DataType::Float64, true),
        Field::new(col::P_VALUE, DataType::Float64, true),
        Field::new(col::P_VALUE_ADJUSTED, DataType::Float64, true),
        Field::new(col::DISTANCE, DataType::Float64, true),
        Field::new(col::THRESHOLD, DataType::Float64, false),
        Field::new(col::DRIFTED, DataType::Boolean, false),
        Field::new(col::N_REFERENCE, DataType::Int64, false),
        Field::new(col::N_CURRENT, DataType::Int64, false),
        Field::new(col::BASELINE, DataType::Utf8, true),
        Field::new(col::CAPPED, DataType::Boolean, true),
    ]))
});

/// Schema of the rows stored in `drift_summary` files (`model` and `date`
/// come from the path).
pub static DRIFT_SUMMARY_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::COLUMNS_TESTED, DataType::Int64, false),
        Field::new(col::COLUMNS_DRIFTED, DataType::Int64, false),
        Field::new(col::SHARE, DataType::Float64, false),
        Field::new(col::DATASET_DRIFTED, DataType::Boolean, false),
    ]))
});

/// Schema of the rows stored in `data_quality` files (`model` and `date`
/// come from the path).
pub static DATA_QUALITY_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let int = |n: &str, null| Field::new(n, DataType::Int64, null);
    let float = |n: &str, null| Field::new(n, DataType::Float64, null);
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::KIND, DataType::Utf8, false),
        Field::new(col::FEATURE, DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        int("rows", false),
        int("missing", false),
        float("missing_share", false),
        int("out_of_range", true),
        float("out_of_range_share", true),
        int("unseen", true),
        float("unseen_share", true),
        Field::new("unseen_top", DataType::Utf8, true),
        Field::new("missing_everywhere", DataType::Boolean, false),
        int("type_errors", false),
        Field::new("sampled", DataType::Boolean, false),
        Field::new("breaches", DataType::Utf8, true),
        Field::new(col::BASELINE, DataType::Utf8, false),
    ]))
});

/// Schema of the rows stored in `prediction_distribution` files (`model`
/// and `date` come from the path): per bin of a numeric prediction its
/// `[lower, upper)` (the last bin closed), per category of a categorical one
/// its name; the shares of the baseline's and the window's values in it.
pub static PREDICTION_DISTRIBUTION_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let float = |n: &str, null| Field::new(n, DataType::Float64, null);
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::FEATURE, DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        int("bin"),
        float("lower", true),
        float("upper", true),
        Field::new("category", DataType::Utf8, true),
        float("reference_share", false),
        float("current_share", false),
        int("n_reference"),
        int("n_current"),
        Field::new("sampled", DataType::Boolean, false),
        Field::new(col::BASELINE, DataType::Utf8, false),
    ]))
});

/// Schema of the rows stored in `performance` files (`model` and `date`
/// come from the path).
pub static PERFORMANCE_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let float = |n: &str, null| Field::new(n, DataType::Float64, null);
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::VARIANT, DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new(col::METRIC, DataType::Utf8, false),
        float(col::VALUE, true),
        int("n_predictions"),
        int("n_labeled"),
        float("label_coverage", false),
        float("baseline_value", true),
        float("delta", true),
        Field::new("degraded", DataType::Boolean, true),
        Field::new("sampled", DataType::Boolean, false),
    ]))
});

/// Schema of the rows stored in `ab_results` files (`model` and `date`
/// come from the path). `effect` and the intervals are of the variant's
/// value minus the control's; the control's own rows carry its estimate.
pub static AB_RESULTS_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str, null| Field::new(n, DataType::Utf8, null);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        s("experiment", false),
        s("scope", false),
        s(col::VARIANT, false),
        s(col::VERSION, false),
        Field::new("is_control", DataType::Boolean, false),
        s(col::METRIC, false),
        Field::new("n", DataType::Int64, false),
        f("estimate"),
        f("effect"),
        f("ci_low"),
        f("ci_high"),
        f("relative_lift"),
        f("lift_low"),
        f("lift_high"),
        f(col::P_VALUE),
        f(col::P_VALUE_ADJUSTED),
        f("cs_low"),
        f("cs_high"),
        s("test", true),
        Field::new("significant", DataType::Boolean, true),
    ]))
});

/// Schema of the rows stored in `ab_decisions` files (`model` and `date`
/// come from the path).
pub static AB_DECISIONS_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str, null| Field::new(n, DataType::Utf8, null);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        s("experiment", false),
        s("decision", false),
        s("verdict", false),
        s(col::VARIANT, true),
        s(col::METRIC, true),
        s("primary_metric", false),
        s("reason", false),
        f("srm_p_value"),
        s("unit_counts", false),
        f("required_per_variant"),
        Field::new("smallest_n", DataType::Int64, false),
        f("progress"),
        Field::new("changed", DataType::Boolean, false),
    ]))
});

/// Schema of the rows stored in `concept_drift` files (`model` and `date`
/// come from the path).
pub static CONCEPT_DRIFT_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new("detector", DataType::Utf8, false),
        Field::new("ts", ts_type(), false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("input", DataType::Utf8, false),
        Field::new(col::STATISTIC, DataType::Float64, false),
        Field::new("n_seen", DataType::Int64, false),
    ]))
});

/// Schema of the rows stored in `alerts` files (`model` and `date` come
/// from the path).
pub static ALERTS_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::WINDOW_START, ts_type(), false),
        Field::new(col::WINDOW_END, ts_type(), false),
        Field::new("alert_id", DataType::Utf8, false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::KIND, DataType::Utf8, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
    ]))
});

/// Schema of the rows stored in `dead_letters` files (`topic` and `partition`
/// come from the path).
pub static DEAD_LETTER_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::OFFSET, DataType::Int64, false),
        Field::new(col::PAYLOAD, DataType::Utf8, false),
        Field::new(col::REASON, DataType::Utf8, false),
        Field::new(col::ERROR, DataType::Utf8, false),
    ]))
});

/// Relative path of the rows of `table` for one model and window.
pub fn window_file(table: &str, model: &str, window_start_ms: i64, window_end_ms: i64) -> String {
    let date = DateTime::<Utc>::from_timestamp_millis(window_start_ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".into());
    format!("{table}/model={model}/date={date}/window-{window_start_ms}-{window_end_ms}.parquet")
}

/// Relative path of the rows of `table` for one model and window that a
/// second writer of the same window adds (`window-<start>-<end>-<name>.parquet`).
pub fn window_file_named(
    table: &str,
    model: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    name: &str,
) -> String {
    let base = window_file(table, model, window_start_ms, window_end_ms);
    format!("{}-{name}.parquet", base.trim_end_matches(".parquet"))
}

/// Relative path of the dead letters of one partition starting at `first_offset`.
pub fn dead_letter_file(topic: &str, partition: i32, first_offset: i64) -> String {
    format!("{DEAD_LETTERS}/topic={topic}/partition={partition}/{first_offset:020}.parquet")
}

/// Relative path of the dead letters of `partition` that consumer group
/// `group` wrote in the checkpoint interval ending with checkpoint
/// `sequence` (a replay of the interval writes the same path).
pub fn dead_letter_interval_file(
    topic: &str,
    partition: i32,
    group: &str,
    sequence: u64,
) -> String {
    format!("{DEAD_LETTERS}/topic={topic}/partition={partition}/{group}-{sequence:020}.parquet")
}

/// Relative path of a consumer group's checkpoint.
pub fn checkpoint_file(group_id: &str) -> String {
    format!("{CHECKPOINTS}/{group_id}.json")
}
