//! The dashboard on the demo's output: every page and the report file in
//! headless Chromium (each chart's SVG elements, no console messages,
//! screenshots kept under `target/tmp/dashboard/`), bad requests answered
//! with 4xx pages, and `/metrics` of the demo's run parsed as Prometheus
//! text with the consumer lag at 0 once the stream is drained.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Killed, TestResult, run_mlwatch};

/// Starts `mlwatch ARGS` and returns it with the first `http://` URL its
/// stdout prints.
fn start(args: &[&str]) -> Result<(Killed, String), Box<dyn std::error::Error>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let child = Killed(child);
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(i) = line.find("http://") {
            let url = line[i..].split_whitespace().next().unwrap_or_default();
            return Ok((child, url.trim_end_matches('/').to_string()));
        }
    }
    Err(format!("mlwatch {args:?} printed no URL").into())
}

async fn get(url: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let r = reqwest::get(url).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// Debian's Chromium, if installed; `.ci/run` installs it and sets
/// `MLWATCH_TEST_BROWSER=1`, which makes its absence a failure.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("MLWATCH_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("MLWATCH_TEST_BROWSER").is_none(),
            "MLWATCH_TEST_BROWSER is set but Chromium is not installed (apt-get install chromium)"
        );
        eprintln!("Chromium not installed: pages checked as served, not rendered");
    }
    found
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or
/// `--screenshot=FILE`), killed after 90 s; returns stdout and the console
/// messages the page logged.
fn headless(
    browser: &Path,
    url: &str,
    mode: &str,
    profile: &Path,
) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the browser's helpers go with it.
        .process_group(0)
        .spawn()?;
    let group = format!("-{}", child.id());
    let kill_group = || {
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    };
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).map(|_| s)
        })
    };
    let out = read(Box::new(child.stdout.take().ok_or("stdout")?));
    let err = read(Box::new(child.stderr.take().ok_or("stderr")?));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > Duration::from_secs(90) {
            kill_group();
            let _ = child.wait();
            return Err(format!("{url}: chromium did not finish in 90 s").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A helper left behind would hold the pipes open.
    kill_group();
    let stdout = out.join().map_err(|_| "stdout reader")??;
    let stderr = err.join().map_err(|_| "stderr reader")??;
    assert!(status.success(), "{url}: chromium failed: {stderr}");
    let console = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    Ok((stdout, console))
}

/// Each `<figure class="chart" data-chart=NAME>` of `dom` with its content.
fn figures(dom: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find("<figure class=\"chart\" data-chart=\"") {
        let after = &rest[i + 34..];
        let name_end = after.find('"').unwrap_or(0);
        let end = after.find("</figure>").unwrap_or(after.len());
        out.push((after[..name_end].to_string(), &after[..end]));
        rest = &after[end..];
    }
    out
}

/// Checks that every chart `dom` holds rendered: an `<svg>` with the
/// elements of its kind (cells of a heat map, lines or points of a chart).
fn assert_charts(page: &str, dom: &str, expected: &[&str]) {
    let figs = figures(dom);
    for name in expected {
        assert!(
            figs.iter().any(|(n, _)| n.starts_with(name)),
            "{page}: no chart `{name}` among {:?}",
            figs.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    for (name, body) in &figs {
        assert!(body.contains("<svg"), "{page}: chart {name} has no svg");
        let count = |tag: &str| body.matches(tag).count();
        if name.starts_with("drift-heatmap") || name.starts_with("prediction-histogram") {
            assert!(
                count("<rect") >= 20,
                "{page}: heat map {name} has {} cells",
                count("<rect")
            );
        } else {
            let marks = count("<polyline") + count("<circle") + count("<polygon") + count("<path");
            assert!(marks > 0, "{page}: chart {name} draws nothing");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_the_report_show_their_charts_in_chromium_and_bad_requests_get_4xx()
-> TestResult {
    let (tmp, data_arg) = crate::demo_output().await?;
    let (_server, base) = start(&["serve", "--data", &data_arg, "--listen", "127.0.0.1:0"])?;

    // A run id to open, from the runs page's links.
    let (status, runs) = get(&format!("{base}/runs")).await?;
    assert_eq!(status, 200, "{runs}");
    let ids: Vec<String> = runs
        .match_indices("href=\"/runs/")
        .map(|(i, _)| runs[i + 12..i + 44].to_string())
        .collect();
    assert_eq!(ids.len(), 2, "the demo's two training runs: {ids:?}");
    let pages: Vec<(&str, String, Vec<&str>)> = vec![
        ("overview", "/".into(), vec!["drift-share"]),
        (
            "model",
            "/models/credit_risk".into(),
            vec![
                "drift-heatmap-v1",
                "drift-heatmap-v2",
                "prediction-histogram-v1",
                "prediction-histogram-v2",
                "prediction-drift",
                "quality",
                "performance-accuracy",
                "detections",
                "alerts",
            ],
        ),
        (
            "experiment-challenger",
            "/experiments/challenger".into(),
            vec!["effect-accuracy", "effect-latency_mean", "srm", "progress"],
        ),
        (
            "experiment-rollout",
            "/experiments/rollout".into(),
            vec!["effect-accuracy", "srm", "progress"],
        ),
        ("registry", "/registry".into(), vec!["stages-credit_risk"]),
        (
            "runs",
            "/runs".into(),
            vec!["metric-loss", "metric-val_accuracy"],
        ),
        (
            "runs-search",
            "/runs?filter=metrics.val_accuracy+%3E+0.8".into(),
            vec!["metric-val_accuracy"],
        ),
        ("run", format!("/runs/{}", ids[0]), vec!["metric-loss"]),
        (
            "compare",
            format!("/compare?runs={},{}", ids[0], ids[1]),
            vec!["metric-loss", "metric-val_loss"],
        ),
    ];
    // Served: 200, with the charts in the HTML.
    for (name, path, charts) in &pages {
        let (status, html) = get(&format!("{base}{path}")).await?;
        assert_eq!(status, 200, "{name}: {html}");
        assert_charts(name, &html, charts);
    }
    // The search filters: v2's validation accuracy is 0.84, v1's 0.78.
    let (_, search) = get(&format!("{base}/runs?filter=metrics.val_accuracy+%3E+0.8")).await?;
    assert!(
        search.contains("train-v2") && !search.contains("train-v1"),
        "{search}"
    );

    // Bad requests: 4xx pages with the reason.
    let deep = format!("/runs?filter={}metrics.loss+%3E+1", "not+".repeat(100));
    let many_keys: String = (0..33)
        .map(|i| format!("+and+metrics.k{i}+%3E+1"))
        .collect();
    let many_keys = format!("/runs?filter=metrics.loss+%3E+1{many_keys}");
    let too_many: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    let too_many = format!("/compare?runs={}", too_many.join(","));
    // Long flat `or` chains and times against epoch milliseconds work.
    let long_or: String = (0..60).map(|_| "+or+metrics.loss+%3E+100").collect();
    let (status, page) = get(&format!("{base}/runs?filter=metrics.loss+%3E+0{long_or}")).await?;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("train-v1") && page.contains("train-v2"));
    let (status, page) = get(&format!("{base}/runs?filter=start_time+%3E+1000")).await?;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("train-v1") && page.contains("train-v2"));
    let unknown_run = "0".repeat(32);
    for (path, status, reason) in [
        (
            "/models/nope",
            404,
            "model `nope` not found (known: credit_risk)",
        ),
        (
            "/experiments/nope",
            404,
            "experiment `nope` not found (known: challenger, rollout)",
        ),
        (
            &format!("/runs/{unknown_run}")[..],
            404,
            "run `00000000000000000000000000000000` not found",
        ),
        ("/runs/xyz", 400, "bad run id: `xyz` is not 32 hex digits"),
        ("/runs?filter=metrics.acc+%3E%3E+1", 400, "bad filter"),
        ("/runs?filter=params.x+%3D", 400, "bad filter"),
        (
            "/runs?filter=metrics.val_accuracy+%3E+-inf",
            400,
            "not a finite number",
        ),
        (
            "/runs?filter=metrics.val_accuracy+like+5",
            400,
            "quoted pattern",
        ),
        (&deep[..], 400, "levels"),
        ("/runs?filter=run_name+%3D+5", 400, "is text"),
        (&many_keys[..], 400, "distinct"),
        (&too_many[..], 400, "at most 10 runs"),
        (
            "/models/a%20b%27%3Cc%3E",
            404,
            "model `a b'&lt;c&gt;` not found",
        ),
        ("/compare?runs=abc", 400, "at least two run ids"),
        ("/no/such/page", 404, "not found"),
    ] {
        let (got, html) = get(&format!("{base}{path}")).await?;
        assert_eq!(got, status, "{path}: {html}");
        assert!(
            html.contains(&reason.replace('`', "&#96;")) || html.contains(reason),
            "{path}: {html}"
        );
    }
    let (status, health) = get(&format!("{base}/health")).await?;
    assert_eq!((status, health.as_str()), (200, r#"{"status":"ready"}"#));

    // The report: one file, every section, nothing fetched.
    let report = tmp.path().join("report.html");
    run_mlwatch([
        "report",
        "--data",
        &data_arg,
        "--out",
        &report.display().to_string(),
    ])?;
    let html = std::fs::read_to_string(&report)?;
    for section in [
        "overview",
        "model-credit_risk",
        "experiment-challenger",
        "experiment-rollout",
        "registry",
        "runs",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{section}\">")),
            "report lacks {section}"
        );
    }
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("url("));
    assert_charts(
        "report",
        &html,
        &[
            "drift-heatmap-v1",
            "effect-accuracy",
            "srm",
            "stages-credit_risk",
            "metric-loss",
        ],
    );
    let err = run_mlwatch([
        "report",
        "--data",
        &data_arg,
        "--model",
        "nope",
        "--out",
        &report.display().to_string(),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("model `nope` not found"), "{err}");
    // A report of one experiment links only to sections it has.
    let one = tmp.path().join("one.html");
    run_mlwatch([
        "report",
        "--data",
        &data_arg,
        "--experiment",
        "rollout",
        "--out",
        &one.display().to_string(),
    ])?;
    let html = std::fs::read_to_string(&one)?;
    assert!(
        html.contains("href=\"#experiment-rollout\""),
        "overview links it"
    );
    assert!(html.contains("id=\"experiment-rollout\""));
    assert!(
        !html.contains("#experiment-challenger"),
        "no link to a section the report lacks"
    );

    // In a real browser: the same charts rendered, no console messages,
    // and a screenshot of each page kept as a test artifact.
    let Some(browser) = chromium() else {
        return Ok(());
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots)?;
    let profile = tmp.path().join("chromium");
    let mut targets: Vec<(String, String, Vec<&str>)> = pages
        .iter()
        .map(|(n, p, c)| (n.to_string(), format!("{base}{p}"), c.clone()))
        .collect();
    targets.push((
        "report".into(),
        format!("file://{}", report.display()),
        vec![
            "drift-heatmap-v1",
            "effect-accuracy",
            "stages-credit_risk",
            "metric-loss",
        ],
    ));
    // The console check can fail: a page that logs an error is caught.
    let noisy = tmp.path().join("noisy.html");
    std::fs::write(&noisy, "<script>console.error('boom')</script>")?;
    let noisy = format!("file://{}", noisy.display());
    let (_, console) = headless(&browser, &noisy, "--dump-dom", &profile)?;
    assert!(
        console.iter().any(|l| l.contains("boom")),
        "console not captured: {console:?}"
    );
    for (name, url, charts) in &targets {
        let (dom, console) = headless(&browser, url, "--dump-dom", &profile)?;
        assert!(console.is_empty(), "{name}: console messages: {console:#?}");
        assert_charts(name, &dom, charts);
        let png = shots.join(format!("{name}.png"));
        let shot = format!("--screenshot={}", png.display());
        let (_, console) = headless(&browser, url, &shot, &profile)?;
        assert!(console.is_empty(), "{name}: console messages: {console:#?}");
        let size = std::fs::metadata(&png)?.len();
        assert!(size > 10_000, "{name}: screenshot of {size} bytes");
    }
    eprintln!("screenshots in {}", shots.display());
    Ok(())
}

/// `mlwatch demo --serve`: the run's `/metrics` parse as Prometheus text,
/// every partition's lag is 0 once the stream is drained, and the counters
/// match the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_exposes_prometheus_metrics_with_the_lag_drained_to_zero() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data").display().to_string();
    let (_demo, base) = start(&[
        "demo",
        "--data",
        &data,
        "--events",
        "20000",
        "--windows",
        "10",
        "--serve",
        "--listen",
        "127.0.0.1:0",
    ])?;
    let (status, text) = get(&format!("{base}/metrics")).await?;
    assert_eq!(status, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
    let samples = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    };
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    };
    let lag = samples("mlwatch_consumer_lag");
    assert!(
        lag.len() >= 3,
        "a lag per partition of the demo's topics: {text}"
    );
    for s in &lag {
        assert_eq!(value(s), 0.0, "drained: {:?} {text}", s.labels);
        assert!(s.labels.get("topic").is_some() && s.labels.get("partition").is_some());
    }
    let one = |name: &str| samples(name).first().map(|s| value(s)).unwrap_or(f64::NAN);
    // One event per prediction (its features inline), and the labels.
    assert_eq!(one("mlwatch_events_total"), 20_000.0, "{text}");
    assert!(one("mlwatch_outcomes_total") > 10_000.0, "{text}");
    assert_eq!(
        one("mlwatch_records_total"),
        one("mlwatch_events_total") + one("mlwatch_outcomes_total"),
        "{text}"
    );
    assert!(one("mlwatch_windows_closed_total") >= 10.0, "{text}");
    assert_eq!(one("mlwatch_webhook_failures_total"), 0.0);
    assert!(one("mlwatch_checkpoint_age_seconds") >= 0.0, "{text}");
    assert!(
        one("mlwatch_last_checkpoint_timestamp_seconds") > 1.7e9,
        "{text}"
    );
    // Time per window of each evaluator and sink, as histograms.
    let parts: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mlwatch_evaluator_seconds")
        .filter_map(|s| s.labels.get("part"))
        .collect();
    for p in ["drift", "quality", "performance", "ab"] {
        assert!(parts.contains(p), "no evaluator time of {p}: {parts:?}");
    }
    assert!(
        scrape.docs.contains_key("mlwatch_consumer_lag"),
        "HELP lines"
    );
    // The dashboard is up on the same address.
    let (status, page) = get(&format!("{base}/experiments/challenger")).await?;
    assert_eq!(status, 200);
    assert!(page.contains("ship challenger"), "{page}");
    Ok(())
}
