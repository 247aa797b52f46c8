//! Changes to the facts of a conversation: its title and status (with
//! optimistic concurrency), its context, the visitor's consent and the
//! contact captured from their messages, and the tenant's settings. Each is
//! stored with its event in one transaction.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde_json::{Map, Value};

use super::SessionMsg;
use super::state::SessionState;
use crate::agent::AgentProvider;
use crate::error::{Error, Result};
use crate::model::leads::{self, Found};
use crate::model::protocol::ServerFrame;
use crate::model::{
    Consent, MessageId, MetaChange, RateLimits, StoredMessage, TenantSettings, events,
    merge_context, now_timestamp,
};
use crate::store::{Durable, Write};

/// Where a context update answers: the context and its version.
pub type ContextReply = RpcReplyPort<Result<(Map<String, Value>, u64)>>;

impl SessionState {
    /// Changes title or status if `change.version` is the current one; answers
    /// once durable, with the new version.
    pub fn update_meta(&mut self, change: MetaChange, reply: RpcReplyPort<Result<u64>>) {
        if change.version != self.facts.version {
            let current = self.facts.version;
            let _ = reply.send(Err(Error::VersionConflict { current }));
            return;
        }
        let mut changed = Vec::new();
        if let Some(title) = change.title {
            self.facts.title = title;
            changed.push("title");
        }
        if let Some(status) = change.status {
            self.facts.status = status;
            changed.push("status");
        }
        if let Some(policy) = change.double_texting {
            self.facts.double_texting = policy;
            changed.push("double_texting");
        }
        self.facts.version += 1;
        let version = self.facts.version;
        let event = events::conversation_updated(&self.event_facts(), &changed, None);
        let write = Write::SetMeta {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            title: self.facts.title.clone(),
            status: self.facts.status.clone(),
            double_texting: self.facts.double_texting,
            version,
            updated_at: now_timestamp(),
        };
        self.storage.write(
            Write::WithEvents(Box::new(write), vec![event]),
            Durable::new(move |outcome| {
                let _ = reply.send(outcome.map(|()| version));
            }),
        );
    }

    /// Merges keys into the context (only if it is still at `if_match`,
    /// when given); answers once durable, with the result and its version.
    pub fn update_context(
        &mut self,
        patch: Map<String, Value>,
        if_match: Option<u64>,
        reply: ContextReply,
    ) {
        let current = self.facts.context_version;
        if if_match.is_some_and(|version| version != current) {
            let _ = reply.send(Err(Error::StaleContext { current }));
            return;
        }
        if !self.change_context(patch) {
            let _ = reply.send(Ok((self.facts.context.clone(), current)));
            return;
        }
        let merged = (self.facts.context.clone(), self.facts.context_version);
        self.storage.write(
            self.context_write(),
            Durable::new(move |outcome| {
                let _ = reply.send(outcome.map(|()| merged));
            }),
        );
    }

    /// Merges keys into the context. A real change gets the next version
    /// and goes to every subscriber as the JSON Patch from the one before;
    /// false if nothing changed (nothing to store).
    pub fn change_context(&mut self, patch: Map<String, Value>) -> bool {
        let before = Value::Object(self.facts.context.clone());
        merge_context(&mut self.facts.context, patch);
        let after = Value::Object(self.facts.context.clone());
        let diff = json_patch::diff(&before, &after);
        if diff.0.is_empty() {
            return false;
        }
        self.facts.context_version += 1;
        let frame = ServerFrame::Context {
            version: self.facts.context_version,
            patch: Some(serde_json::to_value(diff).expect("a JSON Patch serialises")),
            context: None,
        };
        self.broadcast(&frame.encode());
        true
    }

    /// A change that nobody waits for (a socket's `context` frame, a tool's
    /// answer): applied, sent, and stored; a failed write is told to every
    /// socket (`Durable` with seq 0).
    pub fn context_changed_by(&mut self, myself: &ActorRef<SessionMsg>, patch: Map<String, Value>) {
        if !self.change_context(patch) {
            return;
        }
        let session = myself.clone();
        self.storage.write(
            self.context_write(),
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

    /// The whole context, to a socket that missed versions of it.
    pub fn send_context_snapshot(&mut self, conn: crate::conversation::connection::ConnId) {
        let frame = ServerFrame::Context {
            version: self.facts.context_version,
            patch: None,
            context: Some(self.facts.context.clone()),
        };
        self.subscribers.send_to(conn, frame.encode());
    }

    /// The write of the current context, with its `conversation.updated` event.
    pub fn context_write(&self) -> Write {
        let write = Write::SetContext {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            context: self.facts.context.clone(),
            version: self.facts.context_version,
            updated_at: now_timestamp(),
        };
        let event = events::conversation_updated(&self.event_facts(), &["context"], None);
        Write::WithEvents(Box::new(write), vec![event])
    }

    /// Records the visitor's consent decision; answers once durable.
    pub fn record_consent(&mut self, consent: Consent, reply: RpcReplyPort<Result<()>>) {
        self.capture.consent = Some(consent.clone());
        let facts = self.event_facts();
        let event = events::conversation_updated(&facts, &["consent"], Some(consent.granted));
        let write = Write::RecordConsent {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            consent,
        };
        self.storage.write(
            Write::WithEvents(Box::new(write), vec![event]),
            Durable::new(move |outcome| {
                let _ = reply.send(outcome);
            }),
        );
    }

    /// Feeds a stored visitor message to the conversation's contact while the
    /// visitor's consent stands. With no clear statement of a name and none
    /// known yet, the model is asked, beside the session (once a name is
    /// known, every later message would otherwise cost a model call). The
    /// visitor's message is never held up.
    pub fn capture_lead(&mut self, myself: &ActorRef<SessionMsg>, message: &StoredMessage) {
        if self.facts.channel.is_none() || !self.capture.granted() {
            return;
        }
        let locale = message
            .origin
            .as_ref()
            .and_then(|origin| origin.locale.as_deref());
        let found = leads::extract(&message.content, message.author.as_deref(), locale);
        if found.name.is_none()
            && self.capture.lacks_name()
            && let Some(asking) = self
                .provider
                .extract_contact(&self.settings, &message.content)
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
        self.apply_lead(myself, message.id, found);
    }

    /// Merges what was found into the contact and stores it; the first email
    /// or phone makes it a lead, with `lead.captured` in the same transaction.
    /// A failed write is logged and retried with the next message.
    pub fn apply_lead(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        message_id: MessageId,
        found: Found,
    ) {
        // Consent may have been withdrawn while the model was thinking.
        if !self.capture.granted() {
            return;
        }
        let Some(channel) = self.facts.channel.clone() else {
            return;
        };
        let at = (&self.facts.tenant, self.facts.id);
        let Some(changed) = self.capture.merge(found, at, &channel) else {
            return;
        };
        let had_event = changed.became_lead;
        let events = changed
            .became_lead
            .then(|| {
                let message = message_id.to_string();
                events::lead_captured(&self.event_facts(), &changed.contact, &message)
            })
            .into_iter()
            .collect();
        let session = myself.clone();
        let conversation = self.id();
        let write = Write::PutContact(Box::new(changed.contact));
        self.storage.write(
            Write::WithEvents(Box::new(write), events),
            Durable::new(move |outcome| {
                if let Err(error) = outcome {
                    tracing::error!(%conversation, %error, "contact not stored; retrying with the next message");
                    let _ = session.cast(SessionMsg::ContactNotStored { had_event });
                }
            }),
        );
    }

    /// The tenant's settings changed: new greeting and limits from now on,
    /// the new agent from the next answer on.
    pub fn reconfigure(&mut self, settings: Arc<TenantSettings>, provider: Arc<dyn AgentProvider>) {
        let limit = settings.rate_limits.session_messages_per_minute;
        if limit != self.settings.rate_limits.session_messages_per_minute {
            self.message_limiter = governor::RateLimiter::direct(RateLimits::quota(limit));
        }
        self.settings = settings;
        self.provider = provider;
    }

    /// Whether nothing is going on and nothing has for the idle timeout.
    /// Runs the idle check (passivation) only while no socket is attached:
    /// an attached socket keeps the session live anyway, so a conversation
    /// with a socket pays no timer task.
    pub fn watch_idleness(&mut self, myself: &ActorRef<SessionMsg>) {
        match (self.subscribers.is_empty(), &self.idle_timer) {
            (true, None) => {
                let every = (self.config.idle_timeout() / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(30));
                self.idle_timer = Some(myself.send_interval(every, || SessionMsg::IdleCheck));
            }
            (false, Some(_)) => {
                if let Some(timer) = self.idle_timer.take() {
                    timer.abort();
                }
            }
            _ => {}
        }
    }

    /// Stops the session if it has been idle long enough (passivation).
    pub fn passivate_if_idle(&self, myself: &ActorRef<SessionMsg>) {
        if self.is_idle() {
            tracing::debug!(session = %self.id(), "passivating idle session");
            myself.stop(Some("idle".into()));
        }
    }

    pub fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.answering.is_idle()
            && !self.log.has_pending_writes()
            && self.last_activity.elapsed() >= self.config.idle_timeout()
    }
}
