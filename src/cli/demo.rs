//! `mlwatch demo`.

use std::path::PathBuf;

use clap::Args;

use crate::demo::{self, DemoOptions};
use crate::query;
use crate::storage::Storage;

/// Arguments of `mlwatch demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "./mlwatch-data")]
    pub data: PathBuf,
    /// Number of prediction events to produce.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub events: u64,
    /// Number of one-minute event-time windows the events span.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub windows: u64,
    /// Only start the in-process broker, print its address and wait for Ctrl-C,
    /// so an outside producer and `mlwatch run` can use it.
    #[arg(long)]
    pub serve_broker: bool,
    /// After the run, leave the dashboard (and the run's `/metrics`) up on
    /// the demo's output and print its URL; Ctrl-C stops it.
    #[arg(long)]
    pub serve: bool,
    /// Address of the dashboard with `--serve` (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = super::serve::DEFAULT_LISTEN, requires = "serve")]
    pub listen: String,
}

pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.serve_broker {
        return serve_broker().await;
    }
    if args.events == 0 {
        anyhow::bail!("--events must be at least 1");
    }
    let (new_category, score, prediction) = demo::Drifts::starts(args.windows);
    let concept = demo::Drifts::concept_start(args.windows);
    eprintln!(
        "mlwatch demo: in-process Kafka broker, {} events over {} one-minute windows; injected: \
         `{}` gains the category `{}` from window {new_category}, `{}` shifts from window {score}, \
         the prediction shifts from window {prediction}, {:.0}% of the labels flip from window \
         {concept} (concept drift; windows counted from 0). Labels: {:.0}% never arrive, {:.0}% \
         after the {}-minute horizon.",
        args.events,
        args.windows,
        demo::NEW_CATEGORY_FEATURE,
        demo::NEW_CATEGORY,
        demo::SHIFTED_FEATURE,
        demo::FLIPPED_LABELS * 100.0,
        demo::MISSING_LABELS * 100.0,
        demo::LATE_LABELS * 100.0,
        demo::LABEL_HORIZON_MS / 60_000,
    );
    let metrics = if args.serve {
        Some(crate::telemetry::install()?)
    } else {
        None
    };
    let summary = demo::run_demo(&DemoOptions {
        data: args.data.clone(),
        events: args.events,
        windows: args.windows,
    })
    .await?;
    let c = &summary.counters;
    println!(
        "consumed {} records ({} events, {} labels: {} joined, {} duplicates) in {:.1}s; {} windows closed, {} drift results, {} dead letters {:?}",
        c.records,
        c.events,
        c.outcomes,
        c.labels_joined,
        c.duplicate_labels,
        summary.seconds,
        c.windows_closed,
        c.drift_rows,
        c.dead_letters.values().sum::<u64>(),
        c.dead_letters
    );
    let storage = Storage::open(&args.data.display().to_string(), &Default::default())?;
    let ctx = query::new_context(Default::default());
    query::register_tables(&ctx, &storage)?;
    let columns: Vec<&str> = demo::NUMERIC
        .iter()
        .chain(demo::CATEGORICAL.iter())
        .copied()
        .chain(["prediction"])
        .collect();
    let per_window = ctx
        .sql(&format!(
            "SELECT d.window_start, {}, any_value(s.dataset_drifted) AS dataset \
             FROM drift_results d JOIN drift_summary s \
               ON d.window_start = s.window_start AND d.model = s.model AND d.version = s.version \
             WHERE d.model = '{}' GROUP BY d.window_start ORDER BY d.window_start",
            columns
                .iter()
                .map(|f| format!(
                    "max(CASE WHEN feature = '{f}' THEN (CASE WHEN drifted THEN 'DRIFT' ELSE '.' END) END) AS {f}"
                ))
                .collect::<Vec<_>>()
                .join(", "),
            demo::MODEL
        ))
        .await?
        .collect()
        .await?;
    println!(
        "\nDrift by window and column (method by Evidently's rule; DRIFT = p-value after \
         correction below its threshold, or distance at or above it):"
    );
    print!(
        "{}",
        super::sql::render(&per_window, super::sql::Format::Table)?
    );
    let totals = ctx
        .sql("SELECT kind, feature, any_value(method) AS method, count(*) FILTER (WHERE drifted) AS drifted_windows, count(*) AS windows FROM drift_results GROUP BY kind, feature ORDER BY kind, feature")
        .await?
        .collect()
        .await?;
    println!("\nPer feature:");
    print!(
        "{}",
        super::sql::render(&totals, super::sql::Format::Table)?
    );
    let acc = |v: &str| {
        format!(
            "round(sum(value * n_labeled) FILTER (WHERE metric = 'accuracy' AND version = '{v}') / sum(n_labeled) FILTER (WHERE metric = 'accuracy' AND version = '{v}'), 4) AS accuracy_v{v}, \
             round(any_value(baseline_value) FILTER (WHERE metric = 'accuracy' AND version = '{v}'), 4) AS registry_v{v}"
        )
    };
    let performance = ctx
        .sql(&format!(
            "SELECT window_start, sum(n_predictions) FILTER (WHERE metric = 'accuracy') AS predictions, \
             sum(n_labeled) FILTER (WHERE metric = 'accuracy') AS labeled, {}, {}, \
             bool_or(degraded) FILTER (WHERE metric = 'accuracy') AS degraded \
             FROM performance WHERE model = '{}' GROUP BY window_start ORDER BY window_start",
            acc("1"),
            acc("2"),
            demo::MODEL
        ))
        .await?
        .collect()
        .await?;
    println!(
        "\nPerformance by window and model version (labels joined to predictions; a version's variants \
         together; `degraded` = accuracy worse than the registry version's beyond its tolerance, significantly):"
    );
    print!(
        "{}",
        super::sql::render(&performance, super::sql::Format::Table)?
    );
    let detections = ctx
        .sql("SELECT window_start, version, detector, ts, event_id, round(statistic, 4) AS statistic, n_seen FROM concept_drift ORDER BY ts, detector")
        .await?
        .collect()
        .await?;
    println!(
        "\nConcept drift detections (error stream of the joined labels, in event-time order):"
    );
    print!(
        "{}",
        super::sql::render(&detections, super::sql::Format::Table)?
    );
    let alerts = ctx
        .sql("SELECT kind, count(*) AS alerts, count(DISTINCT \"column\") AS subjects, min(window_start) AS first, max(window_start) AS last FROM alerts GROUP BY kind ORDER BY kind")
        .await?
        .collect()
        .await?;
    println!(
        "\nAlerts by kind (also on the topic mlwatch.alerts; every one is a row of the `alerts` table; a lasting breach repeats after the cool-down):"
    );
    print!(
        "{}",
        super::sql::render(&alerts, super::sql::Format::Table)?
    );
    let notable = ctx
        .sql("SELECT window_start, kind, \"column\", message FROM alerts WHERE kind IN ('drift', 'dataset_drift', 'concept_drift', 'experiment') ORDER BY window_start, kind, \"column\", message")
        .await?
        .collect()
        .await?;
    println!("\nDrift, concept-drift and experiment alerts:");
    print!(
        "{}",
        super::sql::render(&notable, super::sql::Format::Table)?
    );
    for e in demo::EXPERIMENTS {
        let report = crate::ab::report::build(&ctx, e).await?;
        println!(
            "\nA/B experiment `{e}` (mlwatch ab report {e} --data {}):",
            args.data.display()
        );
        print!("{}", crate::ab::report::text(&report));
    }
    println!(
        "\nResults are Parquet under {}; try:\n  mlwatch sql --data {} \"SELECT feature, count(*) FILTER (WHERE drifted) FROM drift_results GROUP BY feature\"\n  mlwatch ab report challenger --data {} --format html --out challenger.html",
        args.data.display(),
        args.data.display(),
        args.data.display()
    );
    if args.serve {
        let storage =
            Storage::open_existing(&args.data.display().to_string(), &Default::default())?;
        let router =
            crate::dashboard::server::router(crate::dashboard::Dashboard::new(storage), metrics);
        let (listener, addr) = crate::dashboard::server::bind(&args.listen).await?;
        println!(
            "\nDashboard: http://{addr}/  (metrics of this run: http://{addr}/metrics; Ctrl-C stops)"
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        crate::dashboard::server::serve(listener, router, super::run::shutdown_signal()).await?;
    }
    Ok(())
}

async fn serve_broker() -> anyhow::Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    let config = crate::Config::from_toml_str("")?;
    demo::create_topics(&cluster, &config)?;
    println!("{}", cluster.bootstrap_servers());
    eprintln!(
        "In-process Kafka broker up (topics {}, {}, {}, {}). Point producers and `MLWATCH__KAFKA__BROKERS` at the address above; Ctrl-C stops it.",
        config.kafka.predictions_topic,
        config.kafka.features_topic,
        config.kafka.outcomes_topic,
        config.kafka.tracking_topic
    );
    tokio::signal::ctrl_c().await?;
    drop(cluster);
    Ok(())
}
