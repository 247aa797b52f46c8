//! Builders for the session parts' unit tests: stored messages, and a
//! stand-in actor where a part holds an actor only to stop it.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use crate::model::{
    MessageId, MessageStatus, Role, SessionId, StoredMessage, TenantId, now_timestamp,
};

/// A stored message of one test conversation.
pub fn stored(seq: u64, role: Role, content: &str) -> StoredMessage {
    StoredMessage {
        id: MessageId::new(),
        tenant: TenantId("t".into()),
        session_id: SessionId::default(),
        seq,
        role,
        content: content.into(),
        status: MessageStatus::Complete,
        client_msg_id: None,
        created_at: now_timestamp(),
        no_reply: false,
        direction: role.direction(),
        author: None,
        origin: None,
        agent: None,
        tool_calls: Vec::new(),
    }
}

struct StandIn;

impl Actor for StandIn {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// An actor that does nothing but can be stopped.
pub async fn stand_in_actor() -> ActorCell {
    let (actor, _) = Actor::spawn(None, StandIn, ()).await.expect("spawns");
    actor.get_cell()
}
