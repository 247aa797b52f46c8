//! The runtime's one error type. Every public call of `tertulia-actors` returns
//! it; the edge (`src/error.rs`) maps each variant to an HTTP status, a
//! WebSocket `error` frame code, or a close reason, in one place.

use crate::model::{SessionId, TenantId};

/// Everything that can go wrong inside the runtime, by what the caller can do
/// about it rather than by where it happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No live or stored session with this id exists for this tenant. Sessions
    /// of other tenants are reported the same way, so ids cannot be probed.
    #[error("session {session} not found")]
    SessionNotFound {
        tenant: TenantId,
        session: SessionId,
    },

    /// No conversation of this tenant has this id on this channel (a webchat `session_id`).
    #[error("no {channel} conversation has session_id `{id}`")]
    UnknownExternal { channel: &'static str, id: String },

    /// The tenant is not configured on this node.
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),

    /// The caller's input breaks a documented limit or shape; the text names the field.
    #[error("{0}")]
    InvalidInput(String),

    /// Message content is larger than the configured limit.
    #[error("content is {actual} bytes; the limit is {limit}")]
    ContentTooLarge { actual: usize, limit: usize },

    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),

    /// A message while an answer is in progress, under double texting `reject`.
    #[error("an answer is still being written: wait for it before writing again")]
    Busy,

    /// A conditional context update named a version that is not the current one.
    #[error("the context is at version {current}, not the one given in If-Match")]
    StaleContext { current: u64 },

    /// No key with this id exists (or it belongs to another tenant).
    #[error("key {0} not found")]
    KeyNotFound(String),

    /// No webhook endpoint with this id exists for this tenant.
    #[error("webhook endpoint {0} not found")]
    WebhookNotFound(String),

    /// No Durable Stream at this path for this tenant.
    #[error("stream {0} not found")]
    StreamNotFound(String),

    /// A tenant's quota (its number of streams) is used up.
    #[error("{0}")]
    QuotaExceeded(String),

    /// The stream was deleted while forks still read from it.
    #[error("stream {0} was deleted")]
    StreamGone(String),

    /// No delivery with this id exists for this endpoint.
    #[error("delivery {0} not found")]
    DeliveryNotFound(String),

    /// A URL a tenant gave points where requests may not go (the SSRF guard).
    #[error("{0}")]
    UrlNotAllowed(String),

    /// The change was made against an old version of the conversation.
    #[error("the conversation changed meanwhile: it is at version {current}")]
    VersionConflict { current: u64 },

    /// Over a rate limit; try again after this many seconds.
    #[error("too many requests; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },

    /// Another member of staff has taken this conversation over.
    #[error("{by} has taken this conversation over")]
    AlreadyTakenOver { by: String },

    /// Hand-back of a conversation nobody has taken over.
    #[error("nobody has taken this conversation over")]
    NotTakenOver,

    /// `cancel` arrived while no answer was being generated.
    #[error("no answer is being generated")]
    NothingToCancel,

    /// Insights need a model, and this tenant has none (the echo agent, say).
    #[error(
        "insights need a model: set the tenant's agent to `openai`, or `insights.model` with its `openai` block (base URL and key)"
    )]
    NoModel,

    /// The conversation has no message with text to analyse.
    #[error("the conversation has nothing to analyse yet")]
    NothingToAnalyze,

    /// The conversation has not been analysed yet.
    #[error("the conversation has not been analysed yet (POST /chat/{{id}}/analyze)")]
    NotAnalyzed,

    /// The model failed to analyse, or its answer broke the schema; the
    /// analysis is retried later.
    #[error("the analysis failed: {0}")]
    AnalysisFailed(String),

    /// The database refused or failed a read or a write. Nothing was acknowledged.
    #[error("storage failed: {0}")]
    Storage(String),

    /// The store refused a write (a full disk, a failing device): nothing of
    /// it was stored, and the caller may try again once it recovers.
    #[error("storage cannot take writes: {0}")]
    StorageUnavailable(String),

    /// An actor the request needed stopped before it answered (restart, shutdown).
    #[error("{0} is unavailable")]
    Unavailable(&'static str),

    /// The runtime is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// This node lost its lease on the conversation (another node owns it
    /// now): the write was refused in the database, so nothing of it was
    /// stored. The client reconnects, to any node.
    #[error("this node no longer owns the conversation: {0}")]
    Fenced(String),

    /// The node that owns the conversation did not answer; it is owned
    /// again elsewhere once its lease runs out.
    #[error("the node that owns this conversation ({0}) is unreachable")]
    OwnerUnreachable(String),

    /// Starting the runtime failed (database, migrations, actors).
    #[error("start-up failed: {0}")]
    Startup(String),
}

impl Error {
    /// A stable, machine-readable code, shared by HTTP bodies and `error` frames.
    pub fn code(&self) -> &'static str {
        match self {
            Error::SessionNotFound { .. } | Error::UnknownExternal { .. } => "session_not_found",
            Error::TenantNotFound(_) => "tenant_not_found",
            Error::InvalidInput(_) => "invalid_input",
            Error::ContentTooLarge { .. } => "content_too_large",
            Error::Conflict(_) => "conflict",
            Error::Busy => "busy",
            Error::StaleContext { .. } => "stale_context",
            Error::VersionConflict { .. } => "version_conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::KeyNotFound(_) => "key_not_found",
            Error::WebhookNotFound(_) => "webhook_not_found",
            Error::DeliveryNotFound(_) => "delivery_not_found",
            Error::StreamNotFound(_) => "stream_not_found",
            Error::StreamGone(_) => "stream_gone",
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::UrlNotAllowed(_) => "url_not_allowed",
            Error::AlreadyTakenOver { .. } => "already_taken_over",
            Error::NotTakenOver => "not_taken_over",
            Error::NothingToCancel => "nothing_to_cancel",
            Error::NoModel => "insights_need_a_model",
            Error::NothingToAnalyze => "nothing_to_analyze",
            Error::Fenced(_) => "fenced",
            Error::OwnerUnreachable(_) => "owner_unreachable",
            Error::NotAnalyzed => "not_analyzed",
            Error::AnalysisFailed(_) => "analysis_failed",
            Error::Storage(_) => "storage_failed",
            Error::StorageUnavailable(_) => "storage_unavailable",
            Error::Unavailable(_) => "unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::Startup(_) => "startup_failed",
        }
    }
}

impl Error {
    /// The error for a governor refusal: the wait, rounded up to whole seconds.
    pub fn rate_limited(wait: std::time::Duration) -> Error {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Error::RateLimited {
            retry_after_secs: secs.max(1),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
