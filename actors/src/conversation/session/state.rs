//! The session's state: the facts of the conversation (title, status,
//! context, …), the parts that own the log, the subscribers, answering,
//! attendance and the contact, and what the actor needs around them. Built
//! here from what the database holds (rehydration); the operations on it
//! live beside it, one file each (`post.rs`, `attach.rs`, `generate.rs`,
//! `attend.rs`, `facts.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use super::answering::Answering;
use super::attendance::Attendance;
use super::contact::ContactCapture;
use super::log::Log;
use super::subscribers::Subscribers;
use crate::agent::AgentProvider;
use crate::agent::actor::AgentMsg;
use crate::config::{Limits, SessionConfig, SupervisionConfig};
use crate::conversation::feed::{ConversationSummary, Feeds, Preview};
use crate::error::Result;
use crate::model::events::ConversationFacts;
use crate::model::protocol::{Frame, ServerFrame};
use crate::model::{
    DoubleTexting, RateLimits, Role, SessionId, SessionRecord, StoredMessage, TenantId,
    TenantSettings,
};
use crate::store::{MessageQuery, Storage};
use crate::supervision::Backoff;

pub struct SessionArgs {
    pub record: SessionRecord,
    /// Created a moment ago and never started: it has no log, contact or
    /// queued writes to read.
    pub fresh: bool,
    pub settings: Arc<TenantSettings>,
    pub provider: Arc<dyn AgentProvider>,
    pub storage: Storage,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub supervision: SupervisionConfig,
    /// Where the agent console hears about this conversation.
    pub feeds: Feeds,
}

/// What the conversation is, apart from its messages.
pub struct Facts {
    pub tenant: TenantId,
    pub id: SessionId,
    pub context: Map<String, Value>,
    pub title: Option<String>,
    pub status: String,
    pub version: u64,
    /// Incremented by every change of `context`.
    pub context_version: u64,
    /// The conversation's own double-texting policy, if it has one.
    pub double_texting: Option<DoubleTexting>,
    /// The channel that opened the conversation (`webchat`) and its id there.
    pub channel: Option<String>,
    pub external_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub struct SessionState {
    pub facts: Facts,
    pub settings: Arc<TenantSettings>,
    pub provider: Arc<dyn AgentProvider>,
    pub storage: Storage,
    pub config: SessionConfig,
    pub limits: Limits,
    pub feeds: Feeds,
    pub log: Log,
    pub subscribers: Subscribers,
    pub answering: Answering,
    pub attendance: Attendance,
    pub capture: ContactCapture,
    /// Started when the first answer is needed (`ensure_agent`).
    pub agent: Option<ActorRef<AgentMsg>>,
    /// It crashed and waits out its backoff before `RestartAgent`.
    pub agent_down: bool,
    pub agent_backoff: Backoff,
    /// Messages into this conversation, per the tenant's limit.
    pub message_limiter: governor::DefaultDirectRateLimiter,
    pub last_activity: Instant,
    pub idle_timer: Option<JoinHandle<()>>,
    pub terminating: bool,
    /// Joins or leaves not yet told in a `presence` frame (`attend.rs`).
    pub presence_due: bool,
}

/// The newest `keep` messages of the log, oldest first.
async fn newest_messages(
    storage: &Storage,
    record: &SessionRecord,
    keep: usize,
) -> Result<VecDeque<StoredMessage>> {
    // After a crash, this session's predecessor may still have writes in
    // the persistence queue: wait for them, or the `seq` read below could
    // be handed out twice.
    storage.flush().await;
    let query = MessageQuery {
        tenant: record.tenant.clone(),
        session: record.id,
        after_seq: 0,
        limit: keep,
        newest: true,
    };
    Ok(storage.load_messages(query).await?.into())
}

impl SessionState {
    /// Rehydrates from the database: context, the newest messages, the next
    /// `seq`, and user messages left unanswered by a crash or a shutdown.
    pub async fn rehydrate(args: SessionArgs) -> Result<SessionState> {
        let record = args.record;
        let keep = args.sessions.recent_messages.max(1);
        let recent = match args.fresh {
            true => VecDeque::new(),
            false => newest_messages(&args.storage, &record, keep).await?,
        };
        let log = Log::new(recent, record.last_seq, keep);
        let answers = args.provider.answers() && record.human.is_none();
        let unanswered: VecDeque<StoredMessage> = log
            .trailing_questions()
            .filter(|message| !message.no_reply && answers)
            .cloned()
            .collect();
        let contact = match record.channel {
            Some(_) if !args.fresh => args.storage.load_contact(&record.tenant, record.id).await?,
            _ => None,
        };
        let limit = args.settings.rate_limits.session_messages_per_minute;
        Ok(SessionState {
            facts: Facts {
                tenant: record.tenant,
                id: record.id,
                context: record.context,
                title: record.title,
                status: record.status,
                version: record.version,
                context_version: record.context_version,
                double_texting: record.double_texting,
                channel: record.channel,
                external_id: record.external_id,
                created_at: record.created_at,
                updated_at: record.updated_at,
            },
            settings: args.settings,
            provider: args.provider,
            storage: args.storage,
            config: args.sessions,
            limits: args.limits,
            feeds: args.feeds,
            log,
            subscribers: Subscribers::default(),
            answering: Answering::with_queue(unanswered),
            attendance: Attendance {
                handoff: record.handoff,
                human: record.human,
            },
            capture: ContactCapture {
                consent: record.consent,
                contact,
            },
            agent: None,
            agent_down: false,
            agent_backoff: Backoff::new("agent", &args.supervision),
            message_limiter: governor::RateLimiter::direct(RateLimits::quota(limit)),
            last_activity: Instant::now(),
            idle_timer: None,
            terminating: false,
            presence_due: false,
        })
    }

    pub fn id(&self) -> SessionId {
        self.facts.id
    }

    /// The conversation as its events describe it.
    pub fn event_facts(&self) -> ConversationFacts<'_> {
        let facts = &self.facts;
        ConversationFacts {
            tenant: &facts.tenant,
            id: facts.id,
            channel: facts.channel.as_deref(),
            external_id: facts.external_id.as_deref(),
            title: facts.title.as_deref(),
            status: &facts.status,
            version: facts.version,
            context: &facts.context,
        }
    }

    /// This conversation as the console lists it.
    pub fn summary(&self) -> ConversationSummary {
        let facts = &self.facts;
        ConversationSummary {
            session_id: facts.id,
            title: facts.title.clone(),
            status: facts.status.clone(),
            channel: facts.channel.clone(),
            created_at: facts.created_at.clone(),
            updated_at: facts.updated_at.clone(),
            handoff: self.attendance.handoff.clone(),
            human: self.attendance.human.clone(),
            presence: Some(self.subscribers.presence()),
            last_message: self.log.newest().map(Preview::from),
        }
    }

    /// Whether the AI answers `message` (a user message that asks for one,
    /// while no person has taken over).
    pub fn wants_answer(&self, message: &StoredMessage) -> bool {
        message.role == Role::User
            && !message.no_reply
            && self.provider.answers()
            && !self.attendance.is_human()
    }

    /// Keeps a durable message in the window; it is the newest activity.
    pub fn remember(&mut self, message: StoredMessage) {
        self.facts.updated_at = message.created_at.clone();
        self.log.remember(message);
    }

    /// Queues an `error` frame for every subscriber.
    pub fn broadcast_error(&mut self, code: &str, content: impl Into<String>) {
        let frame = ServerFrame::error(code, content).encode();
        self.subscribers.broadcast(&frame, None);
    }

    pub fn broadcast(&mut self, frame: &Frame) {
        self.subscribers.broadcast(frame, None);
    }
}
