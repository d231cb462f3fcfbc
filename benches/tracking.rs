//! Tracking speed on a local store (figures printed, nothing asserted):
//!
//! * logging 100,000 metric points into one run, one call per point;
//! * creating RUNS runs x 20 params x 10 metrics through the API (default
//!   100,000; `MLWATCH_BENCH_RUNS` to change), then compacting;
//! * `search` with a filter over them, in-process and as a fresh
//!   `mlwatch runs search` process; `mlwatch runs compare` of 10 runs.
//!
//!     cargo bench --bench tracking

use std::process::Command;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use mlwatch::storage::Storage;
use mlwatch::tracking::{ExperimentTracker, RunStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::var("MLWATCH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // MLWATCH_BENCH_DIR keeps the store, and a second run only measures the queries.
    let dir = tempfile::tempdir()?;
    let data = match std::env::var("MLWATCH_BENCH_DIR") {
        Ok(d) => std::path::PathBuf::from(d),
        Err(_) => dir.path().join("store"),
    };
    let reuse = data.join("tracking/run_log").exists();
    let tracker =
        ExperimentTracker::new(Storage::open(data.to_str().unwrap(), &Default::default())?);
    if !reuse {
        create(&tracker, &data, runs).await?;
    }
    query(&tracker, &data).await
}

async fn create(
    tracker: &ExperimentTracker,
    data: &std::path::Path,
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let mut run = tracker.start_run("points", None, &[]).await?;
    for step in 0..100_000i64 {
        run.log_metrics(&[("loss", 1.0 / (step as f64 + 1.0), step)])
            .await?;
    }
    run.end(RunStatus::Finished).await?;
    let files = std::fs::read_dir(data.join("tracking/metrics"))?.count();
    println!(
        "100,000 metric points in one run, one call each: {:.0} ms ({files} metric files)",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..runs).step_by(workers) {
                let mut run = tracker.start_run("bench", None, &[]).await?;
                let params: Vec<(String, String)> = (0..20)
                    .map(|p| {
                        let v = match p {
                            0 => ["xgb", "lgbm", "logreg"][i % 3].to_string(),
                            _ => ((i * 7 + p) % 100).to_string(),
                        };
                        (format!("p{p:02}"), v)
                    })
                    .collect();
                run.log_params(&params)?;
                let names: Vec<String> = (0..10).map(|m| format!("m{m}")).collect();
                let metrics: Vec<(&str, f64, i64)> = names
                    .iter()
                    .enumerate()
                    .map(|(m, n)| (n.as_str(), ((i * 31 + m * 17) % 1000) as f64 / 1000.0, 0))
                    .collect();
                run.log_metrics(&metrics).await?;
                ids.push(());
                run.end(RunStatus::Finished).await?;
            }
            Ok::<_, mlwatch::Error>(ids)
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "created {runs} runs x 20 params x 10 metrics: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let report = tracker.compact().await?;
    println!("compaction: {:.1} s {report:?}", t.elapsed().as_secs_f64());
    Ok(())
}

async fn query(
    tracker: &ExperimentTracker,
    data: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = tracker.context().await?;
    let some_ids: Vec<String> = ctx
        .sql("SELECT run_id FROM runs WHERE experiment = 'bench' ORDER BY run_id LIMIT 10")
        .await?
        .collect()
        .await?
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();

    let filter =
        "metrics.m3 > 0.9 and (params.p00 = 'xgb' or params.p05 < 10) order by metrics.m3 desc";
    for i in 0..3 {
        let t = Instant::now();
        let out = tracker.search(filter, Some("bench")).await?;
        let n: usize = out.iter().map(|b| b.num_rows()).sum();
        println!(
            "search (in process, run {i}): {:.0} ms, {n} runs match",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let exe = env!("CARGO_BIN_EXE_mlwatch");
    for i in 0..3 {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(["runs", "--data"])
            .arg(data)
            .args(["--format", "json", "search", filter, "--limit", "10"])
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "`mlwatch runs search` fresh process (run {i}): {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["runs", "--data"])
        .arg(data)
        .arg("compare")
        .args(&some_ids[..10])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "`mlwatch runs compare` of 10 runs, fresh process: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
