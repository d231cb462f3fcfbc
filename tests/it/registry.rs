//! The model registry as a new user meets it: a scripted CLI session checked
//! from the CLI, from Rust and from `mlwatch sql`; artifacts round-trip by
//! sha256; two processes racing on one model keep one linear history; and
//! the same on an S3-compatible server when `.ci/run` provides one.

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use mlwatch::registry::{EventKind, ModelRegistry, PromoteOptions, RegistryState, Selector, Stage};
use mlwatch::storage::Storage;
use serde_json::Value;

use crate::TestResult;

fn mlwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlwatch"))
}

/// Runs `mlwatch registry --data <data> --format json <args>`; returns the JSON.
fn cli(data: &str, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let out = mlwatch()
        .args([
            "registry", "--data", data, "--format", "json", "--actor", "alice",
        ])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "mlwatch registry {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The error text of a command that must fail.
fn cli_err(data: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = mlwatch()
        .args(["registry", "--data", data])
        .args(args)
        .output()?;
    assert!(!out.status.success(), "{args:?} should fail");
    Ok(String::from_utf8(out.stderr)?)
}

fn sql(data: &str, query: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let out = mlwatch()
        .args(["sql", "--format", "json", "--data", data, query])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

fn sha256_file(p: &Path) -> String {
    mlwatch::registry::artifact::sha256_hex(&std::fs::read(p).expect("readable"))
}

#[test]
fn scripted_session_from_cli_rust_and_sql() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().expect("utf-8 path");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models)?;
    let mut files = Vec::new();
    for (i, auc) in [(1, "0.81"), (2, "0.86"), (3, "0.91")] {
        let f = models.join(format!("fraud-v{i}.bin"));
        std::fs::write(&f, format!("weights of version {i}").repeat(100 * i))?;
        let v = cli(
            data,
            &[
                "register",
                "fraud",
                "--artifact",
                f.to_str().unwrap(),
                "--metric",
                &format!("auc={auc}"),
                "--param",
                "max_depth=6",
                "--feature",
                "amount:double",
                "--model-type",
                "xgboost",
                "--tag",
                "team=risk",
            ],
        )?;
        assert_eq!(v["version"], i);
        assert_eq!(v["stage"], "dev");
        assert_eq!(v["artifact"]["sha256"], sha256_file(&f));
        files.push(f);
    }
    // Promote 1 to staging then production, then 2 the same way: 1 is archived.
    cli(data, &["promote", "fraud", "1", "staging"])?;
    assert_eq!(
        cli(data, &["promote", "fraud", "1", "production"])?["stage"],
        "production"
    );
    let t_v1_prod = Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    cli(data, &["promote", "fraud", "2", "staging"])?;
    cli(data, &["promote", "fraud", "2", "production"])?;
    assert_eq!(cli(data, &["get", "fraud", "production"])?["version"], 2);
    assert_eq!(cli(data, &["get", "fraud", "1"])?["stage"], "archived");
    // Illegal moves are refused with a message naming them, and write nothing.
    let err = cli_err(data, &["promote", "fraud", "3", "production"])?;
    assert!(
        err.contains("version 3") && err.contains("skips staging"),
        "{err}"
    );
    let err = cli_err(data, &["promote", "fraud", "9", "staging"])?;
    assert!(err.contains("version 9"), "{err}");
    let err = cli_err(data, &["alias", "fraud", "latest", "1"])?;
    assert!(
        err.contains("`latest`") && err.contains("reserved"),
        "{err}"
    );
    // Roll production back: 1 returns.
    let v = cli(data, &["rollback", "fraud", "production"])?;
    assert_eq!(
        (v["version"].as_u64(), v["stage"].as_str()),
        (Some(1), Some("production"))
    );
    // Alias set, then moved.
    cli(data, &["alias", "fraud", "champion", "2"])?;
    cli(data, &["alias", "fraud", "champion", "3"])?;
    assert_eq!(cli(data, &["get", "fraud", "champion"])?["version"], 3);
    // List with a metric filter.
    let l = cli(
        data,
        &[
            "list",
            "--metric",
            "metrics.auc >= 0.85",
            "--order-by",
            "metric:auc",
        ],
    )?;
    let versions: Vec<u64> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![3, 2]);
    // History: who moved what, in order.
    let h = cli(data, &["history", "fraud"])?;
    let kinds: Vec<(String, u64)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("register", 1),
        ("register", 2),
        ("register", 3),
        ("promote", 1),
        ("promote", 1),
        ("promote", 2),
        ("promote", 2),
        ("archive", 1),
        ("rollback", 1),
        ("archive", 2),
        ("set_alias", 2),
        ("set_alias", 3),
    ];
    assert_eq!(
        kinds,
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<Vec<_>>()
    );
    assert!(h.as_array().unwrap().iter().all(|e| e["actor"] == "alice"));
    // As of the moment 1 reached production (before 2 replaced it).
    let then = cli(
        data,
        &[
            "get",
            "fraud",
            "production",
            "--as-of",
            &t_v1_prod.to_rfc3339(),
        ],
    )?;
    assert_eq!(then["version"], 1);

    // The same answers from Rust.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let reg = ModelRegistry::new(Storage::open(data, &Default::default())?);
        assert_eq!(
            reg.get_model("fraud", &Selector::Stage(Stage::Production))
                .await?
                .version,
            1
        );
        assert_eq!(
            reg.get_model("fraud", &"champion".parse()?).await?.version,
            3
        );
        assert_eq!(
            reg.as_of("fraud", &Selector::Stage(Stage::Production), t_v1_prod)
                .await?
                .version,
            1
        );
        let hist = reg.history("fraud").await?;
        assert_eq!(hist.len(), expected.len());
        assert_eq!(
            hist.iter()
                .filter(|e| e.kind == EventKind::Rollback)
                .count(),
            1
        );
        // Download byte for byte.
        let out = tempfile::tempdir()?;
        for (i, f) in files.iter().enumerate() {
            let v = reg
                .get_model("fraud", &Selector::Version(i as u64 + 1))
                .await?;
            let p = reg.download(&v, out.path()).await?;
            assert_eq!(std::fs::read(&p)?, std::fs::read(f)?);
            assert_eq!(sha256_file(&p), v.artifact.sha256);
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    // And from SQL.
    let rows = sql(
        data,
        "SELECT production_version, staging_version, versions FROM models WHERE name = 'fraud'",
    )?;
    assert_eq!(rows[0]["production_version"], 1);
    assert_eq!(rows[0]["versions"], 3);
    let rows = sql(
        data,
        "SELECT version FROM model_versions WHERE metrics['auc'] >= 0.85 ORDER BY version",
    )?;
    assert_eq!(rows.len(), 2);
    let rows = sql(
        data,
        "SELECT kind, count(*) AS n FROM registry_events WHERE model = 'fraud' GROUP BY kind ORDER BY kind",
    )?;
    let n = |k: &str| {
        rows.iter()
            .find(|r| r["kind"] == k)
            .map(|r| r["n"].as_u64().unwrap())
    };
    assert_eq!(
        (n("archive"), n("promote"), n("rollback")),
        (Some(2), Some(4), Some(1))
    );
    Ok(())
}

#[test]
fn folder_artifacts_round_trip_and_bad_paths_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("sub/deeper"))?;
    let blob: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(model.join("weights.bin"), &blob)?;
    std::fs::write(model.join("sub/config.json"), b"{\"layers\": 3}")?;
    std::fs::write(model.join("sub/deeper/vocab.txt"), b"a\nb\n")?;
    let data = data.to_str().unwrap();
    let v = cli(
        data,
        &["register", "nlp", "--artifact", model.to_str().unwrap()],
    )?;
    assert_eq!(v["artifact"]["kind"], "dir");
    assert_eq!(v["artifact"]["size"], 200_000 + 13 + 4);
    let out = dir.path().join("out");
    let d = cli(
        data,
        &["download", "nlp", "1", "--out", out.to_str().unwrap()],
    )?;
    let got = Path::new(d["path"].as_str().unwrap()).to_path_buf();
    for rel in ["weights.bin", "sub/config.json", "sub/deeper/vocab.txt"] {
        assert_eq!(
            std::fs::read(got.join(rel))?,
            std::fs::read(model.join(rel))?,
            "{rel}"
        );
    }
    // Unusable names and paths are named in the error, and nothing is written.
    let err = cli_err(
        data,
        &["register", "../evil", "--artifact", model.to_str().unwrap()],
    )?;
    assert!(err.contains("`../evil`"), "{err}");
    let err = cli_err(data, &["register", "nlp", "--artifact", "/no/such/file"])?;
    assert!(err.contains("/no/such/file"), "{err}");
    // A metric JSON cannot hold (it would be written as null and the
    // version never read back) is refused before anything is written.
    for bad in ["auc=nan", "auc=inf", "auc=-inf"] {
        let err = cli_err(
            data,
            &[
                "register",
                "nlp",
                "--artifact",
                model.to_str().unwrap(),
                "--metric",
                bad,
            ],
        )?;
        assert!(
            err.contains(&format!("--metric `{bad}`")) && err.contains("finite"),
            "{err}"
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    let err = rt
        .block_on(async {
            let reg = mlwatch::registry::ModelRegistry::new(mlwatch::storage::Storage::open(
                data,
                &Default::default(),
            )?);
            let mut md = mlwatch::registry::ModelMetadata::default();
            md.metrics.insert("rmse".into(), f64::NAN);
            reg.register_model("nlp", &model.join("weights.bin"), md)
                .await
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("metric `rmse`"), "{err}");
    assert_eq!(cli(data, &["history", "nlp"])?.as_array().unwrap().len(), 1);
    for bad in ["../x", "/etc/passwd", "a/../../b"] {
        assert!(
            mlwatch::registry::artifact::safe_relative(Path::new(bad)).is_none(),
            "{bad}"
        );
    }
    Ok(())
}

/// One of the racing processes (run by `concurrent_writers_keep_one_history`).
#[test]
fn concurrent_worker() -> TestResult {
    let (Ok(data), Ok(worker)) = (
        std::env::var("MLWATCH_REGISTRY_WORKER_DATA"),
        std::env::var("MLWATCH_REGISTRY_WORKER"),
    ) else {
        return Ok(()); // only meaningful when spawned by the test below
    };
    let ops: u64 = std::env::var("MLWATCH_REGISTRY_WORKER_OPS")?.parse()?;
    let rt = tokio::runtime::Runtime::new()?;
    let (mut done, mut refused, mut lost, mut no_ops) = (0u64, 0u64, 0u64, 0u64);
    rt.block_on(async {
        let reg = ModelRegistry::new(Storage::open(&data, &Default::default())?)
            .with_actor(format!("worker-{worker}"))
            .with_snapshot_every(25);
        for i in 0..ops {
            let result = if i % 2 == 0 {
                // Promote some version that is not in production now.
                let state = reg.state().await?;
                let m = state.model("race")?;
                let cur = m.holder(Stage::Production);
                let pick = (1..=4)
                    .map(|k| (k + i + worker.len() as u64) % 4 + 1)
                    .find(|v| Some(*v) != cur)
                    .unwrap();
                reg.promote_model(
                    "race",
                    pick,
                    Stage::Production,
                    PromoteOptions {
                        allow_skip: true,
                        force: false,
                    },
                )
                .await
                // The other process may have promoted it first: then nothing is written.
                .map(|p| p.changed)
            } else {
                reg.rollback("race", Stage::Production).await.map(|_| true)
            };
            lost = reg.lost_races();
            match result {
                Ok(true) => done += 1,
                Ok(false) => no_ops += 1,
                // The other process changed the model first: a refused request writes nothing.
                Err(mlwatch::Error::Registry(e)) => {
                    assert!(
                        !matches!(e, mlwatch::registry::RegistryError::Conflict(_)),
                        "{e}"
                    );
                    refused += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!("WORKER-RESULT {done} {refused} {lost} {no_ops}");
    Ok(())
}

fn race(data: &str, ops: u64) -> TestResult {
    let rt = tokio::runtime::Runtime::new()?;
    let storage = Storage::open(data, &Default::default())?;
    rt.block_on(async {
        let reg = ModelRegistry::new(storage.clone());
        let f = tempfile::NamedTempFile::new()?;
        std::fs::write(f.path(), b"model")?;
        for _ in 0..4 {
            reg.register_model("race", f.path(), Default::default())
                .await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let spawn = |w: &str| {
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "registry::concurrent_worker",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("MLWATCH_REGISTRY_WORKER", w)
            .env("MLWATCH_REGISTRY_WORKER_DATA", data)
            .env("MLWATCH_REGISTRY_WORKER_OPS", ops.to_string())
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("a"));
        let b = s.spawn(|| spawn("bb"));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    let (mut succeeded, mut lost) = (0, 0);
    for out in [a?, b?] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text.split("WORKER-RESULT").nth(1).expect("worker result");
        let n: Vec<u64> = line
            .split_whitespace()
            .take(4)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(n[0] + n[1] + n[3], ops);
        succeeded += n[0];
        lost += n[2];
    }
    eprintln!(
        "race: {succeeded} of {} requests committed, {lost} commits lost a race and were retried",
        2 * ops
    );
    // Replay the log commit by commit: numbers 1..=N without gaps, every
    // successful request is one commit, and production never has two versions.
    let state = rt.block_on(ModelRegistry::new(storage).state())?;
    let seqs: Vec<u64> = state.events.iter().map(|e| e.seq).collect();
    let last = *seqs.last().unwrap();
    let mut distinct = seqs.clone();
    distinct.dedup();
    assert_eq!(distinct, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        last,
        4 + succeeded,
        "every successful request is exactly one commit"
    );
    assert!(
        succeeded > ops / 2,
        "most requests should succeed, got {succeeded}"
    );
    let mut replay = RegistryState::default();
    let mut seen_production = false;
    for seq in 1..=last {
        for e in state.events.iter().filter(|e| e.seq == seq) {
            replay.apply(e.clone());
        }
        let n = replay.models["race"]
            .versions
            .values()
            .filter(|v| v.stage == Stage::Production)
            .count();
        seen_production |= n == 1;
        assert!(n <= 1, "two production versions after commit {seq}");
        assert!(
            !seen_production || n == 1,
            "no production version after commit {seq}"
        );
    }
    Ok(())
}

/// Create-if-absent gives a sequence number to one writer only, a request
/// that another writer made illegal is refused on the fresh state, and one
/// another writer already carried out succeeds without a commit.
#[tokio::test]
async fn create_if_absent_and_revalidation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default())?;
    let a = ModelRegistry::new(storage.clone()).with_actor("a");
    let b = ModelRegistry::new(storage).with_actor("b");
    let f = dir.path().join("m.bin");
    std::fs::write(&f, b"m")?;
    a.register_model("m", &f, Default::default()).await?;
    a.register_model("m", &f, Default::default()).await?;
    let skip = PromoteOptions {
        allow_skip: true,
        force: false,
    };
    // a has read the log; b now promotes version 1 behind a's back.
    assert_eq!(a.state().await?.head, 2);
    b.promote_model("m", 1, Stage::Production, skip).await?;
    // a asks for a move that is illegal now: refused on the fresh state.
    let err = a
        .promote_model("m", 1, Stage::Staging, skip)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("production does not go back to staging"),
        "{err}"
    );
    // a asks for the same move: already done, so nothing is written.
    let same = a.promote_model("m", 1, Stage::Production, skip).await?;
    assert!(!same.changed);
    assert_eq!(same.version.stage, Stage::Production);
    assert_eq!(a.state().await?.head, 3);
    // Commit 3 exists: a second create of it is refused by the store.
    let again =
        mlwatch::registry::log::put_commit(a.storage(), 3, &a.state().await?.events[..1]).await?;
    assert!(matches!(again, mlwatch::registry::log::Put::Taken));
    // A legal request from a lands after b's commit.
    a.promote_model("m", 2, Stage::Production, skip).await?;
    let st = b.state().await?;
    assert_eq!(st.head, 4);
    assert_eq!(
        st.events
            .iter()
            .filter(|e| e.seq == 4)
            .map(|e| e.actor.as_str())
            .collect::<Vec<_>>(),
        ["a", "a"]
    );
    assert_eq!(st.model("m")?.holder(Stage::Production), Some(2));
    Ok(())
}

#[test]
fn concurrent_writers_keep_one_history() -> TestResult {
    let dir = tempfile::tempdir()?;
    race(dir.path().join("store").to_str().unwrap(), 200)
}

/// The same race and a register/get/download on an S3-compatible server
/// (`.ci/run` starts moto and sets `MLWATCH_TEST_S3_URL`).
#[test]
fn registry_on_s3() -> TestResult {
    let Ok(bucket_url) = std::env::var("MLWATCH_TEST_S3_URL") else {
        eprintln!("MLWATCH_TEST_S3_URL is not set: S3 registry test skipped (.ci/run sets it)");
        return Ok(());
    };
    let prefix = format!("{bucket_url}/registry-{}", std::process::id());
    race(&prefix, 200)?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("m.bin");
    std::fs::write(&f, vec![7u8; 100_000])?;
    let v = cli(
        &prefix,
        &["register", "s3model", "--artifact", f.to_str().unwrap()],
    )?;
    let d = cli(
        &prefix,
        &[
            "download",
            "s3model",
            "latest",
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
    )?;
    assert_eq!(
        sha256_file(Path::new(d["path"].as_str().unwrap())),
        v["artifact"]["sha256"].as_str().unwrap()
    );
    Ok(())
}

/// Every `list_models` filter, the sort orders and pagination.
#[tokio::test]
async fn list_filters_sort_and_paginate() -> TestResult {
    use mlwatch::registry::{ListFilter, ModelMetadata, OrderBy};
    let dir = tempfile::tempdir()?;
    let reg = ModelRegistry::new(Storage::open(
        dir.path().to_str().unwrap(),
        &Default::default(),
    )?);
    let f = dir.path().join("m.bin");
    std::fs::write(&f, b"m")?;
    let day = |d: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 11, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    };
    for (name, auc, kind, d) in [
        ("fraud-eu", 0.91, "xgboost", 1),
        ("fraud-eu", 0.93, "xgboost", 5),
        ("fraud-us", 0.88, "lightgbm", 3),
        ("churn", 0.95, "logreg", 7),
    ] {
        let md = ModelMetadata {
            metrics: [("auc".to_string(), auc)].into(),
            model_type: Some(kind.into()),
            training_time: Some(day(d)),
            ..Default::default()
        };
        reg.register_model(name, &f, md).await?;
    }
    reg.set_tag("fraud-eu", 2, "reviewed", Some("yes")).await?;
    reg.set_alias("fraud-eu", "champion", 2).await?;
    reg.promote_model("fraud-us", 1, Stage::Staging, PromoteOptions::default())
        .await?;
    let names = |l: Vec<mlwatch::registry::ModelVersion>| {
        l.into_iter()
            .map(|v| format!("{}@{}", v.name, v.version))
            .collect::<Vec<_>>()
    };
    let q = |f: ListFilter| {
        let reg = &reg;
        async move { reg.list_models(&f).await.map(names) }
    };
    assert_eq!(
        q(ListFilter {
            name_pattern: Some("fraud-*".into()),
            ..Default::default()
        })
        .await?,
        ["fraud-eu@1", "fraud-eu@2", "fraud-us@1"]
    );
    assert_eq!(
        q(ListFilter {
            stage: Some(Stage::Staging),
            ..Default::default()
        })
        .await?,
        ["fraud-us@1"]
    );
    assert_eq!(
        q(ListFilter {
            alias: Some("champion".into()),
            ..Default::default()
        })
        .await?,
        ["fraud-eu@2"]
    );
    assert_eq!(
        q(ListFilter {
            tags: vec![("reviewed".into(), "yes".into())],
            ..Default::default()
        })
        .await?,
        ["fraud-eu@2"]
    );
    assert_eq!(
        q(ListFilter {
            model_type: Some("xgboost".into()),
            metrics: vec!["auc > 0.92".parse()?],
            ..Default::default()
        })
        .await?,
        ["fraud-eu@2"]
    );
    assert_eq!(
        q(ListFilter {
            trained_after: Some(day(3)),
            trained_before: Some(day(7)),
            ..Default::default()
        })
        .await?,
        ["fraud-eu@2", "fraud-us@1"]
    );
    let by_auc = ListFilter {
        order_by: OrderBy::MetricDesc("auc".into()),
        ..Default::default()
    };
    assert_eq!(
        q(by_auc.clone()).await?,
        ["churn@1", "fraud-eu@2", "fraud-eu@1", "fraud-us@1"]
    );
    assert_eq!(
        q(ListFilter {
            offset: 1,
            limit: Some(2),
            ..by_auc
        })
        .await?,
        ["fraud-eu@2", "fraud-eu@1"]
    );
    // Tag removal is history too.
    reg.set_tag("fraud-eu", 2, "reviewed", None).await?;
    let kinds: Vec<EventKind> = reg
        .history("fraud-eu")
        .await?
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Register,
            EventKind::Register,
            EventKind::SetTag,
            EventKind::SetAlias,
            EventKind::DeleteTag
        ]
    );
    Ok(())
}

/// Runs `mlwatch registry --data <data> --actor alice <args>` with table output.
fn cli_text(data: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    crate::run_mlwatch(
        ["registry", "--data", data, "--actor", "alice"]
            .iter()
            .chain(args),
    )
    .map_err(|e| format!("mlwatch registry {args:?} failed: {e}").into())
}

/// Registers `n` versions of `name` (metric `auc` as given) from one file.
fn register_versions(
    data: &str,
    dir: &Path,
    name: &str,
    aucs: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    let f = dir.join(format!("{name}.bin"));
    std::fs::write(&f, name)?;
    for auc in aucs {
        cli(
            data,
            &[
                "register",
                name,
                "--artifact",
                f.to_str().unwrap(),
                "--metric",
                &format!("auc={auc}"),
            ],
        )?;
    }
    Ok(())
}

fn history_len(data: &str, name: &str) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(cli(data, &["history", name])?.as_array().unwrap().len())
}

/// Three rollbacks from v4 go to v3, v2, v1 (never back and forth between
/// the last two), and a fourth has nothing left to restore.
#[test]
fn rollback_walks_back_through_the_stage_history() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8"; 4])?;
    for v in ["1", "2", "3", "4"] {
        cli(data, &["promote", "m", v, "staging"])?;
        cli(data, &["promote", "m", v, "production"])?;
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = cli(data, &["rollback", "m", "production"])?;
        assert_eq!(r["stage"], "production", "{r}");
        let now = cli(data, &["get", "m", "production"])?;
        assert_eq!(now["version"], r["version"]);
        answers.push(r);
    }
    let versions: Vec<Option<u64>> = answers.iter().map(|r| r["version"].as_u64()).collect();
    assert_eq!(versions, [Some(3), Some(2), Some(1)]);
    for (r, from) in answers.iter().zip([4, 3, 2]) {
        assert_eq!(r["rolled_back_from"], from, "{r}");
        assert_eq!(r["skipped"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(
            cli(data, &["get", "m", &from.to_string()])?["stage"],
            "archived"
        );
    }
    // Nothing held production before version 1: refused, nothing written.
    let before = history_len(data, "m")?;
    let err = cli_err(data, &["rollback", "m", "production"])?;
    assert!(
        err.contains("`m`") && err.contains("production") && err.contains("version 1"),
        "{err}"
    );
    assert_eq!(history_len(data, "m")?, before);
    assert_eq!(cli(data, &["get", "m", "production"])?["version"], 1);
    Ok(())
}

/// A version taken out of production by hand is not brought back by a
/// rollback: it is skipped, and the answer says so.
#[test]
fn rollback_skips_versions_archived_by_hand_and_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8"; 4])?;
    for v in ["1", "2", "3"] {
        cli(data, &["promote", "m", v, "production", "--allow-skip"])?;
    }
    // Version 3 is pulled from production by hand; 4 goes out later.
    crate::run_mlwatch([
        "registry", "--data", data, "--actor", "bob", "promote", "m", "3", "archived",
    ])?;
    cli(data, &["promote", "m", "4", "staging"])?;
    cli(data, &["promote", "m", "4", "production"])?;
    let r = cli(data, &["rollback", "m", "production"])?;
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(r["rolled_back_from"], 4, "{r}");
    let skipped = r["skipped"].as_array().expect("skipped list");
    assert_eq!(skipped.len(), 1, "{r}");
    assert_eq!(skipped[0]["version"], 3, "{r}");
    let why = skipped[0]["reason"].as_str().unwrap();
    assert!(why.contains("archived") && why.contains("bob"), "{why}");
    assert_eq!(cli(data, &["get", "m", "3"])?["stage"], "archived");
    // A version that has moved to another stage is skipped too, and the
    // table output says so: 4 returns, 2 goes to staging, 4 is rolled back.
    cli(data, &["promote", "m", "4", "production", "--allow-skip"])?;
    cli(data, &["promote", "m", "2", "staging"])?;
    let text = cli_text(data, &["rollback", "m", "production"])?;
    assert!(
        text.contains("rolled back from version 4 to version 1")
            && text.contains("skipped version 2: now in staging"),
        "{text}"
    );
    assert_eq!(cli(data, &["get", "m", "staging"])?["version"], 2);
    Ok(())
}

/// Rolling back a stage nobody holds is an error naming model and stage,
/// even when a version held it before (it is not revived).
#[test]
fn rollback_of_an_empty_stage_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8", "0.8"])?;
    let err = cli_err(data, &["rollback", "m", "staging"])?;
    assert!(
        err.contains("`m`") && err.contains("no version in staging"),
        "{err}"
    );
    for v in ["1", "2"] {
        cli(data, &["promote", "m", v, "production", "--allow-skip"])?;
    }
    cli(data, &["promote", "m", "2", "archived"])?;
    let before = history_len(data, "m")?;
    let err = cli_err(data, &["rollback", "m", "production"])?;
    assert!(
        err.contains("`m`") && err.contains("no version in production"),
        "{err}"
    );
    assert_eq!(history_len(data, "m")?, before);
    assert_eq!(cli(data, &["get", "m", "2"])?["stage"], "archived");
    Ok(())
}

/// A retried deploy step: promoting a version to the stage it holds
/// succeeds, says so, and writes nothing.
#[test]
fn promoting_to_the_held_stage_is_a_no_op() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8"])?;
    let first = cli(data, &["promote", "m", "1", "staging"])?;
    let before = history_len(data, "m")?;
    let again = cli(data, &["promote", "m", "1", "staging"])?;
    assert_eq!(
        (again["version"].as_u64(), again["stage"].as_str()),
        (Some(1), Some("staging"))
    );
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(first["changed"], true, "{first}");
    let text = cli_text(data, &["promote", "m", "1", "staging"])?;
    assert!(text.contains("already in staging"), "{text}");
    assert_eq!(history_len(data, "m")?, before);
    Ok(())
}

/// `--force` past a promotion rule is in the history: actor and rule, in
/// the CLI's table and JSON and in `registry_events`.
#[test]
fn forced_promotions_record_who_and_which_rule() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let config = dir.path().join("rules.toml");
    std::fs::write(
        &config,
        "[registry]\nrules = [{ metric = \"auc\", higher_is_better = true }]\n",
    )?;
    let config = config.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.9", "0.8"])?;
    for v in ["1", "2"] {
        cli(data, &["promote", "m", v, "staging", "-c", config])?;
    }
    cli(
        data,
        &[
            "promote",
            "m",
            "1",
            "production",
            "--allow-skip",
            "-c",
            config,
        ],
    )?;
    let err = cli_err(data, &["promote", "m", "2", "production", "-c", config])?;
    assert!(err.contains("auc"), "{err}");
    cli(
        data,
        &["promote", "m", "2", "production", "--force", "-c", config],
    )?;
    let h = cli(data, &["history", "m"])?;
    let forced: Vec<&Value> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["forced_rule"].is_null())
        .collect();
    assert_eq!(forced.len(), 1, "{h}");
    let rule = forced[0]["forced_rule"].as_str().unwrap();
    assert_eq!(forced[0]["kind"], "promote");
    assert_eq!(forced[0]["version"], 2);
    assert_eq!(forced[0]["actor"], "alice");
    assert!(
        rule.contains("auc") && rule.contains("0.8") && rule.contains("0.9"),
        "{rule}"
    );
    let table = cli_text(data, &["history", "m"])?;
    let line = table
        .lines()
        .find(|l| l.contains("forced"))
        .unwrap_or_else(|| panic!("no forced line in\n{table}"));
    assert!(line.contains("alice") && line.contains("auc"), "{line}");
    let rows = sql(
        data,
        "SELECT actor, version, forced_rule FROM registry_events WHERE forced_rule IS NOT NULL",
    )?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "alice");
    assert_eq!(rows[0]["version"], 2);
    assert_eq!(rows[0]["forced_rule"], rule);
    Ok(())
}

/// A log file written before the `forced_rule` column existed still reads,
/// from Rust and from SQL, with the column null.
#[test]
fn logs_without_the_forced_rule_column_stay_readable() -> TestResult {
    use mlwatch::registry::log;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8"])?;
    cli(data, &["promote", "m", "1", "staging"])?;
    // Rewrite commit 2 without the column, as older mlwatch wrote it.
    let storage = Storage::open(data, &Default::default())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bytes = storage.get_opt(&log::log_path(2)).await?.expect("commit 2");
        let events = log::decode(&log::log_path(2), bytes)?;
        let batch = log::to_batch(&events)?;
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|i| batch.schema().field(*i).name() != "forced_rule")
            .collect();
        assert!(keep.len() < batch.num_columns(), "the column exists now");
        let old = batch.project(&keep)?;
        let bytes = mlwatch::storage::encode_parquet(old.schema(), &[old])?;
        let path = dir.path().join("store").join(log::log_path(2));
        std::fs::write(path, bytes)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let h = cli(data, &["history", "m"])?;
    assert_eq!(h.as_array().unwrap().len(), 2);
    assert!(h[1]["forced_rule"].is_null(), "{h}");
    assert_eq!(h[1]["kind"], "promote");
    let rows = sql(
        data,
        "SELECT seq, kind, forced_rule FROM registry_events ORDER BY seq",
    )?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1]["kind"], "promote");
    assert!(rows.iter().all(|r| r["forced_rule"].is_null()), "{rows:?}");
    Ok(())
}

/// `alias NAME --delete` answers with the version the alias pointed at.
#[test]
fn deleting_an_alias_prints_the_version_it_pointed_at() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8", "0.8", "0.8"])?;
    cli(data, &["alias", "m", "champion", "2"])?;
    let d = cli(data, &["alias", "m", "champion", "--delete"])?;
    assert_eq!(d["version"], 2, "{d}");
    assert_eq!(d["deleted_alias"], "champion", "{d}");
    assert_eq!(d["aliases"].as_array().map(Vec::len), Some(0), "{d}");
    cli(data, &["alias", "m", "champion", "2"])?;
    let text = cli_text(data, &["alias", "m", "champion", "--delete"])?;
    assert!(text.contains("pointed at version 2"), "{text}");
    let err = cli_err(data, &["get", "m", "champion"])?;
    assert!(err.contains("alias champion"), "{err}");
    Ok(())
}

/// `get --as-of` before the first version says so, and times without a
/// zone are read as UTC.
#[test]
fn as_of_before_the_model_and_times_without_a_zone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    register_versions(data, dir.path(), "m", &["0.8"])?;
    let err = cli_err(data, &["get", "m", "--as-of", "2000-01-01T00:00:00Z"])?;
    assert!(
        err.contains("`m`") && err.contains("had no versions") && err.contains("first registered"),
        "{err}"
    );
    assert!(!err.contains("not registered"), "{err}");
    // An unknown model is still named as such.
    let err = cli_err(data, &["get", "nope", "--as-of", "2000-01-01"])?;
    assert!(err.contains("`nope` is not registered"), "{err}");
    // Times without a zone are UTC: a minute from now, in two spellings.
    let later = Utc::now() + chrono::Duration::minutes(2);
    for t in [
        later.format("%Y-%m-%dT%H:%M:%S").to_string(),
        later.format("%Y-%m-%d %H:%M").to_string(),
    ] {
        assert_eq!(
            cli(data, &["get", "m", "--as-of", &t])?["version"],
            1,
            "{t}"
        );
    }
    let earlier = Utc::now() - chrono::Duration::hours(30);
    let err = cli_err(
        data,
        &[
            "get",
            "m",
            "--as-of",
            &earlier.format("%Y-%m-%d %H:%M").to_string(),
        ],
    )?;
    assert!(err.contains("had no versions"), "{err}");
    let help = crate::run_mlwatch(["registry", "get", "--help"])?;
    assert!(
        help.contains("UTC") && help.contains("2026-11-29 10:00"),
        "{help}"
    );
    Ok(())
}
