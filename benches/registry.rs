//! Registry speed on a local store: builds 100 models x 100 versions (10,000
//! register events, plus promotions) through the public API, then times
//!
//! * `get_model` by stage in a warm process (the state cached, one probe for
//!   new commits per call),
//! * a fresh `mlwatch registry get MODEL production` process, start-up
//!   included (release binary; snapshot + tail of the log),
//! * `promote_model` latency (read to the end of the log, check, commit).
//!
//!     cargo bench --bench registry
//!
//! Figures are printed; nothing is asserted.

mod common;

use std::time::{Duration, Instant};

use mlwatch::registry::{ModelMetadata, ModelRegistry, PromoteOptions, Selector, Stage};
use mlwatch::storage::Storage;

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let storage = Storage::open(data.to_str().unwrap(), &Default::default())?;
    let reg = ModelRegistry::new(storage.clone()).with_actor("bench");
    let artifact = dir.path().join("model.bin");
    std::fs::write(&artifact, vec![1u8; 4096])?;

    let start = Instant::now();
    let (models, versions) = (100u64, 100u64);
    for v in 1..=versions {
        for m in 0..models {
            let md = ModelMetadata {
                metrics: [("auc".to_string(), 0.5 + (v as f64) / 250.0)].into(),
                model_type: Some("xgboost".into()),
                ..Default::default()
            };
            reg.register_model(&format!("model-{m:03}"), &artifact, md)
                .await?;
        }
    }
    let skip = PromoteOptions {
        allow_skip: true,
        force: false,
    };
    for m in 0..models {
        let name = format!("model-{m:03}");
        reg.promote_model(&name, 90, Stage::Production, skip)
            .await?;
        reg.promote_model(&name, 95, Stage::Staging, skip).await?;
    }
    let st = reg.state().await?;
    println!(
        "built {} models x {} versions: {} events in {} commits, {:.1} s ({:.2} ms per commit)",
        models,
        versions,
        st.events.len(),
        st.head,
        start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64() * 1e3 / st.head as f64
    );

    // Warm: same process, state cached.
    let mut warm = Vec::new();
    for i in 0..2000 {
        let t = Instant::now();
        let v = reg
            .get_model(
                &format!("model-{:03}", i % models),
                &Selector::Stage(Stage::Production),
            )
            .await?;
        warm.push(t.elapsed());
        assert_eq!(v.version, 90);
    }
    println!(
        "get_model by stage, warm: median {}, p99 {}",
        ms(percentile(warm.clone(), 0.5)),
        ms(percentile(warm, 0.99))
    );

    // Cold in-process: a new registry object (reads snapshot + log tail).
    let mut cold = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = ModelRegistry::new(storage.clone());
        r.get_model("model-042", &Selector::Stage(Stage::Production))
            .await?;
        cold.push(t.elapsed());
    }
    println!(
        "get_model by stage, new registry object in a running process: median {}",
        ms(percentile(cold, 0.5))
    );

    // Fresh process, start-up included.
    let mut fresh = Vec::new();
    for _ in 0..10 {
        fresh.push(common::time_mlwatch([
            "registry".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
            "get".as_ref(),
            "model-042".as_ref(),
            "production".as_ref(),
        ])?);
    }
    println!(
        "`mlwatch registry get model-042 production`, fresh process: median {}, max {}",
        ms(percentile(fresh.clone(), 0.5)),
        ms(percentile(fresh, 1.0))
    );

    // Promote latency (each also archives the version it replaces).
    let mut promote = Vec::new();
    for i in 0..200u64 {
        let name = format!("model-{:03}", i % models);
        let version = 50 + i / models;
        let t = Instant::now();
        reg.promote_model(&name, version, Stage::Production, skip)
            .await?;
        promote.push(t.elapsed());
    }
    println!(
        "promote_model: median {}, p99 {}",
        ms(percentile(promote.clone(), 0.5)),
        ms(percentile(promote, 0.99))
    );
    Ok(())
}
