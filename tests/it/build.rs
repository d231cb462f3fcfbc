//! The README's two commands share one build: `cargo run` (normal
//! dependencies) and `cargo test` (normal + dev dependencies) must resolve
//! every shared crate with the same features, or the second command
//! recompiles everything above the crate that differs (a newcomer once
//! waited 9 more minutes because criterion turned on serde's `alloc`).

use std::collections::{BTreeMap, BTreeSet};

use crate::TestResult;

/// `package version` -> features, as `cargo tree` resolves them with the
/// given edge kinds.
fn features(edges: &str) -> Result<BTreeMap<String, BTreeSet<String>>, Box<dyn std::error::Error>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--prefix",
            "none",
            "-e",
            edges,
            "-f",
            "{p}|{f}",
        ])
        .current_dir(crate::manifest_dir())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let line = line.trim_end_matches(" (*)");
        if let Some((pkg, feats)) = line.split_once('|') {
            // `name vX.Y.Z (path)` -> `name vX.Y.Z`
            let pkg: String = pkg.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            map.entry(pkg).or_default().insert(feats.to_string());
        }
    }
    Ok(map)
}

#[test]
fn cargo_run_and_cargo_test_resolve_the_same_features() -> TestResult {
    let run = features("normal,build")?;
    let test = features("normal,build,dev")?;
    assert!(run.len() > 100, "{} packages", run.len());
    let differ: Vec<String> = run
        .iter()
        .filter_map(|(pkg, f)| {
            let t = test.get(pkg)?;
            (t != f).then(|| format!("{pkg}: run {f:?}, test {t:?}"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "name these features on the normal dependencies in Cargo.toml:\n{}",
        differ.join("\n")
    );
    Ok(())
}
