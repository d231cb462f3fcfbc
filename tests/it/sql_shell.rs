//! `mlwatch sql` beyond one statement: the shipped queries by name with
//! parameters, Parquet output, and the interactive shell driven through
//! its standard input.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{TestResult, run_mlwatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_queries_parquet_output_and_the_shell_on_the_demo_output() -> TestResult {
    let (tmp, data) = crate::demo_output().await?;
    // `mlwatch sql --data DATA ARGS...`
    let sql = |args: &[&str]| {
        let mut all = vec!["sql", "--data", &data];
        all.extend(args);
        run_mlwatch(all)
    };

    // Every shipped query runs and returns rows on the demo's output.
    let listed = run_mlwatch(["sql", "--query", "list"])?;
    let queries: Vec<serde_json::Value> = listed
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(queries.len() >= 4, "{listed}");
    for q in &queries {
        let name = q["name"].as_str().ok_or("name")?;
        let mut args = vec!["sql", "--data", &data, "--format", "csv", "--query", name];
        let params: Vec<String> = q["params"]
            .as_array()
            .ok_or("params")?
            .iter()
            .map(|p| format!("{}=credit_risk", p.as_str().unwrap_or_default()))
            .collect();
        for p in &params {
            args.extend(["--param", p]);
        }
        let csv = run_mlwatch(&args)?;
        assert!(csv.lines().count() > 1, "{name}: no rows:\n{csv}");
    }
    // model_health: 10 windows x 2 versions, newest first.
    let health = |model: &str| {
        let param = format!("model={model}");
        sql(&[
            "--format",
            "csv",
            "--query",
            "model_health",
            "--param",
            &param,
        ])
    };
    let health = health("credit_risk")?;
    assert_eq!(health.lines().count(), 1 + 10 * 2, "{health}");
    assert!(
        health
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("2026-01-01T00:09:00"),
        "{health}"
    );
    let none = sql(&[
        "--format",
        "csv",
        "--query",
        "model_health",
        "--param",
        "model=nope",
    ])?;
    assert_eq!(none.lines().count(), 1, "a header only: {none}");

    // Errors name what is wrong.
    for (args, reason) in [
        (&["--query", "nope"][..], "shipped: ab_by_version"),
        (&["--query", "model_health"][..], "--param model=VALUE"),
        (
            &["--query", "drift_by_window", "--param", "x=1"][..],
            "--param x",
        ),
        (&["--format", "parquet", "SELECT 1"][..], "--out FILE"),
    ] {
        let err = sql(args).unwrap_err().to_string();
        assert!(err.contains(reason), "{args:?}: {err}");
    }

    // Parquet out: the same rows as CSV.
    let out = tmp.path().join("drift.parquet");
    let out_arg = out.display().to_string();
    sql(&[
        "--query",
        "drift_by_window",
        "--format",
        "parquet",
        "--out",
        &out_arg,
    ])?;
    let csv = sql(&["--format", "csv", "--query", "drift_by_window"])?;
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&out)?,
        )?
        .build()?;
    let mut rows = 0;
    for b in reader {
        rows += b?.num_rows();
    }
    assert_eq!(rows + 1, csv.lines().count());

    // Drift joined to the registry version and the run that trained it.
    let runs = sql(&["--format", "csv", "--query", "drift_by_training_run"])?;
    assert_eq!(runs.lines().count(), 1 + 10 * 2, "{runs}");
    assert!(
        runs.contains(",production,demo.calibrated_score,train-v1,FINISHED,0.778,"),
        "{runs}"
    );
    assert!(
        runs.contains(",staging,demo.sharpened_score,train-v2,FINISHED,0.838,"),
        "{runs}"
    );
    // A parameter that looks like a number is typed as the plan needs
    // (compared with the text column `model`): no rows, no error.
    let numeric = sql(&[
        "--format",
        "csv",
        "--query",
        "model_health",
        "--param",
        "model=2024",
    ])?;
    assert_eq!(numeric.lines().count(), 1, "{numeric}");
    // Statements that write are refused.
    let err = sql(&["INSERT INTO alerts SELECT * FROM alerts"])
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("dml"), "{err}");

    // The shell, a script piped in: tables, columns, a statement over two
    // lines, a `;` inside a string, two statements on a line, an error that
    // does not end it, a format switch, a last statement without `;`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["sql", "--data", &data])
        .env("HOME", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("stdin")?.write_all(
        b"\\d\n\\d prediction_distribution\nSELECT count(*) AS n\n  FROM drift_summary;\nSELECT 'a;' AS s; SELECT nope;\n\\format csv\nSELECT 41 + 1 AS answer -- the last one\n",
    )?;
    let out = child.wait_with_output()?;
    let (stdout, stderr) = (
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    );
    for table in [
        "drift_results",
        "prediction_distribution",
        "model_versions",
        "runs",
    ] {
        assert!(
            stdout.contains(&format!("| {table} ")),
            "\\d lists {table}:\n{stdout}"
        );
    }
    assert!(stdout.contains("reference_share  Float64"), "{stdout}");
    assert!(
        stdout.contains("| 20 |"),
        "10 windows x 2 versions:\n{stdout}"
    );
    assert!(
        stdout.contains("| a; |"),
        "the string kept its `;`:\n{stdout}"
    );
    assert!(
        stderr.contains("error: ") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(
        stdout.contains("answer\n42\n"),
        "the last statement ran:\n{stdout}"
    );
    // A script with a failed statement fails; no history for a script.
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 statement(s) or command(s) failed"),
        "{stderr}"
    );
    assert!(!tmp.path().join(".mlwatch_history").exists());
    Ok(())
}
