//! Conversations through the runtime: creating them (and the webchat's
//! find-or-open), listing, history, messages, context, consent, handoff,
//! deletion, and attaching sockets. Every call takes the caller's `Scope`;
//! a conversation of another tenant or client is reported as not found.

use serde_json::{Map, Value};

use super::handle::{CALL_TIMEOUT, MAX_LIST, OPEN_LOCKS, Runtime, WEBCHAT, reply_of};
use crate::conversation::feed::{Change, ConversationSummary, FeedFrame};
use crate::conversation::session::{AnswerReceiver, Attached, Joining, SessionMsg};
use crate::error::{Error, Result};
use crate::model::{
    Ack, Consent, Contact, EventRecord, MessageId, MetaChange, NewMessage, Participant, Scope,
    SessionId, SessionRecord, StoredMessage, TenantId, now_timestamp,
};
use crate::store::{MessageQuery, Write};
use crate::tree::tenant::TenantMsg;

impl Runtime {
    /// Creates a conversation, owned by the scope's client if there is one;
    /// it is durable when this returns.
    pub async fn create_session(
        &self,
        scope: &Scope,
        context: Map<String, Value>,
        title: Option<String>,
    ) -> Result<SessionRecord> {
        self.create(scope, context, title, None).await
    }

    /// The webchat conversation the client calls `external_id`; with `open`,
    /// one is opened for an id never seen. Two first messages racing with one
    /// id get the same conversation.
    pub async fn webchat_conversation(
        &self,
        tenant: &TenantId,
        external_id: &str,
        open: bool,
    ) -> Result<SessionRecord> {
        self.known_tenant(tenant)?;
        let find = || {
            self.inner
                .storage
                .find_external(tenant, WEBCHAT, external_id)
        };
        if let Some(record) = find().await? {
            return Ok(record);
        }
        let not_found = || Error::UnknownExternal {
            channel: WEBCHAT,
            id: external_id.to_owned(),
        };
        if !open {
            return Err(not_found());
        }
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one((tenant, external_id)) as usize
                % OPEN_LOCKS
        };
        let _open = self.inner.open_locks[stripe].lock().await;
        if let Some(record) = find().await? {
            return Ok(record);
        }
        let channel = Some((WEBCHAT.to_owned(), external_id.to_owned()));
        self.create(&Scope::tenant(tenant.clone()), Map::new(), None, channel)
            .await
    }

    pub(super) async fn create(
        &self,
        scope: &Scope,
        context: Map<String, Value>,
        title: Option<String>,
        channel: Option<(String, String)>,
    ) -> Result<SessionRecord> {
        self.known_tenant(&scope.tenant)?;
        let (channel, external_id) = channel.unzip();
        let record = SessionRecord {
            context,
            client_id: scope.client.clone(),
            title,
            channel,
            external_id,
            ..SessionRecord::new(scope.tenant.clone())
        };
        let event = crate::model::events::conversation_created(&record);
        self.inner
            .storage
            .write_and_wait(Write::WithEvents(
                Box::new(Write::CreateSession(Box::new(record.clone()))),
                vec![event],
            ))
            .await?;
        // Its first socket or message then starts it with no read at all.
        // Not in a cluster: another node may own it first and store
        // messages, and a start here from this record would number its
        // messages from 1 again when it moves back (found by the
        // database-restart test: every seq stored twice).
        if self.inner.cluster.get().is_none()
            && let Ok(tenant) = self.tenant_actor(&record.tenant).await
        {
            let _ = tenant.cast(TenantMsg::Created(Box::new(record.clone())));
        }
        self.inner
            .feeds
            .publish(&record.tenant, || FeedFrame::Conversation {
                change: Change::Created,
                conversation: Box::new(ConversationSummary::from(&record)),
            });
        Ok(record)
    }

    /// The conversations this scope may see, most recently updated first.
    /// The conversations this scope may see (with this status, if given),
    /// most recently updated first.
    pub async fn list_sessions(
        &self,
        scope: &Scope,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        self.known_tenant(&scope.tenant)?;
        self.inner
            .storage
            .list_sessions(
                &scope.tenant,
                scope.client.as_deref(),
                status,
                limit.clamp(1, MAX_LIST),
            )
            .await
    }

    /// One conversation, if it exists and this scope may see it. Another
    /// tenant's or another client's is reported exactly like a missing one.
    pub async fn session(&self, scope: &Scope, session: SessionId) -> Result<SessionRecord> {
        self.known_tenant(&scope.tenant)?;
        self.inner
            .storage
            .load_settled_session(&scope.tenant, session)
            .await?
            .filter(|record| scope.may_see(record))
            .ok_or_else(|| Error::SessionNotFound {
                tenant: scope.tenant.clone(),
                session,
            })
    }

    /// One conversation this scope may see, without first writing the
    /// counters its newest messages owe (they may lag by a moment): for a
    /// caller that only needs to know it may use it.
    pub async fn visible_session(
        &self,
        scope: &Scope,
        session: SessionId,
    ) -> Result<SessionRecord> {
        self.known_tenant(&scope.tenant)?;
        self.inner
            .storage
            .load_session(&scope.tenant, session)
            .await?
            .filter(|record| scope.may_see(record))
            .ok_or_else(|| Error::SessionNotFound {
                tenant: scope.tenant.clone(),
                session,
            })
    }

    /// The newest `limit` messages of a conversation, oldest first.
    pub async fn history(
        &self,
        scope: &Scope,
        session: SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.session(scope, session).await?;
        self.inner
            .storage
            .load_messages(MessageQuery {
                tenant: scope.tenant.clone(),
                session,
                after_seq: 0,
                limit,
                newest: true,
            })
            .await
    }

    /// Merges `patch` into the conversation's context; returns the result once durable.
    pub async fn update_context(
        &self,
        scope: &Scope,
        session: SessionId,
        patch: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let (context, _) = self.update_context_if(scope, session, patch, None).await?;
        Ok(context)
    }

    /// Merges `patch` into the context if it is still at version `if_match`
    /// (when given; else `StaleContext` with the current one); returns the
    /// result and its version once durable.
    pub async fn update_context_if(
        &self,
        scope: &Scope,
        session: SessionId,
        patch: Map<String, Value>,
        if_match: Option<u64>,
    ) -> Result<(Map<String, Value>, u64)> {
        self.call_session(scope, session, |reply| SessionMsg::UpdateContext {
            patch: patch.clone(),
            if_match,
            reply,
        })
        .await
    }

    /// Changes a conversation's title or status against the version the caller
    /// last saw; returns the conversation as it is now. A stale version is
    /// `VersionConflict` with the current one.
    pub async fn update_conversation(
        &self,
        scope: &Scope,
        session: SessionId,
        change: MetaChange,
    ) -> Result<SessionRecord> {
        self.call_session(scope, session, |reply| SessionMsg::UpdateMeta {
            change: change.clone(),
            reply,
        })
        .await?;
        self.session(scope, session).await
    }

    /// Posts a user message as a back end would; answered once it is durable.
    pub async fn post_message(
        &self,
        scope: &Scope,
        session: SessionId,
        message: NewMessage,
    ) -> Result<Ack> {
        self.call_session(scope, session, |reply| SessionMsg::Post {
            message: message.clone(),
            reply,
        })
        .await
    }

    /// Answers the stored user message with this `client_msg_id` again (a
    /// client's "regenerate"); the old answer stays in the log. `Busy` while
    /// an answer is in progress.
    pub async fn answer_again(
        &self,
        scope: &Scope,
        session: SessionId,
        client_msg_id: &str,
    ) -> Result<Ack> {
        self.call_session(scope, session, |reply| SessionMsg::AnswerAgain {
            client_msg_id: client_msg_id.to_owned(),
            reply,
        })
        .await
    }

    /// Posts a user message and hands back, once it is durable, where its
    /// answer will arrive. The answer is generated and stored whether or not
    /// anyone still waits for it.
    pub async fn ask(
        &self,
        scope: &Scope,
        session: SessionId,
        message: NewMessage,
    ) -> Result<(Ack, AnswerReceiver)> {
        self.call_session(scope, session, |reply| SessionMsg::Ask {
            message: message.clone(),
            reply,
        })
        .await
    }

    /// Records a visitor's consent decision on their conversation; durable
    /// when this returns.
    pub async fn record_consent(
        &self,
        scope: &Scope,
        session: SessionId,
        consent: Consent,
    ) -> Result<()> {
        self.call_session(scope, session, |reply| SessionMsg::RecordConsent {
            consent: consent.clone(),
            reply,
        })
        .await
    }

    /// Opens a request for a person to take over the conversation: flags it
    /// and records `handoff.requested`. An open request is returned as it is
    /// (`false`: nothing new was recorded, nobody is notified twice).
    pub async fn request_handoff(
        &self,
        scope: &Scope,
        session: SessionId,
        requested_by: &str,
        reason: Option<String>,
    ) -> Result<(crate::model::Handoff, bool)> {
        let handoff = crate::model::Handoff {
            requested_at: now_timestamp(),
            requested_by: requested_by.to_owned(),
            reason,
        };
        self.call_session(scope, session, |reply| SessionMsg::RequestHandoff {
            handoff: handoff.clone(),
            reply,
        })
        .await
    }

    /// Adds the geolocation of a stored message's address, looked up after
    /// the message was stored. Only messages with an origin are changed.
    pub async fn set_message_geo(
        &self,
        tenant: &TenantId,
        message: MessageId,
        geo: Value,
    ) -> Result<()> {
        self.inner
            .storage
            .write_and_wait(Write::SetMessageGeo {
                tenant: tenant.clone(),
                message,
                geo,
            })
            .await
    }

    /// The contact captured in a conversation, if any.
    pub async fn contact(&self, scope: &Scope, session: SessionId) -> Result<Option<Contact>> {
        self.session(scope, session).await?;
        self.inner
            .storage
            .load_contact(&scope.tenant, session)
            .await
    }

    /// The tenant's newest recorded events (of one conversation, if given), newest first.
    pub async fn events(
        &self,
        tenant: &TenantId,
        conversation: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        self.known_tenant(tenant)?;
        self.inner
            .storage
            .list_events(tenant, conversation, limit.clamp(1, MAX_LIST))
            .await
    }

    /// Deletes a conversation and its log, closing its sockets with a reason.
    pub async fn delete_session(&self, scope: &Scope, session: SessionId) -> Result<()> {
        self.check_owner(scope, session).await?;
        let actor = self.tenant_actor(&scope.tenant).await?;
        reply_of(
            actor
                .call(
                    |reply| TenantMsg::Delete { session, reply },
                    Some(CALL_TIMEOUT),
                )
                .await,
            "tenant",
        )?;
        self.inner
            .feeds
            .publish(&scope.tenant, || FeedFrame::Deleted {
                session_id: session,
            });
        Ok(())
    }

    /// Attaches a socket to a conversation and greets it (in its `locale`,
    /// when the tenant greets by language). With `after_seq`, what was stored
    /// after it is replayed first.
    pub async fn connect(
        &self,
        scope: &Scope,
        session: SessionId,
        after_seq: Option<u64>,
        participant: Participant,
        locale: Option<String>,
    ) -> Result<Attached> {
        self.check_owner(scope, session).await?;
        let joining = Joining::Greeted(locale);
        self.attach(&scope.tenant, session, after_seq, joining, participant)
            .await
    }

    /// Re-attaches a socket whose session restarted, replaying what was stored
    /// after `after_seq`; no second greeting.
    pub async fn reattach(
        &self,
        scope: &Scope,
        session: SessionId,
        after_seq: u64,
        participant: Participant,
    ) -> Result<Attached> {
        self.check_owner(scope, session).await?;
        let joining = Joining::Reattached;
        self.attach(
            &scope.tenant,
            session,
            Some(after_seq),
            joining,
            participant,
        )
        .await
    }

    /// Attaches a listener that is not a socket (an HTTP stream of another
    /// protocol): no greeting and no replay, only the answer in progress
    /// and what happens from now on.
    pub async fn listen(
        &self,
        scope: &Scope,
        session: SessionId,
        participant: Participant,
    ) -> Result<Attached> {
        self.check_owner(scope, session).await?;
        let joining = Joining::Listening;
        self.attach(&scope.tenant, session, None, joining, participant)
            .await
    }

    pub(super) async fn attach(
        &self,
        tenant: &TenantId,
        session: SessionId,
        after_seq: Option<u64>,
        joining: Joining,
        participant: Participant,
    ) -> Result<Attached> {
        self.with_session(tenant, session, |actor| {
            let (participant, joining) = (participant.clone(), joining.clone());
            async move {
                actor
                    .call(
                        |reply| SessionMsg::Attach {
                            after_seq,
                            joining,
                            participant,
                            reply,
                        },
                        Some(CALL_TIMEOUT),
                    )
                    .await
            }
        })
        .await
    }

    /// Test hook: the next `batches` write batches fail, to exercise what a
    /// failed write does to its waiters.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_storage_failures(&self, batches: u32) {
        self.inner.storage.inject_failures(batches);
    }

    /// Test hook: panics the live session's handler, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_session_panic(&self, tenant: &TenantId, session: SessionId) -> Result<()> {
        let actor = self.tenant_actor(tenant).await?;
        actor
            .cast(TenantMsg::InjectSessionPanic(session))
            .map_err(|_| Error::Unavailable("tenant"))
    }
}
