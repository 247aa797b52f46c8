//! One turn of a conversation as the HTTP adapters see it: a visitor's
//! message posted through the runtime, then the answer to *that* message
//! followed on a listener attached to the session, as plain events each
//! adapter renders in its own protocol. Answers to other questions (queued
//! before this one) and frames of other participants are skipped: the
//! `reply_to` of an answer's first frame says which question it answers.
//!
//! Every adapter goes through here, so all of them post the same way (the
//! session's policy, limits and dedup apply) and none writes anything itself.

use std::time::Duration;

use tertulia_actors::model::protocol::ServerFrame;
use tertulia_actors::model::{
    Ack, MessageId, MessageStatus, NewMessage, Participant, Role, Scope, SessionId,
};
use tertulia_actors::runtime::{Attached, Outgoing, Runtime};
use tokio::time::Instant;

use crate::http::error::ApiError;

/// What happens to the answer being followed.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The answer `answer` began; `text` is what it had when this listener
    /// joined (empty for an answer followed from its start).
    Started {
        answer: MessageId,
        text: String,
    },
    Delta {
        text: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
    /// The conversation's context changed: its new version and the JSON
    /// Patch from the one before.
    Context {
        version: u64,
        patch: serde_json::Value,
    },
    /// A problem reported while the answer is written; the end follows.
    Problem {
        code: String,
        message: String,
    },
    /// The answer is stored: the last event.
    Done {
        answer: MessageId,
        text: String,
        status: MessageStatus,
    },
    /// The turn cannot go on (timeout, the conversation closed): the last event.
    Failed {
        code: String,
        message: String,
    },
}

impl TurnEvent {
    pub fn is_last(&self) -> bool {
        matches!(self, TurnEvent::Done { .. } | TurnEvent::Failed { .. })
    }
}

/// A listener following the answer to one question.
pub struct Turn {
    attached: Attached,
    session: SessionId,
    question: MessageId,
    answer: Option<MessageId>,
    /// An event found before streaming began (a stored answer, a snapshot).
    pending: Vec<TurnEvent>,
    deadline: Instant,
    over: bool,
}

impl Turn {
    /// Posts `message` and follows its answer. A repeat of a message already
    /// stored (same `client_msg_id`) follows its answer in progress, or
    /// gives the stored answer at once.
    pub async fn ask(
        runtime: &Runtime,
        scope: &Scope,
        session: SessionId,
        message: NewMessage,
        timeout: Duration,
    ) -> Result<(Turn, Ack), ApiError> {
        let mut attached = runtime.listen(scope, session, Participant::Visitor).await?;
        let snapshot = take_snapshot(&mut attached);
        let ack = runtime.post_message(scope, session, message).await?;
        let mut turn = Turn::new(attached, session, ack.message_id, timeout);
        match snapshot {
            Some((answer, question, text)) if question == ack.message_id => {
                turn.answer = Some(answer);
                turn.pending.push(TurnEvent::Started { answer, text });
            }
            _ if ack.seq <= turn.attached.last_seq => {
                // A repeat stored before this listener joined: answered already?
                if let Some(done) = stored_answer(runtime, scope, session, ack.seq).await? {
                    if let TurnEvent::Done { answer, text, .. } = &done {
                        turn.answer = Some(*answer);
                        let (answer, text) = (*answer, text.clone());
                        turn.pending.push(TurnEvent::Started { answer, text });
                    }
                    turn.pending.push(done);
                }
            }
            _ => {}
        }
        Ok((turn, ack))
    }

    /// Answers a stored message again (a client's "regenerate") and follows
    /// the new answer.
    pub async fn answer_again(
        runtime: &Runtime,
        scope: &Scope,
        session: SessionId,
        client_msg_id: &str,
        timeout: Duration,
    ) -> Result<Turn, ApiError> {
        let attached = runtime.listen(scope, session, Participant::Visitor).await?;
        let ack = runtime.answer_again(scope, session, client_msg_id).await?;
        Ok(Turn::new(attached, session, ack.message_id, timeout))
    }

    /// Follows the answer in progress, if there is one (a client that lost
    /// its stream asks for it again).
    pub async fn resume(
        runtime: &Runtime,
        scope: &Scope,
        session: SessionId,
        timeout: Duration,
    ) -> Result<Option<Turn>, ApiError> {
        let mut attached = runtime.listen(scope, session, Participant::Visitor).await?;
        let Some((answer, question, text)) = take_snapshot(&mut attached) else {
            return Ok(None);
        };
        let mut turn = Turn::new(attached, session, question, timeout);
        turn.answer = Some(answer);
        turn.pending.push(TurnEvent::Started { answer, text });
        Ok(Some(turn))
    }

    fn new(attached: Attached, session: SessionId, question: MessageId, timeout: Duration) -> Turn {
        Turn {
            attached,
            session,
            question,
            answer: None,
            pending: Vec::new(),
            deadline: Instant::now() + timeout,
            over: false,
        }
    }

    /// The context when this turn's listener joined: the changes after it
    /// arrive as `Context` events.
    pub fn context(&self) -> serde_json::Map<String, serde_json::Value> {
        let joined = self.attached.context.as_ref();
        joined
            .map(|(context, _)| context.clone())
            .unwrap_or_default()
    }

    /// The conversation.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The question being answered.
    pub fn question(&self) -> MessageId {
        self.question
    }

    /// The next event of the answer; `None` once the last one was given.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        if self.over {
            return None;
        }
        let event = match self.pending.is_empty() {
            false => self.pending.remove(0),
            true => self.next_live().await,
        };
        self.over = event.is_last();
        Some(event)
    }

    async fn next_live(&mut self) -> TurnEvent {
        loop {
            let outgoing =
                match tokio::time::timeout_at(self.deadline, self.attached.outbound.next()).await {
                    Ok(outgoing) => outgoing,
                    Err(_) => return failed("answer_timeout", "no answer came in time"),
                };
            let frame = match outgoing {
                Outgoing::Frame(frame) => frame,
                Outgoing::Close(reason) => return failed("closed", reason.reason.to_string()),
                Outgoing::Detached => {
                    return failed("restarted", "the conversation restarted; ask again");
                }
            };
            let Ok(frame) = serde_json::from_slice::<ServerFrame>(frame.bytes()) else {
                continue;
            };
            if let Some(event) = self.event_of(frame) {
                return event;
            }
        }
    }

    /// The event a frame means for this turn, if any.
    fn event_of(&mut self, frame: ServerFrame) -> Option<TurnEvent> {
        match frame {
            ServerFrame::Chunk {
                content,
                message_id,
                reply_to,
                merged,
                ..
            } => {
                let names_us = self.names_us(reply_to, &merged);
                self.of_answer(message_id, names_us, TurnEvent::Delta { text: content })
            }
            ServerFrame::ToolCall {
                message_id,
                call_id,
                name,
                arguments,
                reply_to,
                merged,
            } => {
                let names_us = self.names_us(reply_to, &merged);
                let call = TurnEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                };
                self.of_answer(message_id, names_us, call)
            }
            ServerFrame::ToolResult {
                message_id,
                call_id,
                content,
                is_error,
                ..
            } => (self.answer == Some(message_id)).then_some(TurnEvent::ToolResult {
                call_id,
                content,
                is_error,
            }),
            ServerFrame::Done {
                content,
                message_id,
                status,
                reply_to,
                merged,
                ..
            } => {
                let names_us = self.names_us(reply_to, &merged);
                let done = TurnEvent::Done {
                    answer: message_id,
                    text: content,
                    status,
                };
                self.of_answer(message_id, names_us, done)
            }
            ServerFrame::Error { content, code } if self.answer.is_some() => {
                Some(TurnEvent::Problem {
                    code,
                    message: content,
                })
            }
            ServerFrame::Context {
                version,
                patch: Some(patch),
                ..
            } => Some(TurnEvent::Context { version, patch }),
            // A person who took the conversation over answers with a message.
            ServerFrame::Message { message }
                if self.answer.is_none() && message.role == Role::Assistant =>
            {
                let done = TurnEvent::Done {
                    answer: message.id,
                    text: message.content,
                    status: message.status,
                };
                self.of_answer(message.id, true, done)
            }
            _ => None,
        }
    }

    /// Whether an answer's first frame names this turn's question.
    fn names_us(&self, reply_to: Option<MessageId>, merged: &[MessageId]) -> bool {
        reply_to == Some(self.question) || merged.contains(&self.question)
    }

    /// A frame of some answer: the next event if it is the answer followed;
    /// if it is the first frame of the answer to this question, the answer
    /// starts (and the event follows).
    fn of_answer(
        &mut self,
        message_id: MessageId,
        names_us: bool,
        event: TurnEvent,
    ) -> Option<TurnEvent> {
        match self.answer {
            Some(answer) if answer == message_id => Some(event),
            None if names_us => {
                self.answer = Some(message_id);
                self.pending.push(event);
                Some(started(message_id))
            }
            _ => None,
        }
    }
}

fn started(answer: MessageId) -> TurnEvent {
    TurnEvent::Started {
        answer,
        text: String::new(),
    }
}

fn failed(code: &str, message: impl Into<String>) -> TurnEvent {
    TurnEvent::Failed {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// The answer in progress a listener was shown when it joined: its id, its
/// question and its text so far. Sent at attach, so already queued.
fn take_snapshot(attached: &mut Attached) -> Option<(MessageId, MessageId, String)> {
    while let Some(frame) = attached.outbound.try_next_frame() {
        if let Ok(ServerFrame::Chunk {
            content,
            message_id,
            snapshot: true,
            reply_to: Some(question),
            ..
        }) = serde_json::from_slice(frame.bytes())
        {
            return Some((message_id, question, content));
        }
    }
    None
}

/// The stored answer to the question at `seq`, as the turn's two events.
async fn stored_answer(
    runtime: &Runtime,
    scope: &Scope,
    session: SessionId,
    seq: u64,
) -> Result<Option<TurnEvent>, ApiError> {
    let history = runtime.history(scope, session, 200).await?;
    let question = history.iter().position(|message| message.seq == seq);
    let answer = question.and_then(|at| {
        history[at + 1..]
            .iter()
            .take_while(|message| message.role != Role::User)
            .find(|message| message.role == Role::Assistant)
    });
    Ok(answer.map(|answer| TurnEvent::Done {
        answer: answer.id,
        text: answer.content.clone(),
        status: answer.status,
    }))
}
