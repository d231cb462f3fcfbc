//! Tracking speed on a local store (figures printed, nothing asserted):
//!
//! * logging 100,000 metric points into one run, one call per point;
//! * creating RUNS runs x 20 params x 10 metrics through the API (default
//!   100,000; `MLWATCH_BENCH_RUNS` to change), then compacting;
//! * `search` with a filter over them, in-process and as a fresh
//!   `mlwatch runs search` process; `mlwatch runs compare` of 10 runs;
//! * the `mlwatch.tracking` topic: 200 runs x (start, params, 100 metrics
//!   events of 10 points, end) produced to librdkafka's mock cluster, then
//!   consumed by the pipeline (`MLWATCH_BENCH_KAFKA_RUNS` to change).
//!
//!     cargo bench --bench tracking

mod common;

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
    query(&tracker, &data).await?;
    let kafka_runs: usize = std::env::var("MLWATCH_BENCH_KAFKA_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    kafka(kafka_runs).await
}

/// Tracking events through the pipeline: records/s and metric points/s
/// until every record is consumed, and the time to the final checkpoint
/// (which writes the buffered runs).
async fn kafka(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use mlwatch::pipeline::{self, RunControl, StopMode};
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use serde_json::json;

    let dir = tempfile::tempdir()?;
    let reference = dir.path().join("reference.parquet");
    mlwatch::demo::write_reference(&reference, 1000, 7)?;
    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let mut config = mlwatch::demo::demo_config(&brokers, &dir.path().join("data"), &reference)?;
    config.kafka.group_id = "tracking-bench".into();
    cluster.create_topic(&config.kafka.tracking_topic, 4, 1)?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut records = 0u64;
    let mut points = 0u64;
    for r in 0..runs {
        let id = format!("{r:032x}");
        let mut events = vec![
            json!({"type": "start", "run_id": id, "experiment": "kafka-bench"}),
            json!({"type": "params", "run_id": id, "params": {"lr": 0.1, "depth": r % 10}}),
        ];
        for step in 0..100 {
            let batch: Vec<_> = (0..10)
                .map(|m| json!({"key": format!("m{m}"), "value": (step * m) as f64, "step": step}))
                .collect();
            points += batch.len() as u64;
            events.push(json!({"type": "metrics", "run_id": id, "metrics": batch}));
        }
        events.push(json!({"type": "end", "run_id": id}));
        for e in events {
            let payload = e.to_string();
            loop {
                match producer.send(
                    BaseRecord::to(&config.kafka.tracking_topic)
                        .key(id.as_str())
                        .payload(payload.as_str()),
                ) {
                    Ok(()) => break,
                    Err((_, _)) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            records += 1;
        }
    }
    producer.flush(std::time::Duration::from_secs(60))?;

    let progress = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(pipeline::run(
        config,
        RunControl {
            stop: rx,
            idle_exit: None,
            progress: Some(progress.clone()),
        },
    ));
    // Timed from the first batch, so the consumer group's join is left out.
    while progress.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let t = Instant::now();
    let first = progress.load(Ordering::Relaxed);
    while progress.load(Ordering::Relaxed) < records {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let consumed = t.elapsed().as_secs_f64();
    let timed = (records - first) as f64;
    tx.send(Some(StopMode::EndOfInput))?;
    let summary = task.await??;
    let total = t.elapsed().as_secs_f64();
    assert_eq!(summary.counters.tracking_events, records);
    if timed == 0.0 {
        println!("tracking topic: all {records} records came in the first batch; use more runs");
        return Ok(());
    }
    println!(
        "tracking topic: {records} records ({runs} runs, {points} metric points) consumed in \
         {consumed:.2} s after the first batch ({:.0} records/s, {:.0} points/s); \
         written by the final checkpoint at {total:.2} s",
        timed / consumed,
        timed / consumed * points as f64 / records as f64
    );
    Ok(())
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
    let data = data.to_str().expect("UTF-8 path");
    for i in 0..3 {
        let args = [
            "runs", "--data", data, "--format", "json", "search", filter, "--limit", "10",
        ];
        let t = common::time_mlwatch(args)?;
        println!(
            "`mlwatch runs search` fresh process (run {i}): {:.0} ms",
            t.as_secs_f64() * 1e3
        );
    }
    let mut args = vec!["runs", "--data", data, "compare"];
    args.extend(some_ids[..10].iter().map(String::as_str));
    let t = common::time_mlwatch(args)?;
    println!(
        "`mlwatch runs compare` of 10 runs, fresh process: {:.0} ms",
        t.as_secs_f64() * 1e3
    );
    Ok(())
}
