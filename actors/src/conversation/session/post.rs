//! Posting to the log: a new message is checked (empty, too large, a
//! repeated `client_msg_id`, the rate limit), given its `seq` and handed to
//! storage with its `message.created` event, and its answer begun at once
//! (held back); only once it is durable is it acknowledged, broadcast, fed
//! to the contact, and its answer let through.

use ractor::ActorRef;

use super::SessionMsg;
use super::log::{Asker, PendingWrite, ack_of};
use super::state::SessionState;
use crate::conversation::connection::ConnId;
use crate::conversation::feed::{Change, Preview};
use crate::error::{Error, Result};
use crate::model::protocol::{ServerFrame, WireMessage};
use crate::model::{
    Ack, EventRecord, Handoff, MessageId, NewMessage, Role, StoredMessage, events, now_timestamp,
};
use crate::store::{Durable, Write};

impl SessionState {
    /// Gives a message its `seq` and hands it to storage; the ack, the
    /// broadcast and the answer wait for `Durable`.
    pub async fn post(&mut self, myself: &ActorRef<SessionMsg>, message: NewMessage, asker: Asker) {
        if let Err(error) = self.admissible(&message) {
            return self.reject(asker, error);
        }
        let Some(asker) = self.answer_repeat(&message, asker).await else {
            return;
        };
        if self.refuses_while_busy(&message) {
            return self.reject(asker, Error::Busy);
        }
        if let Some(patch) = message.context.clone()
            && self.change_context(patch)
        {
            let session = self.id();
            self.storage.write(
                self.context_write(),
                Durable::new(move |outcome| {
                    if let Err(error) = outcome {
                        // The message itself is stored separately and still answered.
                        tracing::error!(%session, %error, "context sent with a message was not stored");
                    }
                }),
            );
        }
        let stored = self.new_stored(message);
        if self.wants_answer(&stored) {
            self.ensure_agent(myself).await;
        }
        self.persist(myself, stored.clone(), None);
        self.start_held_generation(&stored);
        self.log.hand_over(
            stored.seq,
            PendingWrite::User {
                message: stored,
                asker,
                repeats: Vec::new(),
            },
        );
    }

    /// Whether the message may be stored at all: the session is running, the
    /// content is neither empty nor too large, the sender within its limit
    /// (the session's own announcements are not limited).
    fn admissible(&self, message: &NewMessage) -> Result<()> {
        if self.terminating {
            return Err(Error::Unavailable("session"));
        }
        if message.content.trim().is_empty() {
            return Err(Error::InvalidInput("`content` is empty".into()));
        }
        if message.content.len() > self.limits.max_content_bytes {
            return Err(Error::ContentTooLarge {
                actual: message.content.len(),
                limit: self.limits.max_content_bytes,
            });
        }
        Ok(())
    }

    /// A repeat of a message already stored (or being stored) is answered
    /// here, and `None` returned; otherwise the asker, once the rate limit
    /// allows a new message. Re-sending a stored message costs nothing.
    async fn answer_repeat(&mut self, message: &NewMessage, asker: Asker) -> Option<Asker> {
        if let Some(client_msg_id) = &message.client_msg_id {
            if let Some(ack) = self.log.ack_for(client_msg_id) {
                self.acknowledge(asker, &ack);
                return None;
            }
            if let Some(repeats) = self.log.repeats_of(client_msg_id) {
                match asker {
                    Asker::Socket(conn) => repeats.push(conn),
                    Asker::Session => {}
                    asker => self.reject(asker, still_storing()),
                }
                return None;
            }
            let doubtful = self.log.is_doubtful(client_msg_id);
            if !self.log.is_complete() || doubtful {
                let found = self
                    .storage
                    .find_client_message(&self.facts.tenant, self.id(), client_msg_id)
                    .await;
                if found.is_ok() {
                    self.log.settle_doubt(client_msg_id);
                }
                match found {
                    // A write reported failed that was stored after all: the
                    // repeat gets its ack, and nothing is stored twice.
                    Ok(Some(stored)) => {
                        self.acknowledge(asker, &ack_of(&stored));
                        return None;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.reject(asker, error);
                        return None;
                    }
                }
            }
        }
        if !matches!(asker, Asker::Session)
            && let Err(not_until) = self.message_limiter.check()
        {
            crate::metrics::rate_limited("conversation_messages");
            let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
            self.reject(asker, Error::rate_limited(not_until.wait_time_from(now)));
            return None;
        }
        Some(asker)
    }

    fn new_stored(&mut self, message: NewMessage) -> StoredMessage {
        let (tenant, seq) = (self.facts.tenant.clone(), self.log.take_seq());
        StoredMessage {
            client_msg_id: message.client_msg_id,
            no_reply: message.role == Role::User && !message.respond,
            author: message.author,
            origin: message.origin,
            request_id: message.request_id.map(String::into_boxed_str),
            channel: self.facts.channel.clone(),
            ..StoredMessage::new(tenant, self.id(), seq, message.role, message.content)
        }
    }

    /// A log write with its `message.created` event (and any other it caused).
    pub fn append_with_events(&self, message: StoredMessage, also: Option<EventRecord>) -> Write {
        let mut events = vec![events::message_created(&self.event_facts(), &message)];
        events.extend(also);
        Write::WithEvents(Box::new(Write::AppendMessage(message)), events)
    }

    /// Hands a log write to storage, with its events in the same transaction.
    pub fn persist(
        &self,
        myself: &ActorRef<SessionMsg>,
        message: StoredMessage,
        event: Option<EventRecord>,
    ) {
        let session = myself.clone();
        let seq = message.seq;
        let write = self.append_with_events(message, event);
        self.storage.write(
            write,
            Durable::new(move |outcome| {
                let _ = session.cast(SessionMsg::Durable { seq, outcome });
            }),
        );
    }

    pub fn reject(&mut self, asker: Asker, error: Error) {
        match asker {
            Asker::Socket(conn) => self.send_error_to(conn, error.code(), error.to_string()),
            Asker::Rest(reply) => {
                let _ = reply.send(Err(error));
            }
            Asker::Ask(reply) => {
                let _ = reply.send(Err(error));
            }
            Asker::Session => {
                tracing::error!(session = %self.id(), %error, "announcement not stored");
            }
        }
    }

    fn acknowledge(&mut self, asker: Asker, ack: &Ack) {
        match asker {
            Asker::Socket(conn) => self
                .subscribers
                .send_to(conn, ServerFrame::ack(ack).encode()),
            Asker::Rest(reply) => {
                let _ = reply.send(Ok(ack.clone()));
            }
            Asker::Ask(reply) => {
                let receiver = self.answering.wait_for(ack.message_id);
                let _ = reply.send(Ok((ack.clone(), receiver)));
            }
            Asker::Session => {}
        }
    }

    pub fn send_error_to(&mut self, conn: ConnId, code: &str, content: impl Into<String>) {
        let frame = ServerFrame::error(code, content).encode();
        self.subscribers.send_to(conn, frame);
    }

    /// A log write finished: the user message is acknowledged and acted on,
    /// or the answer is settled and the next question may begin.
    pub fn on_durable(&mut self, myself: &ActorRef<SessionMsg>, seq: u64, outcome: Result<()>) {
        let Some(pending) = self.log.settle(seq) else {
            // seq 0: a context write that failed; nothing is waiting on it.
            if let Err(error) = outcome {
                self.broadcast_error(error.code(), "the context could not be stored");
            }
            return;
        };
        match (pending, outcome) {
            (
                PendingWrite::User {
                    message,
                    asker,
                    repeats,
                },
                Ok(()),
            ) => self.user_message_stored(myself, message, asker, repeats),
            (
                PendingWrite::User {
                    message,
                    asker,
                    repeats,
                },
                Err(error),
            ) => {
                tracing::error!(session = %self.id(), seq, %error, "user message not stored");
                if let Some(client_msg_id) = &message.client_msg_id {
                    self.log.doubt(client_msg_id.clone());
                }
                self.abandon_held(message.id);
                for conn in repeats {
                    self.send_error_to(conn, error.code(), "the message was not stored");
                }
                self.reject(asker, error);
            }
            (PendingWrite::Answer { message, question }, outcome) => {
                self.answer_stored(message, question, outcome);
                self.maybe_start_generation();
            }
        }
    }

    fn user_message_stored(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        message: StoredMessage,
        asker: Asker,
        repeats: Vec<ConnId>,
    ) {
        let ack = ack_of(&message);
        let sender = match &asker {
            Asker::Socket(conn) => Some(*conn),
            Asker::Rest(_) | Asker::Ask(_) | Asker::Session => None,
        };
        self.acknowledge(asker, &ack);
        for conn in repeats {
            self.subscribers
                .send_to(conn, ServerFrame::ack(&ack).encode());
        }
        let frame = ServerFrame::Message {
            message: WireMessage::from(&message),
        }
        .encode();
        self.subscribers.broadcast(&frame, sender);
        self.remember(message.clone());
        self.publish(Change::Message);
        if message.role == Role::User {
            self.capture_lead(myself, &message);
            if !self.attendance.is_human()
                && crate::conversation::handoff::asks_for_a_person(&message.content)
            {
                let handoff = Handoff {
                    requested_at: now_timestamp(),
                    requested_by: "visitor".into(),
                    reason: Some(Preview::from(&message).content),
                };
                self.request_handoff(myself, handoff, None);
            }
        }
        if !self.release_held(myself, message.id) && self.wants_answer(&message) {
            self.question_stored(myself, message);
        }
    }

    fn answer_stored(&mut self, message: StoredMessage, question: MessageId, outcome: Result<()>) {
        match outcome {
            Ok(()) => {
                self.answering.answered(question, &Ok(message.clone()));
                let merged = self.answering.current().map(|answer| answer.merged());
                let frame = ServerFrame::done(&message, question, merged.unwrap_or_default());
                self.broadcast(&frame.encode());
                self.remember(message);
                self.publish(Change::Message);
            }
            Err(error) => {
                tracing::error!(session = %self.id(), seq = message.seq, %error, "answer not stored");
                self.broadcast_error(error.code(), "the answer could not be stored");
                self.answering.answered(question, &Err(error));
            }
        }
        self.answering.finished();
    }
}

fn still_storing() -> Error {
    Error::InvalidInput("a message with this client_msg_id is still being stored".into())
}
