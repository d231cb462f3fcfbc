//! POSTs alerts to `alerts.webhook_url` on a task of its own.
//!
//! [`Webhook::post`] never waits: the alert goes into a bounded queue (a
//! full queue drops it, logged and counted). The task POSTs each one as
//! JSON, retrying a failed request (connection error, timeout, 5xx, 429)
//! with exponential backoff (`alerts.webhook_retries` retries from 500 ms,
//! doubling, capped at 30 s). A delivery that still fails is logged and
//! counted in [`Webhook::failures`]. A 4xx other than 429 is not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::AlertsConfig;

/// Alerts queued ahead of the webhook task before new ones are dropped.
const QUEUE: usize = 1024;

/// Handle of the webhook task.
pub(crate) struct Webhook {
    tx: mpsc::Sender<(String, String)>,
    failures: Arc<AtomicU64>,
    drain: Drain,
}

/// What a stopping process waits on: the webhook task, which ends once its
/// queue is delivered (or given up) after the [`Webhook`] is dropped.
#[derive(Clone)]
pub(crate) struct Drain {
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Alerts queued and not yet delivered nor failed.
    pending: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl Drain {
    /// Waits up to `deadline` for the queued alerts to be delivered; those
    /// still pending then are counted as failures (and logged). Call it
    /// once the sink holding the [`Webhook`] is dropped.
    pub async fn wait(self, deadline: Duration) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
            let lost = self.pending.swap(0, Ordering::Relaxed);
            self.failures.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(lost, "stopping: webhook alerts not delivered in time");
        }
    }
}

impl Webhook {
    /// Starts the task for `config.webhook_url`.
    pub fn spawn(config: &AlertsConfig) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failures = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(config.clone(), rx, failures.clone(), pending.clone()));
        Self {
            tx,
            failures: failures.clone(),
            drain: Drain {
                task: Arc::new(std::sync::Mutex::new(Some(task))),
                pending,
                failures,
            },
        }
    }

    /// Queues one alert's JSON (never waits).
    pub fn post(&self, alert_id: String, json: String) {
        self.drain.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send((alert_id.clone(), json)).is_err() {
            self.drain.pending.fetch_sub(1, Ordering::Relaxed);
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%alert_id, "webhook queue full; alert not posted");
        }
    }

    /// Deliveries that failed after their retries (or were dropped).
    pub fn failures(&self) -> Arc<AtomicU64> {
        self.failures.clone()
    }

    /// The handle a stopping process waits on.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }
}

async fn run(
    config: AlertsConfig,
    mut rx: mpsc::Receiver<(String, String)>,
    failures: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.webhook_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; alerts are not posted");
            while let Some((alert_id, _)) = rx.recv().await {
                pending.fetch_sub(1, Ordering::Relaxed);
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%alert_id, "alert not posted");
            }
            return;
        }
    };
    while let Some((alert_id, json)) = rx.recv().await {
        deliver(&client, &config, &alert_id, json, &failures).await;
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// POSTs one alert, retrying as configured; a final failure is counted.
async fn deliver(
    client: &reqwest::Client,
    config: &AlertsConfig,
    alert_id: &str,
    json: String,
    failures: &AtomicU64,
) {
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = client
            .post(&config.webhook_url)
            .header("content-type", "application/json")
            .body(json.clone())
            .send()
            .await;
        let (retry, reason) = match outcome {
            Ok(r) if r.status().is_success() => break,
            Ok(r) => {
                let s = r.status();
                (
                    s.is_server_error() || s.as_u16() == 429,
                    format!("HTTP {s}"),
                )
            }
            // Without the URL: webhook URLs often carry a token.
            Err(e) => (true, e.without_url().to_string()),
        };
        if !retry || attempt > config.webhook_retries {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%alert_id, attempts = attempt, %reason, "webhook delivery failed");
            break;
        }
        tracing::warn!(%alert_id, attempt, %reason, "webhook delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
