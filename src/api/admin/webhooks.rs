//! The admin API's webhook routes (`/admin/tenants/{id}/webhooks/...`):
//! endpoints, secret rotation, test events, deliveries and replays. Behind
//! the admin token like the rest of `/admin`. Handlers call the runtime;
//! nothing here touches the database.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tertulia_actors::model::{DeliveryStatus, TenantId, WebhookEndpoint};
use tertulia_actors::runtime::EndpointInput;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::{parse_limit, respond};

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

/// Every webhook route; `admin` is the admin-token filter.
pub fn routes(
    app: AppState,
    admin: impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let with_app = warp::any().map(move || app.clone());
    let body = warp::body::content_length_limit(max_body).and(warp::body::bytes());
    // A rotation needs no body (a new secret is made).
    let optional_body = crate::http::optional_body(max_body);

    // POST /admin/tenants/{id}/webhooks
    let create = warp::path!("admin" / "tenants" / String / "webhooks")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(body)
        .then(|tenant: String, app: AppState, body: Bytes| async move {
            let result = async {
                let input: EndpointInput = parse_json(&body)?;
                let endpoint = app.runtime.create_webhook(&TenantId(tenant), input).await?;
                // The secret is shown this once.
                Ok(view(&endpoint, true))
            }
            .await;
            respond(StatusCode::CREATED, result)
        });

    // GET /admin/tenants/{id}/webhooks
    let list = warp::path!("admin" / "tenants" / String / "webhooks")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .then(|tenant: String, app: AppState| async move {
            let result = app
                .runtime
                .list_webhooks(&TenantId(tenant))
                .await
                .map(|endpoints| {
                    let views: Vec<Value> = endpoints.iter().map(|e| view(e, false)).collect();
                    json!({"count": views.len(), "webhooks": views})
                })
                .map_err(ApiError::from);
            respond(StatusCode::OK, result)
        });

    // GET /admin/tenants/{id}/webhooks/{endpoint}
    let get = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .then(|tenant: String, id: String, app: AppState| async move {
            let result = app.runtime.webhook(&TenantId(tenant), &id).await;
            respond(
                StatusCode::OK,
                result.map(|e| view(&e, false)).map_err(ApiError::from),
            )
        });

    // PATCH /admin/tenants/{id}/webhooks/{endpoint}
    let update = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::patch())
        .and(with_app.clone())
        .and(body)
        .then(
            |tenant: String, id: String, app: AppState, body: Bytes| async move {
                let result = async {
                    let input: EndpointInput = parse_json(&body)?;
                    if input.secret.is_some() {
                        return Err(ApiError::BadRequest(
                            "change `secret` with POST …/rotate-secret, so the old one keeps working meanwhile".into(),
                        ));
                    }
                    let endpoint = app
                        .runtime
                        .update_webhook(&TenantId(tenant), &id, input)
                        .await?;
                    Ok(view(&endpoint, false))
                }
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // DELETE /admin/tenants/{id}/webhooks/{endpoint}
    let delete = warp::path!("admin" / "tenants" / String / "webhooks" / String)
        .and(admin.clone())
        .and(warp::delete())
        .and(with_app.clone())
        .then(|tenant: String, id: String, app: AppState| async move {
            let result = app
                .runtime
                .delete_webhook(&TenantId(tenant), &id)
                .await
                .map(|()| json!({"endpoint_id": id, "status": "deleted"}))
                .map_err(ApiError::from);
            respond(StatusCode::OK, result)
        });

    // POST /admin/tenants/{id}/webhooks/{endpoint}/rotate-secret
    let rotate = warp::path!("admin" / "tenants" / String / "webhooks" / String / "rotate-secret")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(optional_body)
        .then(
            |tenant: String, id: String, app: AppState, body: Bytes| async move {
                let result = async {
                    let rotation: Rotation = parse_json(&body)?;
                    let endpoint = app
                        .runtime
                        .rotate_webhook_secret(&TenantId(tenant), &id, rotation.secret)
                        .await?;
                    Ok(view(&endpoint, true))
                }
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // POST /admin/tenants/{id}/webhooks/{endpoint}/test
    let test = warp::path!("admin" / "tenants" / String / "webhooks" / String / "test")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .then(|tenant: String, id: String, app: AppState| async move {
            let result = app.runtime.send_test_webhook(&TenantId(tenant), &id).await;
            respond(StatusCode::ACCEPTED, result.map_err(ApiError::from))
        });

    // GET /admin/tenants/{id}/webhooks/{endpoint}/deliveries?status=dead&limit=50
    let deliveries = warp::path!("admin" / "tenants" / String / "webhooks" / String / "deliveries")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(
            |tenant: String, id: String, app: AppState, query: HashMap<String, String>| async move {
                let result = async {
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
                .await;
                respond(StatusCode::OK, result)
            },
        );

    // POST /admin/tenants/{id}/webhooks/{endpoint}/deliveries/{delivery}/replay
    let replay_one = warp::path!(
        "admin" / "tenants" / String / "webhooks" / String / "deliveries" / String / "replay"
    )
    .and(admin.clone())
    .and(warp::post())
    .and(with_app.clone())
    .then(
        |tenant: String, id: String, delivery: String, app: AppState| async move {
            let result = app
                .runtime
                .replay_webhook(&TenantId(tenant), &id, Some(delivery))
                .await
                .map(|replayed| json!({"replayed": replayed}))
                .map_err(ApiError::from);
            respond(StatusCode::ACCEPTED, result)
        },
    );

    // POST /admin/tenants/{id}/webhooks/{endpoint}/replay-dead
    let replay_dead =
        warp::path!("admin" / "tenants" / String / "webhooks" / String / "replay-dead")
            .and(admin)
            .and(warp::post())
            .and(with_app)
            .then(|tenant: String, id: String, app: AppState| async move {
                let result = app
                    .runtime
                    .replay_webhook(&TenantId(tenant), &id, None)
                    .await
                    .map(|replayed| json!({"replayed": replayed}))
                    .map_err(ApiError::from);
                respond(StatusCode::ACCEPTED, result)
            });

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
        .or(test)
        .unify()
        .or(deliveries)
        .unify()
        .or(replay_one)
        .unify()
        .or(replay_dead)
        .unify()
        .boxed()
}
