//! Labels joined to predictions on the mock cluster: labels before their
//! prediction (across a restart), on other partitions, duplicated, past the
//! horizon, for unknown events; and the demo's concept change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlwatch::demo::{self, DemoOptions, Drifts, Generator};
use mlwatch::pipeline::{self, RunControl, StopMode};
use tokio::sync::watch;

use crate::TestResult;
use crate::pipeline::{
    OUTCOMES, cluster, produce_topic, query_csv, run_until_idle, setup, test_config,
};

const N: u64 = 1_200;
const WINDOWS: i64 = 6;
const HORIZON_MS: i64 = demo::LABEL_HORIZON_MS;

fn ts_of(i: u64) -> i64 {
    demo::START_MS + (i as i64 * WINDOWS * 60_000) / N as i64
}

fn label(id: &str, ts: i64, y: u8) -> String {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"model":"{}","label":{y}}}"#,
        demo::MODEL
    )
}

fn count(csv: &str, reason: &str) -> u64 {
    csv.lines()
        .find_map(|l| l.strip_prefix(&format!("{reason},")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_in_any_order_partition_and_restart_and_the_rest_is_dead_lettered() -> TestResult
{
    let s = setup()?;
    let (_cluster, brokers) = cluster(2)?;
    let data = s.root.join("labels");
    let config = test_config(&brokers, &data, &s.reference, "labels")?;

    // 1. Labels of evt-0..99 arrive before any prediction (on partition 1);
    //    the run is interrupted with them waiting.
    let early: Vec<String> = (0..100)
        .map(|i| label(&format!("evt-{i}"), ts_of(i) + 1_000, (i % 2) as u8))
        .collect();
    produce_topic(&brokers, OUTCOMES, early.iter().map(|l| (Some(1), l)))?;
    let progress = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(None);
    let run = tokio::spawn(pipeline::run(
        config.clone(),
        RunControl {
            stop: stop_rx,
            idle_exit: None,
            progress: Some(progress.clone()),
        },
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < 100 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(Some(StopMode::Interrupt))?;
    let first = run.await??;
    assert_eq!(first.counters.outcomes, 100);
    assert_eq!(
        first.counters.dead_letters.values().sum::<u64>(),
        0,
        "waiting, not dead"
    );

    // 2. The predictions on two partitions, then the other labels in
    //    event-time order on both outcome partitions.
    let mut g = Generator::new(5);
    let predictions: Vec<String> = (0..N)
        .map(|i| g.event_json(i, ts_of(i), Drifts::NONE))
        .collect();
    produce_topic(
        &brokers,
        crate::pipeline::TOPIC,
        predictions
            .iter()
            .enumerate()
            .map(|(i, p)| (Some((i % 2) as i32), p)),
    )?;
    let mut rest: Vec<(i64, String)> = Vec::new();
    for i in 100..150 {
        // Duplicated: the first one counts.
        rest.push((
            ts_of(i) + 2_000,
            label(&format!("evt-{i}"), ts_of(i) + 2_000, 1),
        ));
        rest.push((
            ts_of(i) + 3_000,
            label(&format!("evt-{i}"), ts_of(i) + 3_000, 0),
        ));
    }
    for i in 150..200 {
        // Past the horizon: the prediction's window end + 3 min, and more.
        let at = ts_of(i) + HORIZON_MS + 60_000;
        rest.push((at, label(&format!("evt-{i}"), at, 1)));
    }
    for i in 200..N {
        rest.push((
            ts_of(i) + 5_000,
            label(&format!("evt-{i}"), ts_of(i) + 5_000, 1),
        ));
    }
    for k in 0..30 {
        let at = demo::START_MS + 120_000 + k * 1_000;
        rest.push((at, label(&format!("ghost-{k}"), at, 1)));
    }
    rest.sort();
    produce_topic(
        &brokers,
        OUTCOMES,
        rest.iter()
            .enumerate()
            .map(|(i, (_, l))| (Some((i % 2) as i32), l)),
    )?;
    let second = run_until_idle(config).await?;
    let c = &second.counters;
    assert_eq!(c.outcomes, 100 + 100 + 50 + (N - 200) + 30, "{c:?}");
    assert_eq!(c.labels_joined, 100 + 50 + (N - 200), "{c:?}");
    assert_eq!(c.duplicate_labels, 50, "{c:?}");

    let reasons = query_csv(
        &data,
        "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
    )
    .await?;
    assert_eq!(count(&reasons, "late_label"), 50, "{reasons}");
    assert_eq!(count(&reasons, "unmatched_label"), 30, "{reasons}");
    let dead = query_csv(
        &data,
        "SELECT payload FROM dead_letters WHERE reason = 'unmatched_label' ORDER BY payload LIMIT 1",
    )
    .await?;
    assert!(dead.contains("ghost-"), "{dead}");

    // Every window's performance counts each prediction once and each
    // joined label once; the duplicates' first label (1) won.
    let perf = query_csv(
        &data,
        "SELECT sum(n_predictions) AS p, sum(n_labeled) AS l FROM performance WHERE metric = 'accuracy'",
    )
    .await?;
    assert_eq!(
        perf.lines().nth(1),
        Some(format!("{N},{}", 100 + 50 + (N - 200)).as_str()),
        "{perf}"
    );
    let windows = query_csv(
        &data,
        "SELECT count(DISTINCT window_start) AS n, bool_or(sampled) AS s FROM performance",
    )
    .await?;
    assert_eq!(windows.lines().nth(1), Some("6,false"), "{windows}");
    Ok(())
}

/// The demo's concept change: labels flip for 40% of events from a window
/// on while features and predictions keep their distributions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_concept_change_lowers_accuracy_and_is_detected_after_it_not_before() -> TestResult
{
    let tmp = tempfile::tempdir()?;
    let windows = 16;
    let summary = demo::run_demo(&DemoOptions {
        data: tmp.path().to_path_buf(),
        events: 64_000,
        windows,
    })
    .await?;
    assert!(
        summary.counters.labels_joined > 50_000,
        "{:?}",
        summary.counters
    );
    let concept = Drifts::concept_start(windows);
    let (new_category, score, _) = Drifts::starts(windows);
    assert!(new_category < concept && concept < score);
    let w = |col: &str| {
        format!(
            "CAST((CAST({col} AS BIGINT) - {}) / 60000 AS BIGINT)",
            demo::START_MS
        )
    };

    let acc = query_csv(
        tmp.path(),
        &format!(
            "SELECT {} AS w, sum(value * n_labeled) / sum(n_labeled) AS accuracy, \
             any_value(baseline_value) AS registry, bool_or(degraded) AS degraded \
             FROM performance WHERE metric = 'accuracy' AND version = '1' GROUP BY 1 ORDER BY 1",
            w("window_start")
        ),
    )
    .await?;
    let rows: Vec<Vec<String>> = acc
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len() as u64, windows, "{acc}");
    for r in &rows {
        let (win, accuracy, registry) = (
            r[0].parse::<u64>()?,
            r[1].parse::<f64>()?,
            r[2].parse::<f64>()?,
        );
        let degraded = r[3] == "true";
        if win < concept {
            assert!((accuracy - registry).abs() < 0.03, "window {win}: {acc}");
            assert!(!degraded, "window {win}: {acc}");
        } else {
            assert!(accuracy < registry - 0.12, "window {win}: {acc}");
            assert!(degraded, "window {win}: {acc}");
        }
    }

    let detections = query_csv(
        tmp.path(),
        &format!(
            "SELECT detector, {} AS w FROM concept_drift ORDER BY ts",
            w("ts")
        ),
    )
    .await?;
    let det: Vec<(String, u64)> = detections
        .lines()
        .skip(1)
        .map(|l| {
            let (d, w) = l.split_once(',').expect("two columns");
            (d.to_string(), w.parse().expect("window"))
        })
        .collect();
    assert!(
        det.iter().all(|(_, w)| *w >= concept),
        "no detection before window {concept}: {detections}"
    );
    for d in ["ddm", "page_hinkley", "adwin"] {
        assert!(
            det.iter().any(|(x, w)| x == d && *w <= concept + 1),
            "{d} fires within a window of the change at {concept}: {detections}"
        );
    }
    let alerts = query_csv(
        tmp.path(),
        "SELECT count(*) AS n FROM alerts WHERE kind = 'concept_drift'",
    )
    .await?;
    assert_ne!(alerts.lines().nth(1), Some("0"), "{alerts}");

    // Feature drift stays quiet for it: from the concept change until the
    // next injected change, only `region` (drifted since its own change)
    // is flagged.
    let drifted = query_csv(
        tmp.path(),
        &format!(
            "SELECT DISTINCT feature FROM drift_results WHERE drifted AND {} >= {concept} AND {} < {score} ORDER BY feature",
            w("window_start"),
            w("window_start")
        ),
    )
    .await?;
    assert_eq!(drifted.trim(), "feature\nregion", "{drifted}");

    // The shipped query lines up drift share, accuracy and its delta.
    let sql = std::fs::read_to_string(crate::manifest_dir().join("sql/performance_by_window.sql"))?;
    let lined = query_csv(tmp.path(), &sql).await?;
    let header: Vec<&str> = lined.lines().next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (share, delta, dets) = (col("drift_share"), col("accuracy_delta"), col("detections"));
    let version = col("version");
    let all: Vec<Vec<&str>> = lined
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(all.len() as u64, 2 * windows, "two versions: {lined}");
    let rows: Vec<&Vec<&str>> = all.iter().filter(|r| r[version] == "1").collect();
    assert_eq!(rows.len() as u64, windows, "{lined}");
    for (win, r) in rows.iter().enumerate() {
        let d: f64 = r[delta].parse()?;
        assert!(
            !r[share].is_empty(),
            "window {win} has a drift share: {lined}"
        );
        if (win as u64) < concept {
            assert!(d.abs() < 0.03 && r[dets] == "0", "window {win}: {lined}");
        } else {
            assert!(d < -0.12, "window {win}: {lined}");
        }
    }
    Ok(())
}
