//! Checks the statistical kernels against `../shared/oracle`: every case file
//! listed in `index.json` is loaded; every entry for a function mlwatch
//! implements is checked with the tolerance the file gives.

use std::path::PathBuf;

use mlwatch::stats::Alternative;
use mlwatch::stats::ks::{KsMethod, ks_2samp};
use serde_json::Value;

use crate::TestResult;

/// `$MLWATCH_ORACLE_DIR`, else the nearest `shared/oracle` beside the
/// checkout or one of its parents (the layout is `<dir>/main`, `<dir>/shared`).
fn oracle_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MLWATCH_ORACLE_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared/oracle"))
        .find(|p| p.join("index.json").is_file())
        .unwrap_or_else(|| manifest.join("../shared/oracle"))
}

/// A number from the oracle, where non-finite values are strings.
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(num).collect())
        .unwrap_or_default()
}

/// The README's rule: both NaN, same infinity, within max(abs, rel*|e|), or
/// under the floor.
fn matches(actual: f64, expected: f64, tol: &Value) -> bool {
    if expected.is_nan() || actual.is_nan() {
        return expected.is_nan() && actual.is_nan();
    }
    if expected.is_infinite() || actual.is_infinite() {
        return expected == actual;
    }
    let rel = tol.get("rel").and_then(num).unwrap_or(0.0);
    let abs = tol.get("abs").and_then(num).unwrap_or(0.0);
    if (actual - expected).abs() <= abs.max(rel * expected.abs()) {
        return true;
    }
    if let Some(floor) = tol.get("floor").and_then(num) {
        return expected < floor && (0.0..floor).contains(&actual);
    }
    false
}

#[test]
fn every_oracle_case_file_loads_and_ks_entries_match() -> TestResult {
    let dir = oracle_dir();
    let index_bytes = std::fs::read(dir.join("index.json")).map_err(|e| {
        format!(
            "oracle vectors not found at {} ({e}); set MLWATCH_ORACLE_DIR",
            dir.display()
        )
    })?;
    let index: Value = serde_json::from_slice(&index_bytes)?;
    let cases = index["cases"].as_array().ok_or("index.json has no cases")?;
    assert!(!cases.is_empty());
    let (mut checked, mut skipped, mut failures) = (0usize, 0usize, Vec::new());
    for case in cases {
        let file = case["file"].as_str().ok_or("case without file")?;
        let doc: Value = serde_json::from_slice(&std::fs::read(dir.join(file))?)?;
        let expected = doc["expected"].as_array().ok_or("case without expected")?;
        assert_eq!(
            expected.len() as u64,
            case["n_expected"].as_u64().unwrap_or(0),
            "{file}"
        );
        for e in expected {
            if e["function"] != "scipy.stats.ks_2samp" {
                skipped += 1;
                continue;
            }
            checked += 1;
            let x = floats(&doc["inputs"]["x"]);
            let y = floats(&doc["inputs"]["y"]);
            let alt: Alternative = e["kwargs"]["alternative"]
                .as_str()
                .unwrap_or("two-sided")
                .parse()?;
            let method: KsMethod = e["kwargs"]["method"].as_str().unwrap_or("auto").parse()?;
            let got = ks_2samp(&x, &y, alt, method);
            let id = format!("{file}#{}", e["id"].as_str().unwrap_or("?"));
            if !e["error"].is_null() {
                if got.is_ok() {
                    failures.push(format!("{id}: expected an error, got {got:?}"));
                }
                continue;
            }
            let got = match got {
                Ok(r) => r,
                Err(err) => {
                    failures.push(format!("{id}: unexpected error {err}"));
                    continue;
                }
            };
            let outputs = e["outputs"].as_object().ok_or("entry without outputs")?;
            for (field, want) in outputs {
                let actual = match field.as_str() {
                    "statistic" => got.statistic,
                    "pvalue" => got.p_value,
                    "statistic_location" => got.statistic_location,
                    "statistic_sign" => f64::from(got.statistic_sign),
                    other => {
                        failures.push(format!("{id}: unknown output field {other}"));
                        continue;
                    }
                };
                let want = num(want).ok_or("non-numeric expected value")?;
                if !matches(actual, want, &e["tolerance"][field]) {
                    failures.push(format!("{id}: {field} = {actual:e}, expected {want:e}"));
                }
            }
        }
    }
    eprintln!(
        "oracle: {checked} ks_2samp entries checked, {skipped} entries of other functions not yet implemented"
    );
    assert!(
        checked >= 56,
        "expected every ks_2samp entry to be checked, got {checked}"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
