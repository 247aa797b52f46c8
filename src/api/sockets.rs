//! The socket routes: `WS /chat/ws/{session_id}` (an API key, or the ticket
//! from `websocket_url`) and `WS /api/webchat/stream` (an API key or a
//! widget key; the visitor's messages are stamped with their origin). Each
//! checks its credentials, finds the conversation and hands an authorised
//! [`SocketRequest`] to the server's socket pump.

use serde::Deserialize;
use tertulia_actors::model::{Participant, SessionId, TenantId};
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::{ClientIp, UpgradeSlot};
use crate::server::socket::{SocketRequest, accept};

#[derive(Debug, Deserialize)]
struct WsQuery {
    ticket: Option<String>,
    after_seq: Option<u64>,
    /// The visitor's language (`es-MX`), for the greeting; else `Accept-Language`.
    locale: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WebchatQuery {
    session_id: Option<String>,
    /// A widget key (a page cannot set headers on a WebSocket). API keys go in `X-API-Key`.
    key: Option<String>,
    after_seq: Option<u64>,
    locale: Option<String>,
}

/// An upgrade's `Origin` and `Host`: whether a browser's page may open it.
pub struct BrowserOrigin {
    pub origin: Option<String>,
    pub host: Option<String>,
}

impl BrowserOrigin {
    /// 403 `origin_not_allowed` for a page neither ours nor the tenant's;
    /// a widget's socket must come from one of the tenant's pages.
    pub fn check(&self, app: &AppState, tenant: &TenantId, widget: bool) -> Result<(), ApiError> {
        let origin = self.origin.as_deref();
        if widget {
            return crate::auth::allowed_origin(&app.runtime, tenant, origin).map(drop);
        }
        crate::auth::check_socket_origin(&app.runtime, tenant, origin, self.host.as_deref())
    }
}

/// The `Origin` and `Host` headers of a request.
pub fn browser_origin() -> impl Filter<Extract = (BrowserOrigin,), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .map(|origin, host| BrowserOrigin { origin, host })
}

/// `GET /chat/ws/{session_id}` with `X-API-Key`, or `?ticket=` from `websocket_url`.
pub fn route(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("chat" / "ws" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("x-api-key"))
        .and(warp::header::optional::<String>("authorization"))
        .and(browser_origin())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::header::optional::<String>("accept-language"))
        .and(warp::query::<WsQuery>())
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(warp::ext::optional::<ClientIp>())
        .and_then(
            move |session: String,
                  api_key,
                  authorization,
                  origin: BrowserOrigin,
                  websocket_key,
                  accept_language,
                  query,
                  slot,
                  client_ip: Option<ClientIp>| {
                let app = app.clone();
                let request = UpgradeRequest {
                    session,
                    api_key,
                    authorization,
                    origin,
                    websocket_key,
                    accept_language,
                    query,
                    slot,
                    ip: client_ip.map(|client| client.0),
                };
                async move { Ok::<_, Rejection>(upgrade(app, request).await) }
            },
        )
        .boxed()
}

/// What the upgrade handler needs from the request.
struct UpgradeRequest {
    session: String,
    api_key: Option<String>,
    authorization: Option<String>,
    origin: BrowserOrigin,
    websocket_key: Option<String>,
    accept_language: Option<String>,
    query: WsQuery,
    slot: Option<UpgradeSlot>,
    ip: Option<std::net::IpAddr>,
}

async fn upgrade(app: AppState, request: UpgradeRequest) -> warp::reply::Response {
    match authorise(&app, request) {
        Ok(socket) => accept(app, socket).await,
        Err(error) => error.into_response(),
    }
}

/// Checks a `/chat/ws/{id}` request: a WebSocket upgrade, a well-formed id,
/// a ticket for it (from an allowed origin, for a widget's) or an API key,
/// and the caller's rate limits.
fn authorise(app: &AppState, request: UpgradeRequest) -> Result<SocketRequest, ApiError> {
    let (Some(websocket_key), Some(slot)) = (request.websocket_key, request.slot) else {
        return Err(ApiError::NotWebSocket);
    };
    let session = request
        .session
        .parse::<SessionId>()
        .map_err(|_| ApiError::UnknownSession)?;
    let (api_key, authorization) = crate::auth::bearer_api_key(
        &app.runtime,
        request.api_key.clone(),
        request.authorization.clone(),
    );
    let api_key = api_key.as_deref();
    // A back end sends its key (and maybe a client token); a browser, the
    // ticket from `websocket_url`.
    let claims = match (api_key, request.query.ticket) {
        (None, Some(ticket)) => app
            .tickets
            .verify(&ticket, session)
            .ok_or(ApiError::InvalidTicket)?,
        _ => {
            let scope = crate::auth::resolve(&app.runtime, api_key, authorization.as_deref())?;
            crate::auth::tickets::TicketClaims {
                scope,
                widget: false,
                staff: None,
            }
        }
    };
    // A widget's page opens its socket from its own origin: checked again.
    (request.origin).check(app, &claims.scope.tenant, claims.widget)?;
    app.limiter
        .check(&claims.scope.tenant, api_key, request.ip)?;
    let permit = app
        .limiter
        .admit_socket(request.ip, app.config.websocket.max_per_address)?;
    let locale = match request.query.locale.as_deref() {
        Some(text) => Some(crate::api::webchat::normalise_locale(text).ok_or_else(|| {
            ApiError::BadRequest("`locale` must be a language tag such as es-MX".into())
        })?),
        None => (request.accept_language.as_deref()).and_then(crate::api::webchat::first_language),
    };
    Ok(SocketRequest {
        scope: claims.scope,
        session,
        after_seq: request.query.after_seq,
        locale,
        websocket_key,
        slot,
        origin: None,
        participant: match claims.staff {
            Some(name) => Participant::Staff { name },
            None => Participant::Visitor,
        },
        permit,
    })
}

/// `GET /api/webchat/stream?session_id=…` with `X-API-Key`, or a widget key in `?key=`.
pub fn webchat_route(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("api" / "webchat" / "stream")
        .and(warp::get())
        .and(warp::header::optional::<String>("x-api-key"))
        .and(browser_origin())
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(
            warp::header::optional::<String>("user-agent")
                .and(warp::header::optional::<String>("accept-language"))
                .map(|user_agent, accept_language| crate::api::webchat::Client {
                    user_agent,
                    accept_language,
                }),
        )
        .and(warp::query::<WebchatQuery>())
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(warp::ext::optional::<ClientIp>())
        .and_then(
            move |api_key: Option<String>,
                  origin: BrowserOrigin,
                  websocket_key: Option<String>,
                  client: crate::api::webchat::Client,
                  query: WebchatQuery,
                  slot: Option<UpgradeSlot>,
                  client_ip: Option<ClientIp>| {
                let app = app.clone();
                async move {
                    let response = match webchat_socket(
                        &app,
                        api_key,
                        origin,
                        websocket_key,
                        client,
                        query,
                        slot,
                        client_ip.map(|client| client.0),
                    )
                    .await
                    {
                        Ok(socket) => accept(app, socket).await,
                        Err(error) => error.into_response(),
                    };
                    Ok::<_, Rejection>(response)
                }
            },
        )
        .boxed()
}

/// Checks a webchat stream request and finds (or opens) its conversation.
#[allow(clippy::too_many_arguments)]
async fn webchat_socket(
    app: &AppState,
    api_key: Option<String>,
    origin: BrowserOrigin,
    websocket_key: Option<String>,
    client: crate::api::webchat::Client,
    query: WebchatQuery,
    slot: Option<UpgradeSlot>,
    ip: Option<std::net::IpAddr>,
) -> Result<SocketRequest, ApiError> {
    let (Some(websocket_key), Some(slot)) = (websocket_key, slot) else {
        return Err(ApiError::NotWebSocket);
    };
    if api_key.is_none()
        && let Some(key) = &query.key
        && matches!(
            app.runtime.key_kind(key),
            Some((_, tertulia_actors::model::KeyKind::Api))
        )
    {
        return Err(ApiError::BadRequest(
            "send API keys in the X-API-Key header, never in a URL; `key` is for widget keys"
                .into(),
        ));
    }
    let key = api_key.as_deref().or(query.key.as_deref());
    let caller = crate::auth::resolve_webchat(&app.runtime, key, origin.origin.as_deref(), ip)?;
    origin.check(app, &caller.tenant, caller.widget_origin.is_some())?;
    app.limiter.check(&caller.tenant, key, ip)?;
    let permit = app
        .limiter
        .admit_socket(ip, app.config.websocket.max_per_address)?;
    let session_id = query
        .session_id
        .ok_or_else(|| ApiError::BadRequest("`session_id` is required in the query".into()))?;
    caller.check_session_id(&session_id)?;
    let locale = match query.locale.as_deref() {
        None => None,
        Some(text) => Some(crate::api::webchat::normalise_locale(text).ok_or_else(|| {
            ApiError::BadRequest("`locale` must be a language tag such as es-MX".into())
        })?),
    };
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &session_id, true)
        .await?;
    let mut stamp = client.origin(&caller, locale);
    stamp.geo = ip.and_then(|ip| app.geo.cached(ip));
    Ok(SocketRequest {
        scope: caller.scope(),
        session: conversation.id,
        after_seq: query.after_seq,
        locale: stamp.locale.clone(),
        websocket_key,
        slot,
        origin: Some(stamp),
        participant: Participant::Visitor,
        permit,
    })
}
