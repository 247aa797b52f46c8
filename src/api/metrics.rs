//! `GET /metrics`: the Prometheus scrape. The runtime names and records
//! every figure (`tertulia_actors::metrics`); this file installs the one
//! recorder that keeps them and renders it in the text format.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;
use tertulia_actors::metrics::name;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;

use crate::app::AppState;
use crate::http::error::json_error;

/// The process's recorder. It is global to the process (the `metrics`
/// facade has one), so it is installed once however many servers start.
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds: from a fast commit (100 µs) to a slow answer (a minute).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];
/// Writes per group commit; the persistence actor takes at most 1,000.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Installs the recorder (once per process) when metrics are on.
pub fn install(enabled: bool) {
    if !enabled || RECORDER.get().is_some() {
        return;
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(name::COMMIT_BATCH_SIZE.into()),
                BATCH_BUCKETS,
            )
        });
    let installed = builder.and_then(|builder| builder.install_recorder());
    match installed {
        Ok(handle) => {
            if RECORDER.set(handle).is_ok() {
                tertulia_actors::metrics::describe();
                metrics::describe_gauge!("tertulia_build_info", "The running version (always 1).");
                metrics::gauge!("tertulia_build_info", "version" => env!("CARGO_PKG_VERSION"))
                    .set(1.0);
            }
        }
        // Another recorder (a test harness's) is already the process's.
        Err(error) => tracing::warn!(%error, "metrics are not recorded"),
    }
}

/// GET /metrics
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(app.filter())
        .and(warp::header::optional::<String>("authorization"))
        .map(scrape)
        .boxed()
}

fn scrape(app: AppState, authorization: Option<String>) -> warp::reply::Response {
    let settings = &app.config.metrics;
    let Some(handle) = RECORDER.get().filter(|_| settings.enabled) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are off (metrics.enabled = false)".into(),
        );
    };
    if !settings.token.is_empty() {
        let sent = authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(settings.token.as_bytes())) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a scrape needs Authorization: Bearer <metrics.token>".into(),
            );
        }
    }
    tertulia_actors::metrics::refresh_ages();
    handle.run_upkeep();
    warp::http::Response::builder()
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render().into())
        .expect("static headers")
}
