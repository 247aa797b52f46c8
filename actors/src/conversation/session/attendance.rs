//! The session's part that owns who attends the conversation: an open
//! request for a person (`handoff.requested`), and the person who took it
//! over (then the AI is silent). Decides; the session stores and announces.

use crate::error::{Error, Result};
use crate::model::protocol::AgentPresence;
use crate::model::{Attendant, Handoff};

/// Attendance as it was, to go back to if storing a change fails.
pub type Before = (Option<Handoff>, Option<Attendant>);

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attendance {
    pub handoff: Option<Handoff>,
    pub human: Option<Attendant>,
}

/// What a request for a person comes to.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// A new request: store it and tell the console.
    Opened,
    /// Nothing new to do: the open request, or (a person is here) the one asked.
    Unchanged(Handoff),
}

/// What a take-over comes to.
#[derive(Debug, PartialEq)]
pub enum TakeOver {
    /// This person holds it now: stop the AI, store and announce.
    Taken(Before),
    /// The same person holds it already: nothing changes.
    AlreadyYours(Attendant),
}

impl Attendance {
    /// Whether a person answers instead of the AI.
    pub fn is_human(&self) -> bool {
        self.human.is_some()
    }

    /// Opens a request for a person, unless one is open or a person is here
    /// already: then nobody is notified twice.
    pub fn request(&mut self, handoff: Handoff) -> Request {
        if let Some(open) = &self.handoff {
            return Request::Unchanged(open.clone());
        }
        if self.human.is_some() {
            return Request::Unchanged(handoff);
        }
        self.handoff = Some(handoff);
        Request::Opened
    }

    /// A member of staff takes over; an open request is served by it. While
    /// another person holds the conversation: `AlreadyTakenOver`.
    pub fn take_over(&mut self, attendant: Attendant) -> Result<TakeOver> {
        if let Some(current) = &self.human {
            if current.key_id == attendant.key_id {
                return Ok(TakeOver::AlreadyYours(current.clone()));
            }
            return Err(Error::AlreadyTakenOver {
                by: current.name.clone(),
            });
        }
        let before = (self.handoff.take(), None);
        self.human = Some(attendant);
        Ok(TakeOver::Taken(before))
    }

    /// The person hands the conversation back to the AI; nobody holds it: `NotTakenOver`.
    pub fn hand_back(&mut self) -> Result<Before> {
        let human = self.human.take().ok_or(Error::NotTakenOver)?;
        Ok((self.handoff.clone(), Some(human)))
    }

    /// Back to how it was before a change that could not be stored.
    pub fn restore(&mut self, (handoff, human): Before) {
        self.handoff = handoff;
        self.human = human;
    }

    /// Who answers, for `presence` frames.
    pub fn agent_presence(&self) -> AgentPresence {
        match &self.human {
            Some(human) => AgentPresence {
                kind: "human".into(),
                name: Some(human.name.clone()),
            },
            None => AgentPresence {
                kind: "ai".into(),
                name: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(name: &str) -> Attendant {
        Attendant {
            name: name.into(),
            key_id: format!("key-{name}"),
            since: "2026-11-26T00:00:00.000000Z".into(),
        }
    }

    fn asked(by: &str) -> Handoff {
        Handoff {
            requested_at: "2026-11-26T00:00:00.000000Z".into(),
            requested_by: by.into(),
            reason: None,
        }
    }

    #[test]
    fn a_take_over_serves_the_open_request_and_a_second_person_is_refused() {
        let mut attendance = Attendance::default();
        assert_eq!(attendance.request(asked("visitor")), Request::Opened);
        let taken = attendance.take_over(staff("Ana")).unwrap();
        assert_eq!(taken, TakeOver::Taken((Some(asked("visitor")), None)));
        assert!(attendance.handoff.is_none(), "the request is served");
        assert_eq!(
            attendance.take_over(staff("Ana")).unwrap(),
            TakeOver::AlreadyYours(staff("Ana"))
        );
        assert!(matches!(
            attendance.take_over(staff("Luis")),
            Err(Error::AlreadyTakenOver { by }) if by == "Ana"
        ));
        assert_eq!(attendance.agent_presence().name.as_deref(), Some("Ana"));
    }

    #[test]
    fn nobody_is_asked_for_twice_and_not_while_a_person_is_here() {
        let mut attendance = Attendance::default();
        assert_eq!(attendance.request(asked("visitor")), Request::Opened);
        assert_eq!(
            attendance.request(asked("agent")),
            Request::Unchanged(asked("visitor"))
        );
        attendance.take_over(staff("Ana")).unwrap();
        assert_eq!(
            attendance.request(asked("agent")),
            Request::Unchanged(asked("agent"))
        );
        assert!(attendance.handoff.is_none());
    }

    #[test]
    fn a_hand_back_returns_to_the_ai_and_a_failed_store_restores_the_person() {
        let mut attendance = Attendance::default();
        assert!(matches!(attendance.hand_back(), Err(Error::NotTakenOver)));
        attendance.take_over(staff("Ana")).unwrap();
        let before = attendance.hand_back().unwrap();
        assert!(!attendance.is_human());
        assert_eq!(attendance.agent_presence().kind, "ai");
        attendance.restore(before);
        assert_eq!(attendance.human, Some(staff("Ana")));
    }
}
