//! `POST /admin/tenants/{id}/erase`: forget a person. The body names them by
//! exactly one of `conversation_id`, `session_id` (a webchat visitor),
//! `email` or `phone`; every conversation of the tenant that holds them is
//! erased in one transaction (see `Runtime::erase`). Also `tertulia erase`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tertulia_actors::model::TenantId;
use tertulia_actors::model::erasure::ErasureSubject;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::webhooks::AdminOnly;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::{ok, only_fields, parse_object, parse_session};

/// The longest identifier an erasure takes.
const MAX_IDENTIFIER_LEN: usize = 320;

pub fn routes(app: AppState, admin: AdminOnly) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    // POST /admin/tenants/{id}/erase
    warp::path!("admin" / "tenants" / String / "erase")
        .and(admin)
        .and(warp::post())
        .and(app.filter())
        .and(crate::http::body(max_body))
        .then(erase)
        .map(ok)
        .boxed()
}

/// The person the body names, its identifier normalised as stored (emails
/// in lower case, phones without spaces, dots, dashes or brackets).
fn subject(body: &Bytes) -> Result<ErasureSubject, ApiError> {
    const FIELDS: [&str; 4] = ["conversation_id", "session_id", "email", "phone"];
    let body = parse_object(body, "the body")?;
    only_fields(&body, &FIELDS)?;
    let named: Vec<(&String, &Value)> = body.iter().collect();
    let [(field, value)] = named.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "name the person by exactly one of {}",
            FIELDS.join(", ")
        )));
    };
    let text = value
        .as_str()
        .map(str::trim)
        .filter(|text| !text.is_empty() && text.len() <= MAX_IDENTIFIER_LEN)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{field}` must be text of 1 to {MAX_IDENTIFIER_LEN} bytes"
            ))
        })?;
    Ok(match field.as_str() {
        "conversation_id" => ErasureSubject::Conversation(parse_session(text)?),
        "session_id" => ErasureSubject::WebchatSession(text.to_owned()),
        "email" => ErasureSubject::Email(text.to_lowercase()),
        _ => ErasureSubject::Phone(
            text.chars()
                .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
                .collect(),
        ),
    })
}

/// POST /admin/tenants/{id}/erase
async fn erase(tenant: String, app: AppState, body: Bytes) -> Result<impl Serialize, ApiError> {
    let subject = subject(&body)?;
    Ok(app.runtime.erase(&TenantId(tenant), subject).await?)
}
