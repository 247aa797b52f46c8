//! The agent actor: one generation at a time for its session. Supervised by
//! `Session`, which restarts it with capped backoff if it panics; it reports
//! to the session through its own narrow type, [`AgentReport`], never the
//! session's message enum.
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

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use tokio::task::JoinHandle;

use super::{AgentError, AgentEvent, AgentProvider, AgentRequest, AgentStream};
use crate::model::{AnswerMeta, MessageId, ToolCallRecord};

/// What the agent tells its session: each piece of the answer in progress
/// as it comes, and how the answer ended.
#[derive(Debug)]
pub enum AgentReport {
    /// A piece of the answer's text.
    Chunk { message_id: MessageId, text: String },
    /// What the provider reported about the answer (model, tokens, timings).
    Meta {
        message_id: MessageId,
        meta: AnswerMeta,
    },
    /// The model called a tool, or a tool answered (then `call.result` is set).
    Tool {
        message_id: MessageId,
        call: ToolCallRecord,
    },
    /// The answer ended.
    Finished {
        message_id: MessageId,
        outcome: AgentOutcome,
    },
}

/// Where the agent reports: its session, seen only as a taker of reports.
pub type ReportTo = DerivedActorRef<AgentReport>;

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

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for AgentMsg {}

/// How the generation task ended, before the actor interprets it.
pub enum TaskEnd {
    Finished(AgentOutcome),
    Panicked(String),
}

pub struct AgentArgs {
    pub session: ReportTo,
}

pub struct AgentState {
    session: ReportTo,
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
                    let _ = state.session.send_message(AgentReport::Finished {
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
                        let _ = state.session.send_message(AgentReport::Finished {
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
    session: ReportTo,
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
                    session.send_message(AgentReport::Chunk { message_id, text })
                }
                Ok(AgentEvent::Meta(meta)) => {
                    session.send_message(AgentReport::Meta { message_id, meta })
                }
                Ok(AgentEvent::Tool(call)) => {
                    session.send_message(AgentReport::Tool { message_id, call })
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
        let _ = session.send_message(AgentReport::Meta {
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
