//! The session's part that owns who is attached: each socket's bounded
//! outbound queue, the `Connection` actor behind it and who is on it. A
//! frame is serialised once and the same bytes go to every queue; a queue
//! that is full gets its socket closed as a slow consumer, never grown.

use std::collections::HashMap;

use ractor::{ActorCell, ActorId};

use crate::conversation::connection::ConnId;
use crate::conversation::feed::PresenceCount;
use crate::conversation::outbound::{CloseReason, OutboundSender, SendError};
use crate::model::Participant;
use crate::model::protocol::Frame;

struct Subscriber {
    outbound: OutboundSender,
    /// The socket's `Connection` actor, stopped when the socket is dropped.
    connection: ActorCell,
    participant: Participant,
}

#[derive(Default)]
pub struct Subscribers {
    by_conn: HashMap<ConnId, Subscriber>,
    by_actor: HashMap<ActorId, ConnId>,
}

impl Subscribers {
    pub fn add(
        &mut self,
        conn: ConnId,
        outbound: OutboundSender,
        connection: ActorCell,
        participant: Participant,
    ) {
        self.by_actor.insert(connection.get_id(), conn);
        self.by_conn.insert(
            conn,
            Subscriber {
                outbound,
                connection,
                participant,
            },
        );
    }

    /// Forgets a socket; who was on it, if it was attached.
    pub fn remove(&mut self, conn: ConnId) -> Option<Participant> {
        self.by_conn
            .remove(&conn)
            .map(|subscriber| subscriber.participant)
    }

    /// The socket whose `Connection` actor this is, if it was one.
    pub fn conn_of_actor(&mut self, actor: ActorId) -> Option<ConnId> {
        self.by_actor.remove(&actor)
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    /// Queues a frame for one socket; a full queue closes it.
    pub fn send_to(&mut self, conn: ConnId, frame: Frame) {
        let Some(subscriber) = self.by_conn.get(&conn) else {
            return;
        };
        if let Err(error) = subscriber.outbound.try_send(frame) {
            self.drop_subscriber(conn, error);
        }
    }

    /// Queues the same bytes for every socket except `except`.
    pub fn broadcast(&mut self, frame: &Frame, except: Option<ConnId>) {
        let dropped: Vec<(ConnId, SendError)> = self
            .by_conn
            .iter()
            .filter(|(conn, _)| Some(**conn) != except)
            .filter_map(|(conn, subscriber)| {
                subscriber
                    .outbound
                    .try_send(frame.clone())
                    .err()
                    .map(|error| (*conn, error))
            })
            .collect();
        for (conn, error) in dropped {
            self.drop_subscriber(conn, error);
        }
    }

    /// Who is attached: visitors counted, staff by name.
    pub fn presence(&self) -> PresenceCount {
        let mut visitors = 0;
        let mut staff = Vec::new();
        for subscriber in self.by_conn.values() {
            match &subscriber.participant {
                Participant::Visitor => visitors += 1,
                Participant::Staff { name } => staff.push(name.clone()),
                Participant::Reader => {}
            }
        }
        staff.sort();
        staff.dedup();
        PresenceCount { visitors, staff }
    }

    /// Closes every socket with `reason` and forgets them.
    pub fn close_all(&mut self, reason: CloseReason) {
        for subscriber in self.by_conn.values() {
            subscriber.outbound.finish(reason.clone());
            subscriber.connection.stop(None);
        }
        self.by_conn.clear();
    }

    fn drop_subscriber(&mut self, conn: ConnId, error: SendError) {
        if let Some(subscriber) = self.by_conn.remove(&conn) {
            if error == SendError::Full {
                tracing::warn!(conn, "closing a slow consumer");
                crate::metrics::slow_consumer_closed();
                subscriber.outbound.close(CloseReason::slow_consumer());
            }
            subscriber.connection.stop(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::outbound::outbound_queue;
    use crate::conversation::session::testing::stand_in_actor;
    use crate::model::protocol::ServerFrame;

    #[tokio::test]
    async fn a_broadcast_skips_its_sender_and_reaches_everyone_else() {
        let mut subscribers = Subscribers::default();
        let mut queues = Vec::new();
        for conn in 1..=3 {
            let (outbound, receiver) = outbound_queue(8, 1 << 20);
            subscribers.add(conn, outbound, stand_in_actor().await, Participant::Visitor);
            queues.push(receiver);
        }
        subscribers.broadcast(&ServerFrame::Typing {}.encode(), Some(1));
        assert!(
            queues[0].try_next_frame().is_none(),
            "the sender hears nothing"
        );
        for queue in &mut queues[1..] {
            assert!(queue.try_next_frame().is_some());
        }
    }

    #[tokio::test]
    async fn a_full_queue_closes_only_its_own_socket() {
        let mut subscribers = Subscribers::default();
        let (slow, slow_queue) = outbound_queue(1, 1 << 20);
        let (fast, mut fast_queue) = outbound_queue(8, 1 << 20);
        subscribers.add(1, slow, stand_in_actor().await, Participant::Visitor);
        let staff = Participant::Staff { name: "Ana".into() };
        subscribers.add(2, fast, stand_in_actor().await, staff);
        let frame = ServerFrame::Typing {}.encode();
        subscribers.broadcast(&frame, None);
        subscribers.broadcast(&frame, None);
        let presence = subscribers.presence();
        assert_eq!(
            (presence.visitors, presence.staff),
            (0, vec!["Ana".to_owned()])
        );
        assert_eq!(
            slow_queue.close_reason(),
            Some(CloseReason::slow_consumer())
        );
        assert!(fast_queue.close_reason().is_none());
        assert!(fast_queue.try_next_frame().is_some());
        assert!(fast_queue.try_next_frame().is_some());
    }
}
