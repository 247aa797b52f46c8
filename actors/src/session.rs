//! One live conversation. Supervised by `Tenant`; supervises its `Agent` and
//! one `Connection` per socket.
//!
//! The session owns the conversation's ordered log: it gives every message its
//! `seq` as it hands the message to `Persistence`, and acknowledges, broadcasts
//! and answers it only once `Persistence` says it is durable. An answer in
//! progress belongs to the session, not to a socket: closing a tab is not a
//! stop, and a socket that joins mid-answer gets the text so far, then the live
//! chunks. Each outbound frame is serialised once and the same bytes go to
//! every subscriber's bounded queue; a subscriber whose queue is full is closed.
//!
//! Never queries SurrealDB itself, and never waits on the network.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::{Agent, AgentArgs, AgentMsg, AgentOutcome, AgentProvider, AgentRequest, Turn};
use crate::config::{Limits, SessionConfig, SupervisionConfig, TenantSettings};
use crate::connection::{Connection, ConnectionArgs, ConnectionMsg};
use crate::domain::{
    Ack, Attendant, ClientCommand, Consent, Contact, EventRecord, Handoff, MessageId,
    MessageStatus, MetaChange, NewMessage, Participant, Role, SessionId, SessionRecord,
    StoredMessage, TenantId, merge_context, now_timestamp,
};
use crate::error::{Error, Result};
use crate::events;
use crate::feed::{Change, ConversationSummary, FeedFrame, Feeds, PresenceCount, Preview};
use crate::leads;
use crate::outbound::{CloseReason, OutboundReceiver, OutboundSender, SendError, outbound_queue};
use crate::persistence::{Durable, MessageQuery, Storage, Write};
use crate::protocol::{AgentPresence, Frame, ServerFrame, WireMessage};
use crate::supervision::Backoff;

/// Where the answer to an asked question arrives: the stored answer (whole,
/// `interrupted` or `failed`), or why it could not be stored. Dropped unfired
/// if the session stops first; the question is answered after its restart.
pub type AnswerReceiver = oneshot::Receiver<Result<StoredMessage>>;

/// Identifies one attached socket within the process.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub enum SessionMsg {
    /// Attaches a socket: spawns its `Connection`, queues the greeting, the
    /// messages after `after_seq` (if given) and any answer in progress.
    Attach {
        after_seq: Option<u64>,
        /// Send the greeting (not on a re-attach after a restart).
        greet: bool,
        /// Who is on the socket, for `presence` frames.
        participant: Participant,
        reply: RpcReplyPort<Result<Attached>>,
    },
    /// A socket's `Connection` stopped.
    Detach { conn: ConnId },
    /// A command from a socket, via its `Connection`.
    Command {
        conn: ConnId,
        command: ClientCommand,
    },
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
    LeadFound {
        message_id: MessageId,
        found: leads::Found,
    },
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
    AttendanceNotStored {
        handoff: Option<Handoff>,
        human: Option<Attendant>,
    },
    /// Merges keys into the context; answered once durable, with the result.
    UpdateContext {
        patch: Map<String, Value>,
        reply: RpcReplyPort<Result<Map<String, Value>>>,
    },
    /// A log write finished (sent by the `Durable` callback).
    Durable { seq: u64, outcome: Result<()> },
    /// A piece of the answer in progress, from this session's `Agent`.
    AgentChunk { message_id: MessageId, text: String },
    /// What the provider reported about the answer in progress.
    AgentMeta {
        message_id: MessageId,
        meta: crate::domain::AnswerMeta,
    },
    /// The agent called a tool, or a tool answered (then `call.result` is set).
    AgentTool {
        message_id: MessageId,
        call: crate::domain::ToolCallRecord,
    },
    /// The answer in progress ended, from this session's `Agent`.
    AgentFinished {
        message_id: MessageId,
        outcome: AgentOutcome,
    },
    /// Restarts the agent after its backoff.
    RestartAgent,
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
}

pub struct SessionArgs {
    pub record: SessionRecord,
    pub settings: Arc<TenantSettings>,
    pub provider: Arc<dyn AgentProvider>,
    pub storage: Storage,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub supervision: SupervisionConfig,
    /// Where the agent console hears about this conversation.
    pub feeds: Feeds,
}

struct Subscriber {
    outbound: OutboundSender,
    connection: ActorRef<ConnectionMsg>,
    participant: Participant,
}

/// Who is waiting for a user message to become durable.
enum Asker {
    Socket(ConnId),
    Rest(RpcReplyPort<Result<Ack>>),
    /// A back end that also waits for the answer.
    Ask(RpcReplyPort<Result<(Ack, AnswerReceiver)>>),
    /// The session itself (announcing a take-over): nobody to answer.
    Session,
}

/// A log write handed to persistence and not yet durable.
enum PendingWrite {
    User {
        message: StoredMessage,
        asker: Asker,
        /// Sockets that re-sent the same `client_msg_id` meanwhile.
        repeats: Vec<ConnId>,
    },
    Answer {
        message: StoredMessage,
        /// The user message it answers.
        question: MessageId,
    },
}

/// The answer being generated.
struct Generation {
    message_id: MessageId,
    /// Model, ids, tokens and timings, as they are reported.
    meta: crate::domain::AnswerMeta,
    /// Tool calls so far, with their results once they come.
    tool_calls: Vec<crate::domain::ToolCallRecord>,
    /// The user message being answered.
    question: MessageId,
    text: String,
    /// Generation is over and the answer is being stored: chunks are ignored.
    storing: bool,
}

pub struct SessionState {
    tenant: TenantId,
    id: SessionId,
    settings: Arc<TenantSettings>,
    provider: Arc<dyn AgentProvider>,
    storage: Storage,
    config: SessionConfig,
    limits: Limits,
    context: Map<String, Value>,
    title: Option<String>,
    status: String,
    version: u64,
    /// The channel that opened the conversation (`webchat`) and its id there.
    channel: Option<String>,
    external_id: Option<String>,
    /// The visitor's latest consent decision; leads are captured only while granted.
    consent: Option<Consent>,
    contact: Option<Contact>,
    /// The open request for a person, if any.
    handoff: Option<Handoff>,
    /// The person who took the conversation over: the AI is silent meanwhile.
    human: Option<Attendant>,
    feeds: Feeds,
    created_at: String,
    updated_at: String,
    /// Who waits for the answer to which user message.
    answer_waiters: HashMap<MessageId, Vec<oneshot::Sender<Result<StoredMessage>>>>,
    next_seq: u64,
    /// The newest stored messages, oldest first, at most `config.recent_messages`.
    recent: VecDeque<StoredMessage>,
    /// Whether `recent` holds the whole log (then lookups need no database read).
    recent_is_complete: bool,
    /// `client_msg_id` → its ack, for messages in `recent`.
    acked_client_ids: HashMap<String, Ack>,
    subscribers: HashMap<ConnId, Subscriber>,
    connection_actors: HashMap<ActorId, ConnId>,
    pending_writes: BTreeMap<u64, PendingWrite>,
    generation: Option<Generation>,
    /// User messages waiting for an answer, in order.
    to_answer: VecDeque<StoredMessage>,
    agent: Option<ActorRef<AgentMsg>>,
    agent_backoff: Backoff,
    /// Messages into this conversation, per the tenant's limit.
    message_limiter: governor::DefaultDirectRateLimiter,
    last_activity: Instant,
    idle_timer: Option<JoinHandle<()>>,
    terminating: bool,
}

pub struct Session;

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    /// Rehydrates from the database: context, the newest messages, the next
    /// `seq`, and user messages left unanswered by a crash or a shutdown.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let record = args.record;
        // After a crash, this session's predecessor may still have writes in
        // the persistence queue: wait for them, or the `seq` read below could
        // be handed out twice.
        args.storage.flush().await;
        let keep = args.sessions.recent_messages.max(1);
        let recent: VecDeque<StoredMessage> = args
            .storage
            .load_messages(MessageQuery {
                tenant: record.tenant.clone(),
                session: record.id,
                after_seq: 0,
                limit: keep,
                newest: true,
            })
            .await?
            .into();
        let last_seq = recent
            .back()
            .map_or(0, |message| message.seq)
            .max(record.last_seq);
        let unanswered: VecDeque<StoredMessage> = recent
            .iter()
            .rev()
            .take_while(|message| message.role == Role::User)
            .filter(|message| {
                !message.no_reply && args.provider.answers() && record.human.is_none()
            })
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let message_limiter = governor::RateLimiter::direct(crate::config::RateLimits::quota(
            args.settings.rate_limits.session_messages_per_minute,
        ));
        let acked_client_ids = recent
            .iter()
            .filter_map(|message| Some((message.client_msg_id.clone()?, ack_of(message))))
            .collect();
        let contact = match record.channel {
            Some(_) => args.storage.load_contact(&record.tenant, record.id).await?,
            None => None,
        };
        Ok(SessionState {
            recent_is_complete: recent.len() as u64 >= record.message_count,
            tenant: record.tenant,
            id: record.id,
            settings: args.settings,
            provider: args.provider,
            storage: args.storage,
            config: args.sessions,
            limits: args.limits,
            context: record.context,
            title: record.title,
            status: record.status,
            version: record.version,
            channel: record.channel,
            external_id: record.external_id,
            consent: record.consent,
            handoff: record.handoff,
            human: record.human,
            feeds: args.feeds,
            created_at: record.created_at,
            updated_at: record.updated_at,
            contact,
            answer_waiters: HashMap::new(),
            next_seq: last_seq + 1,
            recent,
            acked_client_ids,
            subscribers: HashMap::new(),
            connection_actors: HashMap::new(),
            pending_writes: BTreeMap::new(),
            generation: None,
            to_answer: unanswered,
            agent: None,
            agent_backoff: Backoff::new(&args.supervision),
            message_limiter,
            last_activity: Instant::now(),
            idle_timer: None,
            terminating: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        start_agent(&myself, state).await?;
        let every = (state.config.idle_timeout() / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        state.idle_timer = Some(myself.send_interval(every, || SessionMsg::IdleCheck));
        if !state.to_answer.is_empty() {
            tracing::info!(session = %state.id, waiting = state.to_answer.len(), "answering messages left unanswered");
        }
        maybe_start_generation(state);
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
        match message {
            SessionMsg::Attach {
                after_seq,
                greet,
                participant,
                reply,
            } => {
                state.last_activity = Instant::now();
                let attached = attach(&myself, state, after_seq, greet, participant).await;
                let _ = reply.send(attached);
                presence_changed(state);
            }
            SessionMsg::Detach { conn } => {
                state.last_activity = Instant::now();
                if state.subscribers.remove(&conn).is_some() {
                    presence_changed(state);
                }
            }
            SessionMsg::Command { conn, command } => {
                state.last_activity = Instant::now();
                handle_command(&myself, state, conn, command).await;
            }
            SessionMsg::Post { message, reply } => {
                state.last_activity = Instant::now();
                post(&myself, state, message, Asker::Rest(reply)).await;
            }
            SessionMsg::Ask { message, reply } => {
                state.last_activity = Instant::now();
                post(&myself, state, message, Asker::Ask(reply)).await;
            }
            SessionMsg::RecordConsent { consent, reply } => {
                state.last_activity = Instant::now();
                state.consent = Some(consent.clone());
                let event = events::conversation_updated(
                    &facts(state),
                    &["consent"],
                    Some(consent.granted),
                );
                state.storage.write(
                    Write::WithEvents(
                        Box::new(Write::RecordConsent {
                            tenant: state.tenant.clone(),
                            session: state.id,
                            consent,
                        }),
                        vec![event],
                    ),
                    Durable::new(move |outcome| {
                        let _ = reply.send(outcome);
                    }),
                );
            }
            SessionMsg::LeadFound { message_id, found } => {
                // Consent may have been withdrawn while the model was thinking.
                if state
                    .consent
                    .as_ref()
                    .is_some_and(|consent| consent.granted)
                {
                    apply_lead(&myself, state, message_id, found);
                }
            }
            SessionMsg::ContactNotStored { had_event } => {
                if had_event && let Some(contact) = state.contact.as_mut() {
                    contact.lead_captured_at = None;
                }
            }
            SessionMsg::UpdateMeta { change, reply } => {
                state.last_activity = Instant::now();
                if change.version != state.version {
                    let _ = reply.send(Err(Error::VersionConflict {
                        current: state.version,
                    }));
                    return Ok(());
                }
                let mut changed = Vec::new();
                if let Some(title) = change.title {
                    state.title = title;
                    changed.push("title");
                }
                if let Some(status) = change.status {
                    state.status = status;
                    changed.push("status");
                }
                state.version += 1;
                let version = state.version;
                let event = events::conversation_updated(&facts(state), &changed, None);
                state.storage.write(
                    Write::WithEvents(
                        Box::new(Write::SetMeta {
                            tenant: state.tenant.clone(),
                            session: state.id,
                            title: state.title.clone(),
                            status: state.status.clone(),
                            version,
                            updated_at: now_timestamp(),
                        }),
                        vec![event],
                    ),
                    Durable::new(move |outcome| {
                        let _ = reply.send(outcome.map(|()| version));
                    }),
                );
            }
            SessionMsg::RequestHandoff { handoff, reply } => {
                state.last_activity = Instant::now();
                request_handoff(&myself, state, handoff, Some(reply));
            }
            SessionMsg::TakeOver { attendant, reply } => {
                state.last_activity = Instant::now();
                take_over(&myself, state, attendant, reply).await;
            }
            SessionMsg::HandBack { by, reply } => {
                state.last_activity = Instant::now();
                hand_back(&myself, state, by, reply).await;
            }
            SessionMsg::Summary { reply } => {
                let _ = reply.send(summary(state));
            }
            SessionMsg::AttendanceNotStored { handoff, human } => {
                state.handoff = handoff;
                state.human = human;
                presence_changed(state);
            }
            SessionMsg::UpdateContext { patch, reply } => {
                state.last_activity = Instant::now();
                merge_context(&mut state.context, patch);
                let merged = state.context.clone();
                state.storage.write(
                    set_context(state),
                    Durable::new(move |outcome| {
                        let _ = reply.send(outcome.map(|()| merged));
                    }),
                );
            }
            SessionMsg::Durable { seq, outcome } => on_durable(&myself, state, seq, outcome),
            SessionMsg::AgentChunk { message_id, text } => {
                let Some(generation) = state.generation.as_mut().filter(|generation| {
                    generation.message_id == message_id && !generation.storing
                }) else {
                    return Ok(());
                };
                generation.text.push_str(&text);
                let frame = ServerFrame::Chunk {
                    content: text,
                    message_id,
                    snapshot: false,
                }
                .encode();
                broadcast(state, &frame, None);
            }
            SessionMsg::AgentMeta { message_id, meta } => {
                if let Some(generation) = state
                    .generation
                    .as_mut()
                    .filter(|generation| generation.message_id == message_id)
                {
                    generation.meta.merge(meta);
                }
            }
            SessionMsg::AgentTool { message_id, call } => {
                let Some(generation) = state.generation.as_mut().filter(|generation| {
                    generation.message_id == message_id && !generation.storing
                }) else {
                    return Ok(());
                };
                let frame = match &call.result {
                    None => ServerFrame::ToolCall {
                        message_id,
                        call_id: call.call_id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    },
                    Some(content) => ServerFrame::ToolResult {
                        message_id,
                        call_id: call.call_id.clone(),
                        name: call.name.clone(),
                        content: content.clone(),
                        is_error: call.is_error,
                    },
                };
                let asks_for_a_person = call.name == crate::agent::REQUEST_HUMAN
                    && call.result.is_some()
                    && !call.is_error;
                let reason = asks_for_a_person
                    .then(|| crate::agent::request_human_reason(&call.arguments))
                    .flatten();
                match generation
                    .tool_calls
                    .iter_mut()
                    .find(|known| known.call_id == call.call_id)
                {
                    Some(known) => *known = call,
                    None => generation.tool_calls.push(call),
                }
                broadcast(state, &frame.encode(), None);
                if asks_for_a_person {
                    let handoff = Handoff {
                        requested_at: now_timestamp(),
                        requested_by: "agent".into(),
                        reason,
                    };
                    request_handoff(&myself, state, handoff, None);
                }
            }
            SessionMsg::AgentFinished {
                message_id,
                outcome,
            } => {
                if state.generation.as_ref().is_some_and(|generation| {
                    generation.message_id == message_id && !generation.storing
                }) {
                    finish_generation(&myself, state, outcome);
                }
            }
            SessionMsg::RestartAgent => {
                if !state.terminating && state.agent.is_none() {
                    start_agent(&myself, state).await?;
                    maybe_start_generation(state);
                }
            }
            SessionMsg::IdleCheck => {
                let idle = state.subscribers.is_empty()
                    && state.generation.is_none()
                    && state.to_answer.is_empty()
                    && state.pending_writes.is_empty()
                    && state.last_activity.elapsed() >= state.config.idle_timeout();
                if idle {
                    tracing::debug!(session = %state.id, "passivating idle session");
                    myself.stop(Some("idle".into()));
                }
            }
            SessionMsg::Terminate {
                reason,
                keep_partial,
                reply,
            } => {
                terminate(state, reason, keep_partial).await;
                let _ = reply.send(());
                myself.stop(Some("terminated".into()));
            }
            SessionMsg::Reconfigure { settings, provider } => {
                if settings.rate_limits.session_messages_per_minute
                    != state.settings.rate_limits.session_messages_per_minute
                {
                    state.message_limiter =
                        governor::RateLimiter::direct(crate::config::RateLimits::quota(
                            settings.rate_limits.session_messages_per_minute,
                        ));
                }
                state.settings = settings;
                state.provider = provider;
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::InjectPanic => panic!("injected panic in session {}", state.id),
        }
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
        if let Some(conn) = state.connection_actors.remove(&cell.get_id()) {
            if state.subscribers.remove(&conn).is_some() {
                presence_changed(state);
            }
            return Ok(());
        }
        if state
            .agent
            .as_ref()
            .is_some_and(|agent| agent.get_id() == cell.get_id())
        {
            state.agent = None;
            if state.terminating {
                return Ok(());
            }
            let why = failure.unwrap_or_else(|| "the agent stopped".into());
            tracing::error!(session = %state.id, error = %why, "agent failed; restarting it");
            if state
                .generation
                .as_ref()
                .is_some_and(|generation| !generation.storing)
            {
                broadcast(
                    state,
                    &ServerFrame::error(
                        "agent_crashed",
                        "the agent crashed; the partial answer was kept",
                    )
                    .encode(),
                    None,
                );
                finish_generation(
                    &myself,
                    state,
                    AgentOutcome::Failed(crate::agent::AgentError(format!(
                        "the agent crashed: {why}"
                    ))),
                );
            }
            let delay = state.agent_backoff.next_delay();
            myself.send_after(delay, || SessionMsg::RestartAgent);
        }
        Ok(())
    }
}

async fn start_agent(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
) -> Result<(), ActorProcessingErr> {
    let (agent, _) = Actor::spawn_linked(
        None,
        Agent,
        AgentArgs {
            session: myself.clone(),
        },
        myself.get_cell(),
    )
    .await?;
    state.agent = Some(agent);
    Ok(())
}

fn ack_of(message: &StoredMessage) -> Ack {
    Ack {
        client_msg_id: message.client_msg_id.clone(),
        message_id: message.id,
        seq: message.seq,
        created_at: message.created_at.clone(),
    }
}

fn set_context(state: &SessionState) -> Write {
    let write = Write::SetContext {
        tenant: state.tenant.clone(),
        session: state.id,
        context: state.context.clone(),
        updated_at: now_timestamp(),
    };
    let event = events::conversation_updated(&facts(state), &["context"], None);
    Write::WithEvents(Box::new(write), vec![event])
}

/// The conversation as its events describe it.
fn facts(state: &SessionState) -> events::ConversationFacts<'_> {
    events::ConversationFacts {
        tenant: &state.tenant,
        id: state.id,
        channel: state.channel.as_deref(),
        external_id: state.external_id.as_deref(),
        title: state.title.as_deref(),
        status: &state.status,
        version: state.version,
        context: &state.context,
    }
}

/// Opens a request for a person, unless one is open or a person is here
/// already (then nobody is notified twice). The flag, `handoff.requested` and
/// the console's highlight all follow from the one durable write.
fn request_handoff(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    handoff: Handoff,
    reply: Option<RpcReplyPort<Result<(Handoff, bool)>>>,
) {
    if let Some(open) = &state.handoff {
        if let Some(reply) = reply {
            let _ = reply.send(Ok((open.clone(), false)));
        }
        return;
    }
    if state.human.is_some() {
        if let Some(reply) = reply {
            let _ = reply.send(Ok((handoff, false)));
        }
        return;
    }
    state.handoff = Some(handoff.clone());
    let event = events::handoff_requested(&facts(state), &handoff);
    let session = myself.clone();
    state.storage.write(
        Write::WithEvents(Box::new(attendance(state)), vec![event]),
        Durable::new(move |outcome| {
            if let Err(error) = &outcome {
                tracing::error!(%error, "handoff request not stored");
                let _ = session.cast(SessionMsg::AttendanceNotStored {
                    handoff: None,
                    human: None,
                });
            }
            if let Some(reply) = reply {
                let _ = reply.send(outcome.map(|()| (handoff, true)));
            }
        }),
    );
    attendance_changed(state, Change::HandoffRequested);
}

/// The write that stores who attends the conversation now.
fn attendance(state: &SessionState) -> Write {
    Write::SetAttendance {
        tenant: state.tenant.clone(),
        session: state.id,
        handoff: state.handoff.clone(),
        human: state.human.clone(),
    }
}

async fn take_over(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    attendant: Attendant,
    reply: RpcReplyPort<Result<Attendant>>,
) {
    if let Some(current) = &state.human {
        let answer = if current.key_id == attendant.key_id {
            Ok(current.clone())
        } else {
            Err(Error::AlreadyTakenOver {
                by: current.name.clone(),
            })
        };
        let _ = reply.send(answer);
        return;
    }
    if state.terminating {
        let _ = reply.send(Err(Error::Unavailable("session")));
        return;
    }
    let before = (state.handoff.take(), None);
    state.human = Some(attendant.clone());
    // The AI stops now: queued questions are the person's to answer, and an
    // answer in progress is cut short (stored as `interrupted`).
    state.to_answer.clear();
    if let (Some(generation), Some(agent)) = (&state.generation, &state.agent)
        && !generation.storing
    {
        let _ = agent.cast(AgentMsg::Cancel {
            message_id: generation.message_id,
        });
    }
    store_attendance(myself, state, before, move |outcome| {
        let _ = reply.send(outcome.map(|()| attendant));
    });
    let name = state.human.as_ref().map(|human| human.name.clone());
    announce(
        myself,
        state,
        format!(
            "{} joined the conversation",
            name.as_deref().unwrap_or("A person")
        ),
        name,
    )
    .await;
    attendance_changed(state, Change::TakenOver);
}

async fn hand_back(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    by: String,
    reply: RpcReplyPort<Result<()>>,
) {
    let Some(human) = state.human.take() else {
        let _ = reply.send(Err(Error::NotTakenOver));
        return;
    };
    let before = (state.handoff.clone(), Some(human.clone()));
    store_attendance(myself, state, before, move |outcome| {
        let _ = reply.send(outcome);
    });
    announce(
        myself,
        state,
        format!("{by} handed the conversation back to the assistant"),
        Some(by),
    )
    .await;
    attendance_changed(state, Change::HandedBack);
}

/// Stores the current attendance with its `conversation.updated` event; on
/// failure the session goes back to `before` (handoff, human).
fn store_attendance(
    myself: &ActorRef<SessionMsg>,
    state: &SessionState,
    before: (Option<Handoff>, Option<Attendant>),
    done: impl FnOnce(Result<()>) + Send + 'static,
) {
    let event = events::conversation_updated(&facts(state), &["agent"], None);
    let session = myself.clone();
    state.storage.write(
        Write::WithEvents(Box::new(attendance(state)), vec![event]),
        Durable::new(move |outcome| {
            if let Err(error) = &outcome {
                tracing::error!(%error, "take-over or hand-back not stored");
                let (handoff, human) = before;
                let _ = session.cast(SessionMsg::AttendanceNotStored { handoff, human });
            }
            done(outcome);
        }),
    );
}

/// Stores a `system` message that every subscriber (and the history) shows.
async fn announce(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    content: String,
    author: Option<String>,
) {
    let message = NewMessage {
        role: Role::System,
        respond: false,
        author,
        ..NewMessage::user(content)
    };
    post(myself, state, message, Asker::Session).await;
}

/// The `presence` frame: who is connected, and who answers.
fn presence_frame(state: &SessionState) -> Frame {
    let PresenceCount { visitors, staff } = presence_count(state);
    let agent = match &state.human {
        Some(human) => AgentPresence {
            kind: "human".into(),
            name: Some(human.name.clone()),
        },
        None => AgentPresence {
            kind: "ai".into(),
            name: None,
        },
    };
    ServerFrame::Presence {
        visitors,
        staff,
        agent,
        handoff_requested: state.handoff.is_some(),
    }
    .encode()
}

fn presence_count(state: &SessionState) -> PresenceCount {
    let mut visitors = 0;
    let mut staff = Vec::new();
    for subscriber in state.subscribers.values() {
        match &subscriber.participant {
            Participant::Visitor => visitors += 1,
            Participant::Staff { name } => staff.push(name.clone()),
        }
    }
    staff.sort();
    staff.dedup();
    PresenceCount { visitors, staff }
}

/// Someone joined or left.
fn presence_changed(state: &mut SessionState) {
    attendance_changed(state, Change::Presence);
}

/// Tells every subscriber who is here now, and the console what changed.
fn attendance_changed(state: &mut SessionState, change: Change) {
    if state.terminating {
        return;
    }
    let frame = presence_frame(state);
    broadcast(state, &frame, None);
    publish(state, change);
}

/// Tells the tenant's consoles, if any listens, how this conversation changed.
fn publish(state: &SessionState, change: Change) {
    state
        .feeds
        .publish(&state.tenant, || FeedFrame::Conversation {
            change,
            conversation: Box::new(summary(state)),
        });
}

/// This conversation as the console lists it.
fn summary(state: &SessionState) -> ConversationSummary {
    ConversationSummary {
        session_id: state.id,
        title: state.title.clone(),
        status: state.status.clone(),
        channel: state.channel.clone(),
        created_at: state.created_at.clone(),
        updated_at: state.updated_at.clone(),
        handoff: state.handoff.clone(),
        human: state.human.clone(),
        presence: Some(presence_count(state)),
        last_message: state.recent.back().map(Preview::from),
    }
}

async fn attach(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    after_seq: Option<u64>,
    greet: bool,
    participant: Participant,
) -> Result<Attached> {
    if state.terminating {
        return Err(Error::Unavailable("session"));
    }
    let conn = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let (outbound, receiver) = outbound_queue(
        state.limits.outbound_queue_frames,
        state.limits.outbound_queue_bytes,
    );
    let (connection, _) = Actor::spawn_linked(
        None,
        Connection,
        ConnectionArgs {
            conn,
            session: myself.clone(),
            outbound: outbound.clone(),
        },
        myself.get_cell(),
    )
    .await
    .map_err(|error| Error::Storage(format!("cannot start connection: {error}")))?;
    state.connection_actors.insert(connection.get_id(), conn);
    state.subscribers.insert(
        conn,
        Subscriber {
            outbound,
            connection: connection.clone(),
            participant,
        },
    );
    if greet {
        let greeting = ServerFrame::System {
            content: state.settings.greeting.clone(),
        }
        .encode();
        send_to(state, conn, greeting);
    }
    match after_seq {
        Some(after_seq) => replay(state, conn, after_seq).await,
        None => send_snapshot(state, conn),
    }
    Ok(Attached {
        conn,
        connection,
        outbound: receiver,
        last_seq: after_seq
            .unwrap_or(state.next_seq - 1)
            .min(state.next_seq - 1),
    })
}

/// Sends one socket every stored message after `after_seq`, then the answer in
/// progress. If that would not fit its queue, it is told to reload over REST.
async fn replay(state: &mut SessionState, conn: ConnId, after_seq: u64) {
    let last_stored = state.next_seq - 1;
    if after_seq > last_stored {
        let frame = ServerFrame::error(
            "resume_out_of_range",
            format!(
                "nothing was ever stored after seq {last_stored}; reload the history and resume from its last seq"
            ),
        );
        send_to(state, conn, frame.encode());
        return;
    }
    // Half the queue, so live frames still fit behind the replay.
    let room = (state.limits.outbound_queue_frames / 2).max(1);
    let cached_from = state
        .recent
        .front()
        .map_or(state.next_seq, |message| message.seq);
    let missed: Vec<StoredMessage> = if state.recent_is_complete || cached_from <= after_seq + 1 {
        state
            .recent
            .iter()
            .filter(|message| message.seq > after_seq)
            .cloned()
            .collect()
    } else {
        let query = MessageQuery {
            tenant: state.tenant.clone(),
            session: state.id,
            after_seq,
            limit: room + 1,
            newest: false,
        };
        match state.storage.load_messages(query).await {
            Ok(messages) => messages,
            Err(error) => {
                send_to(
                    state,
                    conn,
                    ServerFrame::error(error.code(), "could not read the missed messages").encode(),
                );
                return;
            }
        }
    };
    if missed.len() > room {
        let frame = ServerFrame::error(
            "resume_too_far",
            "too many messages were missed to replay; reload the history over REST and resume from its last seq",
        );
        send_to(state, conn, frame.encode());
        return;
    }
    for message in &missed {
        let frame = ServerFrame::Message {
            message: WireMessage::from(message),
        }
        .encode();
        send_to(state, conn, frame);
    }
    send_snapshot(state, conn);
}

/// The text so far of an answer in progress, for a socket that just joined.
fn send_snapshot(state: &mut SessionState, conn: ConnId) {
    if let Some(generation) = &state.generation {
        let frame = ServerFrame::Chunk {
            content: generation.text.clone(),
            message_id: generation.message_id,
            snapshot: true,
        }
        .encode();
        send_to(state, conn, frame);
    }
}

async fn handle_command(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    conn: ConnId,
    command: ClientCommand,
) {
    match command {
        ClientCommand::Message(message) => post(myself, state, message, Asker::Socket(conn)).await,
        ClientCommand::Cancel => match (&state.generation, &state.agent) {
            (Some(generation), Some(agent)) if !generation.storing => {
                let _ = agent.cast(AgentMsg::Cancel {
                    message_id: generation.message_id,
                });
            }
            _ => {
                let error = Error::NothingToCancel;
                send_to(
                    state,
                    conn,
                    ServerFrame::error(error.code(), error.to_string()).encode(),
                );
            }
        },
        ClientCommand::Typing => broadcast(state, &ServerFrame::Typing {}.encode(), Some(conn)),
        ClientCommand::Resume { after_seq } => replay(state, conn, after_seq).await,
        ClientCommand::Context(patch) => {
            merge_context(&mut state.context, patch);
            let session = myself.clone();
            state.storage.write(
                set_context(state),
                Durable::new(move |outcome| {
                    if let Err(error) = outcome {
                        tracing::error!(%error, "context update not stored");
                        let _ = session.cast(SessionMsg::Durable {
                            seq: 0,
                            outcome: Err(error),
                        });
                    }
                }),
            );
        }
        // Answered by the connection itself; never reaches the session.
        ClientCommand::Ping => {}
    }
}

/// Gives a user message its `seq` and hands it to storage; the ack, the
/// broadcast and the answer wait for `Durable`.
async fn post(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    message: NewMessage,
    asker: Asker,
) {
    if state.terminating {
        return reject(state, asker, Error::Unavailable("session"));
    }
    if message.content.trim().is_empty() {
        return reject(
            state,
            asker,
            Error::InvalidInput("`content` is empty".into()),
        );
    }
    if message.content.len() > state.limits.max_content_bytes {
        let error = Error::ContentTooLarge {
            actual: message.content.len(),
            limit: state.limits.max_content_bytes,
        };
        return reject(state, asker, error);
    }
    if let Some(client_msg_id) = &message.client_msg_id {
        if let Some(ack) = state.acked_client_ids.get(client_msg_id).cloned() {
            return acknowledge(state, asker, &ack);
        }
        let in_flight = state
            .pending_writes
            .values_mut()
            .find_map(|pending| match pending {
                PendingWrite::User {
                    message, repeats, ..
                } if message.client_msg_id.as_ref() == Some(client_msg_id) => Some(repeats),
                _ => None,
            });
        if let Some(repeats) = in_flight {
            match asker {
                Asker::Socket(conn) => repeats.push(conn),
                Asker::Rest(reply) => {
                    let _ = reply.send(Err(still_storing()));
                }
                Asker::Ask(reply) => {
                    let _ = reply.send(Err(still_storing()));
                }
                Asker::Session => {}
            }
            return;
        }
        if !state.recent_is_complete {
            match state
                .storage
                .find_client_message(&state.tenant, state.id, client_msg_id)
                .await
            {
                Ok(Some(stored)) => return acknowledge(state, asker, &ack_of(&stored)),
                Ok(None) => {}
                Err(error) => return reject(state, asker, error),
            }
        }
    }
    // After the repeat check: re-sending a stored message costs nothing.
    // The session's own announcements are not limited.
    if !matches!(asker, Asker::Session)
        && let Err(not_until) = state.message_limiter.check()
    {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        return reject(
            state,
            asker,
            Error::rate_limited(not_until.wait_time_from(now)),
        );
    }
    if let Some(patch) = message.context {
        merge_context(&mut state.context, patch);
        let session = state.id;
        state.storage.write(
            set_context(state),
            Durable::new(move |outcome| {
                if let Err(error) = outcome {
                    // The message itself is stored separately and still answered.
                    tracing::error!(%session, %error, "context sent with a message was not stored");
                }
            }),
        );
    }
    let stored = StoredMessage {
        id: MessageId::new(),
        tenant: state.tenant.clone(),
        session_id: state.id,
        seq: state.next_seq,
        role: message.role,
        content: message.content,
        status: MessageStatus::Complete,
        client_msg_id: message.client_msg_id,
        created_at: now_timestamp(),
        no_reply: message.role == Role::User && !message.respond,
        direction: message.role.direction(),
        author: message.author,
        origin: message.origin,
        agent: None,
        tool_calls: Vec::new(),
    };
    state.next_seq += 1;
    persist(myself, state, stored.clone());
    state.pending_writes.insert(
        stored.seq,
        PendingWrite::User {
            message: stored,
            asker,
            repeats: Vec::new(),
        },
    );
}

fn still_storing() -> Error {
    Error::InvalidInput("a message with this client_msg_id is still being stored".into())
}

/// What is worth keeping of an answer's metadata (nothing, if nothing was reported).
fn answer_meta(meta: &crate::domain::AnswerMeta) -> Option<Box<crate::domain::AnswerMeta>> {
    (*meta != crate::domain::AnswerMeta::default()).then(|| Box::new(meta.clone()))
}

fn persist(myself: &ActorRef<SessionMsg>, state: &SessionState, message: StoredMessage) {
    persist_with(myself, state, message, None);
}

/// A log write with its `message.created` event (and any other it caused).
fn append_with_events(
    state: &SessionState,
    message: StoredMessage,
    also: Option<EventRecord>,
) -> Write {
    let mut events = vec![events::message_created(&facts(state), &message)];
    events.extend(also);
    Write::WithEvents(Box::new(Write::AppendMessage(message)), events)
}

/// Hands a log write to storage, with its events in the same transaction.
fn persist_with(
    myself: &ActorRef<SessionMsg>,
    state: &SessionState,
    message: StoredMessage,
    event: Option<EventRecord>,
) {
    let session = myself.clone();
    let seq = message.seq;
    let write = append_with_events(state, message, event);
    state.storage.write(
        write,
        Durable::new(move |outcome| {
            let _ = session.cast(SessionMsg::Durable { seq, outcome });
        }),
    );
}

fn reject(state: &mut SessionState, asker: Asker, error: Error) {
    match asker {
        Asker::Socket(conn) => send_to(
            state,
            conn,
            ServerFrame::error(error.code(), error.to_string()).encode(),
        ),
        Asker::Rest(reply) => {
            let _ = reply.send(Err(error));
        }
        Asker::Ask(reply) => {
            let _ = reply.send(Err(error));
        }
        Asker::Session => {
            tracing::error!(session = %state.id, %error, "announcement not stored");
        }
    }
}

fn acknowledge(state: &mut SessionState, asker: Asker, ack: &Ack) {
    match asker {
        Asker::Socket(conn) => send_to(state, conn, ServerFrame::ack(ack).encode()),
        Asker::Rest(reply) => {
            let _ = reply.send(Ok(ack.clone()));
        }
        Asker::Ask(reply) => {
            let (answer, receiver) = oneshot::channel();
            state
                .answer_waiters
                .entry(ack.message_id)
                .or_default()
                .push(answer);
            let _ = reply.send(Ok((ack.clone(), receiver)));
        }
        Asker::Session => {}
    }
}

/// Hands the stored answer to whoever waits for the answer to `question`.
fn answered(state: &mut SessionState, question: MessageId, answer: &Result<StoredMessage>) {
    for waiter in state.answer_waiters.remove(&question).unwrap_or_default() {
        let _ = waiter.send(match answer {
            Ok(message) => Ok(message.clone()),
            Err(error) => Err(Error::Storage(error.to_string())),
        });
    }
}

fn on_durable(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    seq: u64,
    outcome: Result<()>,
) {
    let Some(pending) = state.pending_writes.remove(&seq) else {
        // seq 0: a context write that failed; nothing is waiting on it.
        if let Err(error) = outcome {
            broadcast(
                state,
                &ServerFrame::error(error.code(), "the context could not be stored").encode(),
                None,
            );
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
        ) => {
            let ack = ack_of(&message);
            let sender = match &asker {
                Asker::Socket(conn) => Some(*conn),
                Asker::Rest(_) | Asker::Ask(_) | Asker::Session => None,
            };
            acknowledge(state, asker, &ack);
            for conn in repeats {
                send_to(state, conn, ServerFrame::ack(&ack).encode());
            }
            let frame = ServerFrame::Message {
                message: WireMessage::from(&message),
            }
            .encode();
            broadcast(state, &frame, sender);
            if let Some(client_msg_id) = &message.client_msg_id {
                state.acked_client_ids.insert(client_msg_id.clone(), ack);
            }
            remember(state, message.clone());
            publish(state, Change::Message);
            if message.role == Role::User {
                capture_lead(myself, state, &message);
                if state.human.is_none() && crate::handoff::asks_for_a_person(&message.content) {
                    let handoff = Handoff {
                        requested_at: now_timestamp(),
                        requested_by: "visitor".into(),
                        reason: Some(Preview::from(&message).content),
                    };
                    request_handoff(myself, state, handoff, None);
                }
            }
            if message.role == Role::User
                && !message.no_reply
                && state.provider.answers()
                && state.human.is_none()
            {
                state.to_answer.push_back(message);
                maybe_start_generation(state);
            }
        }
        (PendingWrite::User { asker, repeats, .. }, Err(error)) => {
            tracing::error!(session = %state.id, seq, %error, "user message not stored");
            for conn in repeats {
                send_to(
                    state,
                    conn,
                    ServerFrame::error(error.code(), "the message was not stored").encode(),
                );
            }
            reject(state, asker, error);
        }
        (PendingWrite::Answer { message, question }, outcome) => {
            match outcome {
                Ok(()) => {
                    answered(state, question, &Ok(message.clone()));
                    let frame = ServerFrame::Done {
                        content: message.content.clone(),
                        message_id: message.id,
                        seq: message.seq,
                        status: message.status,
                    }
                    .encode();
                    broadcast(state, &frame, None);
                    remember(state, message);
                    publish(state, Change::Message);
                }
                Err(error) => {
                    tracing::error!(session = %state.id, seq, %error, "answer not stored");
                    let frame = ServerFrame::error(error.code(), "the answer could not be stored");
                    broadcast(state, &frame.encode(), None);
                    answered(state, question, &Err(error));
                }
            }
            state.generation = None;
            maybe_start_generation(state);
        }
    }
}

/// Feeds a stored visitor message to the conversation's contact while the
/// visitor's consent stands: a stated name, email or phone replaces what was
/// known (the `author` only fills a missing name). The first email or phone
/// makes the contact a lead: `lead.captured` is stored with it, in one
/// transaction. A failed write is logged and retried with the next message;
/// the visitor's message is never held up.
fn capture_lead(myself: &ActorRef<SessionMsg>, state: &mut SessionState, message: &StoredMessage) {
    if state.channel.is_none() {
        return;
    }
    if !state
        .consent
        .as_ref()
        .is_some_and(|consent| consent.granted)
    {
        return;
    }
    let locale = message
        .origin
        .as_ref()
        .and_then(|origin| origin.locale.as_deref());
    let found = leads::extract(&message.content, message.author.as_deref(), locale);
    // No clear statement of a name, and none known yet: ask the model (once
    // a name is known, every later message would otherwise cost a model call).
    if found.name.is_none()
        && state
            .contact
            .as_ref()
            .is_none_or(|contact| contact.name.is_none())
        && let Some(asking) = state
            .provider
            .extract_contact(&state.settings, &message.content)
    {
        let session = myself.clone();
        let message_id = message.id;
        let region = leads::region_of(locale);
        tokio::spawn(async move {
            match asking.await {
                Ok(found) => {
                    let found = leads::validated(found, region);
                    if !found.is_empty() {
                        let _ = session.cast(SessionMsg::LeadFound { message_id, found });
                    }
                }
                Err(error) => tracing::warn!(%error, "lead extraction by the model failed"),
            }
        });
    }
    apply_lead(myself, state, message.id, found);
}

/// Merges what was found in a visitor message into the conversation's contact.
fn apply_lead(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    message_id: MessageId,
    found: leads::Found,
) {
    let Some(channel) = state.channel.clone() else {
        return;
    };
    if found.is_empty() {
        return;
    }
    let now = now_timestamp();
    let (tenant, id) = (state.tenant.clone(), state.id);
    let contact = state.contact.get_or_insert_with(|| Contact {
        tenant,
        conversation_id: id,
        origin: channel.clone(),
        name: None,
        email: None,
        phone: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        lead_captured_at: None,
    });
    let before = contact.clone();
    if found.name.is_some() {
        contact.name = found.name;
    } else if contact.name.is_none() {
        contact.name = found.author_name;
    }
    if found.email.is_some() {
        contact.email = found.email;
    }
    if found.phone.is_some() {
        contact.phone = found.phone;
    }
    if *contact == before {
        return;
    }
    contact.updated_at = now.clone();
    let became_lead =
        contact.lead_captured_at.is_none() && (contact.email.is_some() || contact.phone.is_some());
    if became_lead {
        contact.lead_captured_at = Some(now);
    }
    let contact = contact.clone();
    // The first email or phone makes the contact a lead: `lead.captured`,
    // in the same transaction as the contact.
    let events: Vec<EventRecord> = became_lead
        .then(|| events::lead_captured(&facts(state), &contact, &message_id.to_string()))
        .into_iter()
        .collect();
    let had_event = became_lead;
    let session = myself.clone();
    let conversation = state.id;
    state.storage.write(
        Write::WithEvents(Box::new(Write::PutContact(Box::new(contact))), events),
        Durable::new(move |outcome| {
            if let Err(error) = outcome {
                tracing::error!(%conversation, %error, "contact not stored; retrying with the next message");
                let _ = session.cast(SessionMsg::ContactNotStored { had_event });
            }
        }),
    );
}

/// Keeps a stored message in the in-memory window, dropping the oldest.
fn remember(state: &mut SessionState, message: StoredMessage) {
    state.updated_at = message.created_at.clone();
    state.recent.push_back(message);
    while state.recent.len() > state.config.recent_messages.max(1) {
        if let Some(dropped) = state.recent.pop_front() {
            if let Some(client_msg_id) = dropped.client_msg_id {
                state.acked_client_ids.remove(&client_msg_id);
            }
            state.recent_is_complete = false;
        }
    }
}

/// Starts answering the next queued user message, if nothing is in progress.
fn maybe_start_generation(state: &mut SessionState) {
    if state.terminating || state.generation.is_some() || state.human.is_some() {
        return;
    }
    let Some(agent) = state.agent.clone() else {
        return;
    };
    let Some(question) = state.to_answer.pop_front() else {
        return;
    };
    // History up to and including the question: the window ends where the
    // question sits in the log, so a queued question never sees later ones.
    let end = state
        .recent
        .iter()
        .position(|message| message.seq == question.seq)
        .map_or(state.recent.len(), |index| index + 1);
    let start = end.saturating_sub(state.config.history_turns.max(1));
    let mut history: Vec<Turn> = state
        .recent
        .range(start..end)
        .map(|message| Turn {
            role: message.role,
            content: message.content.clone(),
        })
        .collect();
    if history
        .last()
        .is_none_or(|turn| turn.content != question.content)
    {
        history.push(Turn {
            role: Role::User,
            content: question.content.clone(),
        });
    }
    let message_id = MessageId::new();
    state.generation = Some(Generation {
        message_id,
        meta: crate::domain::AnswerMeta::default(),
        tool_calls: Vec::new(),
        question: question.id,
        text: String::new(),
        storing: false,
    });
    let request = AgentRequest {
        tenant: state.tenant.clone(),
        session: state.id,
        history,
        context: state.context.clone(),
        settings: state.settings.clone(),
        question_id: question.id,
    };
    if agent
        .cast(AgentMsg::Generate {
            message_id,
            request,
            provider: state.provider.clone(),
        })
        .is_err()
    {
        // The agent just died; its supervision event will fail this generation.
        tracing::warn!(session = %state.id, "agent unavailable when starting an answer");
    }
}

/// Stores the answer in progress with the status its outcome calls for.
fn finish_generation(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    outcome: AgentOutcome,
) {
    let (status, failure) = match &outcome {
        AgentOutcome::Completed => (MessageStatus::Complete, None),
        AgentOutcome::Cancelled => (MessageStatus::Interrupted, None),
        AgentOutcome::Interrupted(error) => {
            let frame = ServerFrame::error(
                "agent_interrupted",
                format!("the answer was cut short: {error}"),
            );
            broadcast(state, &frame.encode(), None);
            (MessageStatus::Interrupted, None)
        }
        AgentOutcome::Failed(error) => {
            let frame = ServerFrame::error("agent_failed", format!("the agent failed: {error}"));
            broadcast(state, &frame.encode(), None);
            (MessageStatus::Failed, Some(error.to_string()))
        }
    };
    let Some(generation) = state.generation.as_mut() else {
        return;
    };
    generation.storing = true;
    let message = StoredMessage {
        id: generation.message_id,
        tenant: state.tenant.clone(),
        session_id: state.id,
        seq: state.next_seq,
        role: Role::Assistant,
        content: generation.text.clone(),
        status,
        client_msg_id: None,
        created_at: now_timestamp(),
        no_reply: false,
        direction: Role::Assistant.direction(),
        author: None,
        origin: None,
        agent: answer_meta(&generation.meta),
        tool_calls: generation.tool_calls.clone(),
    };
    let question = generation.question;
    state.next_seq += 1;
    // A failure is recorded as `agent.failed`, in the same transaction as the message.
    let event = failure.map(|error| {
        events::agent_failed(
            &facts(state),
            &message,
            &question.to_string(),
            &state.settings.agent,
            &error,
        )
    });
    persist_with(myself, state, message.clone(), event);
    state
        .pending_writes
        .insert(message.seq, PendingWrite::Answer { message, question });
}

async fn terminate(state: &mut SessionState, reason: CloseReason, keep_partial: bool) {
    state.terminating = true;
    if let Some(agent) = state.agent.take() {
        agent.stop(Some("session terminating".into()));
    }
    if keep_partial
        && let Some(generation) = state
            .generation
            .take()
            .filter(|generation| !generation.storing)
    {
        let message = StoredMessage {
            id: generation.message_id,
            tenant: state.tenant.clone(),
            session_id: state.id,
            seq: state.next_seq,
            role: Role::Assistant,
            content: generation.text,
            status: MessageStatus::Interrupted,
            client_msg_id: None,
            created_at: now_timestamp(),
            no_reply: false,
            direction: Role::Assistant.direction(),
            author: None,
            origin: None,
            agent: answer_meta(&generation.meta),
            tool_calls: generation.tool_calls,
        };
        state.next_seq += 1;
        let question = generation.question;
        let frame = ServerFrame::Done {
            content: message.content.clone(),
            message_id: message.id,
            seq: message.seq,
            status: message.status,
        }
        .encode();
        match state
            .storage
            .write_and_wait(append_with_events(state, message.clone(), None))
            .await
        {
            Ok(()) => {
                answered(state, question, &Ok(message));
                broadcast(state, &frame, None);
            }
            Err(error) => {
                tracing::error!(session = %state.id, %error, "partial answer not stored at shutdown");
                answered(state, question, &Err(error));
            }
        }
    }
    for subscriber in state.subscribers.values() {
        subscriber.outbound.finish(reason.clone());
        subscriber.connection.stop(None);
    }
    state.subscribers.clear();
}

/// Queues a frame for one socket; a full queue closes it.
fn send_to(state: &mut SessionState, conn: ConnId, frame: Frame) {
    let Some(subscriber) = state.subscribers.get(&conn) else {
        return;
    };
    if let Err(error) = subscriber.outbound.try_send(frame) {
        drop_subscriber(state, conn, error);
    }
}

/// Queues the same bytes for every subscriber except `except`.
fn broadcast(state: &mut SessionState, frame: &Frame, except: Option<ConnId>) {
    let mut dropped = Vec::new();
    for (conn, subscriber) in &state.subscribers {
        if Some(*conn) == except {
            continue;
        }
        if let Err(error) = subscriber.outbound.try_send(frame.clone()) {
            dropped.push((*conn, error));
        }
    }
    for (conn, error) in dropped {
        drop_subscriber(state, conn, error);
    }
}

fn drop_subscriber(state: &mut SessionState, conn: ConnId, error: SendError) {
    if let Some(subscriber) = state.subscribers.remove(&conn) {
        if error == SendError::Full {
            tracing::warn!(session = %state.id, conn, "closing a slow consumer");
            subscriber.outbound.close(CloseReason::slow_consumer());
        }
        subscriber.connection.stop(None);
    }
}
