//! Tracking speed on a local store (figures printed, nothing asserted):
//!
//! * per call, as a fresh `mlwatch` process (what a training script pays):
//!   `runs start`, `log-metric`, `log-param`, `set-tag`, `show`, `search`,
//!   `compare`, on an empty store (the baseline, same run) and on stores of
//!   N runs x 20 params x 10 metrics (`MLWATCH_BENCH_SIZES`, default
//!   `300,10000,100000`), first uncompacted (one small file per call), then
//!   after `compact`;
//! * creating those runs through the API, and the compaction;
//! * logging 100,000 metric points into one run, one call per point;
//! * the `mlwatch.tracking` topic: 200 runs x (start, params, 100 metrics
//!   events of 10 points, end) produced to librdkafka's mock cluster, then
//!   consumed by the pipeline (`MLWATCH_BENCH_KAFKA_RUNS` to change).
//!
//!     cargo bench --bench tracking
//!
//! `MLWATCH_BENCH_DIR` keeps the stores between runs (a store that exists
//! is measured again, not rebuilt).

mod common;

use std::time::{Duration, Instant};

use mlwatch::storage::Storage;
use mlwatch::tracking::compact::CompactionPolicy;
use mlwatch::tracking::{ExperimentTracker, RunStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::var("MLWATCH_BENCH_SIZES")
        .unwrap_or_else(|_| "300,10000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    let base = match std::env::var("MLWATCH_BENCH_DIR") {
        Ok(d) => std::path::PathBuf::from(d),
        Err(_) => dir.path().to_path_buf(),
    };
    // Reads must not compact behind the uncompacted figures' back.
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("MLWATCH__TRACKING__COMPACT_AFTER_FILES", "0") };
    let open = |data: &std::path::Path| -> Result<ExperimentTracker, mlwatch::Error> {
        Ok(
            ExperimentTracker::new(Storage::open(data.to_str().unwrap(), &Default::default())?)
                .with_compaction(CompactionPolicy {
                    after_files: 0,
                    grace: Duration::ZERO,
                    ..Default::default()
                }),
        )
    };
    let empty = base.join("empty");
    let _ = std::fs::remove_dir_all(&empty);
    calls("empty store (baseline)", &empty, 0).await?;
    for &n in &sizes {
        let data = base.join(format!("runs-{n}"));
        let tracker = open(&data)?;
        if !data.join("tracking/run_log").exists() {
            create(&tracker, n).await?;
        }
        let files: usize = ["run_log", "params", "metrics", "tag_log", "artifacts"]
            .iter()
            .map(|t| std::fs::read_dir(data.join("tracking").join(t)).map_or(0, |d| d.count()))
            .sum();
        // Reads of an uncompacted store take ~4 s per 1,000 runs (every
        // file's footer is read); reads compact long before that. Above
        // 10,000 runs only the log calls are timed uncompacted.
        let reads = if n > 10_000 { 0 } else { 3 };
        calls(
            &format!("{n} runs, uncompacted ({files} table files)"),
            &data,
            reads,
        )
        .await?;
        let t = Instant::now();
        let report = tracker.compact().await?;
        let merged: usize = report.iter().map(|c| c.files).sum();
        println!(
            "  compaction of {n} runs: {:.1} s ({merged} files merged)",
            t.elapsed().as_secs_f64()
        );
        calls(&format!("{n} runs, compacted"), &data, 3).await?;
    }
    points(&open(&base.join("points"))?, &base.join("points")).await?;
    let kafka_runs: usize = std::env::var("MLWATCH_BENCH_KAFKA_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    kafka(kafka_runs).await
}

fn median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(*v.last().expect("timings")))
}

/// Times each CLI call a script makes, as a fresh process, on the store at
/// `data`: median and max of five (`reads` for reads).
async fn calls(
    label: &str,
    data: &std::path::Path,
    reads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let d = data.to_str().expect("UTF-8 path");
    let run = common::run_mlwatch;
    let mut start = Vec::new();
    let mut id = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        id = run(&["runs", "--data", d, "start", "-e", "calls"])?
            .trim()
            .to_string();
        start.push(t.elapsed());
    }
    let mut timings: Vec<(&str, Vec<Duration>)> = vec![("start", start)];
    let mut metric = Vec::new();
    let mut param = Vec::new();
    let mut tag = Vec::new();
    for i in 0..5 {
        let step = i.to_string();
        metric.push(common::time_mlwatch([
            "runs",
            "--data",
            d,
            "log-metric",
            &id,
            "loss=0.5",
            "--step",
            &step,
        ])?);
        let kv = format!("p{i}=v");
        param.push(common::time_mlwatch([
            "runs",
            "--data",
            d,
            "log-param",
            &id,
            &kv,
        ])?);
        tag.push(common::time_mlwatch([
            "runs", "--data", d, "set-tag", &id, &kv,
        ])?);
    }
    timings.extend([
        ("log-metric", metric),
        ("log-param", param),
        ("set-tag", tag),
    ]);
    if reads > 0 {
        let filter =
            "metrics.m3 > 0.9 and (params.p00 = 'xgb' or params.p05 < 10) order by metrics.m3 desc";
        let ids: Vec<String> = run(&[
            "runs", "--data", d, "--format", "json", "search", "", "-e", "bench", "--limit", "10",
        ])?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["run_id"].as_str().map(str::to_string))
        .collect();
        let (mut show, mut search, mut compare) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reads {
            show.push(common::time_mlwatch([
                "runs", "--data", d, "show", &ids[0],
            ])?);
            search.push(common::time_mlwatch([
                "runs", "--data", d, "--format", "json", "search", filter, "--limit", "10",
            ])?);
            let mut args = vec!["runs", "--data", d, "compare"];
            args.extend(ids.iter().map(String::as_str));
            compare.push(common::time_mlwatch(args)?);
        }
        timings.extend([("show", show), ("search", search), ("compare 10", compare)]);
    }
    let cells: Vec<String> = timings
        .into_iter()
        .map(|(name, t)| {
            let (med, max) = median(t);
            format!("{name} {med:.0} ms (max {max:.0})")
        })
        .collect();
    println!("{label}: {}", cells.join(", "));
    Ok(())
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

async fn points(
    tracker: &ExperimentTracker,
    data: &std::path::Path,
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
    Ok(())
}

/// `runs` runs x 20 params x 10 metrics through the API, 4 writers.
async fn create(
    tracker: &ExperimentTracker,
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
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
    Ok(())
}
