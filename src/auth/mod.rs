//! Credentials at the edge, as warp filters that name the caller: the
//! tenant's API key (`X-API-Key`) with an optional client token for REST and
//! back-end sockets, widget keys from allowed origins, staff keys for the
//! console. Tickets (`tickets.rs`) stand in for headers on browser sockets;
//! rate limits (`limits.rs`) are checked as the caller is named.
//!
//! Architecture Invariant: imports only `http/` of this crate; knows the
//! runtime only through `Runtime`'s key and tenant lookups.

pub mod limits;
pub mod origin;
pub mod tickets;
pub mod tokens;

use tertulia_actors::Runtime;
use tertulia_actors::model::{KeyKind, Scope, TenantId};
use warp::{Filter, Rejection};

use self::limits::Limiter;
pub use self::origin::{allowed_origin, check_socket_origin};
use self::tokens::verify_client_token;
use crate::http::ClientIp;
use crate::http::error::ApiError;

/// Who is calling: `X-API-Key` (or `Authorization: Bearer <API key>`, as the
/// Chat Endpoints seed's clients send it) names the tenant (401 when missing
/// or unknown) and is counted against the key's and the address's limits
/// (429); an optional `Authorization: Bearer <client token>` narrows the call
/// to that end user's conversations (401 when the token is bad or expired).
pub fn caller(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (Scope,), Error = Rejection> + Clone {
    named_by(runtime, limiter, |runtime, key, authorization| {
        let scope = resolve(runtime, key, authorization)?;
        Ok((scope.tenant.clone(), scope))
    })
}

/// Names a caller from its `X-API-Key` and `Authorization`: the tenant to
/// count against, and what the route gets.
type Namer<T> = fn(&Runtime, Option<&str>, Option<&str>) -> Result<(TenantId, T), ApiError>;

/// What `name` makes of a request's `X-API-Key` and `Authorization` (after
/// `bearer_api_key`), counted against the key's and the address's limits.
fn named_by<T: Send + 'static>(
    runtime: Runtime,
    limiter: Limiter,
    name: Namer<T>,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-api-key")
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::ext::optional::<ClientIp>())
        .and_then(
            move |key: Option<String>,
                  authorization: Option<String>,
                  client_ip: Option<ClientIp>| {
                let runtime = runtime.clone();
                let limiter = limiter.clone();
                async move {
                    let (key, authorization) = bearer_api_key(&runtime, key, authorization);
                    let (tenant, named) = name(&runtime, key.as_deref(), authorization.as_deref())
                        .map_err(warp::reject::custom)?;
                    let address = client_ip.map(|client| client.0);
                    limiter
                        .check(&tenant, key.as_deref(), address)
                        .map_err(|error| warp::reject::custom(ApiError::from(error)))?;
                    Ok::<_, Rejection>(named)
                }
            },
        )
}

/// An API key sent as `Authorization: Bearer tk_…` is the caller's key (the
/// same one, if `X-API-Key` names it too), not a client token. Anything else
/// is left as it came: a client token, or a bad Bearer that `resolve` turns
/// into the usual 401.
pub fn bearer_api_key(
    runtime: &Runtime,
    key: Option<String>,
    authorization: Option<String>,
) -> (Option<String>, Option<String>) {
    let bearer = authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer {
        Some(bearer)
            if matches!(runtime.key_kind(bearer), Some((_, KeyKind::Api)))
                && key.as_deref().is_none_or(|key| key == bearer) =>
        {
            (Some(bearer.to_owned()), None)
        }
        _ => (key, authorization),
    }
}

/// Who may read what belongs to the whole tenant (its statistics): the
/// tenant's API key without a client token (a back end), or a staff key (the
/// console). A client token speaks for one end user: 403.
pub fn tenant_reader(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (TenantId,), Error = Rejection> + Clone {
    named_by(runtime, limiter, |runtime, key, authorization| {
        let tenant = reader_of(runtime, key, authorization)?;
        Ok((tenant.clone(), tenant))
    })
}

fn reader_of(
    runtime: &Runtime,
    key: Option<&str>,
    authorization: Option<&str>,
) -> Result<TenantId, ApiError> {
    if let Some((tenant, KeyKind::Staff)) = key.and_then(|key| runtime.key_kind(key)) {
        return Ok(tenant);
    }
    let scope = resolve(runtime, key, authorization)?;
    match scope.client {
        Some(_) => Err(ApiError::ClientTokenNotAllowed),
        None => Ok(scope.tenant),
    }
}

/// The scope of an API key and an optional `Authorization` header.
pub fn resolve(
    runtime: &Runtime,
    key: Option<&str>,
    authorization: Option<&str>,
) -> Result<Scope, ApiError> {
    let key = key.ok_or(ApiError::MissingApiKey)?;
    // A widget key is genuine but not allowed here: 403, not 401.
    let tenant = match runtime.key_kind(key) {
        Some((tenant, KeyKind::Api)) => tenant,
        Some((_, KeyKind::Widget)) => return Err(ApiError::WidgetKeyNotAllowed),
        Some((_, KeyKind::Staff)) => return Err(ApiError::StaffKeyNotAllowed),
        None => return Err(ApiError::InvalidApiKey),
    };
    let Some(authorization) = authorization else {
        return Ok(Scope::tenant(tenant));
    };
    let token = authorization
        .strip_prefix("Bearer ")
        .ok_or(ApiError::InvalidClientToken)?;
    let secret = runtime
        .tenant_settings(&tenant)
        .map(|settings| settings.client_token_secret.clone())
        .unwrap_or_default();
    let client = verify_client_token(&secret, token).ok_or(ApiError::InvalidClientToken)?;
    Ok(Scope {
        tenant,
        client: Some(client),
    })
}

/// Who may open a conversation: a caller as above, or a widget key used from
/// one of its tenant's allowed origins (then `widget_origin` is that origin).
pub struct Creator {
    pub scope: Scope,
    pub widget_origin: Option<String>,
}

/// `POST /chat/sessions` takes API keys and widget keys.
pub fn session_creator(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (Creator,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-api-key")
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::ext::optional::<ClientIp>())
        .and_then(
            move |key: Option<String>,
                  authorization: Option<String>,
                  origin: Option<String>,
                  client_ip: Option<ClientIp>| {
                let runtime = runtime.clone();
                let limiter = limiter.clone();
                async move {
                    let (key, authorization) = bearer_api_key(&runtime, key, authorization);
                    let keyless = key.is_none() && authorization.is_none();
                    let keyless_tenant = origin
                        .as_deref()
                        .filter(|_| keyless)
                        .and_then(|origin| runtime.keyless_tenant(origin));
                    let kind = key.as_deref().and_then(|key| runtime.key_kind(key));
                    let creator = match (kind, keyless_tenant) {
                        // A page of a tenant that takes keyless sessions: as a
                        // widget would (its origin checked, its socket by ticket).
                        (None, Some(tenant)) => Creator {
                            scope: Scope::tenant(tenant),
                            widget_origin: origin.clone(),
                        },
                        (Some((tenant, KeyKind::Widget)), _) => {
                            let origin = allowed_origin(&runtime, &tenant, origin.as_deref())
                                .map_err(warp::reject::custom)?;
                            Creator {
                                scope: Scope::tenant(tenant),
                                widget_origin: Some(origin),
                            }
                        }
                        _ => Creator {
                            scope: resolve(&runtime, key.as_deref(), authorization.as_deref())
                                .map_err(warp::reject::custom)?,
                            widget_origin: None,
                        },
                    };
                    limiter
                        .check(
                            &creator.scope.tenant,
                            key.as_deref(),
                            client_ip.map(|client| client.0),
                        )
                        .map_err(|error| warp::reject::custom(ApiError::from(error)))?;
                    Ok::<_, Rejection>(creator)
                }
            },
        )
}

/// Who uses the webchat surface: a back end with the tenant's API key, or a
/// landing page's widget with a widget key, from one of the tenant's allowed
/// origins.
#[derive(Debug, Clone)]
pub struct WebchatCaller {
    pub tenant: TenantId,
    /// The page's origin when the key is a widget key (echoed for CORS).
    pub widget_origin: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
}

/// The longest webchat `session_id`.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// The shortest `session_id` a widget may use: it is the visitor's only
/// credential, so it must not be guessable (a random UUID is 36).
pub const MIN_WIDGET_SESSION_ID_LEN: usize = 16;

impl WebchatCaller {
    pub fn is_widget(&self) -> bool {
        self.widget_origin.is_some()
    }

    /// Checks a client-chosen `session_id`: 1 to 128 characters of letters,
    /// digits and `-_.:`; at least 16 for a widget.
    pub fn check_session_id(&self, id: &str) -> Result<(), ApiError> {
        let shape = !id.is_empty()
            && id.len() <= MAX_SESSION_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !shape {
            return Err(ApiError::BadRequest(format!(
                "`session_id` must be 1 to {MAX_SESSION_ID_LEN} characters: letters, digits, `-`, `_`, `.` or `:`"
            )));
        }
        if self.is_widget() && id.len() < MIN_WIDGET_SESSION_ID_LEN {
            return Err(ApiError::BadRequest(format!(
                "`session_id` must be at least {MIN_WIDGET_SESSION_ID_LEN} characters with a widget key: \
                 it is the visitor's only credential (use a random UUID)"
            )));
        }
        Ok(())
    }

    pub fn scope(&self) -> Scope {
        Scope::tenant(self.tenant.clone())
    }
}

/// The webchat surface takes API keys and widget keys, in `X-API-Key`.
pub fn webchat_caller(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (WebchatCaller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-api-key")
        .and(warp::header::optional::<String>("origin"))
        .and(warp::ext::optional::<ClientIp>())
        .and_then(
            move |key: Option<String>, origin: Option<String>, client_ip: Option<ClientIp>| {
                let runtime = runtime.clone();
                let limiter = limiter.clone();
                async move {
                    let client_ip = client_ip.map(|client| client.0);
                    let caller =
                        resolve_webchat(&runtime, key.as_deref(), origin.as_deref(), client_ip)
                            .map_err(warp::reject::custom)?;
                    limiter
                        .check(&caller.tenant, key.as_deref(), client_ip)
                        .map_err(|error| warp::reject::custom(ApiError::from(error)))?;
                    Ok::<_, Rejection>(caller)
                }
            },
        )
}

/// The webchat caller of a key (and, for a widget key, the page's origin).
pub fn resolve_webchat(
    runtime: &Runtime,
    key: Option<&str>,
    origin: Option<&str>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<WebchatCaller, ApiError> {
    let key = key.ok_or(ApiError::MissingApiKey)?;
    match runtime.key_kind(key) {
        Some((tenant, KeyKind::Api)) => Ok(WebchatCaller {
            tenant,
            widget_origin: None,
            client_ip,
        }),
        Some((tenant, KeyKind::Widget)) => {
            let origin = allowed_origin(runtime, &tenant, origin)?;
            Ok(WebchatCaller {
                tenant,
                widget_origin: Some(origin),
                client_ip,
            })
        }
        Some((_, KeyKind::Staff)) => Err(ApiError::StaffKeyNotAllowed),
        None => Err(ApiError::InvalidApiKey),
    }
}

/// A member of staff, signed in to the agent console with their staff key.
#[derive(Debug, Clone)]
pub struct Staff {
    pub tenant: TenantId,
    pub key_id: String,
    pub name: String,
}

/// The console's API takes staff keys only, in `X-API-Key` (401 when missing
/// or unknown, 403 for another kind of key); counted against the key's and
/// the address's limits.
pub fn staff_caller(
    runtime: Runtime,
    limiter: Limiter,
) -> impl Filter<Extract = (Staff,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-api-key")
        .and(warp::ext::optional::<ClientIp>())
        .and_then(move |key: Option<String>, client_ip: Option<ClientIp>| {
            let runtime = runtime.clone();
            let limiter = limiter.clone();
            async move {
                let key = key.ok_or_else(|| warp::reject::custom(ApiError::MissingApiKey))?;
                let staff = staff_of(&runtime, &key).map_err(warp::reject::custom)?;
                limiter
                    .check(&staff.tenant, Some(&key), client_ip.map(|client| client.0))
                    .map_err(|error| warp::reject::custom(ApiError::from(error)))?;
                Ok::<_, Rejection>(staff)
            }
        })
}

/// The staff member whose key this is.
pub fn staff_of(runtime: &Runtime, key: &str) -> Result<Staff, ApiError> {
    match runtime.key_kind(key) {
        Some((tenant, KeyKind::Staff)) => {
            let record = runtime.key_record(key).ok_or(ApiError::InvalidApiKey)?;
            Ok(Staff {
                tenant,
                key_id: record.key_id,
                name: record.name.unwrap_or_else(|| "Staff".into()),
            })
        }
        Some(_) => Err(ApiError::NotStaffKey),
        None => Err(ApiError::InvalidApiKey),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tertulia_actors::model::SessionId;

    use super::tickets::{TicketClaims, Tickets, unix_now};
    use super::tokens::{ClientClaims, mint_client_token};
    use super::*;

    #[test]
    fn client_tokens_round_trip_and_expire() {
        let secret = "s".repeat(32);
        let (token, _) = mint_client_token(&secret, "user-7", Duration::from_secs(60));
        assert_eq!(
            verify_client_token(&secret, &token).as_deref(),
            Some("user-7")
        );
        assert_eq!(
            verify_client_token(&"t".repeat(32), &token),
            None,
            "another tenant's secret"
        );
        assert_eq!(verify_client_token("", &token), None, "client tokens off");
        let stale = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ClientClaims {
                sub: "user-7".into(),
                exp: unix_now() - 60,
                iat: None,
            },
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(verify_client_token(&secret, &stale), None, "expired");
        assert_eq!(verify_client_token(&secret, "not.a.jwt"), None);
    }

    #[test]
    fn a_ticket_works_only_for_its_session_and_until_it_expires() {
        let tickets = Tickets::new(b"secret", Duration::from_secs(60));
        let session = SessionId::new();
        let tenant = TenantId("acme".into());
        let scope = Scope::tenant(tenant.clone());
        let (ticket, _) = tickets.issue(&scope, session, false);
        assert_eq!(
            tickets.verify(&ticket, session),
            Some(TicketClaims {
                scope: scope.clone(),
                widget: false,
                staff: None
            })
        );
        assert_eq!(tickets.verify(&ticket, SessionId::new()), None);
        assert_eq!(tickets.verify_feed(&ticket), None, "not a feed ticket");

        let staff = Staff {
            tenant: tenant.clone(),
            key_id: "key_1".into(),
            name: "Ana".into(),
        };
        let (feed, _) = tickets.issue_staff(&staff.tenant, &staff.name, None);
        assert_eq!(
            tickets.verify_feed(&feed),
            Some((tenant.clone(), "Ana".into()))
        );
        assert_eq!(tickets.verify(&feed, session), None, "not a session ticket");
        let (watch, _) = tickets.issue_staff(&staff.tenant, &staff.name, Some(session));
        assert_eq!(
            tickets
                .verify(&watch, session)
                .and_then(|claims| claims.staff),
            Some("Ana".into())
        );
        assert_eq!(
            Tickets::new(b"other", Duration::from_secs(60)).verify(&ticket, session),
            None
        );

        let expired = Tickets::new(b"secret", Duration::ZERO);
        let (ticket, _) = expired.issue(&scope, session, false);
        assert_eq!(expired.verify(&ticket, session), None);
    }

    #[test]
    fn a_tampered_ticket_is_refused() {
        let tickets = Tickets::new(b"secret", Duration::from_secs(60));
        let session = SessionId::new();
        let (ticket, _) = tickets.issue(&Scope::tenant(TenantId("acme".into())), session, true);
        let (payload, signature) = ticket.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"t": "other", "s": session, "e": u64::MAX}))
                .unwrap(),
        );
        assert_eq!(
            tickets.verify(&format!("{forged}.{signature}"), session),
            None
        );
        assert_eq!(tickets.verify(payload, session), None);
        assert_eq!(tickets.verify("", session), None);
    }
}
