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
