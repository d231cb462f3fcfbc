//! `mlwatch serve`: the dashboard's pages, `/health` and `/metrics` over
//! HTTP (axum). Every request builds its page from storage; a bad request
//! is a 4xx page naming the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use super::html::{Links, Page, document, esc};
use super::{Dashboard, PageError};
use crate::error::{Error, Result};

struct AppState {
    dashboard: Dashboard,
    metrics: Option<PrometheusHandle>,
}

type Shared = State<Arc<AppState>>;

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            PageError::NotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
            PageError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::Internal(e) => {
                tracing::error!(error = %e, "page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Error")
            }
        };
        let body = format!(
            "<h1>{title}</h1><p class=\"error\">{}</p>",
            esc(&self.to_string())
        );
        (status, html_page(&document(title, &body, Links::Server))).into_response()
    }
}

fn html_page(s: &str) -> impl IntoResponse + use<> {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        s.to_string(),
    )
}

/// The page `build` makes, or its error page; a panic (a bug) becomes a
/// 500 page instead of a dropped connection.
async fn respond(build: impl Future<Output = std::result::Result<Page, PageError>>) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(build).catch_unwind().await {
        Ok(Ok(p)) => html_page(&document(&p.title, &p.body, Links::Server)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PageError::Internal(Error::Task {
                task: "dashboard page",
                reason: format!("panicked: {what}"),
            })
            .into_response()
        }
    }
}

async fn overview(State(s): Shared) -> Response {
    respond(s.dashboard.overview(Links::Server)).await
}

async fn model(State(s): Shared, Path(m): Path<String>) -> Response {
    respond(s.dashboard.model(&m, Links::Server)).await
}

async fn experiment(State(s): Shared, Path(e): Path<String>) -> Response {
    respond(s.dashboard.experiment(&e, Links::Server)).await
}

async fn registry(State(s): Shared) -> Response {
    respond(s.dashboard.registry(Links::Server)).await
}

#[derive(Deserialize)]
struct RunsQuery {
    #[serde(default)]
    filter: String,
    experiment: Option<String>,
}

async fn runs(State(s): Shared, Query(q): Query<RunsQuery>) -> Response {
    let experiment = q.experiment.as_deref().filter(|e| !e.is_empty());
    respond(s.dashboard.runs(&q.filter, experiment, Links::Server)).await
}

async fn run(State(s): Shared, Path(id): Path<String>) -> Response {
    respond(s.dashboard.run(&id)).await
}

#[derive(Deserialize)]
struct CompareQuery {
    #[serde(default)]
    runs: String,
}

async fn compare(State(s): Shared, Query(q): Query<CompareQuery>) -> Response {
    respond(s.dashboard.compare(&q.runs)).await
}

async fn health(State(s): Shared) -> Response {
    match s.dashboard.ready().await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"status": "unavailable", "reason": e.to_string()}).to_string(),
        )
            .into_response(),
    }
}

async fn metrics(State(s): Shared) -> Response {
    match &s.metrics {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::telemetry::render(h),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this process runs no pipeline: /metrics is served by `mlwatch run --metrics-listen`\n",
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    PageError::NotFound {
        what: "page",
        name: "this address".into(),
        known: vec![
            "/".into(),
            "/models/{model}".into(),
            "/experiments/{name}".into(),
            "/registry".into(),
            "/runs".into(),
            "/health".into(),
            "/metrics".into(),
        ],
    }
    .into_response()
}

/// The routes over `dashboard`; `/metrics` renders `metrics` when given.
pub fn router(dashboard: Dashboard, handle: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/models/{model}", get(model))
        .route("/experiments/{name}", get(experiment))
        .route("/registry", get(registry))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/compare", get(compare))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(AppState {
            dashboard,
            metrics: handle,
        }))
}

/// A bound listener and its address (port 0 picks a free port).
pub async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let err = |source| Error::Listen {
        addr: listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Error::Task {
            task: "dashboard",
            reason: e.to_string(),
        })
}
