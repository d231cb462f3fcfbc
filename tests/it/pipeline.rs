//! End-to-end pipeline tests against librdkafka's mock cluster: real Kafka
//! protocol, in-process broker.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlwatch::config::Config;
use mlwatch::demo::{self, Drifts, Generator};
use mlwatch::pipeline::{self, RunControl, RunSummary};
use mlwatch::query;
use mlwatch::storage::Storage;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::watch;

use crate::TestResult;

pub(crate) const TOPIC: &str = "mlwatch.predictions";
/// The outcomes (labels) topic of the default configuration.
pub(crate) const OUTCOMES: &str = "mlwatch.outcomes";

/// The demo's configuration with test settings: a named group, exact
/// windows (no lateness), a small sample, frequent checkpoints. The same
/// overrides reach a child `mlwatch run` as `MLWATCH__*` variables.
const OVERRIDES: [(&str, &str); 4] = [
    ("MLWATCH__WINDOW__ALLOWED_LATENESS", "0s"),
    ("MLWATCH__WINDOW__SAMPLE_SIZE", "2000"),
    ("MLWATCH__CHECKPOINT__INTERVAL", "300ms"),
    ("MLWATCH__KAFKA__SESSION_TIMEOUT", "6s"),
];

pub(crate) fn test_config(
    brokers: &str,
    data: &Path,
    reference: &Path,
    group: &str,
) -> Result<Config, mlwatch::Error> {
    let mut c = demo::demo_config(brokers, data, reference)?;
    c.kafka.group_id = group.to_string();
    c.window.allowed_lateness = Duration::ZERO;
    c.window.sample_size = 2000;
    c.checkpoint.interval = Duration::from_millis(300);
    Ok(c)
}

/// A `mlwatch run` child with [`test_config`]'s settings.
fn run_command(cfg_path: &Path, group: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlwatch"));
    cmd.envs(OVERRIDES)
        .env("MLWATCH__KAFKA__GROUP_ID", group)
        .arg("run")
        .arg("--config")
        .arg(cfg_path);
    cmd
}

/// Waits until the checkpoint at `path` counts at least `n` events.
fn wait_for_checkpoint(path: &Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["counters"]["events"].as_u64())
            .unwrap_or(0);
        if events >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint with {n} events at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` events over `windows` minutes, with the demo's changes.
pub(crate) fn events(n: u64, windows: i64) -> Vec<String> {
    let mut g = Generator::new(11);
    (0..n)
        .map(|i| {
            let offset = (i as i64 * windows * 60_000) / n as i64;
            let drifts = Drifts::at((offset / 60_000) as u64, windows as u64);
            g.event_json(i, demo::START_MS + offset, drifts)
        })
        .collect()
}

/// The demo's labels of [`events`]`(n, windows)` ([`demo::Labels`]), in the
/// order of their event times.
pub(crate) fn labels(n: u64, windows: i64) -> Vec<String> {
    let mut g = Generator::new(11);
    let mut l = demo::Labels::new(12);
    let mut out: Vec<(i64, String)> = (0..n)
        .filter_map(|i| {
            let offset = (i as i64 * windows * 60_000) / n as i64;
            let drifts = Drifts::at((offset / 60_000) as u64, windows as u64);
            let (_, score) = g.event(i, demo::START_MS + offset, drifts);
            l.label(i, demo::START_MS + offset, score, drifts)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, json)| json).collect()
}

pub(crate) fn produce(brokers: &str, payloads: &[String]) -> TestResult {
    produce_to(brokers, payloads.iter().map(|m| (None, m)))
}

/// Produces each payload to [`TOPIC`], to the partition given or the one
/// the producer picks.
fn produce_to<'a>(
    brokers: &str,
    records: impl Iterator<Item = (Option<i32>, &'a String)>,
) -> TestResult {
    produce_topic(brokers, TOPIC, records)
}

/// Produces each payload to `topic`, to the partition given or the one the
/// producer picks.
pub(crate) fn produce_topic<'a>(
    brokers: &str,
    topic: &str,
    records: impl Iterator<Item = (Option<i32>, &'a String)>,
) -> TestResult {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    for (part, m) in records {
        let rec = BaseRecord::<[u8], _>::to(topic).payload(m.as_bytes());
        let rec = match part {
            Some(part) => rec.partition(part),
            None => rec,
        };
        p.send(rec).map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// A mock cluster with [`TOPIC`] in `partitions` partitions and
/// [`OUTCOMES`] in two, and its bootstrap servers.
pub(crate) fn cluster(
    partitions: i32,
) -> Result<(MockCluster<'static, DefaultProducerContext>, String), Box<dyn std::error::Error>> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, partitions, 1)?;
    cluster.create_topic(OUTCOMES, 2, 1)?;
    let brokers = cluster.bootstrap_servers();
    Ok((cluster, brokers))
}

pub(crate) async fn run_until_idle(config: Config) -> Result<RunSummary, mlwatch::Error> {
    let (_tx, rx) = watch::channel(None);
    pipeline::run(
        config,
        RunControl {
            stop: rx,
            idle_exit: Some(Duration::from_secs(3)),
            progress: None,
        },
    )
    .await
}

pub(crate) async fn query_csv(
    data: &Path,
    sql: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let storage = Storage::open(&data.display().to_string(), &Default::default())?;
    query_csv_on(&storage, sql).await
}

/// [`query_csv`] on any storage.
pub(crate) async fn query_csv_on(
    storage: &Storage,
    sql: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let storage = storage.clone();
    let ctx = query::new_context(Default::default());
    query::register_tables(&ctx, &storage)?;
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        for b in &batches {
            w.write(b)?;
        }
    }
    Ok(String::from_utf8(buf)?)
}

pub(crate) const ALL_DRIFT: &str = "SELECT window_start, window_end, model, version, kind, feature, method, statistic, p_value, p_value_adjusted, distance, threshold, drifted, n_reference, n_current, baseline, capped FROM drift_results ORDER BY window_start, version, kind, feature";
pub(crate) const ALL_SUMMARY: &str =
    "SELECT * FROM drift_summary ORDER BY window_start, model, version";
pub(crate) const ALL_QUALITY: &str =
    "SELECT * FROM data_quality ORDER BY window_start, model, version, kind, feature";
pub(crate) const ALL_ALERTS: &str = "SELECT * FROM alerts ORDER BY window_start, alert_id";
pub(crate) const ALL_PERFORMANCE: &str =
    "SELECT * FROM performance ORDER BY window_start, model, version, variant, metric";
pub(crate) const ALL_CONCEPT: &str = "SELECT * FROM concept_drift ORDER BY ts, detector";
pub(crate) const ALL_AB: &str =
    "SELECT * FROM ab_results ORDER BY window_start, experiment, scope, metric, variant";
pub(crate) const ALL_DECISIONS: &str =
    "SELECT * FROM ab_decisions ORDER BY window_start, experiment";
pub(crate) const ALL_DISTRIBUTION: &str =
    "SELECT * FROM prediction_distribution ORDER BY window_start, model, version, bin";

pub(crate) struct Setup {
    _tmp: tempfile::TempDir,
    pub reference: std::path::PathBuf,
    pub root: std::path::PathBuf,
}

pub(crate) fn setup() -> Result<Setup, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    let reference = root.join("reference.parquet");
    // 1,000 rows: Evidently's rule then picks KS and chi-square (p-values,
    // with the demo's threshold of 0.001 and the correction across columns)
    // rather than distances, which flag 1,000-event windows by chance.
    demo::write_reference(&reference, 1000, 7)?;
    Ok(Setup {
        _tmp: tmp,
        reference,
        root,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_become_dead_letters_and_leave_results_unchanged() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    let clean = events(6_000, 6);
    // 1% malformed records of every kind, mixed in.
    let bad_kinds = [
        ("bad_json", r#"{"event_id": "x", "ts": "#.to_string()),
        (
            "missing_field",
            format!(
                r#"{{"event_id":"m","model":"credit_risk","version":"1","prediction":1,"ts":{}}}"#,
                demo::START_MS
            )
            .replace(r#","prediction":1"#, ""),
        ),
        (
            "wrong_type",
            format!(
                r#"{{"event_id":"w","ts":{},"model":"credit_risk","version":"1","features":{{"age":"old"}},"prediction":1}}"#,
                demo::START_MS + 60_000
            ),
        ),
        (
            "unknown_model",
            format!(
                r#"{{"event_id":"u","ts":{},"model":"nobody","version":"1","prediction":1}}"#,
                demo::START_MS
            ),
        ),
        (
            "late",
            format!(
                r#"{{"event_id":"late","ts":{},"model":"credit_risk","version":"1","features":{{"age":30}},"prediction":1}}"#,
                demo::START_MS
            ),
        ),
    ];
    // Event times no window can hold (the decoder saturates a huge number
    // to the extremes of i64): refused, never counted against a window.
    let out_of_range = [
        r#"{"event_id":"t1","ts":-9223372036854775808,"model":"credit_risk","version":"1","features":{"age":30},"prediction":1}"#,
        r#"{"event_id":"t2","ts":1e300,"model":"credit_risk","version":"1","features":{"age":30},"prediction":1}"#,
        r#"{"event_id":"t3","ts":-1e300,"model":"credit_risk","version":"1","features":{"age":"old"},"prediction":1}"#,
    ];
    let mut mixed = Vec::new();
    let mut n_bad = 0;
    for (i, e) in clean.iter().enumerate() {
        mixed.push(e.clone());
        if i % 2_000 == 1_010 {
            mixed.push(out_of_range[i / 2_000].to_string());
            n_bad += 1;
        }
        // The late ones only after the first window has closed.
        if i % 100 == 50 {
            let (_, bad) = &bad_kinds[(i / 100) % bad_kinds.len()];
            if !bad.contains("\"late\"") || i > 2_500 {
                mixed.push(bad.clone());
                n_bad += 1;
            }
        }
    }
    assert!(n_bad >= 50);

    // Clean stream into one storage root, mixed into another.
    let (_clean_cluster, clean_brokers) = cluster(1)?;
    produce(&clean_brokers, &clean)?;
    produce(&brokers, &mixed)?;
    let clean_data = s.root.join("clean");
    let mixed_data = s.root.join("mixed");
    let a = run_until_idle(test_config(
        &clean_brokers,
        &clean_data,
        &s.reference,
        "g1",
    )?)
    .await?;
    let b = run_until_idle(test_config(&brokers, &mixed_data, &s.reference, "g1")?).await?;
    assert_eq!(a.counters.events, 6_000);
    assert_eq!(b.counters.events, 6_000);
    assert_eq!(
        b.counters.dead_letters.values().sum::<u64>(),
        n_bad as u64,
        "{:?}",
        b.counters.dead_letters
    );

    let ra = query_csv(&clean_data, ALL_DRIFT).await?;
    let rb = query_csv(&mixed_data, ALL_DRIFT).await?;
    assert!(ra.lines().count() > 20, "{ra}");
    assert_eq!(ra, rb, "valid events' results must not change");

    let reasons = query_csv(
        &mixed_data,
        "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
    )
    .await?;
    for (kind, _) in &bad_kinds {
        assert!(
            reasons.contains(kind),
            "no dead letter with reason {kind}: {reasons}"
        );
    }
    let times = query_csv(
        &mixed_data,
        "SELECT reason, count(*) AS n FROM dead_letters WHERE error LIKE '%outside the years 0 to 9999%' GROUP BY reason",
    )
    .await?;
    assert_eq!(times.trim(), "reason,n\ninvalid_value,2", "{reasons}");
    let total = query_csv(
        &mixed_data,
        "SELECT count(*) AS n, count(DISTINCT \"offset\") AS d FROM dead_letters",
    )
    .await?;
    assert_eq!(
        total.lines().nth(1),
        Some(format!("{n_bad},{n_bad}").as_str())
    );
    // The records with a wrong type (features.age = "old", event time in
    // window 1) are counted against age in window 1 while it is open: the
    // four that arrive before event time passes 2 minutes.
    let type_errors = query_csv(
        &mixed_data,
        "SELECT feature, sum(type_errors) AS n FROM data_quality GROUP BY feature HAVING sum(type_errors) > 0",
    )
    .await?;
    assert_eq!(type_errors.trim(), "feature,n\nage,4");
    assert_changes_flagged_from_their_window_on(&clean_data, 6).await
}

/// Each injected change of the demo stream ([`Drifts::at`]) is flagged in
/// every window from the one where it starts, and in no window before; the
/// unchanged columns are never flagged.
async fn assert_changes_flagged_from_their_window_on(data: &Path, windows: u64) -> TestResult {
    let rows = query_csv(
        data,
        "SELECT feature, CAST((CAST(window_start AS BIGINT) - 1767225600000) / 60000 AS BIGINT) AS w, drifted, \
         method, statistic, p_value, p_value_adjusted, distance, threshold, n_current \
         FROM drift_results ORDER BY feature, w",
    )
    .await?;
    let (new_category, score, prediction) = Drifts::starts(windows);
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for line in rows.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (feature, w, drifted) = (f[0], f[1].parse::<u64>()?, f[2] == "true");
        let expected = match feature {
            "region" => w >= new_category,
            "credit_score" => w >= score,
            "prediction" => w >= prediction,
            _ => false,
        };
        assert_eq!(drifted, expected, "{feature} in window {w}:\n{rows}");
        *seen.entry(feature.to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), 8, "every column tested: {seen:?}");
    assert!(
        seen.values().all(|n| *n == 2 * windows),
        "every window, both versions: {seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_gives_the_same_results_as_an_uninterrupted_run() -> TestResult {
    sigkill_and_compare(None).await
}

/// The same with the label join over `outcomes.max_pending`: the sample it
/// keeps, and so every performance row, is the same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_give_the_same_sampled_join() -> TestResult {
    sigkill_and_compare(Some(1_500)).await
}

async fn sigkill_and_compare(max_pending: Option<usize>) -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    let all = events(8_000, 8);
    let (first, second) = all.split_at(5_000);
    produce(&brokers, first)?;
    // Labels on two partitions, in event-time order; those of the first
    // five of eight minutes before the crash.
    let all_labels = labels(8_000, 8);
    let cut = all_labels
        .iter()
        .position(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("label json");
            v["ts"].as_i64().unwrap_or(0) >= demo::START_MS + 5 * 60_000
        })
        .unwrap_or(all_labels.len());
    let on_partitions = |ls: &[String]| -> Vec<(Option<i32>, String)> {
        ls.iter()
            .enumerate()
            .map(|(i, l)| (Some((i % 2) as i32), l.clone()))
            .collect()
    };
    let (early, late) = all_labels.split_at(cut);
    let early = on_partitions(early);
    produce_topic(&brokers, OUTCOMES, early.iter().map(|(p, l)| (*p, l)))?;

    // The killed run, as a separate process.
    let killed_data = s.root.join("killed");
    let cfg_path = s.root.join("killed.toml");
    std::fs::write(
        &cfg_path,
        demo::demo_config_toml(&brokers, &killed_data, &s.reference),
    )?;
    let pending = max_pending
        .map(|n| n.to_string())
        .unwrap_or("200000".into());
    let mut child = run_command(&cfg_path, "killed")
        .env("MLWATCH__OUTCOMES__MAX_PENDING", &pending)
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_checkpoint(&killed_data.join("_checkpoints/killed.json"), 1_000);
    child.kill()?; // SIGKILL
    child.wait()?;
    produce(&brokers, second)?;
    let late = on_partitions(late);
    produce_topic(&brokers, OUTCOMES, late.iter().map(|(p, l)| (*p, l)))?;
    let out = run_command(&cfg_path, "killed")
        .env("MLWATCH__OUTCOMES__MAX_PENDING", &pending)
        .args(["--until-idle", "3s"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The uninterrupted run, in-process, from its own group.
    let whole_data = s.root.join("whole");
    let mut whole_config = test_config(&brokers, &whole_data, &s.reference, "whole")?;
    if let Some(n) = max_pending {
        whole_config.outcomes.max_pending = n;
    }
    run_until_idle(whole_config).await?;

    let killed = query_csv(&killed_data, ALL_DRIFT).await?;
    let whole = query_csv(&whole_data, ALL_DRIFT).await?;
    assert_eq!(
        whole.lines().count(),
        1 + 8 * 2 * 8,
        "8 windows x 2 versions x (7 features + prediction):\n{whole}"
    );
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_SUMMARY).await?;
    let whole = query_csv(&whole_data, ALL_SUMMARY).await?;
    assert_eq!(
        whole.lines().count(),
        1 + 8 * 2,
        "one verdict per window and version:\n{whole}"
    );
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_QUALITY).await?;
    let whole = query_csv(&whole_data, ALL_QUALITY).await?;
    assert_eq!(whole.lines().count(), 1 + 8 * 2 * 8, "{whole}");
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_ALERTS).await?;
    let whole = query_csv(&whole_data, ALL_ALERTS).await?;
    assert!(whole.lines().count() > 4, "header and the alerts: {whole}");
    assert_eq!(killed, whole, "same alerts, same ids");
    let killed = query_csv(&killed_data, ALL_PERFORMANCE).await?;
    let whole = query_csv(&whole_data, ALL_PERFORMANCE).await?;
    assert_eq!(
        whole.lines().count(),
        1 + 8 * 4 * 8,
        "8 windows x 4 variants x 8 binary metrics:\n{whole}"
    );
    let differ: Vec<(&str, &str)> = killed
        .lines()
        .zip(whole.lines())
        .filter(|(k, w)| k != w)
        .take(4)
        .collect();
    assert!(differ.is_empty(), "killed vs whole: {differ:#?}");
    assert_eq!(killed, whole);
    let sampled = query_csv(&whole_data, "SELECT bool_or(sampled) AS s FROM performance").await?;
    assert_eq!(
        sampled.lines().nth(1),
        Some(if max_pending.is_some() {
            "true"
        } else {
            "false"
        }),
        "{sampled}"
    );
    let killed = query_csv(&killed_data, ALL_CONCEPT).await?;
    let whole = query_csv(&whole_data, ALL_CONCEPT).await?;
    if max_pending.is_none() {
        assert!(
            whole.lines().count() > 1,
            "the concept change is detected: {whole}"
        );
    }
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_AB).await?;
    let whole = query_csv(&whole_data, ALL_AB).await?;
    assert!(
        whole.lines().count() > 8 * 2 * 2 * 2 * 10,
        "8 windows x 2 experiments x 2 scopes x 2 variants x the metrics:\n{whole}"
    );
    let differ: Vec<(&str, &str)> = killed
        .lines()
        .zip(whole.lines())
        .filter(|(k, w)| k != w)
        .take(4)
        .collect();
    assert!(differ.is_empty(), "killed vs whole: {differ:#?}");
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_DECISIONS).await?;
    let whole = query_csv(&whole_data, ALL_DECISIONS).await?;
    assert_eq!(whole.lines().count(), 1 + 8 * 2, "{whole}");
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_DISTRIBUTION).await?;
    let whole = query_csv(&whole_data, ALL_DISTRIBUTION).await?;
    assert_eq!(
        whole.lines().count(),
        1 + 8 * 2 * mlwatch::monitor::distribution::BINS,
        "8 windows x 2 versions x the prediction's bins:\n{whole}"
    );
    assert_eq!(killed, whole);
    // Dead letters: each refused record once (a replay rewrites the files
    // of the interval it repeats); without the sample (whose early-label cap
    // may let a different interleaving give up other labels), as an
    // uninterrupted run wrote them.
    let letters = "SELECT topic, \"partition\", \"offset\", reason, count(*) AS n FROM dead_letters \
                   GROUP BY topic, \"partition\", \"offset\", reason ORDER BY topic, \"partition\", \"offset\", reason";
    let killed = query_csv(&killed_data, letters).await?;
    let whole = query_csv(&whole_data, letters).await?;
    assert!(whole.lines().count() > 1, "some dead letters: {whole}");
    for run in [&killed, &whole] {
        let twice: Vec<&str> = run.lines().skip(1).filter(|l| !l.ends_with(",1")).collect();
        assert!(twice.is_empty(), "written twice: {twice:?}");
    }
    if max_pending.is_none() {
        assert_eq!(killed, whole);
    }
    // The archive: every event once, as an uninterrupted run wrote it.
    let killed = query_csv(&killed_data, ALL_PREDICTIONS).await?;
    let whole = query_csv(&whole_data, ALL_PREDICTIONS).await?;
    assert_eq!(whole.lines().count(), 1 + 8_000, "every prediction once");
    assert_eq!(killed, whole);
    let killed = query_csv(&killed_data, ALL_OUTCOMES).await?;
    let whole = query_csv(&whole_data, ALL_OUTCOMES).await?;
    assert!(whole.lines().count() > 6_000, "{}", whole.lines().count());
    let only = |a: &str, b: &str| -> Vec<String> {
        let b: std::collections::HashSet<&str> = b.lines().collect();
        a.lines()
            .filter(|l| !b.contains(l))
            .take(5)
            .map(String::from)
            .collect()
    };
    assert_eq!(
        killed,
        whole,
        "only killed: {:?}\nonly whole: {:?}",
        only(&killed, &whole),
        only(&whole, &killed)
    );
    Ok(())
}

/// The archived predictions, by where they came from (the map as text).
pub(crate) const ALL_PREDICTIONS: &str = "SELECT model, date, event_id, ts, version, variant, unit_id, \
    array_to_string(map_keys(features), '|') AS keys, array_to_string(map_values(features), '|') AS vals, \
    prediction, latency_ms, topic, partition, \"offset\" FROM predictions ORDER BY topic, partition, \"offset\"";
/// The archived outcomes, by where they came from.
pub(crate) const ALL_OUTCOMES: &str =
    "SELECT * FROM outcomes ORDER BY topic, partition, \"offset\"";

/// Runs the pipeline with its storage root on an S3-compatible server.
/// `.ci/run` starts moto's server and sets `MLWATCH_TEST_S3_URL` (a bucket it
/// created) plus the standard `AWS_*` variables; without them the test says
/// so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_writes_and_queries_results_on_s3() -> TestResult {
    let Ok(bucket_url) = std::env::var("MLWATCH_TEST_S3_URL") else {
        eprintln!(
            "MLWATCH_TEST_S3_URL is not set: S3 test skipped (.ci/run starts moto and sets it)"
        );
        return Ok(());
    };
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    produce(&brokers, &events(3_000, 3))?;
    let l = labels(3_000, 3);
    produce_topic(&brokers, OUTCOMES, l.iter().map(|l| (Some(0), l)))?;
    let prefix = format!("{bucket_url}/run-{}", std::process::id());
    let mut config = test_config(&brokers, Path::new("/unused"), &s.reference, "s3")?;
    config.storage.url = prefix.clone();
    let summary = run_until_idle(config).await?;
    assert_eq!(summary.counters.windows_closed, 3);

    let storage = Storage::open(&prefix, &Default::default())?;
    assert!(storage.get_opt("_checkpoints/s3.json").await?.is_some());
    let ctx = query::new_context(Default::default());
    query::register_tables(&ctx, &storage)?;
    let batches = ctx
        .sql(
            "SELECT (SELECT count(*) FROM drift_results) AS n, \
                    (SELECT count(*) FROM drift_results WHERE drifted) AS d, \
                    (SELECT count(*) FROM drift_summary) AS s, \
                    (SELECT count(*) FROM data_quality) AS q, \
                    (SELECT count(*) FROM alerts WHERE kind = 'drift') AS a, \
                    (SELECT count(*) FROM performance) AS p, \
                    (SELECT count(*) FROM concept_drift) >= 0 AS c, \
                    (SELECT count(*) FROM ab_decisions) AS x, \
                    (SELECT count(*) FROM prediction_distribution) AS h, \
                    (SELECT count(*) FROM predictions) AS e",
        )
        .await?
        .collect()
        .await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    // 3 windows x 2 versions x 8 columns; drifted: the new region category
    // in windows 1 and 2, credit_score in window 2, for each version; two
    // drift alerts per version; 3 windows x 4 variants x 8 binary metrics;
    // concept_drift readable; a decision per window for each of the two
    // experiments; 20 bins of the prediction per window and version.
    assert!(
        text.contains("| 48 | 6 | 6 | 48 | 4 | 96 | true | 6 | 120 | 3000 |"),
        "every table on S3:\n{text}"
    );
    // A backfill from the archive on S3 writes the same rows again.
    let before = query_csv_on(&storage, ALL_DRIFT).await?;
    let config = test_config(&brokers, Path::new("/unused"), &s.reference, "s3")?;
    let mut config = config;
    config.storage.url = prefix.clone();
    let args = mlwatch::backfill::BackfillArgs {
        from: "2026-01-01".into(),
        to: "2026-01-02".into(),
        ..Default::default()
    };
    let b = mlwatch::backfill::run(&config, &args, mlwatch::backfill::Progress::Quiet).await?;
    assert_eq!((b.events, b.windows), (3_000, 3), "{b:?}");
    assert_eq!(query_csv_on(&storage, ALL_DRIFT).await?, before);
    // The dashboard reads the same tables from S3.
    let report = mlwatch::dashboard::Dashboard::new(storage.clone())
        .report(&Default::default())
        .await?;
    for chart in [
        "drift-heatmap-v1",
        "prediction-histogram-v2",
        "performance-accuracy",
        "effect-accuracy",
    ] {
        assert!(
            report.contains(&format!("data-chart=\"{chart}")),
            "no {chart} in the report from S3"
        );
    }
    Ok(())
}

/// `mlwatch run --metrics-listen`: Prometheus text on `/metrics` while the
/// run goes on, every partition's lag at 0 once the topic is drained and
/// the events counted; `/health` ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_and_the_lag_falls_to_zero_when_drained() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(4)?;
    produce(&brokers, &events(4_000, 2))?;
    let cfg_path = s.root.join("metrics.toml");
    // With a schedule, which `mlwatch run` runs beside the stream.
    std::fs::write(
        &cfg_path,
        format!(
            "{}\n[[schedules]]\nname = \"every-second\"\ncron = \"* * * * * *\"\nfrom = \"2026-01-01\"\nto = \"2026-01-02\"\n",
            demo::demo_config_toml(&brokers, &s.root.join("metrics"), &s.reference)
        ),
    )?;
    let mut child = run_command(&cfg_path, "metrics")
        .args(["--until-idle", "120s", "--metrics-listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    let child = crate::Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(i) = line.find("http://") {
                let url = line[i..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30))?;
    let base = url.trim_end_matches("/metrics").to_string();
    let mut last = String::new();
    let mut drained = false;
    for _ in 0..240 {
        last = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        let scrape = prometheus_parse::Scrape::parse(last.lines().map(|l| Ok(l.to_string())))?;
        let value = |s: &prometheus_parse::Sample| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        };
        let events = scrape
            .samples
            .iter()
            .find(|s| s.metric == "mlwatch_events_total")
            .map(value);
        let lags: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "mlwatch_consumer_lag" && s.labels.get("topic") == Some(TOPIC))
            .map(value)
            .collect();
        if events == Some(4_000.0) && lags.len() == 4 && lags.iter().all(|l| *l == 0.0) {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = reqwest::get(format!("{base}/health")).await?;
    let status = health.status().as_u16();
    let mut jobs = String::new();
    for _ in 0..240 {
        // (A read can race the rewrite of a job's row: a listing's size
        // then belongs to the file replaced; read again.)
        jobs = query_csv(
            &s.root.join("metrics"),
            "SELECT schedule, outcome, error FROM jobs WHERE outcome <> 'running' LIMIT 1",
        )
        .await
        .unwrap_or_else(|e| e.to_string());
        if jobs.lines().count() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(child);
    // Its windows are open and their labels never come (and at first the
    // archive is empty), so the backfill has nothing the stream has made
    // durable yet: a failed job that says so.
    assert!(
        jobs.starts_with("schedule,outcome,error\nevery-second,failed,")
            && jobs.contains("nothing to backfill"),
        "{jobs}"
    );
    assert!(
        drained,
        "4,000 events and the lag of the 4 partitions at 0:\n{last}"
    );
    assert_eq!(status, 200);
    Ok(())
}

/// Ctrl-C (SIGINT) makes `mlwatch run` finish its batch, write the
/// checkpoint with the open windows, and exit 0; a second run then closes
/// those windows from the checkpoint without re-reading the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_checkpoints_open_windows_and_exits_zero() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    produce(&brokers, &events(2_000, 2))?;
    let data = s.root.join("int");
    let cfg_path = s.root.join("int.toml");
    std::fs::write(
        &cfg_path,
        demo::demo_config_toml(&brokers, &data, &s.reference),
    )?;
    let child = run_command(&cfg_path, "int")
        .stderr(Stdio::piped())
        .spawn()?;
    let ckpt = data.join("_checkpoints/int.json");
    wait_for_checkpoint(&ckpt, 2_000);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ckpt_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ckpt)?)?;
    assert_eq!(ckpt_json["offsets"][0][2], 2_000, "{ckpt_json}");
    // The last window stays open (no later event moved the watermark past it).
    assert_eq!(
        ckpt_json["windows"]["open"].as_array().map(|a| a.len()),
        Some(1)
    );

    let out = run_command(&cfg_path, "int")
        .args(["--until-idle", "2s"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    let last = summary.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(
        v["counters"]["records"], 2_000,
        "no record read twice: {last}"
    );
    assert_eq!(v["counters"]["windows_closed"], 2, "{last}");
    let rows = query_csv(&data, "SELECT count(*) AS n FROM drift_results").await?;
    assert_eq!(rows.trim(), "n\n32", "2 windows x 2 versions x 8 columns");
    Ok(())
}

/// A profile built with `mlwatch baseline build` and recorded on registry
/// version 1 replaces the config's reference for version 1's windows: the
/// same training data gives the same tests, and the rows say which baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_baseline_replaces_the_config_reference_for_its_version() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    produce(&brokers, &events(3_000, 3))?;

    let config_data = s.root.join("config");
    run_until_idle(test_config(&brokers, &config_data, &s.reference, "a")?).await?;

    let data = s.root.join("registry");
    let cfg = s.root.join("mlwatch.toml");
    std::fs::write(&cfg, demo::demo_config_toml(&brokers, &data, &s.reference))?;
    let artifact = s.root.join("model.bin");
    std::fs::write(&artifact, b"weights")?;
    let d = data.display().to_string();
    crate::run_mlwatch(
        ["registry", "register", "credit_risk", "--artifact"]
            .into_iter()
            .map(String::from)
            .chain([artifact.display().to_string(), "--data".into(), d.clone()]),
    )?;
    let built = crate::run_mlwatch([
        "baseline".to_string(),
        "build".into(),
        "--model".into(),
        "credit_risk".into(),
        "--version".into(),
        "1".into(),
        "--input".into(),
        s.reference.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--data".into(),
        d,
    ])?;
    let built: serde_json::Value = serde_json::from_str(&built)?;
    assert_eq!(built["rows"], 1000, "{built}");
    assert_eq!(
        built["columns"].as_array().map(Vec::len),
        Some(8),
        "{built}"
    );
    run_until_idle(test_config(&brokers, &data, &s.reference, "b")?).await?;

    let cols = "window_start, kind, feature, method, statistic, p_value, p_value_adjusted, distance, drifted, n_reference, n_current";
    let q = |b: &str| {
        format!(
            "SELECT {cols} FROM drift_results WHERE baseline = '{b}' AND version = '1' ORDER BY window_start, kind, feature"
        )
    };
    let from_config = query_csv(&config_data, &q("config")).await?;
    let from_registry = query_csv(&data, &q("registry:v1")).await?;
    assert_eq!(from_config.lines().count(), 1 + 3 * 8, "{from_config}");
    assert_eq!(from_registry, from_config, "same training data, same tests");
    let registry = mlwatch::registry::ModelRegistry::new(Storage::open(
        &data.display().to_string(),
        &Default::default(),
    )?);
    let v1 = registry
        .get_model("credit_risk", &mlwatch::registry::Selector::Version(1))
        .await?;
    assert_eq!(
        v1.baseline_profile(),
        built["path"].as_str(),
        "the profile is on the version"
    );
    Ok(())
}

/// Watermark alignment: with four partitions that each span the whole
/// stream, librdkafka hands over one partition's records before the next
/// one's, so without alignment every window stays open until the last
/// partition is read. Pausing the partitions that run ahead bounds the open
/// windows, and the results are the same either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_running_ahead_are_paused_and_results_do_not_change() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(4)?;
    let all = events(8_000, 16);
    produce_to(
        &brokers,
        all.iter()
            .enumerate()
            .map(|(i, m)| (Some((i % 4) as i32), m)),
    )?;

    let mut runs = Vec::new();
    for (group, max_ahead) in [("aligned", 60), ("unaligned", 86_400_000)] {
        let data = s.root.join(group);
        let mut config = test_config(&brokers, &data, &s.reference, group)?;
        config.kafka.max_batch_records = 100;
        config.window.max_ahead = Some(Duration::from_secs(max_ahead));
        let summary = run_until_idle(config).await?;
        assert_eq!(summary.counters.events, 8_000, "{group}");
        runs.push((summary.counters, data));
    }
    let (aligned, unaligned) = (&runs[0].0, &runs[1].0);
    assert!(
        aligned.peak_open_windows <= 5 && aligned.partition_pauses > 0,
        "aligned: {aligned:?}"
    );
    assert!(
        unaligned.peak_open_windows > aligned.peak_open_windows,
        "unaligned: {unaligned:?}, aligned: {aligned:?}"
    );
    for sql in [
        ALL_DRIFT,
        ALL_SUMMARY,
        ALL_QUALITY,
        ALL_ALERTS,
        ALL_DISTRIBUTION,
    ] {
        let a = query_csv(&runs[0].1, sql).await?;
        let u = query_csv(&runs[1].1, sql).await?;
        assert_eq!(a, u, "{sql}");
    }
    let drift = query_csv(&runs[0].1, ALL_DRIFT).await?;
    assert_eq!(drift.lines().count(), 1 + 16 * 2 * 8, "{drift}");
    Ok(())
}

/// A partition that has run dry holds the watermark but must not keep the
/// others paused: every event is read and the run ends on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_partition_does_not_keep_the_others_paused() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(2)?;
    let all = events(4_000, 8);
    // Partition 0 only has the first window's first 100 events.
    produce_to(
        &brokers,
        all.iter()
            .enumerate()
            .map(|(i, m)| (Some(if i < 100 { 0 } else { 1 }), m)),
    )?;
    let mut config = test_config(&brokers, &s.root.join("out"), &s.reference, "drained")?;
    config.kafka.max_batch_records = 100;
    let summary = run_until_idle(config).await?;
    let c = &summary.counters;
    assert_eq!(c.events, 4_000, "{c:?}");
    assert!(c.dead_letters.is_empty(), "{c:?}");
    assert_eq!(c.windows_closed, 8, "{c:?}");
    Ok(())
}

/// A checkpoint Kafka holds no commit for (the commit expired, or the
/// process died between saving the checkpoint and committing): with
/// `auto_offset_reset = latest` the group starts at the checkpoint, not at
/// the end of the log, so no record is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_without_a_kafka_commit_resumes_where_it_says() -> TestResult {
    let s = setup()?;
    let (_cluster, brokers) = cluster(1)?;
    let all = events(4_000, 4);
    produce(&brokers, &all[..2_000])?;
    let data = s.root.join("data");
    let first = run_until_idle(test_config(&brokers, &data, &s.reference, "g1")?).await?;
    assert_eq!(first.counters.events, 2_000);
    produce(&brokers, &all[2_000..])?;
    // The same checkpoint under a group Kafka has never seen.
    let ckpt = data.join("_checkpoints");
    std::fs::copy(ckpt.join("g1.json"), ckpt.join("g2.json"))?;
    let mut config = test_config(&brokers, &data, &s.reference, "g2")?;
    config.kafka.auto_offset_reset = mlwatch::config::OffsetReset::Latest;
    let second = run_until_idle(config).await?;
    assert_eq!(second.counters.events, 4_000, "{:?}", second.counters);
    assert_eq!(second.counters.skipped_replayed, 0);
    Ok(())
}
