//! Alerts end to end on librdkafka's mock cluster: the `mlwatch.alerts`
//! topic, the `alerts` table, and a webhook served by the test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use mlwatch::alerts::{Alert, AlertKind};
use mlwatch::demo::{self, Drifts};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::TestResult;
use crate::pipeline::{cluster, events, produce, query_csv, run_until_idle, setup, test_config};

/// The monitoring alerts the demo stream must raise over `windows` windows
/// with a cool-down of 3 windows, for each of its two model versions: one
/// drift alert per change at the window where it starts, and quality
/// alerts for the new category at that window and every third window after
/// it (a breach that lasts repeats after the cool-down).
fn expected(windows: u64) -> Vec<(String, String, AlertKind, u64)> {
    let (new_category, score, prediction) = Drifts::starts(windows);
    let mut e = Vec::new();
    for v in ["1", "2"] {
        let v = v.to_string();
        e.extend([
            (
                v.clone(),
                "region".to_string(),
                AlertKind::Drift,
                new_category,
            ),
            (
                v.clone(),
                "credit_score".to_string(),
                AlertKind::Drift,
                score,
            ),
            (
                v.clone(),
                "prediction".to_string(),
                AlertKind::Drift,
                prediction,
            ),
        ]);
        e.extend(
            (new_category..windows)
                .step_by(3)
                .map(|w| (v.clone(), "region".to_string(), AlertKind::Quality, w)),
        );
    }
    e.sort_by(|a, b| (a.3, &a.0, &a.1, a.2.as_str()).cmp(&(b.3, &b.0, &b.1, b.2.as_str())));
    e
}

fn window_of(a: &Alert) -> u64 {
    let start = chrono::DateTime::parse_from_rfc3339(&a.window_start)
        .expect("RFC 3339 window start")
        .timestamp_millis();
    ((start - demo::START_MS) / 60_000) as u64
}

/// The monitoring alerts (experiments' apart) as (version, column, kind, window).
fn summarize(alerts: &[Alert]) -> Vec<(String, String, AlertKind, u64)> {
    let mut v: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind != AlertKind::Experiment)
        .map(|a| {
            (
                a.version.clone(),
                a.column.clone().unwrap_or_default(),
                a.kind,
                window_of(a),
            )
        })
        .collect();
    v.sort_by(|a, b| (a.3, &a.0, &a.1, a.2.as_str()).cmp(&(b.3, &b.0, &b.1, b.2.as_str())));
    v
}

/// Reads every record of `topic` (one partition) until `n` are read.
async fn read_topic(
    brokers: &str,
    topic: &str,
    n: usize,
) -> Result<Vec<Alert>, Box<dyn std::error::Error>> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "alerts-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    c.subscribe(&[topic])?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
            assert_eq!(m.key(), Some(demo::MODEL.as_bytes()), "keyed by model");
            out.push(serde_json::from_slice(m.payload().unwrap_or_default())?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_topic_the_table_and_a_webhook_with_a_retry() -> TestResult {
    let s = setup()?;
    let (mock, brokers) = cluster(1)?;
    mock.create_topic("mlwatch.alerts", 1, 1)?;
    let windows = 8;
    produce(&brokers, &events(8_000, windows as i64))?;

    // A webhook that fails its first request with a 500.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = {
        let (received, calls) = (received.clone(), calls.clone());
        Router::new().route(
            "/hook",
            post(move |body: String| {
                let (received, calls) = (received.clone(), calls.clone());
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received.lock().expect("not poisoned").push(body);
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data = s.root.join("data");
    let mut config = test_config(&brokers, &data, &s.reference, "alerts")?;
    config.alerts.webhook_url = format!("http://{addr}/hook");
    let summary = run_until_idle(config).await?;
    assert_eq!(summary.counters.webhook_failures, 0);
    let delivered_at_return = received.lock().expect("not poisoned").len();

    let want = expected(windows);
    // The demo's `rollout` experiment has a broken split: one alert when it
    // turns invalid. (Without labels `challenger` keeps running: no alert.)
    let from_topic = read_topic(&brokers, "mlwatch.alerts", want.len() + 1).await?;
    assert_eq!(summarize(&from_topic), want, "{from_topic:#?}");
    let experiments: Vec<(Option<&str>, &str)> = from_topic
        .iter()
        .filter(|a| a.kind == AlertKind::Experiment)
        .map(|a| (a.column.as_deref(), a.message.as_str()))
        .collect();
    assert_eq!(experiments.len(), 1, "{experiments:?}");
    assert_eq!(experiments[0].0, Some("rollout"));
    assert!(
        experiments[0].1.contains("invalid: sample ratio mismatch"),
        "{experiments:?}"
    );

    let table = query_csv(
        &data,
        "SELECT alert_id, kind, \"column\", version FROM alerts ORDER BY alert_id",
    )
    .await?;
    let mut ids: Vec<&str> = from_topic.iter().map(|a| a.alert_id.as_str()).collect();
    ids.sort();
    let table_ids: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(table_ids, ids, "the table holds the produced alerts");

    // Every alert reached the webhook before the run returned (a stop
    // waits for the queue), the first one after a retry.
    assert_eq!(delivered_at_return, want.len() + 1);
    let got: Vec<Alert> = received
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<Result<_, _>>()?;
    let by_id: BTreeMap<&str, &Alert> = got.iter().map(|a| (a.alert_id.as_str(), a)).collect();
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), ids);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        want.len() as u64 + 2,
        "one retried request"
    );
    Ok(())
}
