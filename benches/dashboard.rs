//! Dashboard page times on the demo's output, beside a baseline measured in
//! the same run: reading every row of the tables the page reads (`SELECT *`
//! of each, collected), which no page can beat by much.
//!
//!     cargo bench --bench dashboard              # the demo's 100,000 events
//!     cargo bench --bench dashboard -- 1000000   # more events (20 windows)
//!
//! Each page is fetched over HTTP from the server `mlwatch serve` runs (in
//! this process, on loopback) 3 times to warm up, then 15 times; median and
//! slowest are printed with the response size. Nothing is asserted.

use std::time::{Duration, Instant};

use mlwatch::dashboard::{Dashboard, server};
use mlwatch::demo::{self, DemoOptions};
use mlwatch::storage::Storage;

const WARM: usize = 3;
const RUNS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Median time to read every row of `tables`.
async fn scan(storage: &Storage, tables: &[&str]) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    for i in 0..WARM + RUNS {
        let t = Instant::now();
        let ctx = mlwatch::query::new_context(Default::default());
        mlwatch::query::register_tables(&ctx, storage)?;
        if tables.iter().any(|t| t.starts_with("model")) {
            mlwatch::query::register_registry_tables(&ctx, storage).await?;
        }
        if tables.iter().any(|t| ["runs", "metrics"].contains(t)) {
            mlwatch::tracking::register_tables(&ctx, storage).await?;
        }
        for table in tables {
            ctx.sql(&format!("SELECT * FROM {table}"))
                .await?
                .collect()
                .await?;
        }
        if i >= WARM {
            times.push(t.elapsed());
        }
    }
    Ok(median(times))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let t = Instant::now();
    demo::run_demo(&DemoOptions {
        data: data.clone(),
        events,
        windows: 20,
    })
    .await?;
    eprintln!(
        "demo: {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let storage = Storage::open(&data.display().to_string(), &Default::default())?;
    let router = server::router(Dashboard::new(storage.clone()), None);
    let (listener, addr) = server::bind("127.0.0.1:0").await?;
    tokio::spawn(server::serve(listener, router, std::future::pending()));
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let runs = client
        .get(format!("{base}/runs"))
        .send()
        .await?
        .text()
        .await?;
    let ids: Vec<&str> = runs
        .match_indices("href=\"/runs/")
        .map(|(i, _)| &runs[i + 12..i + 44])
        .collect();
    let pages: Vec<(String, Vec<&str>)> = vec![
        ("/".into(), vec!["drift_summary", "alerts", "ab_decisions"]),
        (
            "/models/credit_risk".into(),
            vec![
                "drift_results",
                "prediction_distribution",
                "data_quality",
                "performance",
                "concept_drift",
                "alerts",
            ],
        ),
        (
            "/experiments/challenger".into(),
            vec!["ab_results", "ab_decisions"],
        ),
        (
            "/registry".into(),
            vec!["models", "model_versions", "registry_events"],
        ),
        ("/runs".into(), vec!["runs", "metrics"]),
        (format!("/runs/{}", ids[0]), vec!["runs", "metrics"]),
        (
            format!("/compare?runs={},{}", ids[0], ids[1]),
            vec!["runs", "metrics"],
        ),
    ];
    println!("| page | median ms | slowest ms | KiB | scan of its tables, median ms |");
    println!("|---|---:|---:|---:|---:|");
    for (path, tables) in &pages {
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..WARM + RUNS {
            let t = Instant::now();
            let r = client.get(format!("{base}{path}")).send().await?;
            assert!(r.status().is_success(), "{path}: {}", r.status());
            size = r.bytes().await?.len();
            if i >= WARM {
                times.push(t.elapsed());
            }
        }
        let slowest = *times.iter().max().unwrap_or(&Duration::ZERO);
        let page = if path.starts_with("/runs/") {
            "/runs/{id}"
        } else if path.starts_with("/compare") {
            "/compare?runs=a,b"
        } else {
            path.as_str()
        };
        println!(
            "| `{page}` | {} | {} | {} | {} |",
            ms(median(times)),
            ms(slowest),
            size / 1024,
            ms(scan(&storage, tables).await?)
        );
    }
    let mut times = Vec::new();
    let dashboard = Dashboard::new(storage.clone());
    for i in 0..WARM + 5 {
        let t = Instant::now();
        let html = dashboard.report(&Default::default()).await?;
        std::hint::black_box(html);
        if i >= WARM {
            times.push(t.elapsed());
        }
    }
    println!(
        "\n`mlwatch report` (every page in one file, in process): median {} ms",
        ms(median(times))
    );
    Ok(())
}
