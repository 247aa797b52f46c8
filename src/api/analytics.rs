//! Analysis of a tenant's conversations: `GET /analytics/summary`, its
//! statistics over a time range, as JSON or CSV; and each conversation's
//! insights (`POST /chat/{id}/analyze`, `GET /chat/{id}/insights`, and the
//! console's `GET /console/api/conversations/{id}/insights`). What belongs
//! to the whole tenant is read with its API key alone or a staff key (the
//! console's Insights view), never with a client token. Handlers call the
//! runtime.

use std::collections::HashMap;

use serde::Serialize;
use tertulia_actors::model::Scope;
use tertulia_actors::model::insight::Insight;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::app::AppState;
use crate::auth::{Staff, caller, staff_caller, tenant_reader};
use crate::http::error::ApiError;
use crate::http::{ok, only_params, parse_session};

/// The analysis routes.
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let reader = tenant_reader(app.runtime.clone(), app.limiter.clone());
    let api = caller(app.runtime.clone(), app.limiter.clone());
    let staff = staff_caller(app.runtime.clone(), app.limiter.clone());
    // GET /analytics/summary?from&to&bucket=hour|day&format=json|csv
    let summary = warp::path!("analytics" / "summary")
        .and(warp::get())
        .and(app.filter())
        .and(reader)
        .and(warp::query::<HashMap<String, String>>())
        .then(summary);
    // POST /chat/{id}/analyze
    let analyze = warp::path!("chat" / String / "analyze")
        .and(warp::post())
        .and(app.filter())
        .and(api.clone())
        .then(analyze)
        .map(ok);
    // GET /chat/{id}/insights
    let insights = warp::path!("chat" / String / "insights")
        .and(warp::get())
        .and(app.filter())
        .and(api)
        .then(insights)
        .map(ok);
    // GET /console/api/conversations/{id}/insights
    let console = warp::path!("console" / "api" / "conversations" / String / "insights")
        .and(warp::get())
        .and(app.filter())
        .and(staff)
        .then(console_insights)
        .map(ok);
    summary
        .or(analyze)
        .unify()
        .or(insights)
        .unify()
        .or(console)
        .unify()
        .boxed()
}

/// A conversation's insights on the wire: as stored, less the tenant
/// (the caller's own).
fn view(insight: Insight) -> serde_json::Value {
    let mut view = serde_json::to_value(insight).expect("insights serialise");
    if let Some(fields) = view.as_object_mut() {
        fields.remove("tenant");
    }
    view
}

/// POST /chat/{id}/analyze
async fn analyze(id: String, app: AppState, scope: Scope) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    Ok(view(app.runtime.analyze(&scope, session).await?))
}

/// GET /chat/{id}/insights
async fn insights(id: String, app: AppState, scope: Scope) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    Ok(view(app.runtime.insights(&scope, session).await?))
}

/// GET /console/api/conversations/{id}/insights
async fn console_insights(
    id: String,
    app: AppState,
    staff: Staff,
) -> Result<impl Serialize, ApiError> {
    let session = parse_session(&id)?;
    let scope = Scope::tenant(staff.tenant);
    Ok(view(app.runtime.insights(&scope, session).await?))
}

/// GET /analytics/summary?from&to&bucket=hour|day&format=json|csv
async fn summary(
    app: AppState,
    tenant: tertulia_actors::model::TenantId,
    query: HashMap<String, String>,
) -> warp::reply::Response {
    let answer = async {
        only_params(&query, &["from", "to", "bucket", "format"])?;
        let csv = match query.get("format").map(String::as_str) {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "`format` must be `json` or `csv`, not `{other}`"
                )));
            }
        };
        let get = |name: &str| query.get(name).map(String::as_str);
        let summary = app
            .runtime
            .analytics_summary(&tenant, get("from"), get("to"), get("bucket"))
            .await?;
        Ok(if csv {
            let body = summary.to_csv();
            let reply = warp::reply::with_header(body, "content-type", "text/csv; charset=utf-8");
            warp::reply::with_header(
                reply,
                "content-disposition",
                "attachment; filename=\"tertulia-summary.csv\"",
            )
            .into_response()
        } else {
            warp::reply::json(&summary).into_response()
        })
    };
    answer
        .await
        .unwrap_or_else(|error: ApiError| error.into_response())
}
