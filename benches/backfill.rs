//! Backfill throughput beside the raw Parquet scan of the same files, in
//! one run.
//!
//!     cargo bench --bench backfill              # the demo's 200,000 events
//!     cargo bench --bench backfill -- 1000000   # more (20 windows)
//!
//! The demo streams its events (predictions with their labels) through
//! Kafka with the archive on; then, alternating, 3 times each:
//! * **scan**: every row and column of the archive's `predictions` and
//!   `outcomes` read by DataFusion (`SELECT *`, streamed and counted): the
//!   files' raw read rate, which a backfill cannot beat;
//! * **sorted scan**: the same rows sorted by DataFusion into the order a
//!   backfill replays them (`ORDER BY ts, topic, partition, offset`, each
//!   table whole): what replaying archive files not written sorted costs
//!   before a record is decoded (the archive's own files are written sorted
//!   and merged instead);
//! * **backfill**: `mlwatch backfill` over the whole range: the same files
//!   read and merged by event time, decoded, windowed, joined, and every
//!   evaluator and sink run, replacing the streamed rows.
//!
//! Rates are archived records (predictions + outcomes) per second; medians
//! are printed with their ratio. Only that the backfill reads (nearly) the
//! rows the scan reads is checked.

use std::time::Instant;

use futures::StreamExt;
use mlwatch::backfill::{self, BackfillArgs, Progress};
use mlwatch::demo::{self, DemoOptions};
use mlwatch::storage::Storage;

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads every row of the archive's predictions and outcomes (`sorted`: in
/// event-time order); rows read.
async fn scan(storage: &Storage, sorted: bool) -> Result<u64, Box<dyn std::error::Error>> {
    let ctx = mlwatch::query::new_context(Default::default());
    mlwatch::query::register_tables(&ctx, storage)?;
    let order = if sorted {
        r#" ORDER BY ts, topic, "partition", "offset""#
    } else {
        ""
    };
    let mut rows = 0;
    for table in ["predictions", "outcomes"] {
        let mut s = ctx
            .sql(&format!("SELECT * FROM {table}{order}"))
            .await?
            .execute_stream()
            .await?;
        while let Some(b) = s.next().await {
            rows += b?.num_rows() as u64;
        }
    }
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    eprintln!("streaming the demo's {events} events with the archive on ...");
    let t = Instant::now();
    demo::run_demo(&DemoOptions {
        data: data.clone(),
        events,
        windows: 20,
    })
    .await?;
    eprintln!("streamed in {:.1} s", t.elapsed().as_secs_f64());
    let data = data.canonicalize()?;
    let storage = Storage::open(&data.display().to_string(), &Default::default())?;
    let reference = data.join("reference").join("credit_risk.parquet");
    let config =
        mlwatch::Config::from_toml_str(&demo::demo_config_toml("127.0.0.1:1", &data, &reference))?;
    let args = BackfillArgs {
        from: "2026-01-01".into(),
        to: "2026-01-02".into(),
        ..Default::default()
    };
    let (mut scans, mut sorts, mut fills) = (Vec::new(), Vec::new(), Vec::new());
    let mut records = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let rows = scan(&storage, false).await?;
        let secs = t.elapsed().as_secs_f64();
        scans.push(rows as f64 / secs);
        let t = Instant::now();
        let sorted = scan(&storage, true).await?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(sorted, rows, "the sorted scan reads every row");
        sorts.push(rows as f64 / secs);
        let t = Instant::now();
        let s = backfill::run(&config, &args, Progress::Quiet).await?;
        let secs = t.elapsed().as_secs_f64();
        records = s.records;
        // The scan reads every archived row; the backfill leaves out the
        // labels past the last window's wait (late beyond the horizon).
        assert!(
            s.records <= rows && s.records * 100 >= rows * 99,
            "the backfill reads {} of the {rows} rows",
            s.records
        );
        fills.push(s.records as f64 / secs);
        eprintln!(
            "scan {:.0} rows/s, sorted scan {:.0} rows/s, backfill {:.0} records/s ({} windows, {} rows written)",
            scans[scans.len() - 1],
            sorts[sorts.len() - 1],
            fills[fills.len() - 1],
            s.windows,
            s.rows.values().sum::<u64>()
        );
    }
    let (scan, sorted, fill) = (median(scans), median(sorts), median(fills));
    println!(
        "backfill of {records} archived records ({events} predictions + their labels), medians of {RUNS}:"
    );
    println!("  raw Parquet scan: {scan:>12.0} rows/s");
    println!(
        "  sorted scan:      {sorted:>12.0} rows/s ({:.3} of the scan)",
        sorted / scan
    );
    println!("  backfill:         {fill:>12.0} records/s");
    println!("  ratio:            {:>12.3}", fill / scan);
    Ok(())
}
