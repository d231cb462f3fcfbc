//! Backfills over the archive of a streamed run (the demo's): the same
//! rows, twice the same, a feature declared later, one version, JSON-lines
//! input, and a scheduled backfill killed mid-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mlwatch::Config;
use mlwatch::backfill::{self, BackfillArgs, Progress};

use crate::pipeline::{
    ALL_AB, ALL_ALERTS, ALL_CONCEPT, ALL_DECISIONS, ALL_DISTRIBUTION, ALL_DRIFT, ALL_PERFORMANCE,
    ALL_QUALITY, ALL_SUMMARY, query_csv,
};
use crate::{TestResult, demo_output, run_mlwatch};

/// Every result table's rows, by query.
async fn results(
    data: &Path,
) -> Result<BTreeMap<&'static str, String>, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for sql in [
        ALL_DRIFT,
        ALL_SUMMARY,
        ALL_QUALITY,
        ALL_DISTRIBUTION,
        ALL_PERFORMANCE,
        ALL_CONCEPT,
        ALL_AB,
        ALL_DECISIONS,
        ALL_ALERTS,
    ] {
        out.insert(sql, query_csv(data, sql).await?);
    }
    Ok(out)
}

fn assert_same(a: &BTreeMap<&str, String>, b: &BTreeMap<&str, String>, what: &str) {
    for (sql, rows) in a {
        assert!(
            rows.lines().count() > 1 || sql.contains("concept_drift"),
            "{what}: {sql} is empty"
        );
        assert_eq!(rows, &b[sql], "{what}: {sql}");
    }
}

/// The demo's configuration over `data`, as TOML (the broker is not used).
fn demo_toml(data: &Path) -> String {
    let reference = data.join("reference").join("credit_risk.parquet");
    mlwatch::demo::demo_config_toml("127.0.0.1:1", data, &reference)
}

/// The whole demo run: its windows are 2026-01-01 00:00 to 00:10.
fn whole_run() -> BackfillArgs {
    BackfillArgs {
        from: "2026-01-01".into(),
        to: "2026-01-02".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_the_archive_reproduces_the_stream() -> TestResult {
    let (_tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let streamed = results(&data).await?;
    let config = Config::from_toml_str(&demo_toml(&data))?;

    let first = backfill::run(&config, &whole_run(), Progress::Quiet).await?;
    assert_eq!(first.events, 20_000, "{first:?}");
    // The stream wrote every archive file sorted: none is sorted again.
    assert!(first.files_merged >= 4, "{first:?}");
    assert_eq!(first.files_sorted, 0, "{first:?}");
    assert_eq!(first.windows, 10, "{first:?}");
    assert!(first.labels_joined > 15_000, "{first:?}");
    assert!(first.dead_letters.is_empty(), "{first:?}");
    assert_same(&streamed, &results(&data).await?, "first backfill");

    // Twice: the same files, nothing added or removed.
    let second = backfill::run(&config, &whole_run(), Progress::Quiet).await?;
    assert_eq!(second.files_written, first.files_written);
    assert_eq!(second.files_removed, 0, "{second:?}");
    assert_same(&streamed, &results(&data).await?, "second backfill");

    // One version: its rows replaced in place, the other's kept; A/B alone.
    let v2 = BackfillArgs {
        version: Some("2".into()),
        ..whole_run()
    };
    let one = backfill::run(&config, &v2, Progress::Quiet).await?;
    assert!(one.events > 5_000 && one.events < 15_000, "{one:?}");
    assert!(!one.rows.contains_key("ab_results"), "{one:?}");
    assert!(one.files_written >= 30, "{one:?}");
    assert_eq!(one.rows.get("drift_results"), Some(&(8 * 10)), "{one:?}");
    assert_same(&streamed, &results(&data).await?, "version 2 backfill");

    // Part of the range: only its windows are rewritten, and those that
    // carry no state from earlier windows come out the same.
    let part = BackfillArgs {
        from: "2026-01-01T00:03:00Z".into(),
        to: "2026-01-01T00:05:00Z".into(),
        ..Default::default()
    };
    let p = backfill::run(&config, &part, Progress::Quiet).await?;
    assert_eq!(p.windows, 2, "{p:?}");
    let after = results(&data).await?;
    for sql in [
        ALL_DRIFT,
        ALL_SUMMARY,
        ALL_QUALITY,
        ALL_DISTRIBUTION,
        ALL_PERFORMANCE,
    ] {
        assert_eq!(streamed[sql], after[sql], "partial backfill: {sql}");
    }
    // Tables with state across windows restart it at 00:03; outside the two
    // windows nothing changed.
    let outside = |csv: &str| -> Vec<String> {
        csv.lines()
            .filter(|l| !l.contains("2026-01-01T00:03:00") && !l.contains("2026-01-01T00:04:00"))
            .map(String::from)
            .collect()
    };
    for sql in [ALL_ALERTS, ALL_AB, ALL_DECISIONS] {
        assert_eq!(
            outside(&streamed[sql]),
            outside(&after[sql]),
            "partial backfill: {sql}"
        );
    }

    // No events in the range: an error, and nothing is removed.
    let empty = BackfillArgs {
        from: "2025-06-01".into(),
        to: "2025-06-02".into(),
        ..Default::default()
    };
    let e = backfill::run(&config, &empty, Progress::Quiet)
        .await
        .expect_err("nothing to backfill")
        .to_string();
    assert!(e.contains("nothing to backfill"), "{e}");
    let off = Config::from_toml_str(
        &demo_toml(&data).replace("[archive]\nenabled = true", "[archive]\nenabled = false"),
    )?;
    let e = backfill::run(&off, &empty, Progress::Quiet)
        .await
        .expect_err("archive off")
        .to_string();
    assert!(e.contains("archive.enabled"), "{e}");
    assert_eq!(results(&data).await?, after);
    Ok(())
}

/// The Parquet files under `dir`, recursively, in path order.
fn parquet_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `path`'s rows written again in reverse order, without saying they are
/// sorted (as archives written before files were sorted, or exports), to
/// `to`.
fn write_unsorted(path: &Path, to: &Path) -> TestResult {
    use datafusion::arrow::array::UInt32Array;
    use datafusion::arrow::compute::{concat_batches, take_record_batch};
    let batches = mlwatch::storage::decode_parquet(std::fs::read(path)?.into())?;
    let batch = concat_batches(&batches[0].schema(), &batches)?;
    let reversed = UInt32Array::from_iter_values((0..batch.num_rows() as u32).rev());
    let batch = take_record_batch(&batch, &reversed)?;
    std::fs::write(
        to,
        mlwatch::storage::encode_parquet(batch.schema(), &[batch])?,
    )?;
    Ok(())
}

/// Archive files that do not say they are sorted are sorted by DataFusion,
/// in the same merge as the files that do; a record two files hold (a
/// crashed run's and its replay's) is read once, whichever kinds of file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_and_overlapping_archive_files_backfill_the_same_rows() -> TestResult {
    let (_tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let streamed = results(&data).await?;
    let config = Config::from_toml_str(&demo_toml(&data))?;
    let (mut merged, mut sorted) = (0, 0);
    if data.join("features").exists() {
        merged += parquet_files(&data.join("features"))?.len() as u64;
    }
    for table in ["predictions", "outcomes"] {
        let files = parquet_files(&data.join(table))?;
        assert!(files.len() >= 2, "{table}: {files:?}");
        let n = files.len() as u64;
        // Every other file rewritten, and one copy of each kind beside them.
        (merged, sorted) = (merged + n / 2 + 1, sorted + n.div_ceil(2) + 1);
        for (i, f) in files.iter().enumerate() {
            if i % 2 == 0 {
                write_unsorted(f, f)?;
            }
        }
        // Copies beside them: one left sorted, one not.
        std::fs::copy(&files[1], files[1].with_file_name("copy-sorted.parquet"))?;
        let last = &files[files.len() - 1];
        write_unsorted(last, &last.with_file_name("copy-unsorted.parquet"))?;
    }
    let s = backfill::run(&config, &whole_run(), Progress::Quiet).await?;
    assert!(s.dead_letters.is_empty(), "{s:?}");
    assert_eq!(s.events, 20_000, "{s:?}");
    assert_eq!((s.files_merged, s.files_sorted), (merged, sorted), "{s:?}");
    assert_same(&streamed, &results(&data).await?, "mixed archive");
    Ok(())
}

/// A feature declared after the stream ran: the archive kept its values, so
/// a backfill adds its rows and leaves the other columns' rows as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_declared_later_is_backfilled_from_the_archive() -> TestResult {
    let (_tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let full = demo_toml(&data);
    // As if `device` had not been declared: backfill without it ...
    let without = Config::from_toml_str(&full.replace("device = \"categorical\"\n", ""))?;
    backfill::run(&without, &whole_run(), Progress::Quiet).await?;
    let before = query_csv(&data, UNADJUSTED).await?;
    assert!(!before.contains(",device,"), "{before}");
    // ... then declare it.
    let with = Config::from_toml_str(&full)?;
    backfill::run(&with, &whole_run(), Progress::Quiet).await?;
    let after = query_csv(&data, UNADJUSTED).await?;
    let device: Vec<&str> = after.lines().filter(|l| l.contains(",device,")).collect();
    assert_eq!(
        device.len(),
        2 * 10,
        "a row per version and window: {after}"
    );
    let others: Vec<&str> = after.lines().filter(|l| !l.contains(",device,")).collect();
    assert_eq!(others, before.lines().collect::<Vec<_>>());
    let quality_device = query_csv(
        &data,
        "SELECT count(*) AS n FROM data_quality WHERE feature = 'device'",
    )
    .await?;
    assert_eq!(quality_device, "n\n20\n");
    Ok(())
}

/// Drift rows without the columns a correction across a window's columns
/// sets (adding a column changes the family, as it should).
const UNADJUSTED: &str = "SELECT window_start, version, kind, feature, method, statistic, p_value, distance, n_reference, n_current FROM drift_results ORDER BY window_start, version, kind, feature";

/// JSON lines in, bad lines out as dead letters, events outside the range
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_backfilled_with_dead_letters() -> TestResult {
    let (_tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let mut config = Config::from_toml_str(&demo_toml(&data))?;
    // Export the first two windows' predictions as JSON lines, with a bad
    // line, an event of another day, and an event of a (version, variant)
    // the first window has no room for (the stream never read these files:
    // what the step refuses in them is a dead letter too).
    let export = data.join("export");
    std::fs::create_dir_all(&export)?;
    let mut generator = mlwatch::demo::Generator::new(7);
    let mut lines = String::new();
    for i in 0..2_000u64 {
        let ts = 1_767_225_600_000 + i as i64 * 60;
        lines.push_str(&generator.event_json(i, ts, Default::default()));
        lines.push('\n');
        if i == 10 {
            lines.push_str("{not json\n");
        }
        if i == 500 {
            let (extra, _) = generator.event_as(8_888_888, ts, Default::default(), "x", "99");
            lines.push_str(&extra);
            lines.push('\n');
        }
    }
    lines.push_str(&generator.event_json(9_999_999, 1_767_312_000_000, Default::default()));
    lines.push('\n');
    let groups: std::collections::BTreeSet<(String, String)> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["ts"].as_i64().is_some_and(|t| t < 1_767_225_660_000))
        .filter(|v| v["version"] != "99")
        .map(|v| (v["version"].to_string(), v["variant"].to_string()))
        .collect();
    config.window.max_groups = groups.len();
    std::fs::write(export.join("part-0.jsonl"), lines)?;
    let args = BackfillArgs {
        from: "2026-01-01T00:00:00Z".into(),
        to: "2026-01-01T00:02:00Z".into(),
        input: Some(format!("{}/*.jsonl", export.display())),
        ..Default::default()
    };
    let s = backfill::run(&config, &args, Progress::Quiet).await?;
    assert_eq!(s.records, 2_003, "{s:?}");
    assert_eq!(s.events, 2_000, "{s:?}");
    assert_eq!(s.outside, 1, "{s:?}");
    assert_eq!(s.dead_letters.get("bad_json"), Some(&1), "{s:?}");
    assert_eq!(s.dead_letters.get("too_many_groups"), Some(&1), "{s:?}");
    assert!(s.refused.is_empty(), "{s:?}");
    assert_eq!(s.windows, 2, "{s:?}");
    let dead = query_csv(
        &data,
        "SELECT topic, \"offset\", reason FROM dead_letters WHERE topic = 'backfill'",
    )
    .await?;
    assert_eq!(dead.lines().nth(1), Some("backfill,12,bad_json"), "{dead}");
    assert_eq!(
        dead.lines().nth(2),
        Some("backfill,503,too_many_groups"),
        "{dead}"
    );
    let n = query_csv(
        &data,
        "SELECT sum(n_current) AS n FROM drift_results WHERE feature = 'age' AND window_start < '2026-01-01T00:02:00Z'",
    )
    .await?;
    assert_eq!(n, "n\n2000\n");
    // Bad arguments name themselves.
    for (input, what) in [
        ("/nowhere/*.jsonl", "/nowhere"),
        ("/tmp/x/*.parquet", "archive folder"),
    ] {
        let args = BackfillArgs {
            input: Some(input.into()),
            ..whole_run()
        };
        let e = backfill::run(&config, &args, Progress::Quiet)
            .await
            .expect_err(input)
            .to_string();
        assert!(e.contains(what), "{input}: {e}");
    }
    Ok(())
}

/// JSON-lines files out of event-time order: the second file's events are
/// behind the first's watermark, so they are late: dead letters (the
/// stream never read them), and the window they alone would have filled
/// keeps the stream's results instead of being emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_json_lines_are_dead_letters_and_their_window_is_kept() -> TestResult {
    let (_tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let config = Config::from_toml_str(&demo_toml(&data))?;
    let window0 = "SELECT feature, method, statistic, n_current FROM drift_results \
                   WHERE window_start = '2026-01-01T00:00:00Z' ORDER BY version, feature";
    let before = query_csv(&data, window0).await?;
    assert!(before.lines().count() > 10, "{before}");
    let export = data.join("export");
    std::fs::create_dir_all(&export)?;
    let mut generator = mlwatch::demo::Generator::new(9);
    let mut file = |name: &str, from: u64, to: u64| -> std::io::Result<()> {
        // A byte-order mark first, as Windows tools write it.
        let mut text = String::from("\u{feff}");
        for i in from..to {
            let ts = 1_767_225_600_000 + i as i64 * 60;
            text.push_str(&generator.event_json(i, ts, Default::default()));
            text.push('\n');
        }
        std::fs::write(export.join(name), text)
    };
    file("a.jsonl", 1_000, 2_000)?; // window 1
    file("b.jsonl", 0, 1_000)?; // window 0, read after a.jsonl
    let args = BackfillArgs {
        from: "2026-01-01T00:00:00Z".into(),
        to: "2026-01-01T00:02:00Z".into(),
        input: Some(format!("{}/*.jsonl", export.display())),
        ..Default::default()
    };
    let s = backfill::run(&config, &args, Progress::Quiet).await?;
    assert_eq!(s.records, 2_000, "{s:?}");
    assert_eq!(s.events, 1_000, "{s:?}");
    assert_eq!(s.dead_letters.get("late"), Some(&1_000), "{s:?}");
    assert!(
        !s.dead_letters.contains_key("bad_json"),
        "the BOM is skipped: {s:?}"
    );
    assert_eq!(s.windows, 1, "{s:?}");
    assert_eq!(query_csv(&data, window0).await?, before);
    Ok(())
}

/// `mlwatch schedule` killed while its backfill runs: the restart marks the
/// run interrupted and runs the missed backfill once; `jobs` has both, and
/// the results are the stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_killed_mid_run_runs_the_missed_backfill_once() -> TestResult {
    let (tmp, data) = demo_output().await?;
    let data = PathBuf::from(data);
    let streamed = results(&data).await?;
    let config = tmp.path().join("mlwatch.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[schedules]]\nname = \"replay\"\ncron = \"* * * * * *\"\nfrom = \"2026-01-01\"\nto = \"2026-01-02\"\n",
            demo_toml(&data)
        ),
    )?;
    let jobs = data.join("jobs").join("schedule=replay");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["schedule", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut child = crate::Killed(child);
    // Killed as soon as its first job is recorded as running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_dir(&jobs).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "no job started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.0.kill()?;
    child.0.wait()?;
    let running = query_csv(&data, "SELECT outcome FROM jobs").await?;
    assert_eq!(running, "outcome\nrunning\n", "killed before it ended");
    // Several scheduled times pass while it is down: one run makes up for
    // them all.
    std::thread::sleep(Duration::from_millis(2_500));

    let out = run_mlwatch([
        "schedule",
        "--once",
        "--config",
        &config.display().to_string(),
    ])?;
    let passes: serde_json::Value = serde_json::from_str(&out)?;
    let outcomes: Vec<&str> = passes[0]["jobs"]
        .as_array()
        .map(|j| j.iter().filter_map(|j| j["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(outcomes, ["interrupted", "succeeded"], "{out}");
    let rows = query_csv(
        &data,
        "SELECT outcome, attempt, events, windows, rows > 0 AS wrote, duration_s >= 0 AS timed FROM jobs ORDER BY started",
    )
    .await?;
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 3, "{rows}");
    assert!(lines[1].starts_with("interrupted,1,,,"), "{rows}");
    assert!(lines[2].starts_with("succeeded,"), "{rows}");
    assert!(lines[2].ends_with(",20000,10,true,true"), "{rows}");
    assert_same(&streamed, &results(&data).await?, "scheduled backfill");
    Ok(())
}
