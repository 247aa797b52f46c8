//! Builders for the session parts' unit tests: stored messages, and a
//! stand-in actor where a part holds an actor only to stop it.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use crate::model::{Role, SessionId, StoredMessage, TenantId};

/// A stored message of one test conversation.
pub fn stored(seq: u64, role: Role, content: &str) -> StoredMessage {
    let (tenant, session) = (TenantId("t".into()), SessionId::default());
    StoredMessage::new(tenant, session, seq, role, content.into())
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
