//! The admin API (`/admin/...`): tenants and their keys, for operators and
//! the CLI. Guarded by `auth.admin_token` as a bearer token; off when unset.
//! Handlers call the runtime; nothing here touches the database.

pub mod backup;
pub mod erasure;
pub mod webhooks;

use serde::Deserialize;
use serde::Serialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tertulia_actors::model::TenantSettings;
use tertulia_actors::model::{ApiKeyRecord, KeyKind, TenantId};
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use std::time::Duration;

use crate::app::AppState;
use crate::auth::tokens::{MAX_CLIENT_ID_LEN, mint_client_token};
use crate::http::error::ApiError;
use crate::http::{created, ok};

/// Passes requests that carry the admin token; 403 when the admin API is off.
fn admin_auth(token: String) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                if token.is_empty() {
                    return Err(warp::reject::custom(ApiError::AdminDisabled));
                }
                let presented = header
                    .as_deref()
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .ok_or_else(|| warp::reject::custom(ApiError::MissingAdminToken))?;
                if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::InvalidApiKey))
                }
            }
        })
        .untuple_one()
}

/// The body of `POST /admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    #[serde(flatten)]
    settings: TenantSettingsInput,
}

/// Tenant settings as the admin API takes them: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TenantSettingsInput {
    name: Option<String>,
    greeting: Option<tertulia_actors::model::Greeting>,
    agent: Option<String>,
    api_keys: Option<Vec<String>>,
    rate_limits: Option<tertulia_actors::model::RateLimits>,
    client_token_secret: Option<String>,
    allowed_origins: Option<Vec<String>>,
    /// The whole `openai` block (fields left out take their defaults).
    openai: Option<tertulia_actors::model::OpenAiSettings>,
    /// The whole `webhook_agent` block.
    webhook_agent: Option<tertulia_actors::model::WebhookAgentSettings>,
    /// The whole list of tools.
    tools: Option<Vec<tertulia_actors::model::ToolSettings>>,
    /// The whole `double_texting` block.
    double_texting: Option<tertulia_actors::model::DoubleTextingSettings>,
    /// The whole `retention` block (`{}` keeps conversations for ever).
    retention: Option<tertulia_actors::model::RetentionSettings>,
    /// The whole `streams` block (`{"anonymous": true}` opens the namespace).
    streams: Option<tertulia_actors::model::stream::StreamAccess>,
}

impl TenantSettingsInput {
    /// The given fields over `current`; the rest stay as they are.
    fn patch(self, mut current: TenantSettings) -> TenantSettings {
        if let Some(name) = self.name {
            current.name = name;
        }
        if let Some(greeting) = self.greeting {
            current.greeting = greeting;
        }
        if let Some(agent) = self.agent {
            current.agent = agent;
        }
        if let Some(api_keys) = self.api_keys {
            current.api_keys = api_keys;
        }
        if let Some(rate_limits) = self.rate_limits {
            current.rate_limits = rate_limits;
        }
        if let Some(secret) = self.client_token_secret {
            current.client_token_secret = secret;
        }
        if let Some(origins) = self.allowed_origins {
            current.allowed_origins = origins;
        }
        if let Some(openai) = self.openai {
            current.openai = openai;
        }
        if let Some(webhook_agent) = self.webhook_agent {
            current.webhook_agent = webhook_agent;
        }
        if let Some(tools) = self.tools {
            current.tools = tools;
        }
        if let Some(double_texting) = self.double_texting {
            current.double_texting = double_texting;
        }
        if let Some(retention) = self.retention {
            current.retention = retention;
        }
        if let Some(streams) = self.streams {
            current.streams = streams;
        }
        current
    }

    /// Settings for a new tenant: the given fields over the defaults, named
    /// after its id, with no keys (they are made separately).
    fn into_settings(self, id: &str) -> TenantSettings {
        self.patch(TenantSettings {
            name: id.to_owned(),
            api_keys: Vec::new(),
            ..TenantSettings::default()
        })
    }
}

/// The longest a minted client token may live: 30 days.
const MAX_CLIENT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClientToken {
    client_id: String,
    ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    kind: KeyKind,
    /// Required for staff keys: the person's name, shown to visitors.
    name: Option<String>,
}

/// The longest staff name.
const MAX_STAFF_NAME_LEN: usize = 100;

impl NewKey {
    fn name(&self) -> Result<Option<String>, ApiError> {
        match (&self.name, self.kind) {
            (None, KeyKind::Staff) => Err(ApiError::BadRequest(
                "a staff key needs `name`: the person's name, shown to visitors".into(),
            )),
            (Some(_), KeyKind::Api | KeyKind::Widget) => {
                Err(ApiError::BadRequest("`name` is only for staff keys".into()))
            }
            (Some(name), KeyKind::Staff) => {
                let name = name.trim();
                if name.is_empty()
                    || name.len() > MAX_STAFF_NAME_LEN
                    || name.chars().any(char::is_control)
                {
                    return Err(ApiError::BadRequest(format!(
                        "`name` must be 1 to {MAX_STAFF_NAME_LEN} bytes of text"
                    )));
                }
                Ok(Some(name.to_owned()))
            }
            (None, _) => Ok(None),
        }
    }
}

fn key_view(record: &ApiKeyRecord) -> serde_json::Value {
    json!({
        "key_id": record.key_id,
        "tenant": record.tenant,
        "kind": record.kind,
        "name": record.name,
        "prefix": record.prefix,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    })
}

fn tenant_view(id: &TenantId, settings: &TenantSettings) -> serde_json::Value {
    json!({
        "id": id,
        "name": settings.name,
        "greeting": settings.greeting,
        "agent": settings.agent,
        "rate_limits": settings.rate_limits,
        "allowed_origins": settings.allowed_origins,
        "openai": openai_view(&settings.openai),
        "webhook_agent": webhook_agent_view(&settings.webhook_agent),
        "double_texting": settings.double_texting,
        "retention": settings.retention,
        "tools": settings.tools.iter().map(|tool| json!({
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
            "url": tool.url,
            "timeout_ms": tool.timeout_ms,
        })).collect::<Vec<_>>(),
    })
}

/// The `webhook_agent` block without its secrets: only whether they are set.
fn webhook_agent_view(
    settings: &tertulia_actors::model::WebhookAgentSettings,
) -> serde_json::Value {
    let mut view = serde_json::to_value(settings).expect("settings serialise");
    for secret in ["secret", "header_value"] {
        if view[secret].as_str().is_some_and(|value| !value.is_empty()) {
            view[secret] = json!("[set]");
        }
    }
    view
}

/// The `openai` block without its key: only whether one is set.
fn openai_view(settings: &tertulia_actors::model::OpenAiSettings) -> serde_json::Value {
    let mut view = serde_json::to_value(settings).expect("settings serialise");
    view["api_key"] = json!(if settings.api_key.is_empty() {
        ""
    } else {
        "[set]"
    });
    view
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid body: {error}")))
}

/// Every admin route, behind the admin token.
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let admin = admin_auth(app.config.auth.admin_token.clone()).boxed();
    tenant_routes(app.clone())
        .or(key_routes(app.clone()))
        .unify()
        .or(erasure::routes(app.clone(), admin.clone()))
        .unify()
        .or(backup::routes(app.clone(), admin.clone()))
        .unify()
        .or(webhooks::routes(app, admin))
        .unify()
        .boxed()
}

/// Tenants: made, listed, changed; client tokens minted.
fn tenant_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let with_app = app.filter();
    let admin = admin_auth(app.config.auth.admin_token.clone());

    // POST /admin/tenants
    let create_tenant = warp::path!("admin" / "tenants")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(crate::http::body(max_body))
        .then(create_tenant)
        .map(created);
    // GET /admin/tenants
    let list_tenants = warp::path!("admin" / "tenants")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .map(list_tenants)
        .map(ok);
    // PATCH /admin/tenants/{id}
    let update_tenant = warp::path!("admin" / "tenants" / String)
        .and(admin.clone())
        .and(warp::patch())
        .and(with_app.clone())
        .and(crate::http::body(max_body))
        .then(update_tenant)
        .map(ok);
    // POST /admin/tenants/{id}/client-tokens
    let mint_client_token = warp::path!("admin" / "tenants" / String / "client-tokens")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(crate::http::body(max_body))
        .then(new_client_token)
        .map(created);
    create_tenant
        .or(list_tenants)
        .unify()
        .or(update_tenant)
        .unify()
        .or(mint_client_token)
        .unify()
        .boxed()
}

/// Keys: made, listed, revoked.
fn key_routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let with_app = app.filter();
    let admin = admin_auth(app.config.auth.admin_token.clone());

    // POST /admin/tenants/{id}/keys
    let create_key = warp::path!("admin" / "tenants" / String / "keys")
        .and(admin.clone())
        .and(warp::post())
        .and(with_app.clone())
        .and(crate::http::body(max_body))
        .then(create_key)
        .map(created);
    // GET /admin/tenants/{id}/keys
    let list_keys = warp::path!("admin" / "tenants" / String / "keys")
        .and(admin.clone())
        .and(warp::get())
        .and(with_app.clone())
        .map(list_keys)
        .map(ok);
    // DELETE /admin/keys/{key_id}
    let revoke_key = warp::path!("admin" / "keys" / String)
        .and(admin.clone())
        .and(warp::delete())
        .and(with_app)
        .then(revoke_key)
        .map(ok);
    create_key
        .or(list_keys)
        .unify()
        .or(revoke_key)
        .unify()
        .boxed()
}

/// POST /admin/tenants
async fn create_tenant(app: AppState, body: bytes::Bytes) -> Result<impl Serialize, ApiError> {
    let new: NewTenant = parse_json(&body)?;
    let settings = new.settings.into_settings(&new.id);
    let record = app.runtime.create_tenant(&new.id, settings).await?;
    let mut view = tenant_view(&record.tenant_id, &record.settings);
    // Shown this once, so the tenant's back end can mint client tokens.
    view["client_token_secret"] = json!(record.settings.client_token_secret);
    Ok(view)
}

/// POST /admin/tenants/{id}/keys
async fn create_key(
    tenant: String,
    app: AppState,
    body: bytes::Bytes,
) -> Result<impl Serialize, ApiError> {
    let new: NewKey = parse_json(&body)?;
    let name = new.name()?;
    let (record, key) = app
        .runtime
        .create_key(&TenantId(tenant), new.kind, name)
        .await?;
    let mut view = key_view(&record);
    view["key"] = json!(key);
    Ok(view)
}

/// PATCH /admin/tenants/{id}
async fn update_tenant(
    tenant: String,
    app: AppState,
    body: bytes::Bytes,
) -> Result<impl Serialize, ApiError> {
    let patch: TenantSettingsInput = parse_json(&body)?;
    let tenant = TenantId(tenant);
    let current = app
        .runtime
        .tenant_settings(&tenant)
        .ok_or_else(|| tertulia_actors::Error::TenantNotFound(tenant.clone()))?;
    let record = app
        .runtime
        .update_tenant(&tenant, patch.patch((*current).clone()))
        .await?;
    Ok(tenant_view(&record.tenant_id, &record.settings))
}

/// POST /admin/tenants/{id}/client-tokens
async fn new_client_token(
    tenant: String,
    app: AppState,
    body: bytes::Bytes,
) -> Result<impl Serialize, ApiError> {
    let new: NewClientToken = parse_json(&body)?;
    let tenant = TenantId(tenant);
    app.runtime.known_tenant(&tenant)?;
    let client_id = new.client_id.trim();
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
        let message = format!("`client_id` must be 1 to {MAX_CLIENT_ID_LEN} bytes");
        return Err(ApiError::BadRequest(message));
    }
    let ttl = new.ttl_secs.unwrap_or(3600);
    if !(1..=MAX_CLIENT_TOKEN_TTL_SECS).contains(&ttl) {
        let message = format!("`ttl_secs` must be 1 to {MAX_CLIENT_TOKEN_TTL_SECS}");
        return Err(ApiError::BadRequest(message));
    }
    let secret = app
        .runtime
        .tenant_settings(&tenant)
        .map(|settings| settings.client_token_secret.clone())
        .unwrap_or_default();
    if secret.is_empty() {
        return Err(ApiError::BadRequest(
            "this tenant has no client_token_secret: set one to use client tokens".into(),
        ));
    }
    let (token, expires_at) = mint_client_token(&secret, client_id, Duration::from_secs(ttl));
    Ok(json!({"token": token, "client_id": client_id, "expires_at": expires_at}))
}

/// GET /admin/tenants
fn list_tenants(app: AppState) -> Result<Value, ApiError> {
    let tenants: Vec<_> = app
        .runtime
        .list_tenants()
        .iter()
        .map(|(id, settings)| tenant_view(id, settings))
        .collect();
    Ok(json!({"count": tenants.len(), "tenants": tenants}))
}

/// GET /admin/tenants/{id}/keys
fn list_keys(tenant: String, app: AppState) -> Result<Value, ApiError> {
    let keys = app.runtime.list_keys(&TenantId(tenant))?;
    let keys: Vec<_> = keys.iter().map(key_view).collect();
    Ok(json!({"count": keys.len(), "keys": keys}))
}

/// DELETE /admin/keys/{key_id}
async fn revoke_key(key_id: String, app: AppState) -> Result<Value, ApiError> {
    let record = app.runtime.revoke_key(&key_id).await?;
    let mut view = key_view(&record);
    view["status"] = json!("revoked");
    Ok(view)
}
