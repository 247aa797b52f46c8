//! The agent console's calls: the conversations staff see, the tenant's
//! live feed, and taking a conversation over or handing it back.

use tokio::sync::broadcast;

use ractor::rpc::CallResult;

use super::handle::{CALL_TIMEOUT, Runtime};
use crate::conversation::feed::ConversationSummary;
use crate::conversation::session::SessionMsg;
use crate::error::Result;
use crate::model::protocol::Frame;
use crate::model::{Attendant, Scope, SessionId, TenantId};

impl Runtime {
    /// The tenant's conversations as the agent console lists them, most
    /// recently updated first; a live one says who is connected and its last
    /// message.
    pub async fn console_conversations(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>> {
        let records = self
            .list_sessions(&Scope::tenant(tenant.clone()), None, limit)
            .await?;
        let mut summaries = Vec::with_capacity(records.len());
        for record in &records {
            let live = self
                .inner
                .registry
                .get(&(tenant.clone(), record.id))
                .map(|entry| entry.value().clone());
            let summary = match live {
                Some(actor) => match actor
                    .call(|reply| SessionMsg::Summary { reply }, Some(CALL_TIMEOUT))
                    .await
                {
                    Ok(CallResult::Success(summary)) => summary,
                    _ => ConversationSummary::from(record),
                },
                None => ConversationSummary::from(record),
            };
            summaries.push(summary);
        }
        Ok(summaries)
    }

    /// A receiver of the tenant's live feed (see `feed.rs`).
    pub fn console_feed(&self, tenant: &TenantId) -> Result<broadcast::Receiver<Frame>> {
        self.known_tenant(tenant)?;
        Ok(self.inner.feeds.subscribe(tenant))
    }

    /// A member of staff takes the conversation over (its agent becomes
    /// `human`); durable when this returns.
    pub async fn take_over(
        &self,
        tenant: &TenantId,
        session: SessionId,
        attendant: Attendant,
    ) -> Result<Attendant> {
        self.call_session(&Scope::tenant(tenant.clone()), session, |reply| {
            SessionMsg::TakeOver {
                attendant: attendant.clone(),
                reply,
            }
        })
        .await
    }

    /// Hands the conversation back to the AI; durable when this returns.
    pub async fn hand_back(&self, tenant: &TenantId, session: SessionId, by: &str) -> Result<()> {
        self.call_session(&Scope::tenant(tenant.clone()), session, |reply| {
            SessionMsg::HandBack {
                by: by.to_owned(),
                reply,
            }
        })
        .await
    }
}
