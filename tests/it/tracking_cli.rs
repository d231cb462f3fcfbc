//! Experiment tracking as scripts, CI steps and several shells use it:
//! runs outlive the shell that started them, immutable params and the end
//! status hold under concurrent processes (locally and on S3), a `log-*`
//! call reads only its own run, and the CLI's answers are complete.

use std::collections::BTreeMap;
use std::process::Command;

use crate::TestResult;

/// `mlwatch runs --data <data> <args>`.
fn runs(data: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let mut all = vec!["runs", "--data", data];
    all.extend_from_slice(args);
    crate::run_mlwatch(all)
}

fn status(data: &str, id: &str) -> Result<String, Box<dyn std::error::Error>> {
    let out = runs(data, &["--format", "json", "show", id])?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(v["run"]["status"].as_str().unwrap_or_default().to_string())
}

/// A run started from a shell that exits at once (a CI step, `bash -c`)
/// stays RUNNING and takes more calls; only a run given an owner process is
/// reaped, once that process is gone.
#[test]
fn runs_outlive_the_shell_that_started_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_mlwatch");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{bin}' runs --data '{data}' start -e ci --name step"
        ))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout)?.trim().to_string();
    // The shell is gone; reads must not kill the run.
    let list = runs(data, &["list"])?;
    assert!(
        list.contains("RUNNING") && !list.contains("KILLED"),
        "{list}"
    );
    assert_eq!(status(data, &id)?, "RUNNING");
    runs(data, &["log-metric", &id, "loss=0.5", "--step", "1"])?;
    runs(data, &["log-param", &id, "lr=0.1"])?;
    runs(data, &["end", &id])?;
    assert_eq!(status(data, &id)?, "FINISHED");

    // An owner process that exits without `end`: KILLED on the next read.
    let mut owner = Command::new("sleep").arg("30").spawn()?;
    let pid = owner.id().to_string();
    let owned = runs(data, &["start", "-e", "ci", "--owner-pid", &pid])?
        .trim()
        .to_string();
    assert_eq!(status(data, &owned)?, "RUNNING");
    owner.kill()?;
    owner.wait()?;
    assert_eq!(status(data, &owned)?, "KILLED");
    let e = runs(data, &["log-metric", &owned, "loss=1"]).unwrap_err();
    assert!(e.to_string().contains("has ended"), "{e}");
    // The unowned run is still as it was.
    assert_eq!(status(data, &id)?, "FINISHED");

    let e = runs(data, &["start", "-e", "ci", "--owner-pid", "999999999"]).unwrap_err();
    assert!(e.to_string().contains("--owner-pid 999999999"), "{e}");
    Ok(())
}

/// Four processes log 20 keys each into one run with their own values, at
/// once: every key keeps exactly one value, exactly one writer per key
/// succeeds, the others get the sequential-change error; then three
/// concurrent `end`s with different statuses: one wins.
fn concurrent_writers(data: &str) -> TestResult {
    let id = runs(data, &["start", "-e", "race"])?.trim().to_string();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (data, id) = (data.to_string(), id.clone());
            std::thread::spawn(move || {
                (0..20)
                    .map(|k| {
                        let r = runs(&data, &["log-param", &id, &format!("k{k:02}=writer{w}")]);
                        (k, w, r.map(|_| ()).map_err(|e| e.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut winners: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for h in writers {
        for (k, w, r) in h.join().expect("writer thread") {
            match r {
                Ok(()) => winners.entry(k).or_default().push(w),
                Err(e) => assert!(
                    e.contains(&format!("param `k{k:02}` is already"))
                        && e.contains("cannot change"),
                    "{e}"
                ),
            }
        }
    }
    assert_eq!(winners.len(), 20, "{winners:?}");
    assert!(winners.values().all(|w| w.len() == 1), "{winners:?}");
    // Stored: one row per key, with the winner's value.
    let sql = crate::run_mlwatch([
        "sql",
        "--data",
        data,
        "--format",
        "json",
        &format!(
            "SELECT key, count(*) AS n, min(value) AS v FROM params WHERE run_id = '{id}' GROUP BY key ORDER BY key"
        ),
    ])?;
    let rows: Vec<serde_json::Value> = sql
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 20, "{sql}");
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row["n"], 1, "{sql}");
        assert_eq!(row["v"], format!("writer{}", winners[&k][0]), "{sql}");
    }
    let found = runs(
        data,
        &[
            "--format",
            "json",
            "search",
            &format!("params.k00 = 'writer{}'", winners[&0][0]),
        ],
    )?;
    assert_eq!(found.lines().count(), 1, "{found}");

    let enders: Vec<_> = ["finished", "failed", "killed"]
        .into_iter()
        .map(|s| {
            let (data, id) = (data.to_string(), id.clone());
            std::thread::spawn(move || {
                (
                    s,
                    runs(&data, &["end", &id, "--status", s]).map_err(|e| e.to_string()),
                )
            })
        })
        .collect();
    let results: Vec<_> = enders
        .into_iter()
        .map(|h| h.join().expect("end thread"))
        .collect();
    let won: Vec<&str> = results
        .iter()
        .filter(|r| r.1.is_ok())
        .map(|r| r.0)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for (_, r) in &results {
        if let Err(e) = r {
            assert!(e.contains("has already ended as"), "{e}");
        }
    }
    assert_eq!(status(data, &id)?, won[0].to_uppercase());
    let n = crate::run_mlwatch([
        "sql",
        "--data",
        data,
        &format!("SELECT count(*) AS n FROM run_log WHERE run_id = '{id}' AND status <> 'RUNNING'"),
        "--format",
        "json",
    ])?;
    assert_eq!(n.trim(), r#"{"n":1}"#);
    Ok(())
}

#[test]
fn concurrent_writers_on_local_disk() -> TestResult {
    let dir = tempfile::tempdir()?;
    concurrent_writers(dir.path().join("store").to_str().unwrap())
}

/// The same on an S3 server (`.ci/run` starts moto and sets
/// `MLWATCH_TEST_S3_URL`).
#[test]
fn concurrent_writers_on_s3() -> TestResult {
    let Ok(bucket_url) = std::env::var("MLWATCH_TEST_S3_URL") else {
        eprintln!("MLWATCH_TEST_S3_URL is not set: S3 tracking race skipped (.ci/run sets it)");
        return Ok(());
    };
    concurrent_writers(&format!(
        "{bucket_url}/tracking-race-{}",
        std::process::id()
    ))
}

/// A `log-*` call reads its own run only: with every other run's files
/// unreadable, logging into a new run still works.
#[test]
fn log_calls_read_only_their_own_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let data = store.to_str().unwrap();
    for i in 0..3 {
        let id = runs(data, &["start", "-e", "other"])?.trim().to_string();
        runs(data, &["log-param", &id, &format!("i={i}")])?;
        runs(data, &["log-metric", &id, "m=1"])?;
    }
    // Every file of those runs becomes garbage.
    let mut broken = 0;
    for table in ["run_log", "params", "metrics", "tag_log"] {
        if let Ok(entries) = std::fs::read_dir(store.join("tracking").join(table)) {
            for e in entries {
                std::fs::write(e?.path(), b"not parquet")?;
                broken += 1;
            }
        }
    }
    assert!(broken >= 9, "{broken}");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, b"artifact")?;
    let id = runs(data, &["start", "-e", "mine"])?.trim().to_string();
    runs(data, &["log-param", &id, "lr=0.1"])?;
    runs(data, &["log-metric", &id, "loss=0.25", "--step", "3"])?;
    runs(data, &["set-tag", &id, "team=ml"])?;
    runs(data, &["log-artifact", &id, file.to_str().unwrap()])?;
    let e = runs(data, &["log-param", &id, "lr=0.2"]).unwrap_err();
    assert!(e.to_string().contains("cannot change"), "{e}");
    runs(data, &["end", &id])?;
    Ok(())
}

/// `show --format json` is one object with named sections; list and search
/// say when the limit cut the answer; an empty store says "no runs";
/// log-metric refuses NaN and infinities by key.
#[test]
fn cli_answers_are_complete() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    // A store that does not exist: read-only commands say so, create nothing.
    for args in [&["list"][..], &["search", ""], &["show", &"0".repeat(32)]] {
        let e = runs(data, args).unwrap_err();
        assert!(e.to_string().contains("no such folder"), "{args:?}: {e}");
    }
    assert!(!std::path::Path::new(data).exists());
    // An empty store: a sentence, never an empty ASCII table.
    std::fs::create_dir_all(data)?;
    let out = runs(data, &["list"])?;
    assert_eq!(out, "no runs\n");
    let out = crate::run_mlwatch(["sql", "--data", data, "SELECT run_id, status FROM runs"])?;
    assert!(
        out.contains("| run_id | status |") && !out.contains("++"),
        "{out}"
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = runs(data, &["start", "-e", "e", "--name", &format!("r{i}")])?
            .trim()
            .to_string();
        ids.push(id);
    }
    runs(data, &["log-param", &ids[0], "depth=4"])?;
    runs(data, &["log-metric", &ids[0], "acc=0.9", "--step", "2"])?;
    runs(data, &["set-tag", &ids[0], "team=ml"])?;
    let out = runs(data, &["--format", "json", "show", &ids[0]])?;
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["run"]["run_id"], ids[0].as_str(), "{out}");
    assert_eq!(v["params"]["depth"], "4", "{out}");
    assert_eq!(v["metrics"]["acc"]["value"], 0.9, "{out}");
    assert_eq!(v["metrics"]["acc"]["step"], 2, "{out}");
    assert_eq!(v["tags"]["team"], "ml", "{out}");
    assert_eq!(v["artifacts"], serde_json::json!([]), "{out}");
    // Empty sections in text: a header, no `++`.
    let text = runs(data, &["show", &ids[1]])?;
    assert!(!text.contains("++"), "{text}");
    assert!(text.contains("artifacts:\npath  size  sha256\n"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["runs", "--data", data, "list", "--limit", "2"])
        .output()?;
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(
        stdout.lines().filter(|l| l.contains("RUNNING")).count(),
        2,
        "{stdout}"
    );
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("showing 2 of 3 runs"), "{stderr}");

    for bad in ["nan", "NaN", "inf", "-inf", "infinity"] {
        let e = runs(
            data,
            &["log-metric", &ids[0], "ok=1", &format!("loss={bad}")],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("metric `loss`") && e.to_string().contains("finite"),
            "{e}"
        );
    }
    // Nothing of the refused call was logged.
    let out = runs(data, &["--format", "json", "show", &ids[0]])?;
    assert!(!out.contains("\"ok\""), "{out}");
    // Ending again with the same status is a no-op; another is refused.
    runs(data, &["end", &ids[0]])?;
    runs(data, &["end", &ids[0]])?;
    let e = runs(data, &["end", &ids[0], "--status", "failed"]).unwrap_err();
    assert!(e.to_string().contains("already ended as FINISHED"), "{e}");
    assert_eq!(status(data, &ids[0])?, "FINISHED");
    Ok(())
}
