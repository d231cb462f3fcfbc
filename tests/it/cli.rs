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
    // A backfill range that is empty or out of range names both ends.
    for (from, to, why) in [
        ("2026-01-02", "2026-01-01", "is not after its start"),
        ("2026-01-01", "+100000y", "outside the years 0 to 9999"),
    ] {
        let out = mlwatch()
            .args(["backfill", "--from", from, "--to", to])
            .output()?;
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr)?;
        assert!(
            err.contains(&format!("--from {from} --to {to}")) && err.contains(why),
            "{err}"
        );
    }
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

    // NULLs are `null` in JSON; nested values are their text in CSV.
    let q = "SELECT CAST(NULL AS DOUBLE) AS x, ks_2samp(v, g) AS ks FROM (VALUES (1.0, false), (2.0, false), (3.0, true)) AS t(v, g)";
    let run = |format: &str| -> Result<String, Box<dyn std::error::Error>> {
        let out = mlwatch()
            .args(["sql", "--format", format, "--data"])
            .arg(dir.path())
            .arg(q)
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let json = run("json")?;
    assert!(json.starts_with(r#"{"x":null,"ks":{"#), "{json}");
    let csv = run("csv")?;
    assert!(csv.starts_with("x,ks\n,\"{statistic: "), "{csv}");

    // --out replaces a file whole or leaves it as it was.
    let out_file = dir.path().join("res.parquet");
    std::fs::write(&out_file, b"previous")?;
    let out = mlwatch()
        .args(["sql", "--format", "parquet", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out_file)
        .arg("SELECT INTERVAL '1 day' AS d")
        .output()?;
    // (The Parquet writer has no MonthDayNano intervals: the write fails.)
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&out_file)?, b"previous");
    let out = mlwatch()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out_file)
        .arg("SELECT 1 AS one")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out_file)?, "one\n1\n");
    // A symlink (or /dev/stdout, a pipe) is written through, not replaced.
    let target = dir.path().join("target.csv");
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link)?;
    let out = mlwatch()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&link)
        .arg("SELECT 2 AS two")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target)?, "two\n2\n");
    let leftovers = std::fs::read_dir(dir.path())?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .count();
    assert_eq!(leftovers, 0);
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

/// `mlwatch stats` reads the vendored files of every format (and text
/// files of one value per line) alike, names the accepted extensions when
/// a table is needed, and reads `s3://` URLs when a store is configured.
#[test]
fn stats_reads_files_by_extension_and_url() -> TestResult {
    let data = crate::manifest_dir().join("tests/data/files");
    let ks = |a: &std::ffi::OsStr,
              b: &std::ffi::OsStr|
     -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let out = mlwatch()
            .args(["stats", "ks"])
            .args([a, b])
            .args(["--column", "x"])
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let csv = data.join("sample.csv");
    for other in ["sample.parquet", "sample.jsonl", "values.txt"] {
        // The same three values (the null left out) in each file.
        let v = ks(csv.as_os_str(), data.join(other).as_os_str())?;
        assert_eq!(v["statistic"], 0.0, "{other}: {v}");
        assert_eq!(
            (v["n_reference"].clone(), v["n_current"].clone()),
            (3.into(), 3.into())
        );
    }
    // drift needs tables: a text file is refused with the accepted names.
    let out = mlwatch()
        .args(["stats", "drift"])
        .arg(data.join("values.txt"))
        .arg(&csv)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("values.txt")
            && err.contains("accepted: .parquet, .csv, .jsonl, .ndjson, .json"),
        "{err}"
    );
    // A URL is not checked as a local path: its own error names it.
    let out = mlwatch()
        .args(["stats", "ks", "http://example.invalid/a.csv"])
        .arg(&csv)
        .args(["--column", "x"])
        .output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("http://example.invalid/a.csv: scheme `http` is not supported"),
        "{err}"
    );

    let Ok(bucket) = std::env::var("MLWATCH_TEST_S3_URL") else {
        eprintln!("MLWATCH_TEST_S3_URL is not set: S3 part skipped (.ci/run sets it)");
        return Ok(());
    };
    let prefix = format!("{bucket}/stats-files-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new()?;
    let storage = mlwatch::storage::Storage::open(&prefix, &Default::default())?;
    rt.block_on(storage.put(
        "sample.parquet",
        std::fs::read(data.join("sample.parquet"))?.into(),
    ))?;
    let url = format!("{prefix}/sample.parquet");
    let v = ks(std::ffi::OsStr::new(&url), csv.as_os_str())?;
    assert_eq!(v["statistic"], 0.0, "{v}");
    let missing = format!("{prefix}/missing.csv");
    let err = ks(std::ffi::OsStr::new(&missing), csv.as_os_str())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{missing}: no such file")), "{err}");
    rt.block_on(storage.delete("sample.parquet"))?;
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

/// Issue 10: read-only commands on a `--data` folder that does not exist
/// fail, name the folder, and leave the file system as it was.
#[test]
fn read_only_commands_on_a_missing_data_path_fail_and_create_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let parent = dir.path().join("no-such");
    let missing = parent.join("store");
    for args in [
        vec!["sql", "SELECT 1"],
        vec!["registry", "get", "m"],
        vec!["registry", "list"],
        vec!["registry", "history", "m"],
    ] {
        let out = mlwatch().args(&args).arg("--data").arg(&missing).output()?;
        let err = String::from_utf8(out.stderr)?;
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("no such folder"),
            "{args:?}: {err}"
        );
        assert!(!parent.exists(), "{args:?} created {}", parent.display());
    }
    // The same path given as a file URL.
    let url = format!("file://{}", missing.display());
    let out = mlwatch()
        .args(["sql", "--data", &url, "SELECT 1"])
        .output()?;
    assert!(!out.status.success());
    assert!(!parent.exists());
    // A file is not a storage root either.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x")?;
    let out = mlwatch()
        .args(["sql", "SELECT 1", "--data"])
        .arg(&file)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("not a folder"));
    // A writing command still creates its storage.
    let out = mlwatch()
        .args(["registry", "register", "m", "--artifact"])
        .arg(&file)
        .arg("--data")
        .arg(&missing)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(missing.is_dir());
    Ok(())
}

/// Issue 10: with `$USER` (and `$LOGNAME`, `$USERNAME`) unset, a run
/// records the OS account name, as `id -un` gives it.
#[test]
fn run_user_falls_back_to_the_os_account_when_user_is_unset() -> TestResult {
    let expected = Command::new("id").arg("-un").output()?;
    assert!(expected.status.success());
    let expected = String::from_utf8(expected.stdout)?.trim().to_string();
    assert!(!expected.is_empty());
    let dir = tempfile::tempdir()?;
    let out = mlwatch()
        .args(["runs", "start", "-e", "who", "--data"])
        .arg(dir.path())
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("USERNAME")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = String::from_utf8(out.stdout)?.trim().to_string();
    let users = crate::run_mlwatch([
        "sql".as_ref(),
        "--format".as_ref(),
        "csv".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        format!("SELECT user FROM runs WHERE run_id = '{run_id}'").as_ref(),
    ])?;
    assert_eq!(users.trim(), format!("user\n{expected}"));
    Ok(())
}

/// Issue 10: an error about a missing file names the argument it was given as.
#[test]
fn missing_file_errors_name_the_argument() -> TestResult {
    let dir = tempfile::tempdir()?;
    let present = dir.path().join("present.txt");
    std::fs::write(&present, "1\n2\n3\n")?;
    let missing = dir.path().join("missing.csv");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![
                "stats".into(),
                "ks".into(),
                missing.clone().into(),
                present.clone().into(),
            ],
            "<A>",
        ),
        (
            vec![
                "stats".into(),
                "ttest".into(),
                present.clone().into(),
                missing.clone().into(),
            ],
            "<B>",
        ),
        (
            vec![
                "stats".into(),
                "drift".into(),
                present.clone().into(),
                missing.clone().into(),
            ],
            "<CURRENT>",
        ),
        (
            vec![
                "stats".into(),
                "metrics".into(),
                missing.clone().into(),
                "--y-true".into(),
                "y".into(),
                "--y-pred".into(),
                "p".into(),
            ],
            "<FILE>",
        ),
        (
            vec![
                "sql".into(),
                "SELECT 1".into(),
                "--config".into(),
                missing.clone().into(),
            ],
            "--config",
        ),
        (
            vec![
                "run".into(),
                "--print-config".into(),
                "--config".into(),
                missing.clone().into(),
            ],
            "--config",
        ),
    ];
    for (args, arg) in cases {
        let out = mlwatch().args(&args).output()?;
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr)?;
        assert!(
            err.contains(&format!("{arg} {}: no such file", missing.display())),
            "{args:?}: {err}"
        );
    }
    Ok(())
}

/// The text of `mlwatch <args> --help`.
fn help(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = mlwatch().args(args).arg("--help").output()?;
    assert!(out.status.success(), "{args:?}");
    Ok(String::from_utf8(out.stdout)?)
}

/// Issue 10: the one-line help of `runs` and `registry` (shown by
/// `mlwatch --help` and atop the group's own help) names every subcommand
/// the group's `Commands:` section lists.
#[test]
fn group_help_lists_every_subcommand() -> TestResult {
    let top = help(&[])?;
    for group in ["runs", "registry"] {
        let text = help(&[group])?;
        let about = text.split("\n\n").next().unwrap_or_default();
        let commands: Vec<&str> = text
            .split("Commands:\n")
            .nth(1)
            .ok_or("no Commands section")?
            .lines()
            .take_while(|l| !l.trim().is_empty())
            // A command's line, not the wrapped rest of a description.
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .collect();
        assert!(commands.len() >= 8, "{group}: {commands:?}");
        let words: Vec<&str> = about
            .split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .collect();
        // The top-level help's entry for the group, with its wrapped lines.
        let entry: String = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(group))
            .take_while(|l| l.trim_start().starts_with(group) || l.starts_with("           "))
            .collect::<Vec<_>>()
            .join(" ");
        for c in &commands {
            assert!(words.contains(c), "`{group} --help` omits {c}: {about}");
            assert!(
                entry
                    .split(|ch: char| !(ch.is_alphanumeric() || ch == '-'))
                    .any(|w| w == *c),
                "`--help` omits {group} {c}: {entry}"
            );
        }
    }
    Ok(())
}

/// Issue 10: `sql --help` lists exactly the tables the catalog registers
/// (as information_schema sees them on an empty store).
#[test]
fn sql_help_lists_every_table() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registered = crate::run_mlwatch([
        "sql".as_ref(),
        "--format".as_ref(),
        "csv".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' \
         ORDER BY table_name"
            .as_ref(),
    ])?;
    let mut registered: Vec<&str> = registered.lines().skip(1).collect();
    registered.sort_unstable();
    assert!(registered.len() >= 14, "{registered:?}");
    let text = help(&["sql"])?;
    let listed = text
        .split("Tables:")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .ok_or("no Tables: paragraph")?;
    let mut listed: Vec<&str> = listed
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, registered);
    Ok(())
}

/// Issue 10: logs written to a pipe carry no ANSI escape codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = mlwatch()
        .args(["sql", "SELECT 1", "--data"])
        .arg(dir.path())
        .env("MLWATCH_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .output()?;
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("DEBUG"), "no log lines: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes in: {err:?}");
    Ok(())
}

/// WCAG 2 contrast ratio of an sRGB colour against white.
fn contrast_on_white((r, g, b): (u8, u8, u8)) -> f64 {
    let channel = |v: u8| {
        let c = f64::from(v) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    1.05 / (l + 0.05)
}

/// Issue 10: every line of `runs plot` (the third was pale yellow) and every
/// palette colour has a contrast ratio of at least 3:1 on the white background.
#[test]
fn plot_lines_are_readable_on_white() -> TestResult {
    // The reference values of the formula: black 21:1, white 1:1.
    assert!((contrast_on_white((0, 0, 0)) - 21.0).abs() < 1e-9);
    assert!((contrast_on_white((255, 255, 255)) - 1.0).abs() < 1e-9);
    for c in mlwatch::tracking::plot::PALETTE {
        assert!(
            contrast_on_white(c) >= 3.0,
            "{c:?}: {}",
            contrast_on_white(c)
        );
    }

    let dir = tempfile::tempdir()?;
    let data = dir.path().as_os_str();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = crate::run_mlwatch([
            "runs".as_ref(),
            "start".as_ref(),
            "-e".as_ref(),
            "p".as_ref(),
            "--data".as_ref(),
            data,
        ])?;
        let id = id.trim().to_string();
        for step in ["0", "1"] {
            crate::run_mlwatch([
                "runs".as_ref(),
                "log-metric".as_ref(),
                id.as_ref(),
                "loss=0.5".as_ref(),
                "--step".as_ref(),
                step.as_ref(),
                "--data".as_ref(),
                data,
            ])?;
        }
        ids.push(id);
    }
    let svg = dir.path().join("loss.svg");
    crate::run_mlwatch(
        ["runs", "plot", "--metric", "loss"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(ids.iter().map(|s| s.as_ref()))
            .chain(["--out".as_ref(), svg.as_os_str(), "--data".as_ref(), data]),
    )?;
    let text = std::fs::read_to_string(&svg)?;
    let mut strokes = Vec::new();
    for line in text.split("<polyline").skip(1) {
        let hex = line
            .split("stroke=\"#")
            .nth(1)
            .and_then(|s| s.get(..6))
            .ok_or("a line without a stroke colour")?;
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
        strokes.push((byte(0)?, byte(2)?, byte(4)?));
    }
    strokes.sort_unstable();
    strokes.dedup();
    assert!(strokes.len() >= 4, "{strokes:?}");
    for c in strokes {
        assert!(
            contrast_on_white(c) >= 3.0,
            "{c:?}: {}",
            contrast_on_white(c)
        );
    }
    Ok(())
}

/// The registry's history records the OS account as the actor when no
/// user variable is set; a missing `--artifact` names its argument.
#[test]
fn registry_actor_falls_back_to_the_os_account() -> TestResult {
    let expected = Command::new("id").arg("-un").output()?;
    let expected = String::from_utf8(expected.stdout)?.trim().to_string();
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("m.bin");
    std::fs::write(&model, b"weights")?;
    let out = mlwatch()
        .args(["registry", "--data"])
        .arg(dir.path().join("store"))
        .args(["register", "who"])
        .arg("--artifact")
        .arg(&model)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("USERNAME")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = dir.path().join("store");
    let actors = crate::run_mlwatch([
        "sql".as_ref(),
        "--format".as_ref(),
        "csv".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "SELECT DISTINCT actor FROM registry_events".as_ref(),
    ])?;
    assert_eq!(actors.trim(), format!("actor\n{expected}"));
    let missing = dir.path().join("nope.bin");
    let e = crate::run_mlwatch([
        "registry".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "register".as_ref(),
        "who".as_ref(),
        "--artifact".as_ref(),
        missing.as_os_str(),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--artifact") && e.contains("nope.bin"), "{e}");
    Ok(())
}
