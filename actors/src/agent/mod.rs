//! Agents: the provider trait every answerer implements (`echo` and
//! `external` in `builtin.rs`, `openai.rs`, `webhook.rs`, whose
//! replies `reply.rs` decodes) and the `Agent`
//! actor (`actor.rs`) that runs one provider's answer for its session.
//!
//! Architecture Invariant: imports only `model/`, `config`, `net/` and
//! `error`; never the conversation that uses it, never the database.

pub mod actor;
pub mod builtin;
pub mod openai;
pub mod reply;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use serde_json::{Map, Value};

use crate::model::TenantSettings;
use crate::model::{AnswerMeta, MessageId, Role, SessionId, TenantId, ToolCallRecord};

/// One turn of the conversation as an agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// Everything an agent needs to answer the newest user message.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    pub tenant: TenantId,
    pub session: SessionId,
    /// Oldest first; the last turn is the user message being answered.
    pub history: Vec<Turn>,
    pub context: Map<String, Value>,
    /// The tenant's settings when the answer started (model, prompt, URLs).
    pub settings: Arc<TenantSettings>,
    /// The id of the user message being answered.
    pub question_id: MessageId,
}

impl AgentRequest {
    /// The user message being answered: the newest user turn.
    pub fn question(&self) -> &str {
        self.history
            .iter()
            .rev()
            .find(|turn| turn.role == Role::User)
            .map_or("", |turn| turn.content.as_str())
    }
}

/// Why an agent could not answer, in words safe to show the user (no secrets).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

/// One analysis asked of a model: what to do, the conversation as text, and
/// the JSON Schema the answer must fit.
#[derive(Debug, Clone)]
pub struct AnalysisRequest {
    pub model: String,
    pub instructions: String,
    pub transcript: String,
    pub schema: Value,
}

/// A model's analysis, as it answered (validated by the caller), with its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisReply {
    pub content: String,
    pub model: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

/// A model's work that arrives once, whole.
pub type AgentFuture<T> = futures_util::future::BoxFuture<'static, Result<T, AgentError>>;

/// One thing an answer stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A piece of the answer's text.
    Text(String),
    /// What the provider says about the answer (model, ids, tokens, finish reason).
    Meta(AnswerMeta),
    /// The model called a tool (`result` is empty) or the tool answered.
    Tool(ToolCallRecord),
}

impl From<&str> for AgentEvent {
    fn from(text: &str) -> Self {
        AgentEvent::Text(text.to_owned())
    }
}

/// An answer arriving piece by piece.
pub type AgentStream = BoxStream<'static, Result<AgentEvent, AgentError>>;

/// Where answers come from: the built-in echo agent, an OpenAI-compatible
/// model, an n8n workflow. Implementations hold their own settings.
pub trait AgentProvider: Send + Sync + 'static {
    /// Starts one answer. Called inside the agent actor, so a panic here fails
    /// the actor; the stream itself is consumed in a spawned task.
    fn answer(&self, request: AgentRequest) -> AgentStream;

    /// Whether it answers user messages on its own. `external` does not: its
    /// replies are posted through the Conversation API, e.g. by an n8n
    /// workflow that receives `message.created`.
    fn answers(&self) -> bool {
        true
    }

    /// Structured extraction of what a visitor says about themselves (name,
    /// email, phone), for providers backed by a model; `None` for the others.
    /// Whatever comes back is validated like text the visitor typed.
    fn extract_contact(
        &self,
        _settings: &TenantSettings,
        _text: &str,
    ) -> Option<
        futures_util::future::BoxFuture<'static, Result<crate::model::leads::Found, AgentError>>,
    > {
        None
    }

    /// A structured reading of a whole conversation (insights), for
    /// providers backed by a model; `None` for the others.
    fn analyze(
        &self,
        _settings: &TenantSettings,
        _request: AnalysisRequest,
    ) -> Option<AgentFuture<AnalysisReply>> {
        None
    }
}

pub use crate::model::REQUEST_HUMAN;

/// What the model is told when it calls `request_human`.
pub const REQUEST_HUMAN_RESULT: &str = "A person from the support team has been asked to join this conversation. Tell the visitor, briefly, that someone will be with them shortly.";

/// The `request_human` tool as offered to the model.
pub fn request_human_tool() -> serde_json::Value {
    serde_json::json!({
        "type": "function",
        "function": {
            "name": REQUEST_HUMAN,
            "description": "Ask a person from the support team to take over this conversation. Call it when the visitor asks for a person, or when you cannot help them.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why a person is needed, in one sentence."}
                },
            },
        },
    })
}

/// The `reason` a model gave in a `request_human` call, if it gave one.
pub fn request_human_reason(arguments: &str) -> Option<String> {
    let arguments: serde_json::Value = serde_json::from_str(arguments).ok()?;
    let reason = arguments.get("reason")?.as_str()?.trim();
    (!reason.is_empty()).then(|| reason.chars().take(500).collect())
}

/// Agent providers by the name tenants choose them with (`agent = "echo"`).
pub type AgentRegistry = HashMap<String, Arc<dyn AgentProvider>>;
