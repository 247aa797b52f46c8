//! The admin API's webhook routes (`/admin/tenants/{id}/webhooks/...`):
//! endpoints, secret rotation, test events, deliveries and replays. Behind
//! the admin token like the rest of `/admin`. Handlers call the runtime;
//! nothing here touches the database.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use serde_json::{Value, json};
use tertulia_actors::model::{DeliveryStatus, TenantId, WebhookEndpoint};
use tertulia_actors::runtime::EndpointInput;
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::{accepted, created, ok, parse_limit};

/// Deliveries listed unless `limit` says otherwise.
const DEFAULT_DELIVERIES: usize = 50;

/// An endpoint as the admin API shows it: secrets only as `[set]`, except
/// `secret` right after it was made (creation, rotation).
fn view(endpoint: &WebhookEndpoint, show_secret: bool) -> Value {
    let mut view = serde_json::to_value(endpoint).expect("endpoints serialise");
    let object = view.as_object_mut().expect("an endpoint is an object");
    if !show_secret {
        object.insert("secret".into(), json!("[set]"));
    }
    object.remove("previous_secret");
    if object.contains_key("header_value") {
        object.insert("header_value".into(), json!("[set]"));
    }
    view
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Rotation {
    secret: Option<String>,
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid body: {error}")))
}

fn parse_status(query: &HashMap<String, String>) -> Result<Option<DeliveryStatus>, ApiError> {
    match query.get("status").map(String::as_str) {
        None => Ok(None),
        Some("pending") => Ok(Some(DeliveryStatus::Pending)),
        Some("delivered") => Ok(Some(DeliveryStatus::Delivered)),
        Some("dead") => Ok(Some(DeliveryStatus::Dead)),
        Some(_) => Err(ApiError::BadRequest(
            "`status` must be pending, delivered or dead".into(),
        )),
    }
}

/// The admin-token filter every route goes behind.
pub type AdminOnly = BoxedFilter<()>;

/// Every webhook route; `admin` is the admin-token filter.
pub fn routes(app: AppState, admin: AdminOnly) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint_routes(app.clone(), admin.clone())
        .or(delivery_routes(app, admin))
        .unify()
        .boxed()
}

/// Endpoints: made, listed, read, changed, deleted, their secret rotated.
fn endpoint_routes(app: AppState, admin: AdminOnly) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let with_app = app.filter();
    let body = crate::http::body(max_body);
    // POST /admin/tenants/{id}/webhooks
    let create = warp::path!("admin" / "tenants" / String / "webhooks")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(body.clone())
        .then(create_endpoint)
        .map(created);
    // GET /admin/tenants/{id}/webhooks
    let list = warp::path!("admin" / "tenants" / String / "webhooks")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .then(list_endpoints)
        .map(ok);
    // GET /admin/tenants/{id}/webhooks/{endpoint}
    let get = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .then(get_endpoint)
        .map(ok);
    // PATCH /admin/tenants/{id}/webhooks/{endpoint}
    let update = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::patch())
        .and(with_app.clone())
        .and(body.clone())
        .then(update_endpoint)
        .map(ok);
    // DELETE /admin/tenants/{id}/webhooks/{endpoint}
    let delete = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::delete())
        .and(with_app.clone())
        .then(delete_endpoint)
        .map(ok);
    // POST /admin/tenants/{id}/webhooks/{endpoint}/rotate-secret (a new secret
    // is made when the body is empty)
    let rotate = warp::path!("admin" / "tenants" / String / "webhooks" / String / "rotate-secret")
        .and(admin)
        .and(warp::post())
        .and(with_app)
        .and(crate::http::optional_body(max_body))
        .then(rotate_secret)
        .map(ok);
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(rotate)
        .unify()
        .boxed()
}

/// Deliveries: a test event, the list, replays.
fn delivery_routes(app: AppState, admin: AdminOnly) -> BoxedFilter<(warp::reply::Response,)> {
    let with_app = app.filter();
    // POST /admin/tenants/{id}/webhooks/{endpoint}/test
    let test = warp::path!("admin" / "tenants" / String / "webhooks" / String / "test")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone());
    let test = test.then(send_test).map(accepted);
    // GET /admin/tenants/{id}/webhooks/{endpoint}/deliveries?status=dead&limit=50
    let deliveries = warp::path!("admin" / "tenants" / String / "webhooks" / String / "deliveries")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .and(warp::query::<HashMap<String, String>>());
    let deliveries = deliveries.then(list_deliveries).map(ok);
    // POST /admin/tenants/{id}/webhooks/{endpoint}/deliveries/{delivery}/replay
    let replay_one = warp::path!(
        "admin" / "tenants" / String / "webhooks" / String / "deliveries" / String / "replay"
    )
    .and(admin.clone())
    .and(warp::post())
    .and(with_app.clone());
    let replay_one = replay_one.then(replay_delivery).map(accepted);
    // POST /admin/tenants/{id}/webhooks/{endpoint}/replay-dead
    let replay_dead =
        warp::path!("admin" / "tenants" / String / "webhooks" / String / "replay-dead")
            .and(admin)
            .and(warp::post())
            .and(with_app);
    let replay_dead = replay_dead.then(replay_dead_ones).map(accepted);
    test.or(deliveries)
        .unify()
        .or(replay_one)
        .unify()
        .or(replay_dead)
        .unify()
        .boxed()
}

/// GET /admin/tenants/{id}/webhooks
async fn list_endpoints(tenant: String, app: AppState) -> Result<Value, ApiError> {
    let endpoints = app.runtime.list_webhooks(&TenantId(tenant)).await?;
    let views: Vec<Value> = endpoints.iter().map(|e| view(e, false)).collect();
    Ok(json!({"count": views.len(), "webhooks": views}))
}

/// GET /admin/tenants/{id}/webhooks/{endpoint}
async fn get_endpoint(tenant: String, id: String, app: AppState) -> Result<Value, ApiError> {
    let endpoint = app.runtime.webhook(&TenantId(tenant), &id).await?;
    Ok(view(&endpoint, false))
}

/// DELETE /admin/tenants/{id}/webhooks/{endpoint}
async fn delete_endpoint(tenant: String, id: String, app: AppState) -> Result<Value, ApiError> {
    app.runtime.delete_webhook(&TenantId(tenant), &id).await?;
    Ok(json!({"endpoint_id": id, "status": "deleted"}))
}

/// POST /admin/tenants/{id}/webhooks/{endpoint}/test
async fn send_test(tenant: String, id: String, app: AppState) -> Result<impl Serialize, ApiError> {
    Ok(app
        .runtime
        .send_test_webhook(&TenantId(tenant), &id)
        .await?)
}

/// POST /admin/tenants/{id}/webhooks/{endpoint}/deliveries/{delivery}/replay
async fn replay_delivery(
    tenant: String,
    id: String,
    delivery: String,
    app: AppState,
) -> Result<Value, ApiError> {
    let tenant = TenantId(tenant);
    let replayed = app
        .runtime
        .replay_webhook(&tenant, &id, Some(delivery))
        .await?;
    Ok(json!({"replayed": replayed}))
}

/// POST /admin/tenants/{id}/webhooks/{endpoint}/replay-dead
async fn replay_dead_ones(tenant: String, id: String, app: AppState) -> Result<Value, ApiError> {
    let replayed = app
        .runtime
        .replay_webhook(&TenantId(tenant), &id, None)
        .await?;
    Ok(json!({"replayed": replayed}))
}

/// POST /admin/tenants/{id}/webhooks
async fn create_endpoint(
    tenant: String,
    app: AppState,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let input: EndpointInput = parse_json(&body)?;
    let endpoint = app.runtime.create_webhook(&TenantId(tenant), input).await?;
    // The secret is shown this once.
    Ok(view(&endpoint, true))
}

/// PATCH /admin/tenants/{id}/webhooks/{endpoint}
async fn update_endpoint(
    tenant: String,
    id: String,
    app: AppState,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let input: EndpointInput = parse_json(&body)?;
    if input.secret.is_some() {
        return Err(ApiError::BadRequest(
            "change `secret` with POST …/rotate-secret, so the old one keeps working meanwhile"
                .into(),
        ));
    }
    let endpoint = app
        .runtime
        .update_webhook(&TenantId(tenant), &id, input)
        .await?;
    Ok(view(&endpoint, false))
}

/// POST /admin/tenants/{id}/webhooks/{endpoint}/rotate-secret
async fn rotate_secret(
    tenant: String,
    id: String,
    app: AppState,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let rotation: Rotation = parse_json(&body)?;
    let endpoint = app
        .runtime
        .rotate_webhook_secret(&TenantId(tenant), &id, rotation.secret)
        .await?;
    Ok(view(&endpoint, true))
}

/// GET /admin/tenants/{id}/webhooks/{endpoint}/deliveries?status=dead&limit=50
async fn list_deliveries(
    tenant: String,
    id: String,
    app: AppState,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    let status = parse_status(&query)?;
    let limit = parse_limit(
        &query,
        DEFAULT_DELIVERIES,
        tertulia_actors::runtime::MAX_DELIVERIES,
    )?;
    let deliveries = app
        .runtime
        .webhook_deliveries(&TenantId(tenant), &id, status, limit)
        .await?;
    Ok(json!({"count": deliveries.len(), "deliveries": deliveries}))
}
