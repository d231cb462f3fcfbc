//! Experiment tracking from the `mlwatch.tracking` topic: events produced to
//! librdkafka's mock cluster, consumed by the pipeline, written through the
//! tracking API; refused events go to the dead letters; a replay after a
//! crash overwrites instead of duplicating.

use std::path::Path;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::util::pretty::pretty_format_batches;
use mlwatch::config::TrackingConfig;
use mlwatch::demo;
use mlwatch::pipeline::{self, RunControl};
use mlwatch::storage::Storage;
use mlwatch::tracking::ExperimentTracker;
use mlwatch::tracking::stream::{TrackingSink, TrackingSnapshot};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;
use tokio::sync::watch;

use crate::TestResult;

const TOPIC: &str = "mlwatch.tracking";
const RUN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const RUN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
const T0: i64 = 1_767_225_600_000; // 2026-01-01, ms

fn metrics(run_id: &str, from: i64, to: i64, acc_end: f64) -> String {
    let points: Vec<_> = (from..to)
        .flat_map(|s| {
            [
                json!({"key": "loss", "value": 1.0 / (s as f64 + 1.0), "step": s, "timestamp": T0 + s}),
                json!({"key": "accuracy", "value": acc_end * (s + 1) as f64 / to as f64, "step": s, "timestamp": T0 + s}),
            ]
        })
        .collect();
    json!({"type": "metrics", "run_id": run_id, "metrics": points}).to_string()
}

/// The events of two runs (A ends, B stays open) and eight bad ones, keyed
/// by run id; `(key, payload, expected dead-letter reason)`.
fn events() -> Vec<(String, String, Option<&'static str>)> {
    let ok = |k: &str, v: serde_json::Value| (k.to_string(), v.to_string(), None);
    let bad = |k: &str, v: String, r| (k.to_string(), v, Some(r));
    vec![
        ok(
            RUN_A,
            json!({"type": "start", "run_id": RUN_A, "experiment": "churn", "run_name": "xgb-a",
                   "tags": {"team": "risk"}, "time": T0,
                   "env": {"git_commit": "abc123", "git_branch": "main", "git_dirty": false,
                           "hostname": "trainer-1", "os": "linux", "user": "ana",
                           "command": "python train.py", "python_version": "3.12.1"}}),
        ),
        ok(
            RUN_B,
            json!({"type": "start", "run_id": RUN_B, "experiment": "churn", "run_name": "logreg-b", "time": T0 + 5}),
        ),
        ok(
            RUN_A,
            json!({"type": "params", "run_id": RUN_A, "params": {"model": "xgb", "lr": 0.1, "early_stop": true}}),
        ),
        ok(
            RUN_B,
            json!({"type": "params", "run_id": RUN_B, "params": {"model": "logreg", "lr": 0.01}}),
        ),
        (RUN_A.into(), metrics(RUN_A, 0, 300, 0.95), None),
        (RUN_B.into(), metrics(RUN_B, 0, 200, 0.85), None),
        ok(
            RUN_A,
            json!({"type": "tags", "run_id": RUN_A, "tags": {"stage": "tuning", "team": "risk-2"}}),
        ),
        // Refused: each changes nothing.
        bad("x", "not json".into(), "bad_json"),
        bad("x", json!({"type": "bogus", "run_id": RUN_A}).to_string(), "wrong_type"),
        bad("x", json!({"type": "start", "run_id": RUN_A}).to_string(), "missing_field"),
        bad(
            "x",
            json!({"type": "params", "run_id": "cccccccccccccccccccccccccccccccc", "params": {"a": 1}}).to_string(),
            "unknown_run",
        ),
        bad(
            RUN_A,
            json!({"type": "params", "run_id": RUN_A, "params": {"lr": 0.5, "extra": 1}}).to_string(),
            "param_changed",
        ),
        bad(
            RUN_A,
            json!({"type": "metrics", "run_id": RUN_A, "metrics": [{"key": "ok", "value": 1.0}, {"key": "../x", "value": 1.0}]}).to_string(),
            "invalid_value",
        ),
        bad(
            RUN_A,
            json!({"type": "start", "run_id": RUN_A, "experiment": "other"}).to_string(),
            "duplicate_run",
        ),
        bad(
            "x",
            json!({"type": "start", "run_id": "NOT-HEX", "experiment": "e"}).to_string(),
            "invalid_value",
        ),
        ok(
            RUN_A,
            json!({"type": "end", "run_id": RUN_A, "status": "FINISHED", "time": T0 + 10_000}),
        ),
        bad(
            RUN_A,
            json!({"type": "tags", "run_id": RUN_A, "tags": {"late": "yes"}}).to_string(),
            "ended",
        ),
        bad(
            RUN_B,
            json!({"type": "end", "run_id": RUN_B, "time": i64::MAX}).to_string(),
            "invalid_value",
        ),
        // Restarting an ended run is refused, before and after the
        // checkpoint that writes its end.
        bad(
            RUN_A,
            json!({"type": "start", "run_id": RUN_A, "experiment": "churn", "run_name": "xgb-a", "time": T0})
                .to_string(),
            "duplicate_run",
        ),
    ]
}

fn produce(brokers: &str, events: &[(String, String, Option<&str>)]) -> TestResult {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for (key, payload, _) in events {
        p.send(
            BaseRecord::to(TOPIC)
                .key(key.as_str())
                .payload(payload.as_str()),
        )
        .map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// A query's result as CSV lines with a header.
async fn table(data: &Path, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    let storage = Storage::open(data.to_str().unwrap(), &Default::default())?;
    let ctx = ExperimentTracker::new(storage).context().await?;
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        for b in ctx.sql(sql).await?.collect().await? {
            w.write(&b)?;
        }
    }
    Ok(String::from_utf8(buf)?)
}

/// Tracking events from Kafka become runs that `runs search`, the SQL
/// views and `mlwatch sql` see; each bad event is a dead letter with its
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_events_from_kafka_become_searchable_runs() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let reference = tmp.path().join("reference.parquet");
    demo::write_reference(&reference, 1000, 7)?;
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let mut config = demo::demo_config(&brokers, &data, &reference)?;
    demo::create_topics(&cluster, &config)?;
    config.kafka.group_id = "tracking-test".into();
    let events = events();
    produce(&brokers, &events)?;

    let (_tx, rx) = watch::channel(None);
    let summary = pipeline::run(
        config,
        RunControl {
            stop: rx,
            idle_exit: Some(Duration::from_secs(3)),
            progress: None,
        },
    )
    .await?;
    let c = &summary.counters;
    let n_bad = events.iter().filter(|e| e.2.is_some()).count() as u64;
    assert_eq!(c.records, events.len() as u64);
    assert_eq!(c.tracking_events, events.len() as u64 - n_bad, "{c:?}");
    assert_eq!(c.dead_letters.values().sum::<u64>(), n_bad, "{c:?}");

    // Every refused event is a dead letter with its reason and payload.
    let dead = mlwatch_sql(
        &data,
        "SELECT reason, payload FROM dead_letters WHERE topic = 'mlwatch.tracking' ORDER BY \"offset\"",
    )?;
    let expected: Vec<&str> = events.iter().filter_map(|e| e.2).collect();
    let got: Vec<&str> = dead
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(got.len(), expected.len(), "{dead}");
    for (g, e) in got.iter().zip(&expected) {
        // A tag for a run that has just ended is `run_ended` before the next
        // checkpoint drops the run from memory, `unknown_run` after.
        if *e == "ended" {
            assert!(*g == "run_ended" || *g == "unknown_run", "{dead}");
        } else {
            assert_eq!(g, e, "{dead}");
        }
    }

    // The runs, as search and SQL see them.
    let storage = Storage::open(data.to_str().unwrap(), &Default::default())?;
    let tracker = ExperimentTracker::new(storage);
    let found = tracker
        .search(
            "metrics.accuracy > 0.9 and params.model = 'xgb' order by metrics.accuracy desc",
            None,
        )
        .await?;
    let found = pretty_format_batches(&found)?.to_string();
    assert!(found.contains(RUN_A) && !found.contains(RUN_B), "{found}");
    let runs = table(
        &data,
        "SELECT run_id, run_name, status, git_commit, hostname, python_version, pid, \
         CAST(start_time AS BIGINT) / 1000 - 1767225600000 AS start_ms, \
         CAST(end_time AS BIGINT) / 1000 - 1767225600000 AS end_ms FROM runs ORDER BY run_name",
    )
    .await?;
    assert_eq!(
        runs.lines().skip(1).collect::<Vec<_>>(),
        [
            format!("{RUN_B},logreg-b,RUNNING,,,,0,5,"),
            format!("{RUN_A},xgb-a,FINISHED,abc123,trainer-1,3.12.1,0,0,10000"),
        ],
        "{runs}"
    );
    // Exactly the logged points, no more (the refused batch left none).
    let counts = table(
        &data,
        "SELECT run_id, key, count(*) AS n, max(step) AS last FROM metrics GROUP BY run_id, key ORDER BY run_id, key",
    )
    .await?;
    let mut expected = Vec::new();
    for (run, n) in [(RUN_A, 300), (RUN_B, 200)] {
        for key in ["accuracy", "loss"] {
            expected.push(format!("{run},{key},{n},{}", n - 1));
        }
    }
    assert_eq!(counts.lines().skip(1).collect::<Vec<_>>(), expected);
    let params = table(
        &data,
        "SELECT run_id, key, value FROM params ORDER BY run_id, key",
    )
    .await?;
    assert_eq!(
        params.lines().skip(1).collect::<Vec<_>>(),
        [
            format!("{RUN_A},early_stop,true"),
            format!("{RUN_A},lr,0.1"),
            format!("{RUN_A},model,xgb"),
            format!("{RUN_B},lr,0.01"),
            format!("{RUN_B},model,logreg"),
        ]
    );
    let tags = table(
        &data,
        &format!("SELECT key, value FROM tags WHERE run_id = '{RUN_A}' ORDER BY key"),
    )
    .await?;
    assert_eq!(tags, "key,value\nstage,tuning\nteam,risk-2\n");

    // The same question through the `mlwatch sql` binary.
    let joined = mlwatch_sql(
        &data,
        "SELECT r.run_name, m.value FROM runs r JOIN latest_metrics m ON r.run_id = m.run_id \
         WHERE m.key = 'accuracy' ORDER BY r.run_name",
    )?;
    assert_eq!(joined.trim(), "run_name,value\nlogreg-b,0.85\nxgb-a,0.95");

    // A run ended through Kafka ends again with the same status as a no-op,
    // and refuses another status naming the one it has.
    let t = mlwatch::tracking::ExperimentTracker::new(mlwatch::storage::Storage::open(
        data.to_str().unwrap(),
        &Default::default(),
    )?);
    t.end_run(RUN_A, mlwatch::tracking::RunStatus::Finished)
        .await?;
    let e = t
        .end_run(RUN_A, mlwatch::tracking::RunStatus::Failed)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already ended as FINISHED"), "{e}");
    Ok(())
}

/// `mlwatch sql --format csv --data <data> <sql>`.
fn mlwatch_sql(data: &Path, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    let data = data.to_str().expect("UTF-8 path");
    crate::run_mlwatch(["sql", "--format", "csv", "--data", data, sql])
}

/// Applies records `from..to` of `events` to `sink` (partition 0, offset =
/// index, record time = T0 + index).
async fn apply(
    sink: &mut TrackingSink,
    events: &[String],
    from: usize,
    to: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, e) in events.iter().enumerate().take(to).skip(from) {
        let r = sink
            .apply(0, i as i64, Some(T0 + i as i64), e.as_bytes())
            .await?;
        assert_eq!(r, Ok(()), "record {i}");
    }
    Ok(())
}

/// A crash after the tracking files were written but before the checkpoint
/// that covers them: the restart replays those records from the previous
/// checkpoint and must leave exactly what an uninterrupted run leaves.
#[tokio::test]
async fn replay_after_a_crash_overwrites_instead_of_duplicating() -> TestResult {
    let run_c = "cccccccccccccccccccccccccccccccc";
    let mut ev = vec![
        json!({"type": "start", "run_id": RUN_A, "experiment": "e", "time": T0}).to_string(),
        json!({"type": "params", "run_id": RUN_A, "params": {"a": 1}}).to_string(),
        metrics(RUN_A, 0, 10, 0.9),
    ];
    // Checkpoint 1 after record 3; the crashed interval holds a new run (C)
    // that starts and ends, more of A, and the start of B.
    ev.extend([
        metrics(RUN_A, 10, 20, 0.9),
        json!({"type": "params", "run_id": RUN_A, "params": {"b": 2}}).to_string(),
        json!({"type": "start", "run_id": run_c, "experiment": "e", "time": T0 + 1}).to_string(),
        metrics(run_c, 0, 5, 0.5),
        json!({"type": "end", "run_id": run_c}).to_string(),
        json!({"type": "start", "run_id": RUN_B, "experiment": "e"}).to_string(),
        json!({"type": "tags", "run_id": RUN_A, "tags": {"t": "1"}}).to_string(),
    ]);
    // After the crash point: more records.
    ev.extend([
        metrics(RUN_B, 0, 7, 0.7),
        json!({"type": "end", "run_id": RUN_A, "status": "FAILED"}).to_string(),
    ]);
    let limits = TrackingConfig {
        max_open_runs: 100,
        idle_timeout: Duration::from_secs(3600),
        compact_after_files: 0,
        compact_grace: Duration::ZERO,
    };
    let tmp = tempfile::tempdir()?;
    let open = |name: &str| {
        let s = Storage::open(tmp.path().join(name).to_str().unwrap(), &Default::default())?;
        Ok::<_, mlwatch::Error>(ExperimentTracker::new(s))
    };

    // Uninterrupted: checkpoints after record 3 and at the end.
    let mut whole = TrackingSink::new(open("whole")?, limits.clone(), TrackingSnapshot::default());
    apply(&mut whole, &ev, 0, 3).await?;
    whole.flush().await?;
    apply(&mut whole, &ev, 3, ev.len()).await?;
    whole.flush().await?;

    // Crashed: checkpoint after record 3; records 3..10 written, then the
    // process dies before its checkpoint; the restart resumes from the
    // first checkpoint, replays 3..10 and goes on, checkpointing at other
    // points than before.
    let mut crashed = TrackingSink::new(
        open("crashed")?,
        limits.clone(),
        TrackingSnapshot::default(),
    );
    apply(&mut crashed, &ev, 0, 3).await?;
    let checkpoint = crashed.flush().await?;
    apply(&mut crashed, &ev, 3, 10).await?;
    crashed.flush().await?; // written, but its checkpoint never lands
    drop(crashed);
    let mut restarted = TrackingSink::new(open("crashed")?, limits.clone(), checkpoint);
    apply(&mut restarted, &ev, 3, 6).await?;
    restarted.flush().await?;
    apply(&mut restarted, &ev, 6, ev.len()).await?;
    restarted.flush().await?;

    let tables = [
        "SELECT run_id, status, CAST(start_time AS BIGINT), CAST(end_time AS BIGINT) FROM runs ORDER BY run_id",
        "SELECT run_id, key, value, CAST(logged_at AS BIGINT) FROM params ORDER BY run_id, key",
        "SELECT run_id, key, value, CAST(logged_at AS BIGINT) FROM tag_log ORDER BY run_id, key",
        "SELECT run_id, key, value, step, CAST(timestamp AS BIGINT) FROM metrics ORDER BY run_id, key, step",
        "SELECT run_id, status, count(*) FROM run_log GROUP BY run_id, status ORDER BY run_id, status",
    ];
    for sql in tables {
        let w = table(&tmp.path().join("whole"), sql).await?;
        let c = table(&tmp.path().join("crashed"), sql).await?;
        assert_eq!(c, w, "{sql}");
    }
    let n = table(
        &tmp.path().join("whole"),
        "SELECT count(*) AS n FROM metrics",
    )
    .await?;
    assert_eq!(n, "n\n64\n", "2 keys x (20 + 5 + 7) steps");
    let status = table(
        &tmp.path().join("whole"),
        "SELECT run_id, status FROM runs ORDER BY run_id",
    )
    .await?;
    assert_eq!(
        status,
        format!("run_id,status\n{RUN_A},FAILED\n{RUN_B},RUNNING\n{run_c},FINISHED\n")
    );
    // A later start with a stored run's id is refused (a producer reusing
    // an id, or retrying long after): it would otherwise reopen the run.
    let mut again = TrackingSink::new(open("whole")?, limits, TrackingSnapshot::default());
    let r = again
        .apply(
            0,
            99,
            Some(T0),
            json!({"type": "start", "run_id": run_c, "experiment": "e"})
                .to_string()
                .as_bytes(),
        )
        .await?;
    assert_eq!(r.map_err(|r| r.reason.as_str()), Err("duplicate_run"));
    Ok(())
}

/// One random tracking record: a JSON object with random field values (or
/// a random byte string), for a few run ids, one of them malformed.
fn random_record() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let value = prop_oneof![
        Just(json!("text")),
        Just(json!(0.5)),
        Just(json!(true)),
        Just(json!(null)),
        Just(json!([1, 2])),
        Just(json!(i64::MAX)),
        Just(json!("../up")),
        Just(json!({"k": 1})),
    ];
    let run = prop_oneof![Just(RUN_A), Just(RUN_B), Just("not-a-run-id")];
    let kind = prop_oneof![
        Just("start"),
        Just("params"),
        Just("metrics"),
        Just("tags"),
        Just("end"),
        Just("bogus")
    ];
    prop_oneof![
        9 => (kind, run, value.clone(), value).prop_map(|(kind, run, v, w)| {
            let mut e = json!({"type": kind, "run_id": run});
            match kind {
                "start" => {
                    e["experiment"] = json!("e");
                    e["tags"] = json!({"t": v});
                    e["time"] = w;
                }
                "params" => e["params"] = json!({"p": v, "q": w}),
                "tags" => e["tags"] = json!({"t": v}),
                "metrics" => e["metrics"] = json!([{"key": "m", "value": v, "step": w}, {"key": v, "value": 1.0}]),
                "end" => e["status"] = v,
                _ => e["x"] = v,
            }
            e.to_string().into_bytes()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

    /// Whatever arrives, the sink applies it or refuses it with a reason
    /// (never panics), and exactly the accepted starts become stored runs.
    #[test]
    fn random_records_are_applied_or_refused(records in proptest::collection::vec(random_record(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let tracker = ExperimentTracker::new(Storage::open("memory://", &Default::default())?);
            let mut sink = TrackingSink::new(
                tracker.clone(),
                TrackingConfig {
                    max_open_runs: 10,
                    idle_timeout: Duration::from_secs(3600),
                    compact_after_files: 0,
                    compact_grace: Duration::ZERO,
                },
                TrackingSnapshot::default(),
            );
            let mut started = std::collections::BTreeSet::new();
            for (i, r) in records.iter().enumerate() {
                let applied = sink.apply(0, i as i64, Some(T0), r).await?;
                if applied.is_ok()
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(r)
                    && v["type"] == "start"
                {
                    started.insert(v["run_id"].as_str().unwrap_or_default().to_string());
                }
                if let Err(rej) = applied {
                    proptest::prop_assert!(!rej.error.is_empty());
                }
            }
            sink.flush().await?;
            let ctx = tracker.context().await?;
            let n = ctx.sql("SELECT count(*) FROM runs").await?.collect().await?;
            let n = n[0]
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0);
            proptest::prop_assert_eq!(n as usize, started.len());
            Ok::<_, proptest::test_runner::TestCaseError>(())
        })?;
    }
}
