//! [`WebhooksHandle`]: how the runtime reaches the webhook actor.

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use super::actor::{CALL_TIMEOUT, WebhooksMsg};
use crate::error::{Error, Result};
use crate::supervision::Slot;

/// The typed way to reach the webhook actor; `Root` re-points it when it
/// restarts the actor.
#[derive(Clone)]
pub struct WebhooksHandle {
    actor: Slot<WebhooksMsg>,
}

impl WebhooksHandle {
    pub(crate) fn new(actor: ActorRef<WebhooksMsg>) -> Self {
        WebhooksHandle {
            actor: Slot::new(actor),
        }
    }

    pub(crate) fn replace(&self, actor: ActorRef<WebhooksMsg>) {
        self.actor.replace(actor);
    }

    pub(crate) fn actor(&self) -> ActorRef<WebhooksMsg> {
        self.actor.get()
    }

    pub async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> WebhooksMsg,
    ) -> Result<T> {
        match self.actor().call(build, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => Ok(result),
            _ => Err(Error::Unavailable("webhooks")),
        }
    }
}
