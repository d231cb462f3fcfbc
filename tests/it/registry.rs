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
    let (mut done, mut refused, mut lost) = (0u64, 0u64, 0u64);
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
                .map(drop)
            } else {
                reg.rollback("race", Stage::Production).await.map(drop)
            };
            lost = reg.lost_races();
            match result {
                Ok(()) => done += 1,
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
    println!("WORKER-RESULT {done} {refused} {lost}");
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
            .take(3)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(n[0] + n[1], ops);
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

/// Create-if-absent gives a sequence number to one writer only, and a
/// request that another writer made illegal is refused on the fresh state.
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
    // a asks for the same move: refused on the fresh state, nothing written.
    let err = a
        .promote_model("m", 1, Stage::Production, skip)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already in production"), "{err}");
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
