//! The binary as a user runs it: help, config errors, SQL on empty storage.

use std::process::Command;

use crate::TestResult;

fn mlwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlwatch"))
}

#[test]
fn every_command_has_help() -> TestResult {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["sql", "--help"],
        vec!["demo", "--help"],
        vec!["registry", "--help"],
        vec!["registry", "list", "--help"],
    ] {
        let out = mlwatch().args(&args).output()?;
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8(out.stdout)?.contains("Usage"), "{args:?}");
    }
    Ok(())
}

#[test]
fn unknown_config_key_and_bad_value_are_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[window]\nsize = \"1m\"\nlatenes = \"5s\"\n")?;
    let out = mlwatch()
        .args(["run", "--print-config", "--config"])
        .arg(&f)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("latenes"), "{err}");

    let out = mlwatch()
        .args(["run", "--print-config"])
        .env("MLWATCH__WINDOW__SAMPLE_SIZE", "lots")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.to_lowercase().contains("window.sample_size"), "{err}");

    let out = mlwatch()
        .args(["run", "--print-config"])
        .env("MLWATCH__KAFKA__BROKERS", "example:9092")
        .output()?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.contains("example:9092"));
    Ok(())
}

#[test]
fn bad_cli_argument_is_named() -> TestResult {
    let out = mlwatch()
        .args(["sql", "--format", "xml", "SELECT 1"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("--format"));
    Ok(())
}

#[test]
fn sql_on_empty_storage_sees_empty_tables_and_functions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = mlwatch()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg("SELECT count(*) AS n FROM drift_results")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "n\n0");

    let out = mlwatch()
        .args(["sql", "--format", "json", "--data"])
        .arg(dir.path())
        .arg("SELECT ks['statistic'] AS d FROM (SELECT ks_2samp(v, g) AS ks FROM (VALUES (1.0, false), (2.0, false), (3.0, false), (4.0, true), (5.0, true)) AS t(v, g))")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?.trim(), r#"{"d":1.0}"#);
    Ok(())
}

/// `mlwatch stats` on every input format gives the reference library's numbers.
#[test]
fn stats_commands_read_every_format_and_match_scipy() -> TestResult {
    let dir = tempfile::tempdir()?;
    // scipy.stats.ttest_ind(a, b, equal_var=False) on these values (oracle
    // ab_means/small_with_ties): t = -2.1500329089188295, p = 0.05866839515277455.
    let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0];
    let b = [2.0, 3.0, 3.0, 4.0, 4.0, 5.0];
    let txt = dir.path().join("a.txt");
    std::fs::write(
        &txt,
        a.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let csv = dir.path().join("b.csv");
    std::fs::write(
        &csv,
        format!("x\n{}\n", b.map(|v| v.to_string()).join("\n")),
    )?;
    let jsonl = dir.path().join("b.jsonl");
    std::fs::write(&jsonl, b.map(|v| format!("{{\"x\": {v}}}")).join("\n"))?;
    let parquet = dir.path().join("a.parquet");
    let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
        "x",
        std::sync::Arc::new(datafusion::arrow::array::Float64Array::from(a.to_vec())) as _,
    )])?;
    std::fs::write(
        &parquet,
        mlwatch::storage::encode_parquet(batch.schema(), &[batch])?,
    )?;

    let run = |args: &[&std::ffi::OsStr]| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let out = mlwatch().arg("stats").args(args).output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    for (first, second) in [(&txt, &csv), (&parquet, &jsonl)] {
        let v = run(&[
            &os("ttest"),
            first.as_os_str(),
            second.as_os_str(),
            &os("--column"),
            &os("x"),
        ])?;
        assert!(
            (v["statistic"].as_f64().unwrap() + 2.1500329089188295).abs() < 1e-12,
            "{v}"
        );
        assert!(
            (v["p_value"].as_f64().unwrap() - 0.05866839515277455).abs() < 1e-9,
            "{v}"
        );
        assert_eq!(v["n_reference"], 6);
    }
    // The always-valid interval contains the fixed-sample one and agrees
    // with its own p-value (0 inside the sequence, p >= 0.05).
    let v = run(&[
        &os("ttest"),
        txt.as_os_str(),
        csv.as_os_str(),
        &os("--column"),
        &os("x"),
        &os("--sequential"),
    ])?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    assert!(
        f("cs_low") < f("ci_low") && f("ci_high") < f("cs_high"),
        "{v}"
    );
    assert!(
        f("cs_low") < 0.0 && f("cs_high") > 0.0 && f("always_valid_p") >= 0.05,
        "{v}"
    );
    // scipy.stats.mannwhitneyu(a, b, method="exact"): U = 7, p = 0.09307359307359307.
    let v = run(&[
        &os("mannwhitney"),
        txt.as_os_str(),
        csv.as_os_str(),
        &os("--column"),
        &os("x"),
        &os("--method"),
        &os("exact"),
    ])?;
    assert_eq!(v["statistic"], 7.0);
    assert!((v["p_value"].as_f64().unwrap() - 0.09307359307359307).abs() < 1e-12);
    // scipy.stats.chisquare([50800, 49200], [50000, 50000]): 25.6, p = 4.200393976022008e-07.
    let v = run(&[
        &os("srm"),
        &os("--observed"),
        &os("50800,49200"),
        &os("--weights"),
        &os("1,1"),
    ])?;
    assert!((v["statistic"].as_f64().unwrap() - 25.6).abs() < 1e-9);
    assert!((v["p_value"].as_f64().unwrap() - 4.200393976022008e-07).abs() < 1e-15);

    // A missing column is named with the file and the columns that exist.
    let out = mlwatch()
        .args(["stats", "ks"])
        .arg(&csv)
        .arg(&jsonl)
        .args(["--column", "y"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("b.csv") && err.contains("`y`") && err.contains("columns: x"),
        "{err}"
    );
    Ok(())
}

/// `mlwatch stats drift` on CSV files reproduces Evidently's DataDriftPreset
/// (oracle case evidently_report/small_ref_le_1000): methods, values, verdict.
#[test]
fn stats_drift_reproduces_evidently_report() -> TestResult {
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(
        crate::oracle::oracle_dir().join("evidently_report/small_ref_le_1000.json"),
    )?)?;
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for side in ["reference", "current"] {
        let cols = case["inputs"][side].as_object().ok_or("no inputs")?;
        let names: Vec<&String> = cols.keys().collect();
        let n = cols[names[0]].as_array().map_or(0, |a| a.len());
        let mut text = names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
            + "\n";
        for i in 0..n {
            let row: Vec<String> = names
                .iter()
                .map(|c| match &cols[*c][i] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            text += &(row.join(",") + "\n");
        }
        let path = dir.path().join(format!("{side}.csv"));
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    let out = mlwatch().args(["stats", "drift"]).args(&paths).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let expected = &case["expected"][0]["outputs"];
    let labels = [
        ("ks", "K-S p_value"),
        ("chi_square", "chi-square p_value"),
        ("z_test", "Z-test p_value"),
    ];
    for row in rows.as_array().ok_or("not an array")? {
        let Some(col) = row["column"].as_str() else {
            assert_eq!(
                row["drifted_count"],
                expected["drifted_count"].as_f64().unwrap_or(-1.0) as u64
            );
            continue;
        };
        let want = &expected["columns"][col];
        let method = row["method"].as_str().unwrap_or_default();
        let label = labels.iter().find(|(m, _)| *m == method).map(|(_, l)| *l);
        assert_eq!(label, want["method"].as_str(), "{col}");
        let (got, exp) = (
            row["p_value"].as_f64().unwrap(),
            want["value"].as_f64().unwrap(),
        );
        assert!(
            (got - exp).abs() <= 1e-6 * exp.abs(),
            "{col}: {got} vs {exp}"
        );
    }
    Ok(())
}
