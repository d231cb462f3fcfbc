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
