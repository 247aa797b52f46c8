//! The one place errors become HTTP: every runtime error and every warp
//! rejection turns into a status and a JSON body `{"error": "...", "code": "..."}`.
//! Causes of server-side failures are logged here once; their details never
//! reach the client.

use std::convert::Infallible;

use serde::Serialize;
use tertulia_actors::Error as RuntimeError;
use tertulia_actors::model::{MessageId, SessionId};
use warp::http::StatusCode;
use warp::reject::Reject;
use warp::{Rejection, Reply};

/// Errors of the edge: the runtime's, plus what only the edge can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("missing credentials: send the tenant's key in X-API-Key")]
    MissingApiKey,
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("the request body did not arrive in time (server.body_timeout_ms)")]
    BodyTimeout,
    #[error("this address already holds {limit} sockets (websocket.max_per_address)")]
    TooManySockets { limit: usize },
    #[error("invalid credentials")]
    InvalidApiKey,
    #[error("the WebSocket ticket is invalid or expired; ask for a new websocket_url")]
    InvalidTicket,
    #[error(
        "the client token is invalid or expired (send `Authorization: Bearer <token>` signed with the tenant's client_token_secret)"
    )]
    InvalidClientToken,
    #[error("{0}")]
    BadRequest(String),
    /// A session id that is not even well-formed: reported like an unknown one.
    #[error("session not found")]
    UnknownSession,
    #[error("expected a WebSocket upgrade")]
    NotWebSocket,
    #[error("missing credentials: send the admin token as `Authorization: Bearer <token>`")]
    MissingAdminToken,
    #[error(
        "a widget key may only open conversations and use the webchat surface (/api/webchat/...); use an API key for this"
    )]
    WidgetKeyNotAllowed,
    #[error("this page's origin is not among the tenant's allowed origins")]
    OriginNotAllowed,
    #[error(
        "a staff key is for the agent console (/console/api/...) only; use an API key for this"
    )]
    StaffKeyNotAllowed,
    #[error(
        "the agent console needs a staff key (make one with `tertulia key create --kind staff --name …`)"
    )]
    NotStaffKey,
    #[error(
        "the admin API is disabled: set auth.admin_token (TERTULIA_AUTH__ADMIN_TOKEN) to enable it"
    )]
    AdminDisabled,
    #[error("no contact was captured in this conversation")]
    NoContact,
    #[error(
        "a client token speaks for one end user; statistics are the tenant's: use the API key alone, or a staff key"
    )]
    ClientTokenNotAllowed,
    #[error(
        "an API key must never be in a URL a browser sees; this path takes the tenant's widget key"
    )]
    ApiKeyInUrl,
    #[error("{0}")]
    UnsupportedMedia(String),
    /// A webchat message was stored but its reply cannot be given now.
    #[error("{}", problem.describe())]
    Reply {
        problem: ReplyProblem,
        conversation_id: SessionId,
        last_message_id: MessageId,
        assistant_message_id: Option<MessageId>,
    },
}

/// Why `POST /api/webchat/messages` has no reply to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyProblem {
    /// The reply took longer than `webchat.reply_timeout_ms`.
    Timeout,
    /// The conversation restarted while the reply was being written.
    Restarted,
    /// The agent failed; what it wrote before is stored as `failed`.
    AgentFailed,
}

impl ReplyProblem {
    fn describe(self) -> &'static str {
        match self {
            ReplyProblem::Timeout => {
                "the reply is taking too long; it will appear in the history when it is ready"
            }
            ReplyProblem::Restarted => {
                "the conversation restarted; the reply will appear in the history when it is ready"
            }
            ReplyProblem::AgentFailed => "the agent failed to reply",
        }
    }
}

impl Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Runtime(error) => match error {
                RuntimeError::SessionNotFound { .. }
                | RuntimeError::UnknownExternal { .. }
                | RuntimeError::TenantNotFound(_) => StatusCode::NOT_FOUND,
                RuntimeError::InvalidInput(_) => StatusCode::BAD_REQUEST,
                RuntimeError::ContentTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                RuntimeError::NothingToCancel
                | RuntimeError::NoModel
                | RuntimeError::NothingToAnalyze
                | RuntimeError::Conflict(_)
                | RuntimeError::Busy
                | RuntimeError::AlreadyTakenOver { .. }
                | RuntimeError::NotTakenOver => StatusCode::CONFLICT,
                RuntimeError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                RuntimeError::VersionConflict { .. } => StatusCode::CONFLICT,
                RuntimeError::StaleContext { .. } => StatusCode::PRECONDITION_FAILED,
                RuntimeError::AnalysisFailed(_) => StatusCode::BAD_GATEWAY,
                RuntimeError::KeyNotFound(_)
                | RuntimeError::NotAnalyzed
                | RuntimeError::WebhookNotFound(_)
                | RuntimeError::StreamNotFound(_)
                | RuntimeError::DeliveryNotFound(_) => StatusCode::NOT_FOUND,
                RuntimeError::StreamGone(_) => StatusCode::GONE,
                RuntimeError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
                RuntimeError::UrlNotAllowed(_) => StatusCode::UNPROCESSABLE_ENTITY,
                RuntimeError::Storage(_) | RuntimeError::Startup(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                RuntimeError::Unavailable(_)
                | RuntimeError::StorageUnavailable(_)
                | RuntimeError::Fenced(_)
                | RuntimeError::OwnerUnreachable(_)
                | RuntimeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::MissingApiKey
            | ApiError::InvalidApiKey
            | ApiError::InvalidTicket
            | ApiError::InvalidClientToken
            | ApiError::MissingAdminToken => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled
            | ApiError::WidgetKeyNotAllowed
            | ApiError::StaffKeyNotAllowed
            | ApiError::NotStaffKey
            | ApiError::ClientTokenNotAllowed
            | ApiError::ApiKeyInUrl
            | ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest(_) | ApiError::NotWebSocket | ApiError::UnreadableBody => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManySockets { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnknownSession | ApiError::NoContact => StatusCode::NOT_FOUND,
            ApiError::Reply { problem, .. } => match problem {
                ReplyProblem::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ReplyProblem::Restarted => StatusCode::SERVICE_UNAVAILABLE,
                ReplyProblem::AgentFailed => StatusCode::BAD_GATEWAY,
            },
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Runtime(error) => error.code(),
            ApiError::MissingApiKey => "missing_api_key",
            ApiError::BodyTooLarge { .. } => "payload_too_large",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::TooManySockets { .. } => "too_many_sockets",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::InvalidTicket => "invalid_ticket",
            ApiError::InvalidClientToken => "invalid_client_token",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnknownSession => "session_not_found",
            ApiError::NotWebSocket => "not_websocket",
            ApiError::MissingAdminToken => "missing_admin_token",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::WidgetKeyNotAllowed => "widget_key_not_allowed",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::StaffKeyNotAllowed => "staff_key_not_allowed",
            ApiError::NotStaffKey => "not_a_staff_key",
            ApiError::NoContact => "contact_not_found",
            ApiError::ClientTokenNotAllowed => "client_token_not_allowed",
            ApiError::ApiKeyInUrl => "api_key_in_url",
            ApiError::UnsupportedMedia(_) => "unsupported_media_type",
            ApiError::Reply { problem, .. } => match problem {
                ReplyProblem::Timeout => "reply_timeout",
                ReplyProblem::Restarted => "reply_pending",
                ReplyProblem::AgentFailed => "agent_failed",
            },
        }
    }

    /// What the client may read: server-side causes stay in the log.
    fn public_message(&self) -> String {
        match self {
            ApiError::Runtime(RuntimeError::Storage(_) | RuntimeError::Startup(_)) => {
                "internal error".into()
            }
            // The device's own words (paths, errno) stay in the log.
            ApiError::Runtime(RuntimeError::StorageUnavailable(_)) => {
                "storage cannot take writes now (nothing was stored): try again later".into()
            }
            other => other.to_string(),
        }
    }

    pub fn to_response(&self) -> warp::reply::Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        }
        let mut response = json_error(self.status(), self.code(), self.public_message());
        if let ApiError::Runtime(
            RuntimeError::VersionConflict { current } | RuntimeError::StaleContext { current },
        ) = self
        {
            // The client needs the current version to merge and retry.
            let body = serde_json::json!({
                "error": self.public_message(),
                "code": self.code(),
                "current_version": current,
            });
            return warp::reply::with_status(warp::reply::json(&body), self.status())
                .into_response();
        }
        if let ApiError::Reply {
            conversation_id,
            last_message_id,
            assistant_message_id,
            ..
        } = self
        {
            // The message is stored: say where, so the client can find the reply later.
            let body = serde_json::json!({
                "error": self.public_message(),
                "code": self.code(),
                "conversation_id": conversation_id,
                "last_message_id": last_message_id,
                "assistant_message_id": assistant_message_id,
            });
            return warp::reply::with_status(warp::reply::json(&body), self.status())
                .into_response();
        }
        match self {
            ApiError::Runtime(RuntimeError::RateLimited { retry_after_secs }) => {
                response
                    .headers_mut()
                    .insert(warp::http::header::RETRY_AFTER, (*retry_after_secs).into());
            }
            // The store is probed every second.
            ApiError::Runtime(RuntimeError::StorageUnavailable(_)) => {
                response
                    .headers_mut()
                    .insert(warp::http::header::RETRY_AFTER, 1.into());
            }
            _ => {}
        }
        response
    }
}

pub fn json_error(status: StatusCode, code: &str, error: String) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&ErrorBody { error, code }), status).into_response()
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        self.to_response()
    }
}

/// Turns every rejection into the JSON error body.
pub async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(error) = rejection.find::<ApiError>() {
        return Ok(error.to_response());
    }
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_string(),
        )
    } else if let Some(error) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {error}"),
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large".into(),
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json".into(),
        )
    } else if let Some(error) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "invalid_query", error.to_string())
    } else if let Some(error) = rejection.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "missing_header", error.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed".into(),
        )
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".into(),
        )
    };
    Ok(json_error(status, code, message))
}
