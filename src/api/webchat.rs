//! The webchat channel of the seed "Canal Webchat" (`/api/webchat/...`): a
//! landing page's chat, known by a `session_id` the page chooses. The first
//! use of an id opens a conversation for it; from then on the id and the
//! conversation's id name the same session actor, so the conversation is on
//! `/chat/...` too, and a message posted here reaches every socket at once.
//!
//! Callers: a back end with the tenant's API key, or the page itself with a
//! widget key from an allowed origin. For a widget, the `session_id` is the
//! visitor's only credential, so it must be long enough to be unguessable.
//!
//! Each visitor message records its origin: address (see `server/mod.rs` for
//! trusted proxies), user agent, locale and, when a provider is configured,
//! geolocation, looked up beside the reply and never before it. Handlers call
//! the runtime; nothing here touches the database.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tertulia_actors::model::protocol::MAX_AUTHOR_LEN;
use tertulia_actors::model::{Consent, MessageStatus, NewMessage, Origin, now_timestamp};
use tertulia_actors::runtime::WEBCHAT;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::views::WebchatMessage;
use crate::app::AppState;
use crate::auth::{WebchatCaller, webchat_caller};
use crate::http::error::{ApiError, ReplyProblem};
use crate::http::only_fields;
use crate::http::{
    allow_origin, created, created_or_ok, ok, parse_limit, parse_object, required_text,
};

/// The longest locale tag kept.
const MAX_LOCALE_LEN: usize = 35;
/// The longest user agent kept; longer ones are cut.
const MAX_USER_AGENT_LEN: usize = 512;
const MAX_TEXT_VERSION_LEN: usize = 64;
/// `GET /api/webchat/history/{id}` returns at most this many (the newest).
const MAX_HISTORY: usize = 1000;

/// Every webchat REST route (the stream is in `sockets.rs`).
pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max_body = app.config.server.max_body_bytes;
    let who = webchat_caller(app.runtime.clone(), app.limiter.clone());
    let with_app = app.filter();
    let client = warp::header::optional::<String>("user-agent")
        .and(warp::header::optional::<String>("accept-language"))
        .map(|user_agent, accept_language| Client {
            user_agent,
            accept_language,
        });

    // POST /api/webchat/messages
    let post = warp::path!("api" / "webchat" / "messages")
        .and(warp::post())
        .and(with_app.clone())
        .and(who.clone())
        .and(client)
        .and(crate::http::body(max_body))
        .then(post_message);

    // GET /api/webchat/history/{session_id}
    let history = warp::path!("api" / "webchat" / "history" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and(who.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(history);

    // POST /api/webchat/consent
    let consent = warp::path!("api" / "webchat" / "consent")
        .and(warp::post())
        .and(with_app.clone())
        .and(who.clone())
        .and(client)
        .and(crate::http::body(max_body))
        .then(record_consent);

    // POST /api/webchat/handoff: the widget's "talk to a person" button.
    let handoff = warp::path!("api" / "webchat" / "handoff")
        .and(warp::post())
        .and(with_app)
        .and(who)
        .and(crate::http::body(max_body))
        .then(request_handoff);

    post.or(history)
        .unify()
        .or(consent)
        .unify()
        .or(handoff)
        .unify()
        .boxed()
}

/// What the request says about the visitor's browser.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub user_agent: Option<String>,
    pub accept_language: Option<String>,
}

impl Client {
    /// The origin recorded with a visitor's message.
    pub fn origin(&self, caller: &WebchatCaller, locale: Option<String>) -> Origin {
        Origin {
            channel: WEBCHAT.into(),
            ip: caller.client_ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.as_deref().map(cut_user_agent),
            locale: locale.or_else(|| self.preferred_locale()),
            geo: None,
        }
    }

    /// The first language of `Accept-Language`, when the client sent no locale.
    fn preferred_locale(&self) -> Option<String> {
        first_language(self.accept_language.as_deref()?)
    }
}

/// The first language of an `Accept-Language` header, as a clean tag.
pub fn first_language(accept_language: &str) -> Option<String> {
    let first = accept_language.split(',').next()?;
    normalise_locale(first.split(';').next()?.trim())
}

fn cut_user_agent(user_agent: &str) -> String {
    let mut end = user_agent.len().min(MAX_USER_AGENT_LEN);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    user_agent[..end].to_owned()
}

/// A BCP 47 tag (`es-MX`, `pt_BR` → `pt-BR`), or `None` if it is not one.
pub fn normalise_locale(text: &str) -> Option<String> {
    let text = text.replace('_', "-");
    let mut parts = text.split('-');
    let language = parts.next()?;
    let valid = text.len() <= MAX_LOCALE_LEN
        && (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|part| {
            (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())
        });
    valid.then_some(text)
}

fn session_id_of(body: &Map<String, Value>, caller: &WebchatCaller) -> Result<String, ApiError> {
    let id = body
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("`session_id` is required: a string".into()))?;
    caller.check_session_id(id)?;
    Ok(id.to_owned())
}

fn locale_of(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("locale") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => normalise_locale(text).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`locale` must be a language tag such as es-MX (at most {MAX_LOCALE_LEN} characters)"
            ))
        }),
        Some(_) => Err(ApiError::BadRequest(
            "`locale` must be a language tag such as es-MX".into(),
        )),
    }
}

/// POST /api/webchat/messages `{session_id, author, content, locale?}`: stores
/// the visitor's message and waits for the agent's whole reply.
async fn post_message(
    app: AppState,
    caller: WebchatCaller,
    client: Client,
    body: Bytes,
) -> warp::reply::Response {
    let reply = ok(ask(app, &caller, client, body).await);
    allow_origin(reply, caller.widget_origin.as_deref())
}

async fn ask(
    app: AppState,
    caller: &WebchatCaller,
    client: Client,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let body = parse_object(&body, "the body")?;
    only_fields(&body, &["session_id", "author", "content", "locale"])?;
    let session_id = session_id_of(&body, caller)?;
    let author = required_text(&body, "author", MAX_AUTHOR_LEN)?
        .trim()
        .to_owned();
    let content = required_text(
        &body,
        "content",
        app.runtime.config().limits.max_content_bytes,
    )?;
    let locale = locale_of(&body)?;
    app.limiter
        .check_webchat(&caller.tenant, &session_id, caller.client_ip)?;
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &session_id, true)
        .await?;
    let mut origin = client.origin(caller, locale);
    let ip = caller.client_ip;
    origin.geo = ip.and_then(|ip| app.geo.cached(ip));
    let needs_geo = origin.geo.is_none() && ip.is_some_and(|ip| app.geo.wants(ip));
    let message = NewMessage {
        author: Some(author),
        origin: Some(Box::new(origin)),
        request_id: crate::http::request_id(),
        ..NewMessage::user(content)
    };
    let scope = caller.scope();
    let (ack, answer) = app.runtime.ask(&scope, conversation.id, message).await?;
    if needs_geo && let Some(ip) = ip {
        let runtime = app.runtime.clone();
        let tenant = caller.tenant.clone();
        app.geo.lookup_later(ip, move |geo| async move {
            if let Err(error) = runtime.set_message_geo(&tenant, ack.message_id, geo).await {
                tracing::warn!(%error, "geolocation not stored");
            }
        });
    }
    let problem = |problem, assistant_message_id| ApiError::Reply {
        problem,
        conversation_id: conversation.id,
        last_message_id: ack.message_id,
        assistant_message_id,
    };
    let wait = Duration::from_millis(app.config.webchat.reply_timeout_ms);
    let reply = match tokio::time::timeout(wait, answer).await {
        Err(_) => return Err(problem(ReplyProblem::Timeout, None)),
        Ok(Err(_)) => return Err(problem(ReplyProblem::Restarted, None)),
        Ok(Ok(Err(error))) => return Err(error.into()),
        Ok(Ok(Ok(reply))) => reply,
    };
    if reply.status == MessageStatus::Failed {
        return Err(problem(ReplyProblem::AgentFailed, Some(reply.id)));
    }
    Ok(json!({
        "reply": reply.content,
        "metadata": {
            "session_id": session_id,
            "conversation_id": conversation.id,
            "last_message_id": ack.message_id,
            "assistant_message_id": reply.id,
            "assistant_response_id": reply.agent.as_ref().and_then(|meta| meta.response_id.clone()),
            "status": reply.status,
        },
    }))
}

/// GET /api/webchat/history/{session_id}?limit=N: the newest N messages, oldest first.
async fn history(
    session_id: String,
    app: AppState,
    caller: WebchatCaller,
    query: HashMap<String, String>,
) -> warp::reply::Response {
    let reply = ok(load_history(session_id, app, &caller, query).await);
    allow_origin(reply, caller.widget_origin.as_deref())
}

async fn load_history(
    session_id: String,
    app: AppState,
    caller: &WebchatCaller,
    query: HashMap<String, String>,
) -> Result<impl Serialize, ApiError> {
    caller.check_session_id(&session_id)?;
    let limit = parse_limit(&query, MAX_HISTORY, MAX_HISTORY)?;
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &session_id, false)
        .await?;
    let messages: Vec<Value> = app
        .runtime
        .history(&caller.scope(), conversation.id, limit)
        .await?
        .iter()
        .map(|message| json!(WebchatMessage::of(message, !caller.is_widget())))
        .collect();
    Ok(json!({
        "session_id": session_id,
        "conversation_id": conversation.id,
        "count": messages.len(),
        "messages": messages,
    }))
}

/// POST /api/webchat/consent `{session_id, granted, text_version}` → 201:
/// records who decided what, when, from where, and to which text.
async fn record_consent(
    app: AppState,
    caller: WebchatCaller,
    client: Client,
    body: Bytes,
) -> warp::reply::Response {
    let reply = created(store_consent(app, &caller, client, body).await);
    allow_origin(reply, caller.widget_origin.as_deref())
}

async fn store_consent(
    app: AppState,
    caller: &WebchatCaller,
    client: Client,
    body: Bytes,
) -> Result<impl Serialize, ApiError> {
    let body = parse_object(&body, "the body")?;
    only_fields(&body, &["session_id", "granted", "text_version"])?;
    let session_id = session_id_of(&body, caller)?;
    let granted = body
        .get("granted")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::BadRequest("`granted` is required: true or false".into()))?;
    let text_version = required_text(&body, "text_version", MAX_TEXT_VERSION_LEN)?
        .trim()
        .to_owned();
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &session_id, true)
        .await?;
    let origin = client.origin(caller, None);
    let consent = Consent {
        granted,
        text_version,
        subject: session_id.clone(),
        recorded_at: now_timestamp(),
        ip: origin.ip,
        user_agent: origin.user_agent,
    };
    app.runtime
        .record_consent(&caller.scope(), conversation.id, consent.clone())
        .await?;
    Ok(json!({
        "session_id": session_id,
        "conversation_id": conversation.id,
        "granted": consent.granted,
        "text_version": consent.text_version,
        "recorded_at": consent.recorded_at,
    }))
}

/// The visitor asks for a person: flags their conversation (once while a
/// request is open) and records `handoff.requested`.
async fn request_handoff(
    app: AppState,
    caller: WebchatCaller,
    body: Bytes,
) -> warp::reply::Response {
    let reply = created_or_ok(open_handoff(app, &caller, body).await);
    allow_origin(reply, caller.widget_origin.as_deref())
}

async fn open_handoff(
    app: AppState,
    caller: &WebchatCaller,
    body: Bytes,
) -> Result<(impl Serialize, bool), ApiError> {
    let body = parse_object(&body, "the body")?;
    only_fields(&body, &["session_id", "reason"])?;
    let session_id = session_id_of(&body, caller)?;
    let reason = crate::api::conversations::handoff_reason(&body)?;
    let conversation = app
        .runtime
        .webchat_conversation(&caller.tenant, &session_id, false)
        .await?;
    let (handoff, new) = app
        .runtime
        .request_handoff(&caller.scope(), conversation.id, "visitor", reason)
        .await?;
    Ok((
        json!({"session_id": session_id, "handoff": handoff, "new": new}),
        new,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_language_tags() {
        assert_eq!(normalise_locale("es-MX").as_deref(), Some("es-MX"));
        assert_eq!(normalise_locale("pt_BR").as_deref(), Some("pt-BR"));
        assert_eq!(
            normalise_locale("zh-Hant-TW").as_deref(),
            Some("zh-Hant-TW")
        );
        for bad in ["", "e", "english", "es-", "es MX", "<script>"] {
            assert_eq!(normalise_locale(bad), None, "{bad}");
        }
        let client = Client {
            user_agent: None,
            accept_language: Some("fr-CA,fr;q=0.9,en;q=0.8".into()),
        };
        assert_eq!(client.preferred_locale().as_deref(), Some("fr-CA"));
    }
}
