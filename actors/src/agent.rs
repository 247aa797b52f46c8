//! The agent actor: one generation at a time for its session. Supervised by
//! `Session`, which restarts it with capped backoff if it panics.
//!
//! The provider's stream runs in a spawned task, so the actor's mailbox never
//! waits on the network: chunks go straight to the session as they arrive,
//! `Cancel` aborts the task (dropping the upstream request), and a panic in
//! the provider comes back as `TaskEnded` and fails this actor on purpose, so
//! the session's supervision policy sees it.
//!
//! The task also times the answer (to the first piece of text, and in all)
//! and decides how an error ends it: before any text, the answer `failed`;
//! after some, the stream broke and the answer is `interrupted`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{self, BoxStream, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::config::TenantSettings;
use crate::domain::{AnswerMeta, MessageId, Role, SessionId, TenantId, ToolCallRecord};
use crate::session::SessionMsg;

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
    ) -> Option<futures_util::future::BoxFuture<'static, Result<crate::leads::Found, AgentError>>>
    {
        None
    }
}

/// The `external` agent: never answers by itself. Replies come from outside
/// (`POST /chat/{id}/messages` as `assistant`), so a workflow that receives
/// `message.created` can answer, and the answer reaches every socket live.
pub struct ExternalAgent;

impl AgentProvider for ExternalAgent {
    fn answer(&self, _request: AgentRequest) -> AgentStream {
        futures_util::stream::empty().boxed()
    }

    fn answers(&self) -> bool {
        false
    }
}

/// The built-in tool a model calls to ask for a person. It goes to no URL:
/// the session flags the conversation (`handoff.requested`) and the model is
/// told a person was asked for.
pub const REQUEST_HUMAN: &str = "request_human";

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

/// The offline, deterministic default: answers `You said: <message>` word by
/// word, a configurable pause between words, so `cargo run` streams with no key.
pub struct EchoAgent {
    pub word_delay: Duration,
}

impl EchoAgent {
    /// The full reply for a message: what the stream adds up to.
    pub fn reply_to(content: &str) -> String {
        format!("You said: {}", content.trim())
    }
}

impl AgentProvider for EchoAgent {
    fn answer(&self, request: AgentRequest) -> AgentStream {
        let asked = request.question();
        let words: Vec<String> = EchoAgent::reply_to(asked)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let delay = self.word_delay;
        stream::iter(words.into_iter().enumerate())
            .then(move |(index, word)| async move {
                if index > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(AgentEvent::Text(word))
            })
            .chain(stream::once(async {
                Ok(AgentEvent::Meta(AnswerMeta {
                    agent: Some("echo".into()),
                    finish_reason: Some("stop".into()),
                    ..AnswerMeta::default()
                }))
            }))
            .boxed()
    }
}

/// How a generation ended, as the session is told.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOutcome {
    Completed,
    /// Stopped by `cancel`.
    Cancelled,
    /// The stream broke after some text: what came is kept as `interrupted`.
    Interrupted(AgentError),
    /// The provider failed before any text.
    Failed(AgentError),
}

pub enum AgentMsg {
    /// Generates the answer with this id; chunks go to the session as they come.
    /// The provider comes with each request, so a tenant's change of agent
    /// applies from the next answer on.
    Generate {
        message_id: MessageId,
        request: AgentRequest,
        provider: Arc<dyn AgentProvider>,
    },
    /// Stops the generation with this id, if it is still running.
    Cancel { message_id: MessageId },
    /// From the generation task: it ended. A panic fails the actor.
    TaskEnded {
        message_id: MessageId,
        ended: TaskEnd,
    },
}

/// How the generation task ended, before the actor interprets it.
pub enum TaskEnd {
    Finished(AgentOutcome),
    Panicked(String),
}

pub struct AgentArgs {
    pub session: ActorRef<SessionMsg>,
}

pub struct AgentState {
    session: ActorRef<SessionMsg>,
    running: Option<(MessageId, JoinHandle<()>)>,
}

pub struct Agent;

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AgentState {
            session: args.session,
            running: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the stream drops the upstream request with it.
        if let Some((_, task)) = state.running.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Generate {
                message_id,
                request,
                provider,
            } => {
                if let Some((_, task)) = state.running.take() {
                    task.abort();
                }
                let answer = provider.answer(request);
                let task = tokio::spawn(run_generation(
                    message_id,
                    answer,
                    state.session.clone(),
                    myself.clone(),
                ));
                state.running = Some((message_id, task));
            }
            AgentMsg::Cancel { message_id } => {
                if let Some((running, task)) = state.running.take_if(|(id, _)| *id == message_id) {
                    task.abort();
                    let _ = state.session.cast(SessionMsg::AgentFinished {
                        message_id: running,
                        outcome: AgentOutcome::Cancelled,
                    });
                }
            }
            AgentMsg::TaskEnded { message_id, ended } => {
                if state
                    .running
                    .as_ref()
                    .is_none_or(|(id, _)| *id != message_id)
                {
                    return Ok(());
                }
                state.running = None;
                match ended {
                    TaskEnd::Finished(outcome) => {
                        let _ = state.session.cast(SessionMsg::AgentFinished {
                            message_id,
                            outcome,
                        });
                    }
                    TaskEnd::Panicked(panic) => {
                        return Err(format!("agent provider panicked: {panic}").into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Consumes one answer stream, sending each piece to the session, then reports
/// how it ended to the agent actor.
async fn run_generation(
    message_id: MessageId,
    mut answer: AgentStream,
    session: ActorRef<SessionMsg>,
    agent: ActorRef<AgentMsg>,
) {
    let started = Instant::now();
    let consume = async {
        let mut first_text: Option<Duration> = None;
        let outcome = loop {
            let Some(piece) = answer.next().await else {
                break AgentOutcome::Completed;
            };
            let sent = match piece {
                Ok(AgentEvent::Text(text)) if text.is_empty() => Ok(()),
                Ok(AgentEvent::Text(text)) => {
                    first_text.get_or_insert_with(|| started.elapsed());
                    session.cast(SessionMsg::AgentChunk { message_id, text })
                }
                Ok(AgentEvent::Meta(meta)) => {
                    session.cast(SessionMsg::AgentMeta { message_id, meta })
                }
                Ok(AgentEvent::Tool(call)) => {
                    session.cast(SessionMsg::AgentTool { message_id, call })
                }
                Err(error) if first_text.is_some() => break AgentOutcome::Interrupted(error),
                Err(error) => break AgentOutcome::Failed(error),
            };
            if sent.is_err() {
                break AgentOutcome::Cancelled;
            }
        };
        let timings = AnswerMeta {
            time_to_first_token_ms: first_text.map(|at| at.as_millis() as u64),
            total_ms: Some(started.elapsed().as_millis() as u64),
            ..AnswerMeta::default()
        };
        let _ = session.cast(SessionMsg::AgentMeta {
            message_id,
            meta: timings,
        });
        outcome
    };
    let ended = match AssertUnwindSafe(consume).catch_unwind().await {
        Ok(outcome) => TaskEnd::Finished(outcome),
        Err(panic) => TaskEnd::Panicked(panic_message(&panic)),
    };
    let _ = agent.cast(AgentMsg::TaskEnded { message_id, ended });
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_streams_its_reply_word_by_word() {
        let agent = EchoAgent {
            word_delay: Duration::ZERO,
        };
        let request = AgentRequest {
            tenant: TenantId("t".into()),
            session: SessionId::new(),
            history: vec![Turn {
                role: Role::User,
                content: "hola que tal".into(),
            }],
            context: Map::new(),
            settings: Arc::new(TenantSettings::default()),
            question_id: MessageId::new(),
        };
        let pieces: Vec<String> = agent
            .answer(request)
            .filter_map(|piece| async move {
                match piece.unwrap() {
                    AgentEvent::Text(text) => Some(text),
                    AgentEvent::Meta(_) | AgentEvent::Tool(_) => None,
                }
            })
            .collect()
            .await;
        assert_eq!(pieces, vec!["You ", "said: ", "hola ", "que ", "tal"]);
        assert_eq!(pieces.concat(), EchoAgent::reply_to("hola que tal"));
    }
}
