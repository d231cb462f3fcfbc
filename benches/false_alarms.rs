//! False-alarm rate of the drift tests on a stream without drift, through
//! the real pipeline (librdkafka's mock cluster → `pipeline::run` → Parquet),
//! read back with `mlwatch::query`.
//!
//! `cargo bench --bench false_alarms -- [WINDOWS] [EVENTS_PER_WINDOW]`
//! (default: 1000 windows of 500 events).
//!
//! Every event is drawn from the training distribution
//! (`Generator::event_json(i, ts, Drifts::NONE)`, seed [`EVENT_SEED`]), so
//! every `drifted` row is a false alarm. The same messages are consumed four
//! times, each by its own consumer group into its own folder:
//! * a 1,000-row reference (seed [`REFERENCE_SEED`]): Evidently's rule picks
//!   KS for the 5 numeric features and the prediction and chi-square for the
//!   2 categorical ones, all p-values, threshold 0.05
//!   (`drift.p_value_threshold`), with `drift.correction` = none, holm, bh;
//! * a 20,000-row reference (same seed): Evidently's default, normed
//!   Wasserstein and Jensen-Shannon distances at their threshold 0.1 (not
//!   corrected).
//!
//! Reported per run: windows, tests, the per-window rate (share of windows
//! with at least one drifted column), the per-test rate, and the share of
//! windows with `drift_summary.dataset_drifted`; then per column the share
//! of windows it drifted in and, for p-value tests, the share with raw
//! p < 0.05. The reference is one fixed draw for all windows, so the rates
//! are conditional on it: windows share the reference's sampling error.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use mlwatch::config::{Config, Correction};
use mlwatch::demo::{self, Drifts, Generator};
use mlwatch::pipeline::{self, RunControl, StopMode};
use mlwatch::query;
use mlwatch::storage::Storage;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::watch;

/// Seed of the event stream.
const EVENT_SEED: u64 = 20_260_101;
/// Seed of both references (the demo's).
const REFERENCE_SEED: u64 = 7;
const TOPIC: &str = "false-alarms";
const P_THRESHOLD: f64 = 0.05;
/// Message bytes kept per partition, well under the mock broker's 5 MiB.
const BYTES_PER_PARTITION: u64 = 3 << 20;

fn produce(brokers: &str, n: u64, per_window: u64, partitions: i32) -> u64 {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut g = Generator::new(EVENT_SEED);
    let mut bytes = 0;
    for i in 0..n {
        // `per_window` events per one-minute window, evenly spaced.
        let ts = demo::START_MS + (i as i64 * 60_000) / per_window as i64;
        let payload = g.event_json(i, ts, Drifts::NONE);
        bytes += payload.len() as u64;
        let mut rec = BaseRecord::<(), _>::to(TOPIC)
            .payload(&payload)
            .partition((i % partitions as u64) as i32);
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    bytes
}

/// Runs the pipeline until it consumed `n` records, then ends the input
/// (every window closes and is written).
async fn run_pipeline(config: Config, n: u64) -> (f64, u64, u64) {
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, rx) = watch::channel(None);
    let control = RunControl {
        stop: rx,
        idle_exit: None,
        progress: Some(progress.clone()),
    };
    let t = Instant::now();
    let run = tokio::spawn(pipeline::run(config, control));
    while progress.load(Ordering::Relaxed) < n {
        assert!(!run.is_finished(), "pipeline stopped early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(Some(StopMode::EndOfInput)).expect("stop");
    let s = run.await.expect("join").expect("pipeline");
    let dead = s.counters.dead_letters.values().sum();
    (t.elapsed().as_secs_f64(), s.counters.events, dead)
}

/// Rows of `sql` over the output tables under `data`, every value as text.
async fn rows(data: &Path, sql: &str) -> Vec<Vec<String>> {
    let storage = Storage::open(&data.display().to_string(), &Default::default()).expect("store");
    let ctx = query::new_context(Default::default());
    query::register_tables(&ctx, &storage).expect("tables");
    let batches = ctx
        .sql(sql)
        .await
        .expect("sql")
        .collect()
        .await
        .expect("query");
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<StringArray> = b
            .columns()
            .iter()
            .map(|c| {
                let s = cast(c, &DataType::Utf8).expect("cast");
                s.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("strings")
                    .clone()
            })
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        if c.is_null(r) {
                            String::new()
                        } else {
                            c.value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

const PER_WINDOW_SQL: &str = "SELECT count(*), sum(tests), \
     count(*) FILTER (WHERE drifted > 0), sum(drifted), min(tests), max(tests), \
     min(n_min), max(n_max) \
     FROM (SELECT window_start, count(*) AS tests, count(*) FILTER (WHERE drifted) AS drifted, \
           min(n_current) AS n_min, max(n_current) AS n_max \
           FROM drift_results GROUP BY window_start)";
const SUMMARY_SQL: &str = "SELECT count(*), count(*) FILTER (WHERE dataset_drifted), max(columns_drifted) FROM drift_summary";
const PER_COLUMN_SQL: &str = "SELECT kind, feature, method, count(*), \
     count(*) FILTER (WHERE drifted), count(*) FILTER (WHERE p_value < 0.05), \
     avg(coalesce(p_value, distance)), max(distance) \
     FROM drift_results GROUP BY kind, feature, method ORDER BY kind DESC, feature";

struct Case {
    label: &'static str,
    reference_rows: usize,
    correction: Correction,
}

fn main() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("MLWATCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let windows = args.first().copied().unwrap_or(1000);
    let per_window = args.get(1).copied().unwrap_or(500);
    let n = windows * per_window;
    let cases = [
        Case {
            label: "KS + chi-square, p < 0.05, none",
            reference_rows: 1000,
            correction: Correction::None,
        },
        Case {
            label: "KS + chi-square, p < 0.05, holm",
            reference_rows: 1000,
            correction: Correction::Holm,
        },
        Case {
            label: "KS + chi-square, p < 0.05, bh",
            reference_rows: 1000,
            correction: Correction::Bh,
        },
        Case {
            label: "Evidently default: Wasserstein (normed) + JS >= 0.1",
            reference_rows: 20_000,
            correction: Correction::Bh,
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        let tmp = tempfile::tempdir().expect("tempdir");
        // ~330 bytes per event; stay well under the broker's retention.
        let partitions = ((n * 400).div_ceil(BYTES_PER_PARTITION)).max(8) as i32;
        cluster.create_topic(TOPIC, partitions, 1).expect("topic");
        cluster
            .create_topic("mlwatch.alerts", 1, 1)
            .expect("alerts topic");
        let b = brokers.clone();
        let bytes =
            tokio::task::spawn_blocking(move || produce(&b, n, per_window, partitions))
                .await
                .expect("produce");
        let b = brokers.clone();
        tokio::task::spawn_blocking(move || common::check_retained(&b, TOPIC, partitions, n))
            .await
            .expect("watermarks");
        println!(
            "{windows} windows x {per_window} events ({n} events, {} bytes/event, {partitions} partitions), \
             no drift; event seed {EVENT_SEED}, reference seed {REFERENCE_SEED}; \
             7 features + prediction per window\n",
            bytes / n
        );
        let mut table = Vec::new();
        let mut per_column = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let reference = tmp.path().join(format!("reference-{}.parquet", case.reference_rows));
            if !reference.exists() {
                demo::write_reference(&reference, case.reference_rows, REFERENCE_SEED)
                    .expect("reference");
            }
            let data = tmp.path().join(format!("out-{i}"));
            let mut config = demo::demo_config(&brokers, &data, &reference).expect("config");
            config.kafka.predictions_topic = TOPIC.into();
            config.kafka.group_id = format!("false-alarms-{i}");
            config.drift.p_value_threshold = P_THRESHOLD;
            config.drift.correction = case.correction;
            let (secs, events, dead) = run_pipeline(config, n).await;
            assert_eq!(events, n, "every event reached the windows");
            let w = &rows(&data, PER_WINDOW_SQL).await[0];
            let s = &rows(&data, SUMMARY_SQL).await[0];
            let (nw, tests, w_alarm, t_alarm) = (num(&w[0]), num(&w[1]), num(&w[2]), num(&w[3]));
            eprintln!(
                "{}: {secs:.1} s, {dead} dead letters, tests per window {}-{}, n_current {}-{}, \
                 summary rows {}, most columns drifted in a window {}",
                case.label, w[4], w[5], w[6], w[7], s[0], s[2]
            );
            table.push(format!(
                "| {} | {} | {} | {nw} | {tests} | {:.3} ({w_alarm}) | {:.4} ({t_alarm}) | {:.4} ({}) |",
                case.label,
                case.reference_rows,
                case.correction.as_str(),
                w_alarm / nw,
                t_alarm / tests,
                num(&s[1]) / num(&s[0]),
                s[1],
            ));
            for r in rows(&data, PER_COLUMN_SQL).await {
                let tested = num(&r[3]);
                per_column.push(format!(
                    "| {} | {} | {} | {} | {} | {:.4} | {} | {:.4} |",
                    case.correction.as_str(),
                    case.reference_rows,
                    r[1],
                    r[2],
                    r[3],
                    num(&r[4]) / tested,
                    if r[2] == "ks" || r[2] == "chi2" {
                        format!("{:.4}", num(&r[5]) / tested)
                    } else {
                        "-".into()
                    },
                    num(&r[6]),
                ));
            }
        }
        println!(
            "| tests | reference rows | correction | windows | tests | per-window rate (windows) | per-test rate (tests) | dataset_drifted rate (windows) |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|---:|");
        for l in table {
            println!("{l}");
        }
        println!("\nper column (every window tests each once):\n");
        println!(
            "| correction | reference rows | column | method | tests | drifted share | raw p < 0.05 share | mean p-value or distance |"
        );
        println!("|---|---:|---|---|---:|---:|---:|---:|");
        for l in per_column {
            println!("{l}");
        }
        drop(cluster);
    });
}
