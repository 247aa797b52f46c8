//! The tenant-wide live feed that the agent console listens to: new
//! conversations, new messages, handoff requests, take-overs and who is
//! present, as one JSON frame per change.
//!
//! Not an actor: sessions (and the runtime, for creation and deletion) publish
//! into one `tokio::sync::broadcast` channel per tenant, made on first
//! subscription, and each console socket reads its own receiver. A console
//! that falls more than [`FEED_CAPACITY`] frames behind is told so (the edge
//! sends `feed_lagged`) and reloads the list over REST: the feed is a view of
//! the database, never the record, so nothing is lost by dropping it.
//!
//! In a cluster the feed spans the nodes: the cluster installs a
//! [`FeedPeers`], which says whether consoles of a tenant listen on other
//! nodes and carries each frame there (`cluster/feeds.rs`); what arrives
//! from a peer is handed to this node's consoles with [`Feeds::deliver`].

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::protocol::Frame;
use crate::model::{Attendant, Handoff, Role, SessionId, SessionRecord, StoredMessage, TenantId};

/// Frames a console may fall behind before it must reload.
pub const FEED_CAPACITY: usize = 256;
/// The longest message preview in a summary, in characters.
const PREVIEW_CHARS: usize = 200;

/// Carries one frame (its JSON) to consoles on other nodes.
pub type FeedRoute = Box<dyn FnOnce(&[u8]) + Send>;

/// The other nodes' consoles, in a cluster.
pub trait FeedPeers: Send + Sync {
    /// This node has consoles of `tenant` now: peers are to send it frames.
    fn listening(&self, tenant: &TenantId);
    /// If consoles of `tenant` listen on other nodes, what carries a frame
    /// to them (found once per frame).
    fn route(&self, tenant: &TenantId) -> Option<FeedRoute>;
}

/// Every tenant's feed; cheap to clone, shared by the runtime and its sessions.
#[derive(Clone, Default)]
pub struct Feeds {
    local: Arc<DashMap<TenantId, broadcast::Sender<Frame>>>,
    peers: Arc<OnceLock<Arc<dyn FeedPeers>>>,
}

impl Feeds {
    /// A receiver of the tenant's feed from now on.
    pub fn subscribe(&self, tenant: &TenantId) -> broadcast::Receiver<Frame> {
        if let Some(peers) = self.peers.get() {
            peers.listening(tenant);
        }
        self.local
            .entry(tenant.clone())
            .or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe()
    }

    /// Sends to the tenant's consoles, on this node and (in a cluster) on
    /// the others. The frame is built only if one listens: otherwise this
    /// costs a map lookup or two.
    pub fn publish(&self, tenant: &TenantId, frame: impl FnOnce() -> FeedFrame) {
        let here = self.listeners(tenant);
        let elsewhere = self.peers.get().and_then(|peers| peers.route(tenant));
        if !here && elsewhere.is_none() {
            return;
        }
        let text = serde_json::to_vec(&frame()).expect("feed frames serialise");
        if let Some(send) = elsewhere {
            send(&text);
        }
        if here {
            self.deliver(tenant, text);
        }
    }

    /// Hands a frame to this node's consoles of `tenant`; false if none
    /// listens (a peer then stops sending).
    pub fn deliver(&self, tenant: &TenantId, text: Vec<u8>) -> bool {
        match self.local.get(tenant) {
            Some(sender) if sender.receiver_count() > 0 => {
                let _ = sender.send(Frame::from_json(text));
                true
            }
            _ => false,
        }
    }

    /// Whether consoles of `tenant` listen on this node.
    pub fn listeners(&self, tenant: &TenantId) -> bool {
        self.local
            .get(tenant)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Makes the feed span the cluster (once, when the cluster starts).
    pub fn span(&self, peers: Arc<dyn FeedPeers>) {
        let _ = self.peers.set(peers);
    }
}

/// One change, as a console receives it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedFrame {
    /// A conversation is new or changed: `change` says how.
    Conversation {
        change: Change,
        conversation: Box<ConversationSummary>,
    },
    /// A conversation was deleted.
    Deleted { session_id: SessionId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Message,
    HandoffRequested,
    TakenOver,
    HandedBack,
    Presence,
}

/// A conversation as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub session_id: SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// An open request for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// The person who took it over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human: Option<Attendant>,
    /// Who is connected now; `None` when the conversation is not live on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Preview>,
}

impl From<&SessionRecord> for ConversationSummary {
    fn from(record: &SessionRecord) -> Self {
        ConversationSummary {
            session_id: record.id,
            title: record.title.clone(),
            status: record.status.clone(),
            channel: record.channel.clone(),
            created_at: record.created_at.clone(),
            updated_at: record.updated_at.clone(),
            handoff: record.handoff.clone(),
            human: record.human.clone(),
            presence: None,
            last_message: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCount {
    pub visitors: usize,
    /// The names of the staff watching.
    pub staff: Vec<String>,
}

/// The start of a message, for the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub seq: u64,
    pub role: Role,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub created_at: String,
}

impl From<&StoredMessage> for Preview {
    fn from(message: &StoredMessage) -> Self {
        let content = match message.content.char_indices().nth(PREVIEW_CHARS) {
            Some((end, _)) => format!("{}…", &message.content[..end]),
            None => message.content.clone(),
        };
        Preview {
            seq: message.seq,
            role: message.role,
            content,
            author: message.author.clone(),
            created_at: message.created_at.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_cut_on_a_character_boundary() {
        let content = "ñ".repeat(PREVIEW_CHARS + 5);
        let (tenant, session) = (TenantId("acme".into()), SessionId::new());
        let message = StoredMessage::new(tenant, session, 1, Role::User, content);
        let preview = Preview::from(&message);
        assert_eq!(preview.content.chars().count(), PREVIEW_CHARS + 1);
        assert!(preview.content.ends_with('…'));
    }
}
