//! Experiments: definitions, `mlwatch ab`, and the assignment of units.

use std::io::Write;
use std::process::{Command, Stdio};

use mlwatch::ab::{Experiment, bucket};
use mlwatch::config::Config;
use mlwatch::registry::ModelRegistry;
use mlwatch::stats::chi_square::srm;
use mlwatch::storage::Storage;

use crate::{TestResult, run_mlwatch};

fn toml(data: &std::path::Path, variants: &str) -> String {
    format!(
        r#"
[storage]
url = "{}"
[models.credit_risk]
reference = "r.csv"
task = "binary"
[models.credit_risk.features]
x = "numeric"
[experiments.checkout]
model = "credit_risk"
control = "control"
salt = "checkout-2026"
start = "2026-01-01T00:00:00Z"
primary_metric = "accuracy"
guardrails = {{ latency_p95 = 0.1 }}
mde = 0.02
variants = [{variants}]
"#,
        data.display()
    )
}

const FIFTY: &str = r#"{ name = "control", version = "1", weight = 50 }, { name = "challenger", version = "2", weight = 50 }"#;

#[tokio::test]
async fn ab_commands_check_versions_and_assign_units_the_same_way_in_every_process() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("ab.toml");
    std::fs::write(&cfg, toml(&data, FIFTY))?;
    let cfg_arg = cfg.display().to_string();

    // Versions not in the registry: refused, naming the variant.
    let err = run_mlwatch(["ab", "show", "checkout", "--config", &cfg_arg]).unwrap_err();
    assert!(
        err.to_string().contains("experiments.checkout.variants")
            && err.to_string().contains("`control`"),
        "{err}"
    );
    let registry = ModelRegistry::new(Storage::open(
        &data.display().to_string(),
        &Default::default(),
    )?);
    let artifact = tmp.path().join("model.bin");
    std::fs::write(&artifact, b"weights")?;
    for _ in 0..2 {
        registry
            .register_model("credit_risk", &artifact, Default::default())
            .await?;
    }
    let shown: serde_json::Value = serde_json::from_str(&run_mlwatch([
        "ab", "show", "checkout", "--config", &cfg_arg,
    ])?)?;
    assert_eq!(shown["arms"][0]["to"], 5000);
    assert_eq!(shown["arms"][1]["control"], false);
    let listed = run_mlwatch(["ab", "list", "--config", &cfg_arg])?;
    assert_eq!(listed.lines().count(), 1);

    // Sticky: two processes, arguments or stdin, and the library agree.
    let ids: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut args = vec!["ab", "assign", "checkout", "--config", &cfg_arg];
    args.extend(ids.iter().map(String::as_str));
    let first = run_mlwatch(&args)?;
    let second = run_mlwatch(&args)?;
    assert_eq!(first, second);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["ab", "assign", "checkout", "--config", &cfg_arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{}\n", ids.join("\n")).as_bytes())?;
    let piped = String::from_utf8(child.wait_with_output()?.stdout)?;
    assert_eq!(piped, first);
    let config = Config::load(Some(&cfg))?;
    let e = Experiment::from_config("checkout", &config.experiments["checkout"]);
    for (line, id) in first.lines().zip(&ids) {
        let a: serde_json::Value = serde_json::from_str(line)?;
        let want = e.assign(id);
        assert_eq!(a["variant"], want.variant.as_str());
        assert_eq!(a["bucket"], want.bucket);
        assert_eq!(want.bucket, bucket("checkout-2026", id));
    }

    // A definition that does not add up is refused at load, naming it.
    std::fs::write(
        &cfg,
        toml(
            &data,
            r#"{ name = "control", version = "1", weight = 45 }, { name = "challenger", version = "2", weight = 50 }"#,
        ),
    )?;
    let err = run_mlwatch(["ab", "list", "--config", &cfg_arg]).unwrap_err();
    assert!(
        err.to_string().contains("experiments.checkout.variants")
            && err.to_string().contains("sum to 100"),
        "{err}"
    );
    Ok(())
}

/// 1M units split within sampling error of the weights: the sample-ratio
/// chi-square's p-value stays above 0.001 for each split and fixed salt.
#[test]
fn a_million_units_split_as_the_weights_say() -> TestResult {
    for (salt, variants) in [
        ("split-a", FIFTY),
        (
            "split-b",
            r#"{ name = "control", version = "1", weight = 80 }, { name = "challenger", version = "2", weight = 20 }"#,
        ),
        (
            "split-c",
            r#"{ name = "control", version = "1", weight = 33.34 }, { name = "b", version = "2", weight = 33.33 }, { name = "c", version = "3", weight = 33.33 }"#,
        ),
    ] {
        let config = Config::from_toml_str(
            &toml(std::path::Path::new("/unused"), variants)
                .replace("salt = \"checkout-2026\"", &format!("salt = \"{salt}\"")),
        )?;
        let e = Experiment::from_config("checkout", &config.experiments["checkout"]);
        let mut counts = vec![0f64; e.arms.len()];
        for i in 0..1_000_000u32 {
            let b = bucket(&e.salt, &format!("unit-{i}"));
            let arm = e.arms.iter().position(|a| (a.from..a.to).contains(&b));
            counts[arm.expect("every bucket has an arm")] += 1.0;
        }
        let weights: Vec<f64> = e.arms.iter().map(|a| a.weight).collect();
        let r = srm(&counts, &weights)?;
        assert!(
            r.p_value > 0.001,
            "{salt}: counts {counts:?} for weights {weights:?}: p = {}",
            r.p_value
        );
    }
    Ok(())
}

/// The demo's experiments through the stream: `challenger` (version 2 more
/// accurate and faster, fair split) ships; `rollout` (55% of its users sent
/// to the canary on a 50/50 declaration) is invalid. The report in every
/// format, the shipped SQL joining results to registry versions and drift,
/// and a report of an unknown experiment refused with the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_experiments_ship_the_challenger_and_flag_the_broken_split() -> TestResult {
    use mlwatch::demo::{self, DemoOptions};
    let tmp = tempfile::tempdir()?;
    demo::run_demo(&DemoOptions {
        data: tmp.path().to_path_buf(),
        events: 40_000,
        windows: 10,
    })
    .await?;
    let data = tmp.path().display().to_string();
    let report = |e: &str, format: &str| {
        run_mlwatch(["ab", "report", e, "--data", &data, "--format", format])
    };

    let challenger: serde_json::Value = serde_json::from_str(&report("challenger", "json")?)?;
    assert_eq!(challenger["verdict"], "ship challenger", "{challenger:#}");
    let history = challenger["history"].as_array().expect("history");
    assert_eq!(history.len(), 10, "one decision per window");
    let results = challenger["results"].as_array().expect("results");
    let row = |variant: &str, metric: &str| {
        results
            .iter()
            .find(|r| r["variant"] == variant && r["metric"] == metric)
            .unwrap_or_else(|| panic!("{variant} {metric}: {challenger:#}"))
    };
    let acc = row("challenger", "accuracy");
    assert!(acc["effect"].as_f64().unwrap() > 0.02, "{acc}");
    assert!(acc["cs_low"].as_f64().unwrap() > 0.0, "{acc}");
    assert_eq!(acc["test"], "z_test");
    let lat = row("challenger", "latency_mean");
    assert!(lat["effect"].as_f64().unwrap() < 0.0, "faster: {lat}");
    for (metric, test) in [
        ("f1", "delta_z"),
        ("roc_auc", "delong_z"),
        ("log_loss", "welch_t"),
        ("latency_p95", "mann_whitney"),
    ] {
        assert_eq!(row("challenger", metric)["test"], test, "{metric}");
    }
    assert!(
        challenger["decision"]["srm_p_value"].as_f64().unwrap() > 0.001,
        "a fair split passes the sample-ratio check"
    );

    let rollout: serde_json::Value = serde_json::from_str(&report("rollout", "json")?)?;
    assert_eq!(
        rollout["verdict"], "invalid: sample ratio mismatch",
        "{rollout:#}"
    );
    assert!(rollout["decision"]["srm_p_value"].as_f64().unwrap() < 0.001);

    let text = report("challenger", "text")?;
    assert!(
        text.contains("decision at") && text.contains("ship challenger"),
        "{text}"
    );
    let html = report("rollout", "html")?;
    assert!(html.starts_with("<!doctype html>") && html.contains("invalid: sample ratio mismatch"));
    assert!(html.matches("<svg").count() >= 2, "a chart per metric");
    for outside in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(outside), "self-contained: found {outside}");
    }

    let err = report("nope", "text").unwrap_err().to_string();
    assert!(
        err.contains("`nope`") && err.contains("challenger, rollout"),
        "{err}"
    );

    // One query joins the results to the registry versions and to drift.
    let sql = std::fs::read_to_string(crate::manifest_dir().join("sql/ab_by_version.sql"))?;
    let out = run_mlwatch(["sql", "--data", &data, "--format", "csv", "--", &sql])?;
    let header: Vec<&str> = out.lines().next().unwrap_or("").split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).expect(n);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.len(),
        2 * 10 * 2,
        "2 experiments x 10 windows x 2 variants: {out}"
    );
    for r in &rows {
        let v2 = r[col("version")] == "2";
        assert_eq!(
            r[col("model_type")],
            if v2 {
                "demo.sharpened_score"
            } else {
                "demo.calibrated_score"
            },
            "{out}"
        );
        assert_eq!(r[col("columns_tested")], "8", "{out}");
        assert!(!r[col("registry_accuracy")].is_empty(), "{out}");
    }
    Ok(())
}
