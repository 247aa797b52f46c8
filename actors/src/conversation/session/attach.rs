//! Sockets joining and speaking: attaching spawns the socket's `Connection`
//! and queues the greeting, the messages it missed (from the window, or read
//! from storage) and the answer in progress; then each command it sends.

use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorRef};

use super::log::{Asker, Missed};
use super::state::SessionState;
use super::{Attached, Joining, SessionMsg};
use crate::agent::actor::AgentMsg;
use crate::conversation::connection::{ConnId, Connection, ConnectionArgs, ConnectionReport};
use crate::conversation::outbound::outbound_queue;
use crate::error::{Error, Result};
use crate::model::protocol::{ServerFrame, WireMessage};
use crate::model::{ClientCommand, Participant, StoredMessage};
use crate::store::MessageQuery;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl SessionState {
    /// A socket or listener joins: attached, greeted in its language (a
    /// new socket), and presence told; a listener gets the context too.
    pub async fn join(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        after_seq: Option<u64>,
        joining: Joining,
        participant: Participant,
    ) -> Result<Attached> {
        let greeting = match &joining {
            Joining::Greeted(locale) => {
                let text = self.settings.greeting.for_locale(locale.as_deref());
                Some(text.to_owned())
            }
            Joining::Reattached | Joining::Listening => None,
        };
        let present = participant.is_present();
        let mut attached = self.attach(myself, after_seq, greeting, participant).await;
        if let (Ok(attached), Joining::Listening) = (&mut attached, joining) {
            attached.context = Some((self.facts.context.clone(), self.facts.context_version));
        }
        if present {
            self.presence_changed(myself);
        }
        attached
    }

    /// Attaches a socket: its Connection, the greeting (if given), what it
    /// missed, and the answer in progress.
    pub async fn attach(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        after_seq: Option<u64>,
        greeting: Option<String>,
        participant: Participant,
    ) -> Result<Attached> {
        if self.terminating {
            return Err(Error::Unavailable("session"));
        }
        let conn = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let (outbound, receiver) = outbound_queue(
            self.limits.outbound_queue_frames,
            self.limits.outbound_queue_bytes,
        );
        let (connection, _) = Actor::spawn_linked(
            None,
            Connection,
            ConnectionArgs {
                conn,
                session: myself.get_derived(),
                outbound: outbound.clone(),
            },
            myself.get_cell(),
        )
        .await
        .map_err(|error| Error::Storage(format!("cannot start connection: {error}")))?;
        self.subscribers
            .add(conn, outbound, connection.get_cell(), participant);
        if let Some(content) = greeting {
            let greeting = ServerFrame::System { content }.encode();
            self.subscribers.send_to(conn, greeting);
        }
        match after_seq {
            Some(after_seq) => self.replay(conn, after_seq).await,
            None => self.send_snapshot(conn),
        }
        let last_seq = self.log.last_seq();
        Ok(Attached {
            conn,
            connection,
            outbound: receiver,
            last_seq: after_seq.unwrap_or(last_seq).min(last_seq),
            context: None,
        })
    }

    /// Sends one socket every stored message after `after_seq`, then the answer in
    /// progress. If that would not fit its queue, it is told to reload over REST.
    async fn replay(&mut self, conn: ConnId, after_seq: u64) {
        let last_stored = self.log.last_seq();
        if after_seq > last_stored {
            let content = format!(
                "nothing was ever stored after seq {last_stored}; reload the history and resume from its last seq"
            );
            return self.send_error_to(conn, "resume_out_of_range", content);
        }
        // Half the queue, so live frames still fit behind the replay.
        let room = (self.limits.outbound_queue_frames / 2).max(1);
        let Some(missed) = self.missed_since(conn, after_seq, room).await else {
            return;
        };
        if missed.len() > room {
            return self.send_error_to(
                conn,
                "resume_too_far",
                "too many messages were missed to replay; reload the history over REST and resume from its last seq",
            );
        }
        for message in &missed {
            let frame = ServerFrame::Message {
                message: WireMessage::from(message),
            }
            .encode();
            self.subscribers.send_to(conn, frame);
        }
        self.send_snapshot(conn);
    }

    /// The messages after `after_seq`, from the window or (at most `room + 1`)
    /// from storage; `None` if the read failed (the socket is told).
    async fn missed_since(
        &mut self,
        conn: ConnId,
        after_seq: u64,
        room: usize,
    ) -> Option<Vec<StoredMessage>> {
        if let Missed::Cached(messages) = self.log.missed_since(after_seq) {
            return Some(messages);
        }
        let query = MessageQuery {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            after_seq,
            limit: room + 1,
            newest: false,
        };
        match self.storage.load_messages(query).await {
            Ok(messages) => Some(messages),
            Err(error) => {
                self.send_error_to(conn, error.code(), "could not read the missed messages");
                None
            }
        }
    }

    /// The text so far of an answer in progress, for a socket that just joined.
    fn send_snapshot(&mut self, conn: ConnId) {
        let shown = self
            .answering
            .current()
            .filter(|answer| answer.held.is_none());
        if let Some(generation) = shown {
            let frame = ServerFrame::Chunk {
                content: generation.text.clone(),
                message_id: generation.message_id,
                snapshot: true,
                reply_to: Some(generation.question),
                merged: generation.merged(),
            }
            .encode();
            self.subscribers.send_to(conn, frame);
        }
    }

    /// A report from one of its sockets' `Connection`s.
    pub async fn on_connection(&mut self, myself: &ActorRef<SessionMsg>, report: ConnectionReport) {
        match report {
            ConnectionReport::Detached { conn } => self.detach(myself, conn),
            ConnectionReport::Command { conn, command } => {
                self.command(myself, conn, command).await;
            }
        }
    }

    /// A socket went away: the others are told who is left.
    pub fn detach(&mut self, myself: &ActorRef<SessionMsg>, conn: ConnId) {
        if self
            .subscribers
            .remove(conn)
            .is_some_and(|participant| participant.is_present())
        {
            self.presence_changed(myself);
        }
    }

    /// A command from a socket, via its `Connection`.
    pub async fn command(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        conn: ConnId,
        command: ClientCommand,
    ) {
        match command {
            ClientCommand::Message(message) => {
                self.post(myself, message, Asker::Socket(conn)).await
            }
            ClientCommand::Cancel => match (self.answering.streaming_id(), &self.agent) {
                (Some(message_id), Some(agent)) => {
                    let _ = agent.cast(AgentMsg::Cancel { message_id });
                }
                // A merge window running: the turn it waits for never starts.
                _ if self.answering.cancel_merge() => {}
                _ => {
                    let error = Error::NothingToCancel;
                    self.send_error_to(conn, error.code(), error.to_string());
                }
            },
            ClientCommand::Typing => {
                let frame = ServerFrame::Typing {}.encode();
                self.subscribers.broadcast(&frame, Some(conn));
            }
            ClientCommand::Resume {
                after_seq,
                context_version,
            } => {
                self.replay(conn, after_seq).await;
                if context_version.is_some_and(|version| version != self.facts.context_version) {
                    self.send_context_snapshot(conn);
                }
            }
            ClientCommand::Context(patch) => self.context_changed_by(myself, patch),
            // Answered by the connection itself; never reaches the session.
            ClientCommand::Ping => {}
        }
    }
}
