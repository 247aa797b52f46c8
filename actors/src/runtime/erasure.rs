//! Erasure through the runtime: finds every conversation of a tenant that
//! holds something about a person, stops their live sessions (so no copy
//! stays in memory), and erases them in one transaction with a
//! `contact.erased` event that names no one.

use super::handle::{CALL_TIMEOUT, Runtime, WEBCHAT, reply_of};
use crate::error::{Error, Result};
use crate::model::erasure::{Erased, ErasureSubject};
use crate::model::{SessionId, TenantId, events, now_timestamp};
use crate::store::Write;
use crate::tree::tenant::TenantMsg;

impl Runtime {
    /// Erases what the tenant holds about the person `subject` names. An
    /// unknown conversation or webchat id is an error; an email or phone
    /// found nowhere erases nothing (and records no event).
    pub async fn erase(&self, tenant: &TenantId, subject: ErasureSubject) -> Result<Erased> {
        self.known_tenant(tenant)?;
        let sessions = self.conversations_of(tenant, &subject).await?;
        let erased_at = now_timestamp();
        let erased = Erased {
            erased_by: subject.field(),
            conversation_ids: sessions.clone(),
            erased_at: erased_at.clone(),
        };
        if sessions.is_empty() {
            return Ok(erased);
        }
        let event = events::contact_erased(tenant, subject.field(), &sessions, &erased_at);
        let write = Write::WithEvents(
            Box::new(Write::Erase {
                tenant: tenant.clone(),
                sessions: sessions.clone(),
                erased_at,
            }),
            vec![event],
        );
        // No analysis may read these conversations before the erasure and
        // store what it read after it.
        let keys: Vec<_> = sessions.iter().map(|id| (tenant.clone(), *id)).collect();
        self.inner.analyst.hold(keys.clone()).await?;
        let done = self.erase_held(tenant, sessions, write).await;
        self.inner.analyst.release(keys);
        done.map(|()| erased)
    }

    /// The tenant stops the sessions and stores the erasure.
    async fn erase_held(
        &self,
        tenant: &TenantId,
        sessions: Vec<SessionId>,
        write: Write,
    ) -> Result<()> {
        let actor = self.tenant_actor(tenant).await?;
        reply_of(
            actor
                .call(
                    |reply| TenantMsg::Erase {
                        sessions,
                        write: Box::new(write),
                        reply,
                    },
                    Some(CALL_TIMEOUT),
                )
                .await,
            "tenant",
        )
    }

    async fn conversations_of(
        &self,
        tenant: &TenantId,
        subject: &ErasureSubject,
    ) -> Result<Vec<SessionId>> {
        let storage = &self.inner.storage;
        match subject {
            ErasureSubject::Conversation(session) => {
                match storage.load_session(tenant, *session).await? {
                    Some(_) => Ok(vec![*session]),
                    None => Err(Error::SessionNotFound {
                        tenant: tenant.clone(),
                        session: *session,
                    }),
                }
            }
            ErasureSubject::WebchatSession(id) => {
                match storage.find_external(tenant, WEBCHAT, id).await? {
                    Some(record) => Ok(vec![record.id]),
                    None => Err(Error::UnknownExternal {
                        channel: WEBCHAT,
                        id: id.clone(),
                    }),
                }
            }
            ErasureSubject::Email(value) | ErasureSubject::Phone(value) => {
                storage
                    .conversations_mentioning(tenant, subject.field(), value)
                    .await
            }
        }
    }
}
