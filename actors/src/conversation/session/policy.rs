//! Double texting: what a visitor's message does while the answer to their
//! last one is still being written. `queue` answers each in turn;
//! `interrupt` stops the answer in progress (kept as `interrupted`) and
//! answers everything since as one turn; `reject` refuses the message
//! (`busy`, nothing stored); `merge` waits a short window for more
//! messages, also dropping an answer still waiting for its first token,
//! and answers them all as one turn.

use std::time::Duration;

use ractor::ActorRef;

use super::SessionMsg;
use super::log::ack_of;
use super::state::SessionState;
use crate::agent::actor::AgentMsg;
use crate::error::{Error, Result};
use crate::model::{Ack, DoubleTexting, NewMessage, Role, StoredMessage};

impl SessionState {
    /// The conversation's policy, or else its tenant's.
    pub fn double_texting(&self) -> DoubleTexting {
        self.facts
            .double_texting
            .unwrap_or(self.settings.double_texting.policy)
    }

    /// Under `reject`: a message that would be answered while an answer is
    /// queued or in progress.
    pub fn refuses_while_busy(&self, message: &NewMessage) -> bool {
        self.double_texting() == DoubleTexting::Reject
            && message.role == Role::User
            && message.respond
            && self.provider.answers()
            && !self.attendance.is_human()
            && !self.answering.is_idle()
    }

    /// A visitor's message is durable and wants an answer.
    pub fn question_stored(&mut self, myself: &ActorRef<SessionMsg>, message: StoredMessage) {
        let question = message.id;
        self.answering.enqueue(message);
        match self.double_texting() {
            DoubleTexting::Interrupt => self.interrupt_for(question),
            DoubleTexting::Merge => return self.merge_later(myself),
            DoubleTexting::Queue | DoubleTexting::Reject => {}
        }
        self.maybe_start_generation();
    }

    /// Stops the answer in progress (unless it answers `question`): it is
    /// stored as `interrupted`, and the next turn answers what came since.
    fn interrupt_for(&mut self, question: crate::model::MessageId) {
        let streaming = self.answering.streaming_id();
        let other = self
            .answering
            .current()
            .is_some_and(|answer| answer.question != question && answer.held.is_none());
        if let (Some(message_id), true, Some(agent)) = (streaming, other, &self.agent) {
            let _ = agent.cast(AgentMsg::Cancel { message_id });
        }
    }

    /// Opens (or restarts) the merge window; an answer that has not yet sent
    /// anything is dropped and its questions wait with the new one.
    fn merge_later(&mut self, myself: &ActorRef<SessionMsg>) {
        if let Some(message_id) = self.answering.discard_unstarted()
            && let Some(agent) = &self.agent
        {
            let _ = agent.cast(AgentMsg::Cancel { message_id });
        }
        let token = self.answering.open_merge_window();
        let window = Duration::from_millis(self.settings.double_texting.merge_window_ms);
        myself.send_after(window, move || SessionMsg::MergeDue { token });
    }

    /// A stored user message answered again: queued as a new question (the
    /// old answer stays in the log). Refused while an answer is in progress.
    pub async fn answer_again(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        client_msg_id: &str,
    ) -> Result<Ack> {
        let message = match self.log.find_client(client_msg_id) {
            Some(message) => Some(message),
            None => {
                let (tenant, session) = (&self.facts.tenant, self.facts.id);
                self.storage
                    .find_client_message(tenant, session, client_msg_id)
                    .await?
            }
        };
        let message = message.ok_or_else(|| {
            Error::InvalidInput(format!("no message `{client_msg_id}` to answer again"))
        })?;
        if !self.wants_answer(&message) {
            return Err(Error::Conflict(
                "this message is not answered by the agent (a person took over, or it asked for no reply)".into(),
            ));
        }
        if !self.answering.is_idle() {
            return Err(Error::Busy);
        }
        let ack = ack_of(&message);
        self.ensure_agent(myself).await;
        self.answering.enqueue(message);
        self.maybe_start_generation();
        Ok(ack)
    }

    /// The merge window `token` ended: the turn begins, unless a newer
    /// message restarted the window or a cancel dropped it.
    pub fn merge_due(&mut self, token: u64) {
        if self.answering.close_merge_window(token) {
            self.maybe_start_generation();
        }
    }
}
