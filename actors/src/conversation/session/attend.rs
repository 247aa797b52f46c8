//! Who attends the conversation, as the session acts on it: requests for a
//! person (`handoff.requested`), take-over and hand-back (stored with their
//! `conversation.updated` event, announced as `system` messages), and the
//! `presence` frames and console feed that follow each change.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use super::SessionMsg;
use super::attendance::{Before, Request, TakeOver};
use super::log::Asker;
use super::state::SessionState;
use crate::agent::actor::AgentMsg;
use crate::conversation::feed::{Change, FeedFrame};
use crate::error::{Error, Result};
use crate::model::protocol::{Frame, ServerFrame};
use crate::model::{Attendant, Handoff, NewMessage, Role, events};
use crate::store::{Durable, Write};

/// How long joins and leaves are gathered into one `presence` frame. Each
/// frame says who is here now, so one frame for many changes loses
/// nothing; a frame per change sent every socket of a crowd that arrived or
/// left together a frame per arrival (1,000 sockets joining one
/// conversation made some 500,000 frames).
pub const PRESENCE_GATHER: Duration = Duration::from_millis(100);

impl SessionState {
    /// A handoff or take-over failed to store: back to how it was, and
    /// everyone is told.
    pub fn attendance_not_stored(&mut self, before: Before) {
        self.attendance.restore(before);
        self.attendance_changed(Change::Presence);
    }

    /// Opens a request for a person, unless one is open or a person is here
    /// already (then nobody is notified twice). The flag, `handoff.requested`
    /// and the console's highlight all follow from the one durable write.
    pub fn request_handoff(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        handoff: Handoff,
        reply: Option<RpcReplyPort<Result<(Handoff, bool)>>>,
    ) {
        if let Request::Unchanged(current) = self.attendance.request(handoff.clone()) {
            if let Some(reply) = reply {
                let _ = reply.send(Ok((current, false)));
            }
            return;
        }
        let event = events::handoff_requested(&self.event_facts(), &handoff);
        let session = myself.clone();
        self.storage.write(
            Write::WithEvents(Box::new(self.attendance_write()), vec![event]),
            Durable::new(move |outcome| {
                if let Err(error) = &outcome {
                    tracing::error!(%error, "handoff request not stored");
                    let before = (None, None);
                    let _ = session.cast(SessionMsg::AttendanceNotStored { before });
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome.map(|()| (handoff, true)));
                }
            }),
        );
        self.attendance_changed(Change::HandoffRequested);
    }

    /// The write that stores who attends the conversation now.
    fn attendance_write(&self) -> Write {
        Write::SetAttendance {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            handoff: self.attendance.handoff.clone(),
            human: self.attendance.human.clone(),
        }
    }

    /// A member of staff takes over: the AI stops now (queued questions are
    /// the person's to answer, an answer in progress is cut short and kept as
    /// `interrupted`), the change is stored and announced.
    pub async fn take_over(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        attendant: Attendant,
        reply: RpcReplyPort<Result<Attendant>>,
    ) {
        if self.terminating && !self.attendance.is_human() {
            let _ = reply.send(Err(Error::Unavailable("session")));
            return;
        }
        let before = match self.attendance.take_over(attendant.clone()) {
            Ok(TakeOver::Taken(before)) => before,
            Ok(TakeOver::AlreadyYours(current)) => {
                let _ = reply.send(Ok(current));
                return;
            }
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        self.answering.clear_queue();
        if let (Some(message_id), Some(agent)) = (self.answering.streaming_id(), &self.agent) {
            let _ = agent.cast(AgentMsg::Cancel { message_id });
        }
        self.store_attendance(myself, before, move |outcome| {
            let _ = reply.send(outcome.map(|()| attendant));
        });
        let name = self
            .attendance
            .human
            .as_ref()
            .map(|human| human.name.clone());
        let text = format!(
            "{} joined the conversation",
            name.as_deref().unwrap_or("A person")
        );
        self.announce(myself, text, name).await;
        self.attendance_changed(Change::TakenOver);
    }

    /// The person hands the conversation back to the AI, which answers the
    /// visitor's next message.
    pub async fn hand_back(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        by: String,
        reply: RpcReplyPort<Result<()>>,
    ) {
        let before = match self.attendance.hand_back() {
            Ok(before) => before,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        self.store_attendance(myself, before, move |outcome| {
            let _ = reply.send(outcome);
        });
        let text = format!("{by} handed the conversation back to the assistant");
        self.announce(myself, text, Some(by)).await;
        self.attendance_changed(Change::HandedBack);
    }

    /// Stores the current attendance with its `conversation.updated` event; on
    /// failure the session goes back to `before`.
    fn store_attendance(
        &self,
        myself: &ActorRef<SessionMsg>,
        before: Before,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let facts = self.event_facts();
        let mut recorded = vec![events::conversation_updated(&facts, &["agent"], None)];
        // A take-over is also kept as its own event, which statistics count.
        if let Some(human) = &self.attendance.human {
            recorded.push(events::handoff_taken(&facts, human));
        }
        let session = myself.clone();
        self.storage.write(
            Write::WithEvents(Box::new(self.attendance_write()), recorded),
            Durable::new(move |outcome| {
                if let Err(error) = &outcome {
                    tracing::error!(%error, "take-over or hand-back not stored");
                    let _ = session.cast(SessionMsg::AttendanceNotStored { before });
                }
                done(outcome);
            }),
        );
    }

    /// Stores a `system` message that every subscriber (and the history) shows.
    async fn announce(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        content: String,
        author: Option<String>,
    ) {
        let message = NewMessage {
            role: Role::System,
            respond: false,
            author,
            ..NewMessage::user(content)
        };
        self.post(myself, message, Asker::Session).await;
    }

    /// The `presence` frame: who is connected, and who answers.
    fn presence_frame(&self) -> Frame {
        let presence = self.subscribers.presence();
        ServerFrame::Presence {
            visitors: presence.visitors,
            staff: presence.staff,
            agent: self.attendance.agent_presence(),
            handoff_requested: self.attendance.handoff.is_some(),
        }
        .encode()
    }

    /// Someone joined or left: every subscriber is told who is here once
    /// the joins and leaves of the next [`PRESENCE_GATHER`] are in.
    pub fn presence_changed(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.presence_due || self.terminating {
            return;
        }
        self.presence_due = true;
        myself.send_after(PRESENCE_GATHER, || SessionMsg::PresenceDue);
    }

    pub fn presence_due(&mut self) {
        if std::mem::take(&mut self.presence_due) {
            self.attendance_changed(Change::Presence);
        }
    }

    /// Tells every subscriber who is here now, and the console what changed.
    pub fn attendance_changed(&mut self, change: Change) {
        if self.terminating {
            return;
        }
        let frame = self.presence_frame();
        self.broadcast(&frame);
        self.publish(change);
    }

    /// Tells the tenant's consoles, if any listens, how this conversation changed.
    pub fn publish(&self, change: Change) {
        self.feeds
            .publish(&self.facts.tenant, || FeedFrame::Conversation {
                change,
                conversation: Box::new(self.summary()),
            });
    }
}
