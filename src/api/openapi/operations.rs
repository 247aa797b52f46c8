//! Every HTTP route as one row: method, path, what it does, who may call it,
//! its body and its answers. `tests/it/openapi.rs` compares these rows with
//! the routes declared in `src/`, so a route cannot be added without one.

/// Who may call an operation (each is a security scheme of the document).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    Public,
    /// `X-API-Key` with a tenant's API key.
    ApiKey,
    /// An API key plus `Authorization: Bearer` with a client token.
    ClientToken,
    /// `X-API-Key` with a widget key, from an allowed `Origin`.
    WidgetKey,
    /// `X-API-Key` with a staff key (the agent console).
    StaffKey,
    /// `Authorization: Bearer` with `auth.admin_token`.
    Admin,
    /// A `ticket` query parameter (WebSocket upgrades).
    Ticket,
    /// `Authorization: Bearer` with `metrics.token`, when one is set.
    MetricsToken,
}

/// What a request body is.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    None,
    /// JSON, by the name of a schema in the document's components.
    Json(&'static str, bool),
}

/// What a successful answer is.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// JSON of a component schema.
    Json(&'static str),
    /// Text of this content type (pages, scripts, metrics, backups, streams).
    Text(&'static str),
    /// No body.
    Empty,
}

#[derive(Clone, Copy, Debug)]
pub struct Operation {
    pub method: &'static str,
    /// With named parameters: `/chat/sessions/{session_id}/history`.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: &'static [Auth],
    pub body: Body,
    /// Success statuses and what they carry.
    pub ok: &'static [(u16, Answer)],
    /// Error statuses, each with the `{error, code}` body.
    pub errors: &'static [u16],
}

use Answer::{Empty, Json, Text};
use Auth::*;

// A row of the table: every field of an operation, in order.
#[allow(clippy::too_many_arguments)]
const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: &'static [Auth],
    body: Body,
    ok: &'static [(u16, Answer)],
    errors: &'static [u16],
) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary,
        auth,
        body,
        ok,
        errors,
    }
}

/// A tenant's key or a client's token: the errors any such call can meet.
const KEYED: &[u16] = &[400, 401, 403, 404, 413, 429, 503];
/// The same with a body the runtime may refuse for its state.
const KEYED_WRITE: &[u16] = &[400, 401, 403, 404, 408, 409, 413, 415, 429, 503];
const ADMIN: &[u16] = &[400, 401, 403, 404, 408, 409, 413, 422, 503];
const PUBLIC: &[u16] = &[];
const PREFLIGHT: &[(u16, Answer)] = &[(204, Empty), (200, Empty)];
const SESSION_KEYS: &[Auth] = &[ApiKey, ClientToken];
const WIDGET_KEYS: &[Auth] = &[ApiKey, WidgetKey];
const NO_BODY: Body = Body::None;
/// A tenant's API key; no credential where the tenant opened its streams.
const STREAM_AUTH: &[Auth] = &[ApiKey, Public];
const STREAM_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 410, 413, 429, 503];
const CONVERSATION_STREAM_AUTH: &[Auth] = &[ApiKey, ClientToken];
const CONVERSATION_STREAM_ERRORS: &[u16] = &[400, 401, 403, 404, 429, 503];
const HTML: &[(u16, Answer)] = &[(200, Text("text/html; charset=utf-8"))];
const SCRIPT: &[(u16, Answer)] = &[(200, Text("text/javascript; charset=utf-8"))];
const OBJECT: &[(u16, Answer)] = &[(200, Json("Object"))];
const CREATED: &[(u16, Answer)] = &[(201, Json("Object"))];
/// A WebSocket upgrade: 101 with the right headers, else an error.
const UPGRADE: &[(u16, Answer)] = &[(101, Empty)];

#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    // Health and operations.
    op("GET", "/healthz", "operations", "The process answers.", &[Public], NO_BODY, &[(200, Json("Health"))], PUBLIC),
    op("GET", "/readyz", "operations", "The runtime and its database are up.", &[Public], NO_BODY, &[(200, Json("Health"))], &[503]),
    op("GET", "/metrics", "operations", "Prometheus text format.", &[Public, MetricsToken], NO_BODY, &[(200, Text("text/plain; version=0.0.4; charset=utf-8"))], &[401, 404]),
    op("GET", "/openapi.json", "operations", "This document.", &[Public], NO_BODY, &[(200, Json("Object"))], PUBLIC),
    op("GET", "/docs", "operations", "This document as a page (works offline).", &[Public], NO_BODY, HTML, PUBLIC),
    // Pages and their scripts.
    op("GET", "/", "pages", "The demo chat page.", &[Public], NO_BODY, HTML, PUBLIC),
    op("GET", "/console", "pages", "The agent console.", &[Public], NO_BODY, HTML, PUBLIC),
    op("GET", "/widget.js", "pages", "The chat widget a landing page embeds.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/markdown.js", "pages", "Markdown rendering for the pages.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/chat.js", "pages", "The chat client of the pages.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/demo.js", "pages", "The demo page's script.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/console.js", "pages", "The console's script.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/insights.js", "pages", "The console's insights panel.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    op("GET", "/assets/docs.js", "pages", "The renderer of /docs.", &[Public], NO_BODY, SCRIPT, PUBLIC),
    // The session API.
    op("POST", "/chat/sessions", "sessions", "Create a session; its WebSocket URL carries a ticket.", &[ApiKey, ClientToken, WidgetKey], Body::Json("NewSession", false), &[(200, Json("SessionCreated"))], KEYED_WRITE),
    op("OPTIONS", "/chat/sessions", "sessions", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("GET", "/chat/sessions", "sessions", "The tenant's (or client's) sessions.", SESSION_KEYS, NO_BODY, OBJECT, KEYED),
    op("GET", "/chat/sessions/{session_id}/history", "sessions", "A session's messages in order.", SESSION_KEYS, NO_BODY, OBJECT, KEYED),
    op("POST", "/chat/sessions/{session_id}/context", "sessions", "Merge into a session's context (If-Match: its context version).", SESSION_KEYS, Body::Json("ContextPatch", true), OBJECT, &[400, 401, 403, 404, 408, 412, 413, 415, 429, 503]),
    op("POST", "/chat/sessions/{session_id}/ticket", "sessions", "A fresh WebSocket URL for a session.", SESSION_KEYS, NO_BODY, OBJECT, KEYED),
    op("DELETE", "/chat/sessions/{session_id}", "sessions", "Delete a session and its messages.", SESSION_KEYS, NO_BODY, OBJECT, KEYED),
    op("GET", "/chat/ws/{session_id}", "sessions", "The session's WebSocket (upgrade).", &[Ticket, ApiKey, ClientToken], NO_BODY, UPGRADE, &[400, 401, 403, 404, 429, 503]),
    // The conversation API.
    op("POST", "/chat/conversation", "conversations", "Create a conversation.", SESSION_KEYS, Body::Json("NewConversation", false), CREATED, KEYED_WRITE),
    op("GET", "/chat/conversations", "conversations", "The tenant's conversations, newest first.", SESSION_KEYS, NO_BODY, &[(200, Json("Array"))], KEYED),
    op("GET", "/chat/{conversation_id}/messages", "conversations", "A conversation's messages.", SESSION_KEYS, NO_BODY, &[(200, Json("Array"))], KEYED),
    op("POST", "/chat/{conversation_id}/messages", "conversations", "Store a message (and answer it unless `respond` is false).", SESSION_KEYS, Body::Json("NewMessage", true), CREATED, KEYED_WRITE),
    op("PATCH", "/chat/{conversation_id}", "conversations", "Change title, status or double texting against a version.", SESSION_KEYS, Body::Json("ConversationChange", true), OBJECT, KEYED_WRITE),
    op("GET", "/chat/{conversation_id}/contact", "conversations", "The visitor's contact details.", SESSION_KEYS, NO_BODY, OBJECT, KEYED),
    op("POST", "/chat/{conversation_id}/handoff", "conversations", "Ask for a person.", SESSION_KEYS, Body::Json("Handoff", false), &[(200, Json("Object")), (201, Json("Object"))], KEYED_WRITE),
    op("POST", "/chat/{conversation_id}/analyze", "analysis", "Read the conversation with the tenant's model now.", &[ApiKey], NO_BODY, OBJECT, &[400, 401, 403, 404, 409, 429, 502, 503]),
    op("GET", "/chat/{conversation_id}/insights", "analysis", "The conversation's last insights.", &[ApiKey], NO_BODY, OBJECT, KEYED),
    op("GET", "/analytics/summary", "analysis", "The tenant's figures over a period.", &[ApiKey], NO_BODY, OBJECT, KEYED),
    // The webchat channel.
    op("POST", "/api/webchat/messages", "webchat", "A visitor's message; answered with the reply.", WIDGET_KEYS, Body::Json("WebchatMessage", true), &[(200, Json("Object")), (201, Json("Object"))], &[400, 401, 403, 404, 408, 409, 413, 415, 429, 502, 503, 504]),
    op("OPTIONS", "/api/webchat/messages", "webchat", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("GET", "/api/webchat/history/{session_id}", "webchat", "A visitor's conversation by its webchat id.", WIDGET_KEYS, NO_BODY, OBJECT, KEYED),
    op("OPTIONS", "/api/webchat/history/{session_id}", "webchat", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("POST", "/api/webchat/consent", "webchat", "Record a visitor's consent decision.", WIDGET_KEYS, Body::Json("Consent", true), CREATED, KEYED_WRITE),
    op("OPTIONS", "/api/webchat/consent", "webchat", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("POST", "/api/webchat/handoff", "webchat", "A visitor asks for a person.", WIDGET_KEYS, Body::Json("WebchatHandoff", true), &[(200, Json("Object")), (201, Json("Object"))], KEYED_WRITE),
    op("OPTIONS", "/api/webchat/handoff", "webchat", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("GET", "/api/webchat/stream", "webchat", "A visitor's WebSocket (upgrade).", &[Ticket, WidgetKey, ApiKey], NO_BODY, UPGRADE, &[400, 401, 403, 404, 429, 503]),
    // Client libraries.
    op("POST", "/ai-sdk/chat", "client libraries", "Vercel AI SDK useChat: a UI message stream.", WIDGET_KEYS, Body::Json("Object", true), &[(200, Text("text/event-stream"))], KEYED_WRITE),
    op("OPTIONS", "/ai-sdk/chat", "client libraries", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("GET", "/ai-sdk/chat/{id}/stream", "client libraries", "Resume the answer in progress (204: none).", WIDGET_KEYS, NO_BODY, &[(200, Text("text/event-stream")), (204, Empty)], KEYED),
    op("OPTIONS", "/ai-sdk/chat/{id}/stream", "client libraries", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("POST", "/ag-ui", "client libraries", "An AG-UI run: events as SSE.", WIDGET_KEYS, Body::Json("Object", true), &[(200, Text("text/event-stream"))], KEYED_WRITE),
    op("OPTIONS", "/ag-ui", "client libraries", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("POST", "/n8n-chat/{widget_key}", "client libraries", "n8n's chat widget (@n8n/chat): sendMessage, loadPreviousSession.", &[Public], Body::Json("Object", true), &[(200, Json("Object"))], KEYED_WRITE),
    op("OPTIONS", "/n8n-chat/{widget_key}", "client libraries", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    // Durable Streams (the protocol's own headers and codes: README, "Durable Streams").
    op("PUT", "/ds/{tenant}/v1/stream/{path}", "streams", "Create a stream (Content-Type, Stream-TTL or Stream-Expires-At, Stream-Closed); 200 if it exists alike.", STREAM_AUTH, NO_BODY, &[(201, Empty), (200, Empty)], STREAM_ERRORS),
    op("POST", "/ds/{tenant}/v1/stream/{path}", "streams", "Append (Stream-Seq, Producer-Id/-Epoch/-Seq) or close (Stream-Closed).", STREAM_AUTH, NO_BODY, &[(204, Empty), (200, Empty)], STREAM_ERRORS),
    op("GET", "/ds/{tenant}/v1/stream/{path}", "streams", "Read from ?offset: catch-up, live=long-poll or live=sse.", STREAM_AUTH, NO_BODY, &[(200, Text("application/octet-stream")), (204, Empty), (304, Empty)], STREAM_ERRORS),
    op("HEAD", "/ds/{tenant}/v1/stream/{path}", "streams", "The stream's tail and settings.", STREAM_AUTH, NO_BODY, &[(200, Empty)], STREAM_ERRORS),
    op("DELETE", "/ds/{tenant}/v1/stream/{path}", "streams", "Delete the stream.", STREAM_AUTH, NO_BODY, &[(204, Empty)], STREAM_ERRORS),
    op("OPTIONS", "/ds/{tenant}/v1/stream/{path}", "streams", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    op("GET", "/ds/{tenant}/v1/conversation/{session_id}", "streams", "A conversation as a read-only JSON stream from ?offset (messages, answer chunks, context): catch-up, live=long-poll or live=sse.", CONVERSATION_STREAM_AUTH, NO_BODY, &[(200, Text("application/json")), (204, Empty), (304, Empty)], CONVERSATION_STREAM_ERRORS),
    op("HEAD", "/ds/{tenant}/v1/conversation/{session_id}", "streams", "The offset where the conversation's stream ends now.", CONVERSATION_STREAM_AUTH, NO_BODY, &[(200, Empty)], CONVERSATION_STREAM_ERRORS),
    op("OPTIONS", "/ds/{tenant}/v1/conversation/{session_id}", "streams", "CORS preflight.", &[Public], NO_BODY, PREFLIGHT, PUBLIC),
    // The agent console.
    op("GET", "/console/api/me", "console", "Who the staff key belongs to.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("GET", "/console/api/conversations", "console", "Conversations for the console.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("GET", "/console/api/conversations/{conversation_id}/messages", "console", "A conversation's messages.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("POST", "/console/api/conversations/{conversation_id}/messages", "console", "Answer as a person.", &[StaffKey], Body::Json("StaffMessage", true), CREATED, KEYED_WRITE),
    op("POST", "/console/api/conversations/{conversation_id}/takeover", "console", "Take the conversation over from the AI.", &[StaffKey], NO_BODY, OBJECT, KEYED_WRITE),
    op("POST", "/console/api/conversations/{conversation_id}/handback", "console", "Give it back to the AI.", &[StaffKey], NO_BODY, OBJECT, KEYED_WRITE),
    op("POST", "/console/api/conversations/{conversation_id}/socket", "console", "A WebSocket URL to watch and answer.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("GET", "/console/api/conversations/{conversation_id}/insights", "console", "The conversation's insights.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("POST", "/console/api/feed", "console", "A ticket for the console's live feed.", &[StaffKey], NO_BODY, OBJECT, KEYED),
    op("GET", "/console/ws", "console", "The console's live feed (upgrade).", &[Ticket], NO_BODY, UPGRADE, &[400, 401, 403, 429, 503]),
    // The admin API.
    op("GET", "/admin/backup", "admin", "A consistent backup (SurrealQL).", &[Admin], NO_BODY, &[(200, Text("application/sql; charset=utf-8"))], ADMIN),
    op("POST", "/admin/tenants", "admin", "Create a tenant.", &[Admin], Body::Json("TenantSettings", true), CREATED, ADMIN),
    op("GET", "/admin/tenants", "admin", "Every tenant.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("PATCH", "/admin/tenants/{tenant}", "admin", "Change a tenant made here.", &[Admin], Body::Json("TenantSettings", true), OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/erase", "admin", "Forget a person.", &[Admin], Body::Json("ErasureSubject", true), OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/keys", "admin", "Make a key (shown once).", &[Admin], Body::Json("NewKey", false), CREATED, ADMIN),
    op("GET", "/admin/tenants/{tenant}/keys", "admin", "A tenant's keys (prefixes only).", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/client-tokens", "admin", "Mint a client token for one end user.", &[Admin], Body::Json("NewClientToken", true), CREATED, ADMIN),
    op("DELETE", "/admin/keys/{key_id}", "admin", "Revoke a key.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/webhooks", "admin", "Send the tenant's events to a URL.", &[Admin], Body::Json("WebhookEndpoint", true), CREATED, ADMIN),
    op("GET", "/admin/tenants/{tenant}/webhooks", "admin", "The tenant's endpoints.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("GET", "/admin/tenants/{tenant}/webhooks/{endpoint_id}", "admin", "One endpoint.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("PATCH", "/admin/tenants/{tenant}/webhooks/{endpoint_id}", "admin", "Change an endpoint.", &[Admin], Body::Json("WebhookEndpoint", true), OBJECT, ADMIN),
    op("DELETE", "/admin/tenants/{tenant}/webhooks/{endpoint_id}", "admin", "Delete an endpoint and its deliveries.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/webhooks/{endpoint_id}/rotate-secret", "admin", "A new signing secret (the old one overlaps).", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/webhooks/{endpoint_id}/test", "admin", "Send a webhook.test event.", &[Admin], NO_BODY, &[(200, Json("Object")), (202, Json("Object"))], ADMIN),
    op("GET", "/admin/tenants/{tenant}/webhooks/{endpoint_id}/deliveries", "admin", "An endpoint's deliveries.", &[Admin], NO_BODY, OBJECT, ADMIN),
    op("POST", "/admin/tenants/{tenant}/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay", "admin", "Send a delivery again.", &[Admin], NO_BODY, &[(200, Json("Object")), (202, Json("Object"))], ADMIN),
    op("POST", "/admin/tenants/{tenant}/webhooks/{endpoint_id}/replay-dead", "admin", "Send every dead delivery again.", &[Admin], NO_BODY, &[(200, Json("Object")), (202, Json("Object"))], ADMIN),
];
