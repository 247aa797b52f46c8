//! One live conversation. Supervised by `Tenant`; supervises its `Agent` and
//! one `Connection` per socket, which report to it through their own narrow
//! types (`AgentReport`, `ConnectionReport`).
//!
//! The session owns the conversation's ordered log: it gives every message its
//! `seq` as it hands the message to `Persistence`, and acknowledges, broadcasts
//! and answers it only once `Persistence` says it is durable. An answer in
//! progress belongs to the session, not to a socket: closing a tab is not a
//! stop, and a socket that joins mid-answer gets the text so far, then the live
//! chunks. Each outbound frame is serialised once and the same bytes go to
//! every subscriber's bounded queue; a subscriber whose queue is full is closed.
//!
//! This file is the actor: its messages and a short dispatch. The state is
//! split into parts that own their data and decide without I/O (unit-tested
//! beside them):
//!
//! ```text
//! log.rs          seq, the window of recent messages, client_msg_id acks, pending writes
//! subscribers.rs  sockets' queues, broadcast, presence
//! answering.rs    the question queue, the answer in progress, who waits for it
//! attendance.rs   handoff requests, take-over, hand-back
//! contact.rs      consent and the captured contact
//! ```
//!
//! and the operations that act on them (store, send, start the agent), one
//! file each: `state.rs` (rehydration), `post.rs`, `attach.rs`,
//! `generate.rs`, `attend.rs`, `facts.rs`.
//!
//! Never queries SurrealDB itself, and never waits on the network.

mod answering;
mod attach;
mod attend;
mod attendance;
mod contact;
mod facts;
mod generate;
mod log;
mod policy;
mod post;
mod state;
mod subscribers;

#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::{Map, Value};

pub use self::log::AnswerReceiver;
pub use self::state::SessionArgs;

use self::attendance::Before;
use self::log::Asker;
use self::state::SessionState;
use crate::agent::AgentProvider;
use crate::agent::actor::AgentReport;
use crate::conversation::connection::{ConnId, ConnectionMsg, ConnectionReport};
use crate::conversation::feed::ConversationSummary;
use crate::conversation::outbound::{CloseReason, OutboundReceiver};
use crate::error::Result;
use crate::model::leads::Found;
use crate::model::{
    Ack, Attendant, Consent, Handoff, MessageId, MetaChange, NewMessage, Participant,
    TenantSettings,
};

pub enum SessionMsg {
    /// Attaches a socket: spawns its `Connection`, queues the greeting, the
    /// messages after `after_seq` (if given) and any answer in progress.
    Attach {
        after_seq: Option<u64>,
        /// A socket greeted or re-attached, or a listener.
        joining: Joining,
        participant: Participant,
        reply: RpcReplyPort<Result<Attached>>,
    },
    /// A report from one of this session's `Connection`s.
    Connection(ConnectionReport),
    /// A user message from a back end (REST); answered once durable.
    Post {
        message: NewMessage,
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// A user message from a back end that waits for the answer (webchat):
    /// answered once durable, with where the answer will arrive.
    Ask {
        message: NewMessage,
        reply: RpcReplyPort<Result<(Ack, AnswerReceiver)>>,
    },
    /// Records the visitor's consent decision; answered once durable. From
    /// then on (if granted) their messages feed the conversation's contact.
    RecordConsent {
        consent: Consent,
        reply: RpcReplyPort<Result<()>>,
    },
    /// What the model found in a visitor message (lead capture).
    LeadFound { message_id: MessageId, found: Found },
    /// A contact write failed (sent by its `Durable` callback): the next
    /// message writes the contact again, with its event if it carried one.
    ContactNotStored { had_event: bool },
    /// Changes title or status if `change.version` is the current one; answered
    /// once durable, with the new version. A stale version: `VersionConflict`.
    UpdateMeta {
        change: MetaChange,
        reply: RpcReplyPort<Result<u64>>,
    },
    /// Opens a request for a person to take over (`handoff.requested`);
    /// answered once durable, with the request and whether it is new (an open
    /// request is not repeated, so nobody is notified twice).
    RequestHandoff {
        handoff: Handoff,
        reply: RpcReplyPort<Result<(Handoff, bool)>>,
    },
    /// A member of staff takes the conversation over: the AI stops (an
    /// answer in progress is cut short and kept as `interrupted`), an open
    /// handoff request is served, and the AI stays silent until `HandBack`.
    /// Answered once durable; while another person holds it: `AlreadyTakenOver`.
    TakeOver {
        attendant: Attendant,
        reply: RpcReplyPort<Result<Attendant>>,
    },
    /// The person hands the conversation back to the AI, which answers the
    /// visitor's next message. Nobody holds it: `NotTakenOver`.
    HandBack {
        /// Who hands it back (any member of staff may), for the announcement.
        by: String,
        reply: RpcReplyPort<Result<()>>,
    },
    /// This conversation as the agent console lists it.
    Summary {
        reply: RpcReplyPort<ConversationSummary>,
    },
    /// A handoff or take-over failed to store: back to how it was.
    AttendanceNotStored { before: Before },
    /// Merges keys into the context, if it is still at `if_match` (when
    /// given); answered once durable, with the result and its version.
    UpdateContext {
        patch: Map<String, Value>,
        if_match: Option<u64>,
        reply: facts::ContextReply,
    },
    /// A log write finished (sent by the `Durable` callback).
    Durable { seq: u64, outcome: Result<()> },
    /// A report from this session's `Agent` on the answer in progress.
    Agent(AgentReport),
    /// Restarts the agent after its backoff.
    RestartAgent,
    /// The double-texting merge window with this token ended.
    MergeDue { token: u64 },
    /// The joins and leaves of the last moment are in: tell who is here.
    PresenceDue,
    /// Answers the stored user message with this `client_msg_id` again (a
    /// client's "regenerate"): a new answer after the old one, which stays.
    AnswerAgain {
        client_msg_id: String,
        reply: RpcReplyPort<Result<Ack>>,
    },
    /// Periodic: stop if idle long enough (passivation).
    IdleCheck,
    /// Closes every socket with `reason` and stops. With `keep_partial`, an
    /// answer in progress is first stored as `interrupted` (shutdown); without
    /// it, nothing more is written (deletion).
    Terminate {
        reason: CloseReason,
        keep_partial: bool,
        reply: RpcReplyPort<()>,
    },
    /// The tenant's settings changed: new greeting and limits from now on,
    /// the new agent from the next answer on.
    Reconfigure {
        settings: Arc<TenantSettings>,
        provider: Arc<dyn AgentProvider>,
    },
    /// Test hook: panics inside the session's handler.
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for SessionMsg {}

/// Who joins a conversation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Joining {
    /// A socket, greeted in its language (`es-MX`) if known.
    Greeted(Option<String>),
    /// A socket whose session restarted: not greeted again.
    Reattached,
    /// A listener that is not a socket (another protocol's HTTP stream): no
    /// greeting; it is handed the context it joined with.
    Listening,
}

/// A socket's handle on the session, given to the edge.
pub struct Attached {
    pub conn: ConnId,
    /// Where the edge's reader sends the socket's commands.
    pub connection: ActorRef<ConnectionMsg>,
    /// What the edge's writer sends to the socket.
    pub outbound: OutboundReceiver,
    /// The last `seq` this socket is up to date with once its queued frames are
    /// written: a re-attach resumes after it.
    pub last_seq: u64,
    /// For a listener, the context as it was when it joined, and its
    /// version: every later change reaches it as a `context` frame.
    pub context: Option<(serde_json::Map<String, serde_json::Value>, u64)>,
}

pub struct Session;

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionState::rehydrate(args).await?)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.answering.queued() > 0 {
            state.start_agent(&myself).await?;
        }
        state.watch_idleness(&myself);
        if state.answering.queued() > 0 {
            tracing::info!(session = %state.id(), waiting = state.answering.queued(), "answering messages left unanswered");
        }
        state.maybe_start_generation();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.idle_timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if message.is_activity() {
            state.last_activity = Instant::now();
        }
        match message {
            SessionMsg::Attach {
                after_seq,
                joining,
                participant,
                reply,
            } => {
                let attached = state.join(&myself, after_seq, joining, participant).await;
                let _ = reply.send(attached);
            }
            SessionMsg::Connection(report) => state.on_connection(&myself, report).await,
            SessionMsg::Post { message, reply } => {
                state.post(&myself, message, Asker::Rest(reply)).await;
            }
            SessionMsg::Ask { message, reply } => {
                state.post(&myself, message, Asker::Ask(reply)).await;
            }
            SessionMsg::RecordConsent { consent, reply } => state.record_consent(consent, reply),
            SessionMsg::LeadFound { message_id, found } => {
                state.apply_lead(&myself, message_id, found);
            }
            SessionMsg::ContactNotStored { had_event } => state.capture.not_stored(had_event),
            SessionMsg::UpdateMeta { change, reply } => state.update_meta(change, reply),
            SessionMsg::RequestHandoff { handoff, reply } => {
                state.request_handoff(&myself, handoff, Some(reply));
            }
            SessionMsg::TakeOver { attendant, reply } => {
                state.take_over(&myself, attendant, reply).await;
            }
            SessionMsg::HandBack { by, reply } => state.hand_back(&myself, by, reply).await,
            SessionMsg::Summary { reply } => {
                let _ = reply.send(state.summary());
            }
            SessionMsg::AttendanceNotStored { before } => state.attendance_not_stored(before),
            SessionMsg::UpdateContext {
                patch,
                if_match,
                reply,
            } => state.update_context(patch, if_match, reply),
            SessionMsg::Durable { seq, outcome } => state.on_durable(&myself, seq, outcome),
            SessionMsg::Agent(report) => state.on_agent_report(&myself, report),
            SessionMsg::RestartAgent => state.restart_agent(&myself).await?,
            SessionMsg::MergeDue { token } => state.merge_due(token),
            SessionMsg::PresenceDue => state.presence_due(),
            SessionMsg::AnswerAgain {
                client_msg_id,
                reply,
            } => {
                let _ = reply.send(state.answer_again(&myself, &client_msg_id).await);
            }
            SessionMsg::IdleCheck => state.passivate_if_idle(&myself),
            SessionMsg::Terminate {
                reason,
                keep_partial,
                reply,
            } => {
                state.terminate(reason, keep_partial).await;
                let _ = reply.send(());
                myself.stop(Some("terminated".into()));
            }
            SessionMsg::Reconfigure { settings, provider } => state.reconfigure(settings, provider),
            #[cfg(feature = "fault-injection")]
            SessionMsg::InjectPanic => panic!("injected panic in session {}", state.id()),
        }
        state.watch_idleness(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, failure)) = crate::supervision::exit_of(event) else {
            return Ok(());
        };
        if let Some(conn) = state.subscribers.conn_of_actor(cell.get_id()) {
            state.detach(&myself, conn);
            return Ok(());
        }
        let is_agent = state
            .agent
            .as_ref()
            .is_some_and(|agent| agent.get_id() == cell.get_id());
        if is_agent {
            let why = failure.unwrap_or_else(|| "the agent stopped".into());
            state.agent_crashed(&myself, why);
        }
        Ok(())
    }
}

impl SessionMsg {
    /// Whether this message counts as activity (it keeps an idle session alive).
    fn is_activity(&self) -> bool {
        matches!(
            self,
            SessionMsg::Attach { .. }
                | SessionMsg::Connection(_)
                | SessionMsg::Post { .. }
                | SessionMsg::Ask { .. }
                | SessionMsg::RecordConsent { .. }
                | SessionMsg::UpdateMeta { .. }
                | SessionMsg::RequestHandoff { .. }
                | SessionMsg::TakeOver { .. }
                | SessionMsg::HandBack { .. }
                | SessionMsg::UpdateContext { .. }
                | SessionMsg::AnswerAgain { .. }
        )
    }
}

crate::supervision::reports_to!(AgentReport => SessionMsg::Agent);
crate::supervision::reports_to!(ConnectionReport => SessionMsg::Connection);
