//! Throughput of the whole path (Kafka → Arrow → window → KS → Parquet)
//! next to the raw consume-and-decode rate of the same messages, measured in
//! one run against librdkafka's in-process mock cluster, plus resident
//! memory while the pipeline runs.
//!
//! `cargo bench --bench throughput -- [EVENTS ...]` (default: 100000 1000000).
//! The pipeline runs the demo configuration: a 20,000-row reference with the
//! prediction (`demo::write_reference`), so every window tests all 7
//! features and the prediction (normed Wasserstein / Jensen-Shannon,
//! Evidently's choice above 1,000 reference rows); the bench checks that
//! every written window has those 8 results.
//! The RSS columns include the mock broker, which holds every produced
//! message; the pipeline's own footprint is the growth during its phase.
//! Each size gets its own topic; for each, the raw consumer reads all
//! records and decodes them in batches of 8,192 with
//! `mlwatch::event::decode_parallel` (two threads, as the pipeline does),
//! then the pipeline
//! consumes the same records, each run with its own consumer group; raw and
//! full runs alternate `MLWATCH_BENCH_REPS` times (default 3) and the table
//! compares their medians (single runs on a shared 2-core machine vary by a
//! third, the raw ones most). The full path's clock runs from its first
//! record until the run has written every window that closed and its final
//! checkpoint. Messages are produced
//! first, so the topic has 128 partitions to stay under the mock broker's
//! 5 MiB-per-partition retention up to 1M events (checked after producing:
//! no partition may have dropped its oldest messages).
//!
//! **Labels** (`MLWATCH_BENCH_LABELS=1`): each size also gets a labels
//! topic (128 partitions) holding the demo's labels of 90% of the
//! predictions ([`demo::Labels`]: seconds to 90 s late, 2% past the
//! horizon), produced in event-time order, and the model has a binary task
//! with a 3-minute label horizon, so the join, the performance evaluator
//! and the detectors run too; the raw consumer reads and decodes both
//! topics. Rates then count predictions and labels. The prediction topic
//! gets enough partitions to stay under the broker's retention (512 for
//! 5M events).
//!
//! **Archive**: the full path archives every event (as the demo's config
//! does); `MLWATCH_BENCH_ARCHIVE=0` runs it without the archive.
//!
//! Diagnostics (environment variables):
//! * `MLWATCH_LOG=mlwatch=info` logs each window's evaluation time;
//!   `mlwatch::pipeline=debug` the open windows at each checkpoint, its
//!   duration and size;
//! * `MLWATCH_BENCH_RSS_TRACE=1` prints RSS and records consumed every half
//!   second of the pipeline phase;
//! * `MLWATCH_BENCH_KAFKA=key=value,...` adds librdkafka settings to both
//!   consumers (both start from `pipeline::CONSUMER_DEFAULTS`, except that
//!   the raw one keeps librdkafka's default `queued.min.messages`);
//! * `MLWATCH_BENCH_MAX_AHEAD=2m` sets `window.max_ahead` (`1000d`: no
//!   alignment once every partition has delivered);
//! * `MLWATCH_PERF_CTL=ctl.fifo,ack.fifo` with `perf record --delay=-1
//!   --control=fifo:ctl.fifo,ack.fifo` profiles only the pipeline phase.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlwatch::config::Config;
use mlwatch::demo::{self, Drifts, Generator};
use mlwatch::event::{self, EventKind, ModelCatalog};
use mlwatch::pipeline::{self, RunControl, StopMode};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::watch;

const PARTITIONS: i32 = 128;

/// CPU seconds (user + system) of this process so far, all threads (the
/// in-process mock broker's included), in the kernel's fixed 1/100 s ticks.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Samples RSS every 10 ms until stopped; returns the peak. With
/// `MLWATCH_BENCH_RSS_TRACE` set, also prints RSS and records consumed every
/// half second (is memory growing with the input, or bounded?).
fn rss_sampler(progress: Arc<AtomicU64>) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let trace = std::env::var_os("MLWATCH_BENCH_RSS_TRACE").is_some();
    let h = std::thread::spawn(move || {
        let mut peak = 0;
        let t0 = Instant::now();
        let mut next = Duration::ZERO;
        while !s.load(Ordering::Relaxed) {
            let rss = rss_kib();
            peak = peak.max(rss);
            if trace && t0.elapsed() >= next {
                eprintln!(
                    "rss trace: {:5.1} s {:8} records {:7.1} MiB",
                    t0.elapsed().as_secs_f64(),
                    progress.load(Ordering::Relaxed),
                    rss as f64 / 1024.0
                );
                next += Duration::from_millis(500);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    (stop, h)
}

/// With `MLWATCH_PERF_CTL=<ctl fifo>,<ack fifo>` (perf record --delay=-1
/// --control=fifo:<ctl fifo>,<ack fifo>), profiling is on only while the
/// pipeline consumes.
fn perf_control(cmd: &str) {
    let Ok(v) = std::env::var("MLWATCH_PERF_CTL") else {
        return;
    };
    let (ctl, ack) = v.split_once(',').expect("MLWATCH_PERF_CTL=<ctl>,<ack>");
    std::fs::write(ctl, format!("{cmd}\n")).expect("perf ctl");
    let mut buf = [0u8; 5];
    use std::io::Read;
    std::fs::File::open(ack)
        .and_then(|mut f| f.read(&mut buf))
        .expect("perf ack");
}

/// Partitions of the labels topic.
const LABEL_PARTITIONS: i32 = 128;

/// Partitions of the prediction topic for `n` events: 128, or more so that
/// none holds more than ~4 MiB (the mock broker drops the oldest past 5).
fn partitions_for(n: u64) -> i32 {
    let need = (n * 320 / (4 << 20) + 1).next_power_of_two();
    PARTITIONS.max(need as i32)
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, part: i32, payload: &str) {
    let mut rec = BaseRecord::<(), _>::to(topic)
        .payload(payload)
        .partition(part);
    while let Err((_, r)) = p.send(rec) {
        rec = r;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Produces `n` predictions to `topic` (and, with `labels`, their labels in
/// event-time order to it); returns the bytes of the predictions and the
/// number of labels.
fn produce(brokers: &str, topic: &str, n: u64, labels: Option<&str>) -> (u64, u64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut g = Generator::new(3);
    let mut l = demo::Labels::new(4);
    let mut waiting: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64, String)>> =
        Default::default();
    let partitions = partitions_for(n) as u64;
    let (mut bytes, mut n_labels) = (0u64, 0u64);
    for i in 0..n {
        // About 10,000 events per one-minute window.
        let windows = (n / 10_000).max(1) as i64;
        let ts = demo::START_MS + (i as i64 * windows * 60_000) / n as i64;
        let drifts = if i >= n / 2 {
            Drifts::at(1, 1)
        } else {
            Drifts::NONE
        };
        let (payload, score) = g.event(i, ts, drifts);
        bytes += payload.len() as u64;
        send(&p, topic, (i % partitions) as i32, &payload);
        if let Some(lt) = labels {
            while let Some(std::cmp::Reverse((at, ..))) = waiting.peek()
                && *at <= ts
            {
                if let Some(std::cmp::Reverse((_, j, json))) = waiting.pop() {
                    send(&p, lt, (j % LABEL_PARTITIONS as u64) as i32, &json);
                    n_labels += 1;
                }
            }
            if let Some((at, json)) = l.label(i, ts, score, drifts) {
                waiting.push(std::cmp::Reverse((at, i, json)));
            }
        }
    }
    if let Some(lt) = labels {
        while let Some(std::cmp::Reverse((_, j, json))) = waiting.pop() {
            send(&p, lt, (j % LABEL_PARTITIONS as u64) as i32, &json);
            n_labels += 1;
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    (bytes, n_labels)
}

/// Results per written window, and the methods used, as one line.
async fn columns_tested(data: &std::path::Path) -> String {
    let storage = mlwatch::storage::Storage::open(&data.display().to_string(), &Default::default())
        .expect("store");
    let ctx = mlwatch::query::new_context(Default::default());
    mlwatch::query::register_tables(&ctx, &storage).expect("tables");
    let mut out = String::new();
    for sql in [
        "SELECT count(*) AS windows, min(c) AS fewest, max(c) AS most FROM \
         (SELECT window_start, count(*) AS c FROM drift_results GROUP BY window_start)",
        "SELECT method, count(DISTINCT feature) AS columns FROM drift_results GROUP BY method ORDER BY method",
    ] {
        let batches = ctx
            .sql(sql)
            .await
            .expect("sql")
            .collect()
            .await
            .expect("query");
        let text =
            datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format");
        out.push_str(&format!("\n{text}"));
    }
    out
}

/// librdkafka settings for a consumer: the pipeline's defaults, then
/// `MLWATCH_BENCH_KAFKA` (diagnostics, e.g. `queued.max.messages.kbytes=16384`).
/// The raw consumer (`raw`) keeps librdkafka's default prefetch
/// (`queued.min.messages`): the pipeline lowers it because it pauses
/// partitions, which a plain consumer never does, and the lower prefetch
/// slows a plain consumer down, so the baseline would be flattered.
fn consumer_options(raw: bool) -> Vec<(String, String)> {
    let mut opts: Vec<(String, String)> = pipeline::CONSUMER_DEFAULTS
        .iter()
        .filter(|(k, _)| !(raw && *k == "queued.min.messages"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(extra) = std::env::var("MLWATCH_BENCH_KAFKA") {
        for kv in extra.split(',') {
            let (k, v) = kv.split_once('=').expect("key=value");
            opts.push((k.into(), v.into()));
        }
    }
    opts
}

async fn raw_rate(
    brokers: &str,
    topic: &str,
    labels: Option<&str>,
    catalog: &ModelCatalog,
    n: u64,
    rep: usize,
) -> f64 {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{topic}-{rep}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in consumer_options(true) {
        cc.set(k, v);
    }
    let c: StreamConsumer = cc.create().expect("consumer");
    let mut topics = vec![topic];
    topics.extend(labels);
    c.subscribe(&topics).expect("subscribe");
    // Wait for the first record before starting the clock (group join).
    let first = c.recv().await.expect("first record").detach();
    let start = Instant::now();
    let cpu = cpu_seconds();
    let mut seen = 1u64;
    let mut rows = 0usize;
    let mut batch = vec![first];
    while seen < n || !batch.is_empty() {
        if seen < n {
            let m = c.recv().await.expect("record");
            batch.push(m.detach());
            seen += 1;
        }
        if batch.len() >= 8192 || seen >= n {
            // One decode per event kind, as the pipeline does.
            let (preds, outcomes): (Vec<_>, Vec<_>) =
                batch.iter().partition(|m| m.topic() == topic);
            for (kind, msgs) in [
                (EventKind::Prediction, preds),
                (EventKind::Outcome, outcomes),
            ] {
                if msgs.is_empty() {
                    continue;
                }
                let payloads: Vec<&[u8]> =
                    msgs.iter().map(|m| m.payload().unwrap_or(b"")).collect();
                let out = event::decode_parallel(catalog, kind, &payloads);
                rows += out
                    .decoded
                    .iter()
                    .map(|d| d.batch.num_rows())
                    .sum::<usize>();
            }
            batch.clear();
        }
    }
    assert_eq!(rows as u64, n, "every record decodes");
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    eprintln!(
        "raw: {:.2} cores busy, {:.2} µs of CPU per event",
        cpu / wall,
        cpu * 1e6 / n as f64
    );
    n as f64 / wall
}

async fn pipeline_rate(config: Config, n: u64) -> (f64, u64, pipeline::Counters) {
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, rx) = watch::channel(None);
    let control = RunControl {
        stop: rx,
        idle_exit: None,
        progress: Some(progress.clone()),
    };
    let (stop_sampler, sampler) = rss_sampler(progress.clone());
    perf_control("enable");
    let spawned = Instant::now();
    let run = tokio::spawn(pipeline::run(config, control));
    while progress.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    let cpu = cpu_seconds();
    let first = progress.load(Ordering::Relaxed);
    while progress.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The clock stops once the run has written every window that closed
    // and its final checkpoint (the windows still open are in it); the
    // run's `seconds` end there, before its producers are closed.
    tx.send(Some(StopMode::Interrupt)).expect("stop");
    let summary = run.await.expect("join").expect("pipeline");
    let end = spawned + Duration::from_secs_f64(summary.seconds);
    let wall = end.saturating_duration_since(start).as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let rate = (n - first) as f64 / wall;
    eprintln!(
        "full: {:.2} cores busy, {:.2} µs of CPU per event",
        cpu / wall,
        cpu * 1e6 / (n - first) as f64
    );
    perf_control("disable");
    stop_sampler.store(true, Ordering::Relaxed);
    eprintln!(
        "full path: {:.3} s in decode+windows of {:.3} s in all ({} events)",
        summary.process_seconds, summary.seconds, summary.counters.events
    );
    (rate, sampler.join().expect("sampler"), summary.counters)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn main() {
    // MLWATCH_LOG=mlwatch=info shows each window's test time.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("MLWATCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    let reps: usize = std::env::var("MLWATCH_BENCH_REPS")
        .ok()
        .map(|v| v.parse().expect("MLWATCH_BENCH_REPS: a number"))
        .unwrap_or(3)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        let tmp = tempfile::tempdir().expect("tempdir");
        let reference = tmp.path().join("reference.parquet");
        demo::write_reference(&reference, 20_000, 7).expect("reference");
        let with_labels = std::env::var_os("MLWATCH_BENCH_LABELS").is_some();
        println!(
            "| events{} | bytes/event | raw consume+decode (ev/s, median of {reps} (min–max)) | full path (ev/s, median (min–max)) | full/raw (medians) | RSS before full path (MiB) | peak RSS during it (MiB) | growth (MiB, largest run) | peak open windows | partition pauses (most) | dead letters (all runs) |",
            if with_labels { " + labels" } else { "" }
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut written = Vec::new();
        for &n in &sizes {
            let topic = format!("bench-{n}");
            let partitions = partitions_for(n);
            cluster.create_topic(&topic, partitions, 1).expect("topic");
            let label_topic = with_labels.then(|| format!("bench-{n}-labels"));
            if let Some(lt) = &label_topic {
                cluster.create_topic(lt, LABEL_PARTITIONS, 1).expect("topic");
            }
            let (b, t, lt) = (brokers.clone(), topic.clone(), label_topic.clone());
            let (bytes, n_labels) = tokio::task::spawn_blocking(move || produce(&b, &t, n, lt.as_deref()))
                .await
                .expect("produce");
            let (b, t, lt) = (brokers.clone(), topic.clone(), label_topic.clone());
            tokio::task::spawn_blocking(move || {
                common::check_retained(&b, &t, partitions, n);
                if let Some(lt) = lt {
                    common::check_retained(&b, &lt, LABEL_PARTITIONS, n_labels);
                }
            })
            .await
            .expect("watermarks");
            let records = n + n_labels;
            // Raw and full runs alternate, each with its own consumer
            // group, so that both see the same conditions; the medians are
            // compared (one run of each varies by up to a third here).
            let (mut raws, mut fulls) = (Vec::new(), Vec::new());
            let (mut before, mut peak, mut growth) = (0u64, 0u64, 0i64);
            let (mut open, mut pauses, mut dead) = (0u64, 0u64, 0u64);
            for rep in 0..reps {
                let data = tmp.path().join(format!("out-{n}-{rep}"));
                let mut config = demo::demo_config(&brokers, &data, &reference).expect("config");
                config.kafka.predictions_topic = topic.clone();
                match &label_topic {
                    Some(lt) => config.kafka.outcomes_topic = lt.clone(),
                    None => {
                        // No join: the model without a task.
                        for m in config.models.values_mut() {
                            m.task = None;
                        }
                    }
                }
                config.kafka.group_id = format!("full-{n}-{rep}");
                config.checkpoint.interval = Duration::from_secs(5);
                // The demo's config archives the events; `MLWATCH_BENCH_ARCHIVE=0`
                // measures without the archive.
                config.archive.enabled = std::env::var("MLWATCH_BENCH_ARCHIVE").as_deref() != Ok("0");
                if let Ok(v) = std::env::var("MLWATCH_BENCH_ARCHIVE_BUFFER") {
                    config.archive.max_buffered = v.parse().expect("rows");
                }
                if let Ok(v) = std::env::var("MLWATCH_BENCH_MAX_AHEAD") {
                    config.window.max_ahead =
                        Some(humantime::parse_duration(&v).expect("duration"));
                }
                // The defaults are the pipeline's own; only the extra ones matter.
                config.kafka.options.extend(consumer_options(false));
                let catalog = ModelCatalog::from_config(&config);
                // Which goes first alternates, so that neither always
                // meets the broker warm.
                if rep % 2 == 1 {
                    raws.push(raw_rate(&brokers, &topic, label_topic.as_deref(), &catalog, records, rep).await);
                }
                let rss = rss_kib();
                let (full, p, counters) = pipeline_rate(config, records).await;
                fulls.push(full);
                if rep % 2 == 0 {
                    raws.push(raw_rate(&brokers, &topic, label_topic.as_deref(), &catalog, records, rep).await);
                }
                if with_labels {
                    eprintln!(
                        "labels: {} joined, {} dead letters {:?}, {} sampled out",
                        counters.labels_joined, counters.dead_letters.values().sum::<u64>(),
                        counters.dead_letters, counters.join_sampled_out
                    );
                }
                if rep == 0 {
                    before = rss;
                }
                peak = peak.max(p);
                growth = growth.max(p as i64 - rss as i64);
                open = open.max(counters.peak_open_windows);
                pauses = pauses.max(counters.partition_pauses);
                dead += counters.dead_letters.values().sum::<u64>();
                if rep == 0 {
                    written.push((n, data));
                }
                eprintln!("{n} events, run {}: raw {:.0} ev/s, full {full:.0} ev/s", rep + 1, raws[rep]);
            }
            let (raw, full) = (median(&raws), median(&fulls));
            println!(
                "| {n}{} | {} | {raw:.0} ({:.0}–{:.0}) | {full:.0} ({:.0}–{:.0}) | {:.2} | {:.1} | {:.1} | {:.1} | {open} | {pauses} | {dead} |",
                if with_labels { format!(" + {n_labels}") } else { String::new() },
                bytes / n,
                min(&raws),
                max(&raws),
                min(&fulls),
                max(&fulls),
                full / raw,
                before as f64 / 1024.0,
                peak as f64 / 1024.0,
                growth as f64 / 1024.0,
            );
        }
        // After the measurements, so that the queries' memory is not counted.
        for (n, data) in written {
            eprintln!("drift_results of {n} events:{}", columns_tested(&data).await);
        }
        drop(cluster);
    });
}
