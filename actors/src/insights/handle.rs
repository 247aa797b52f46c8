//! [`AnalystHandle`]: how the runtime reaches the Analyst; `Root` re-points
//! it when it restarts the actor.

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;

use super::actor::{AnalystMsg, Key};
use crate::error::{Error, Result};
use crate::model::insight::Insight;
use crate::supervision::Slot;

/// How long a caller waits for an analysis (the model's own timeout comes first).
const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct AnalystHandle {
    actor: Slot<AnalystMsg>,
}

impl AnalystHandle {
    pub(crate) fn new(actor: ActorRef<AnalystMsg>) -> Self {
        AnalystHandle {
            actor: Slot::new(actor),
        }
    }

    pub(crate) fn replace(&self, actor: ActorRef<AnalystMsg>) {
        self.actor.replace(actor);
    }

    pub(crate) fn actor(&self) -> ActorRef<AnalystMsg> {
        self.actor.get()
    }

    /// Analyses the conversation now and waits for its insights.
    pub async fn analyze(&self, key: Key) -> Result<Insight> {
        let actor = self.actor();
        let asked = actor.call(
            |reply| AnalystMsg::Analyze {
                key,
                reply: Some(reply),
            },
            Some(ANALYSIS_TIMEOUT),
        );
        match asked.await {
            Ok(CallResult::Success(outcome)) => outcome,
            _ => Err(Error::Unavailable("analysis")),
        }
    }

    /// Stops analyses of these conversations until `release`.
    pub async fn hold(&self, keys: Vec<Key>) -> Result<()> {
        let actor = self.actor();
        let asked = actor.call(
            |reply| AnalystMsg::Hold { keys, reply },
            Some(ANALYSIS_TIMEOUT),
        );
        match asked.await {
            Ok(CallResult::Success(())) => Ok(()),
            _ => Err(Error::Unavailable("analysis")),
        }
    }

    pub fn release(&self, keys: Vec<Key>) {
        let _ = self.actor().cast(AnalystMsg::Release(keys));
    }
}
