//! The router: every HTTP and WebSocket route, one module per surface, with
//! rejections turned into JSON errors in one place (`http::error`). Filters
//! declare the shape; handlers call the runtime. Nothing here touches the
//! database.
//!
//! Architecture Invariant: handlers reach data only through `Runtime`.

pub mod admin;
pub mod analytics;
pub mod console;
pub mod conversations;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod sessions;
pub mod sockets;
pub mod streams;
pub mod views;
pub mod webchat;

use std::convert::Infallible;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::app::AppState;
use crate::http::error::{handle_rejection, json_error};
use crate::http::preflight;

/// Every route, with rejections turned into JSON errors.
pub fn routes(
    app: AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    health_routes(app.clone())
        .or(preflight_routes())
        .unify()
        .or(metrics::routes(app.clone()))
        .unify()
        .or(openapi::routes())
        .unify()
        // Boxed groups keep warp's nested filter types small: unboxed, one
        // chain of every route took rustc five minutes to compile.
        .boxed()
        .or(pages::routes(app.clone()))
        .unify()
        .or(sessions::routes(app.clone()))
        .unify()
        .or(admin::routes(app.clone()))
        .unify()
        .or(conversations::routes(app.clone()))
        .unify()
        .or(webchat::routes(app.clone()))
        .unify()
        .or(console::routes(app.clone()))
        .unify()
        .or(analytics::routes(app.clone()))
        .unify()
        .or(crate::adapters::routes(app.clone()))
        .unify()
        .or(streams::routes(app.clone()))
        .unify()
        .or(sockets::webchat_route(app.clone()))
        .unify()
        .or(sockets::route(app))
        .unify()
        .recover(handle_rejection)
        .unify()
}

/// `GET /healthz` (the process answers) and `GET /readyz` (the runtime is up).
fn health_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let with_app = app.filter();

    // GET /healthz
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());

    // GET /readyz
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_app.clone())
        .then(|app: AppState| async move {
            if let Some(why) = app.runtime.write_failure() {
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    format!("storage refuses writes: {why}"),
                )
            } else if app.runtime.ready().await {
                warp::reply::json(&json!({"status": "ready"})).into_response()
            } else {
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "not ready".into(),
                )
            }
        });
    healthz.or(readyz).unify().boxed()
}

/// The CORS preflight of what a widget calls from another origin.
fn preflight_routes() -> BoxedFilter<(warp::reply::Response,)> {
    // OPTIONS on what a widget calls from another origin: the CORS preflight.
    // It carries no key, so it cannot be checked here; the request that
    // follows is (its Origin against the tenant's allowed origins).
    let preflight = warp::path!("chat" / "sessions")
        .and(warp::options())
        .map(|| "POST")
        .or(warp::path!("api" / "webchat" / "messages")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "consent")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "handoff")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("api" / "webchat" / "history" / String)
            .and(warp::options())
            .map(|_| "GET"))
        .unify()
        .or(warp::path!("ai-sdk" / "chat")
            .and(warp::options())
            .map(|| "POST"))
        .unify()
        .or(warp::path!("ai-sdk" / "chat" / String / "stream")
            .and(warp::options())
            .map(|_| "GET"))
        .unify()
        .and(warp::header::optional::<String>("origin"))
        .map(preflight)
        .map(Reply::into_response);
    preflight.boxed()
}
