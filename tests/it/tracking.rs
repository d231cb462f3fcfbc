//! Experiment tracking through the Rust API: runs, params, metrics, tags and
//! artifacts land as Parquet, search filters and SQL see them, and refused
//! requests change nothing.

use bytes::Bytes;
use datafusion::arrow::util::pretty::pretty_format_batches;
use mlwatch::storage::Storage;
use mlwatch::tracking::compact::CompactionPolicy;
use mlwatch::tracking::{ExperimentTracker, RunStatus};

use crate::TestResult;

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Compaction that deletes merged inputs at once (no concurrent readers
/// here), so the tests can count files on disk.
fn no_grace() -> CompactionPolicy {
    CompactionPolicy {
        grace: std::time::Duration::ZERO,
        ..Default::default()
    }
}

async fn count(t: &ExperimentTracker, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    let ctx = t.context().await?;
    Ok(pretty_format_batches(&ctx.sql(sql).await?.collect().await?)?.to_string())
}

#[tokio::test]
async fn runs_log_search_and_refuse_bad_requests() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
    let t = ExperimentTracker::new(storage.clone()).with_compaction(no_grace());

    let mut ids = Vec::new();
    for (model, lr, acc) in [
        ("xgb", "0.1", 0.93),
        ("xgb", "0.3", 0.88),
        ("logreg", "0.01", 0.91),
    ] {
        let mut run = t
            .start_run(
                "churn",
                Some(&format!("{model}-{lr}")),
                &kv(&[("team", "growth")]),
            )
            .await?;
        run.log_params(&kv(&[("model", model), ("lr", lr)]))?;
        // Same value again is fine; a different one is refused and nothing changes.
        run.log_params(&kv(&[("model", model)]))?;
        let e = run
            .log_params(&kv(&[("lr", "9"), ("new", "1")]))
            .unwrap_err();
        assert!(e.to_string().contains("param `lr` is already"), "{e}");
        // So is one key with two values in one call (nothing of it kept).
        let e = run
            .log_params(&kv(&[("seed", "1"), ("seed", "2")]))
            .unwrap_err();
        assert!(e.to_string().contains("param `seed` is already `1`"), "{e}");
        run.log_params(&kv(&[("seed", "2"), ("seed", "2")]))?;
        // Metric values must be finite, as the CLI requires.
        for bad in [f64::NAN, f64::INFINITY] {
            let e = run.log_metrics(&[("loss", bad, 0)]).await.unwrap_err();
            assert!(e.to_string().contains("metric value `loss="), "{e}");
        }
        let points: Vec<(&str, f64, i64)> = (0..50_000)
            .map(|s| ("loss", 1.0 / (s as f64 + 1.0), s))
            .chain((0..50_000).map(|s| ("accuracy", acc * (s as f64 + 1.0) / 50_000.0, s)))
            .collect();
        run.log_metrics(&points).await?;
        let sha = run
            .log_artifact_bytes("model/weights.bin", Bytes::from(vec![3u8; 1000]))
            .await?;
        assert_eq!(sha, mlwatch::registry::artifact::sha256_hex(&[3u8; 1000]));
        let e = run
            .log_artifact_bytes("../escape.bin", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("`../escape.bin`"), "{e}");
        ids.push(run.id().to_string());
        run.end(RunStatus::Finished).await?;
    }

    // 100,000 metric points per run: a couple of files, not thousands.
    let metric_files = std::fs::read_dir(dir.path().join("tracking/metrics"))?.count();
    assert!(metric_files <= 6, "{metric_files} metric files for 3 runs");

    // Search with and / or / parentheses / order by.
    let out = t
        .search(
            "metrics.accuracy > 0.9 and (params.model = 'xgb' or params.lr < 0.05) order by metrics.accuracy desc",
            Some("churn"),
        )
        .await?;
    let text = pretty_format_batches(&out)?.to_string();
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("churn")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("xgb-0.1") && rows[1].contains("logreg-0.01"),
        "{text}"
    );
    // The same question straight in SQL.
    let sql = count(
        &t,
        "SELECT count(*) AS n FROM runs r JOIN latest_metrics m ON m.run_id = r.run_id \
         WHERE m.key = 'accuracy' AND m.value > 0.9 AND r.status = 'FINISHED'",
    )
    .await?;
    assert!(sql.contains("| 2 |"), "{sql}");
    let sql = count(&t, "SELECT count(*) AS n FROM metrics").await?;
    assert!(sql.contains("| 300000 |"), "{sql}");
    let sql = count(
        &t,
        "SELECT count(*) AS n FROM tags WHERE key = 'team' AND value = 'growth'",
    )
    .await?;
    assert!(sql.contains("| 3 |"), "{sql}");
    let sql = count(&t, "SELECT name, runs FROM experiments").await?;
    assert!(sql.contains("| churn | 3    |"), "{sql}");

    // Compaction merges the small files; every question has the same answer.
    let before =
        pretty_format_batches(&t.search("metrics.accuracy > 0.9", None).await?)?.to_string();
    let report = t.compact().await?;
    assert!(
        report.iter().any(|c| c.table == "metrics" && c.files > 1),
        "{report:?}"
    );
    for table in ["run_log", "params", "metrics", "tag_log", "artifacts"] {
        let files = std::fs::read_dir(dir.path().join("tracking").join(table))?.count();
        assert_eq!(files, 1, "{table}");
    }
    let after =
        pretty_format_batches(&t.search("metrics.accuracy > 0.9", None).await?)?.to_string();
    assert_eq!(before, after);
    let sql = count(&t, "SELECT count(*) AS n FROM metrics").await?;
    assert!(sql.contains("| 300000 |"), "{sql}");

    // A malformed filter and an unknown run id are clear errors.
    let e = t.search("metrics.accuracy >> 1", None).await.unwrap_err();
    assert!(e.to_string().contains("metrics.accuracy >> 1"), "{e}");
    let e = t
        .resume("0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // An ended run cannot be resumed for logging.
    let e = t.resume(&ids[0]).await.unwrap_err();
    assert!(e.to_string().contains("has ended"), "{e}");
    Ok(())
}

/// A run whose owner process is gone is marked KILLED on the next read.
#[tokio::test]
async fn orphaned_runs_are_marked_killed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let t = ExperimentTracker::new(Storage::open(
        dir.path().to_str().unwrap(),
        &Default::default(),
    )?);
    let mut child = std::process::Command::new("true").spawn()?;
    let dead = child.id();
    child.wait()?;
    let orphan = t.start_run_owned_by("e", None, &[], Some(dead)).await?;
    let live = t.start_run("e", None, &[]).await?;
    let reaped = t.reap_orphans().await?;
    assert_eq!(reaped, vec![orphan.id().to_string()]);
    let text = count(&t, "SELECT run_id, status FROM runs ORDER BY status").await?;
    assert!(
        text.contains(&format!("{} | KILLED", orphan.id())),
        "{text}"
    );
    assert!(text.contains(&format!("{} | RUNNING", live.id())), "{text}");
    Ok(())
}

/// `mlwatch runs --data <data> <args>`.
fn mlwatch(data: &std::path::Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let mut all = vec!["runs", "--data", data.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    crate::run_mlwatch(all)
}

/// The CLI a training script calls, then search, compare and `mlwatch sql`.
#[test]
fn cli_runs_from_start_to_compare() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let model = dir.path().join("model.pkl");
    std::fs::write(&model, b"pickled model bytes")?;
    let mut ids = Vec::new();
    for (name, depth, acc) in [("a", "4", "0.91"), ("b", "6", "0.94")] {
        let id = mlwatch(
            &data,
            &[
                "start", "-e", "cli-exp", "--name", name, "--tag", "owner=ci",
            ],
        )?
        .trim()
        .to_string();
        mlwatch(
            &data,
            &["log-param", &id, &format!("max_depth={depth}"), "model=xgb"],
        )?;
        for step in 0..3 {
            mlwatch(
                &data,
                &[
                    "log-metric",
                    &id,
                    &format!("accuracy={acc}"),
                    "loss=0.5",
                    "--step",
                    &step.to_string(),
                ],
            )?;
        }
        let sha = mlwatch(
            &data,
            &[
                "log-artifact",
                &id,
                model.to_str().unwrap(),
                "--path",
                "model/model.pkl",
            ],
        )?;
        assert_eq!(
            sha.trim(),
            mlwatch::registry::artifact::sha256_hex(b"pickled model bytes")
        );
        // Refused requests name the problem and change nothing.
        let e = mlwatch(&data, &["log-param", &id, "max_depth=99"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_depth") && e.contains("cannot change"),
            "{e}"
        );
        let e = mlwatch(
            &data,
            &[
                "log-artifact",
                &id,
                model.to_str().unwrap(),
                "--path",
                "../x",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`../x`"), "{e}");
        mlwatch(&data, &["end", &id])?;
        ids.push(id);
    }
    let e = mlwatch(&data, &["end", "0123456789abcdef0123456789abcdef"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = mlwatch(&data, &["search", "metrics.accuracy >"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("filter `metrics.accuracy >`"), "{e}");

    let out = mlwatch(
        &data,
        &[
            "--format",
            "json",
            "search",
            "params.max_depth >= 5 or metrics.accuracy < 0.5",
        ],
    )?;
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["run_name"], "b");
    assert_eq!(rows[0]["status"], "FINISHED");

    let cmp = mlwatch(&data, &["compare", &ids[0], &ids[1]])?;
    let line = |k: &str| {
        cmp.lines()
            .find(|l| l.contains(k))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("params.max_depth").starts_with('*'), "{cmp}");
    assert!(!line("params.model").starts_with('*'), "{cmp}");
    assert!(
        line("metrics.accuracy").starts_with('*') && line("metrics.accuracy").contains("0.94"),
        "{cmp}"
    );

    // The plot: a real SVG with one line per run, axis labels and a legend.
    let svg = dir.path().join("accuracy.svg");
    mlwatch(
        &data,
        &[
            "plot",
            "--metric",
            "accuracy",
            &ids[0],
            &ids[1],
            "--out",
            svg.to_str().unwrap(),
        ],
    )?;
    let text = std::fs::read_to_string(&svg)?;
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    // Each run's colour strokes its line and its legend sample (width 2);
    // the axes and grid are black, width 1.
    let mut colours = std::collections::BTreeMap::new();
    for poly in text.split("<polyline").skip(1) {
        if poly.contains("stroke-width=\"2\"") {
            let c = poly
                .split("stroke=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            *colours.entry(c.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(colours.len(), 2, "one line per run: {colours:?}");
    assert!(
        colours.values().all(|n| *n == 2),
        "line + legend per run: {colours:?}"
    );
    let labels: std::collections::BTreeSet<&str> = text
        .split("<text")
        .skip(1)
        .filter_map(|t| {
            t.split_once('>')
                .and_then(|(_, rest)| rest.split("</text>").next())
        })
        .map(str::trim)
        .collect();
    // Title, x and y axis labels, and one legend entry per run (named by run).
    for label in ["accuracy by step", "step", "accuracy", "a", "b"] {
        assert!(labels.contains(label), "{label} missing from {labels:?}");
    }
    let e = mlwatch(
        &data,
        &[
            "plot",
            "--metric",
            "nope",
            &ids[0],
            "--out",
            svg.to_str().unwrap(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no finite values of metric `nope`"), "{e}");

    let text = crate::run_mlwatch([
        "sql",
        "--format",
        "json",
        "--data",
        data.to_str().expect("UTF-8 path"),
        "SELECT r.run_name, m.value FROM runs r JOIN latest_metrics m ON m.run_id = r.run_id WHERE m.key = 'accuracy' ORDER BY m.value DESC",
    ])?;
    assert_eq!(
        text.lines().next(),
        Some(r#"{"run_name":"b","value":0.94}"#),
        "{text}"
    );
    Ok(())
}

/// Compaction merges small files in bounded groups, leaves earlier outputs
/// alone, and never changes an answer.
#[tokio::test]
async fn compaction_merges_in_bounded_groups() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
    let t = ExperimentTracker::new(storage).with_compaction(no_grace());
    for i in 0..30 {
        let mut run = t.start_run("groups", None, &[]).await?;
        run.log_params(&kv(&[("i", &i.to_string()), ("model", "xgb")]))?;
        run.log_metrics(&[("loss", 1.0 / (i as f64 + 1.0), 0)])
            .await?;
        run.end(RunStatus::Finished).await?;
    }
    let files = |table: &str| -> Result<Vec<u64>, std::io::Error> {
        let mut sizes = Vec::new();
        for e in std::fs::read_dir(dir.path().join("tracking").join(table))? {
            sizes.push(e?.metadata()?.len());
        }
        Ok(sizes)
    };
    let totals = "SELECT (SELECT count(*) FROM run_log) AS r, (SELECT count(*) FROM params) AS p, \
                  (SELECT count(*) FROM metrics) AS m, (SELECT round(sum(value), 9) FROM metrics) AS s";
    let before_totals = count(&t, totals).await?;
    let before = pretty_format_batches(&t.search("params.model = 'xgb'", None).await?)?.to_string();
    let params_before = files("params")?;
    assert_eq!(params_before.len(), 30);

    // Groups of about four small files.
    let limit = 4 * params_before.iter().max().copied().unwrap_or(0);
    let report = t.compact_with(limit).await?;
    let params_after = files("params")?;
    assert!(
        params_after.len() > 1 && params_after.len() < 30 / 2,
        "{} files after compaction: {report:?}",
        params_after.len()
    );
    assert_eq!(count(&t, totals).await?, before_totals);
    assert_eq!(
        pretty_format_batches(&t.search("params.model = 'xgb'", None).await?)?.to_string(),
        before
    );

    // Files of at least half the group size stay as they are.
    let largest = std::fs::read_dir(dir.path().join("tracking/params"))?
        .map(|e| e.map(|e| (e.metadata().map(|m| m.len()).unwrap_or(0), e.path())))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .expect("files");
    t.compact_with(2 * largest.0).await?;
    assert!(largest.1.exists(), "{largest:?} was rewritten");
    assert!(files("params")?.len() < params_after.len());
    assert_eq!(count(&t, totals).await?, before_totals);
    // The default group size merges everything into one file per table.
    t.compact().await?;
    for table in ["run_log", "params", "metrics"] {
        assert_eq!(files(table)?.len(), 1, "{table}");
    }
    assert_eq!(count(&t, totals).await?, before_totals);
    Ok(())
}

/// A param whose key another process claimed first (its marker exists with
/// another value) is refused when the run flushes, and no row is written:
/// markers decide before rows are written.
#[tokio::test]
async fn a_param_claimed_elsewhere_is_refused_without_a_row() -> TestResult {
    use mlwatch::tracking::markers;
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
    let t = ExperimentTracker::new(storage.clone());
    let mut run = t.start_run("claims", None, &[]).await?;
    let theirs = markers::ParamMark {
        key: "lr".into(),
        value: "0.3".into(),
        logged_at: 1,
    };
    assert!(
        storage
            .put_if_absent(
                &markers::param_path(run.id(), "lr"),
                Bytes::from(serde_json::to_vec(&theirs)?),
            )
            .await?
    );
    run.log_params(&kv(&[("lr", "0.1"), ("depth", "4")]))?;
    let e = run.flush().await.unwrap_err();
    assert!(e.to_string().contains("param `lr` is already `0.3`"), "{e}");
    let rows = count(
        &t,
        &format!(
            "SELECT key, value FROM params WHERE run_id = '{}'",
            run.id()
        ),
    )
    .await?;
    assert!(!rows.contains("lr") && !rows.contains("depth"), "{rows}");
    // The same value as the stored one is accepted and not written again.
    run.log_params(&kv(&[("depth", "4")]))?;
    run.flush().await?;
    let rows = count(
        &t,
        &format!(
            "SELECT count(*) AS n FROM params WHERE run_id = '{}'",
            run.id()
        ),
    )
    .await?;
    assert!(rows.contains("| 1 |"), "{rows}");
    Ok(())
}

/// Points at the same step and time: the latest value is the largest, in
/// `latest_metrics` and in a search alike (MLflow's tie-break), whatever
/// order they were logged in.
#[tokio::test]
async fn tied_metric_points_resolve_to_the_largest_value_everywhere() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
    let t = ExperimentTracker::new(storage.clone()).with_compaction(no_grace());
    let mut run = t.start_run("ties", None, &kv(&[])).await?;
    let point = |value: f64, step: i64| mlwatch::tracking::tables::MetricPoint {
        key: "loss".into(),
        value,
        step,
        timestamp: 1_767_225_600_000_000,
    };
    run.log_metric_points([point(0.9, 4), point(0.5, 7), point(0.4, 7), point(0.45, 7)])
        .await?;
    let id = run.id().to_string();
    run.end(RunStatus::Finished).await?;
    let latest = count(&t, "SELECT value FROM latest_metrics WHERE key = 'loss'").await?;
    assert!(latest.contains("| 0.5   |"), "{latest}");
    let hit = pretty_format_batches(&t.search("metrics.loss > 0.47", None).await?)?.to_string();
    assert!(hit.contains(&id), "{hit}");
    let miss = pretty_format_batches(&t.search("metrics.loss < 0.47", None).await?)?.to_string();
    assert!(!miss.contains(&id), "{miss}");
    // MLflow's other spellings run too.
    let both = format!("attr.run_id in ('{id}', 'other') and metric.\"loss\" not in (0.4, 0.45)");
    let hit = pretty_format_batches(&t.search(&both, None).await?)?.to_string();
    assert!(hit.contains(&id), "{hit}");
    Ok(())
}
