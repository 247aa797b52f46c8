//! A connection's outbound queue: bounded by frames and by bytes, with two
//! ways to close: [`OutboundSender::close`] jumps the queue (a slow consumer
//! gets no more), [`OutboundSender::finish`] closes after what is queued (a
//! deleted session or a shutdown still delivers its last `done`).
//!
//! The session pushes each frame with [`OutboundSender::try_send`] and never
//! waits: a subscriber that stops reading fills its queue, gets closed with a
//! reason, and the others keep receiving. ractor mailboxes are unbounded, so
//! this queue is where back-pressure lives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, watch};

use crate::model::protocol::Frame;

/// Why the server closed a socket: a WebSocket close code and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    /// The client did not read fast enough (policy violation, as Centrifugo does).
    pub fn slow_consumer() -> Self {
        CloseReason {
            code: 1008,
            reason: "slow consumer: outbound queue full".into(),
        }
    }

    pub fn session_deleted() -> Self {
        CloseReason {
            code: 4004,
            reason: "session deleted".into(),
        }
    }

    /// The conversation's personal data was erased: a socket must reload.
    pub fn session_erased() -> Self {
        CloseReason {
            code: 4010,
            reason: "conversation erased".into(),
        }
    }

    pub fn shutting_down() -> Self {
        CloseReason {
            code: 1001,
            reason: "server shutting down".into(),
        }
    }

    /// This node lost its lease on the conversation (cluster): reconnect, to
    /// any node, and resume with `after_seq`.
    pub fn owner_lost() -> Self {
        CloseReason {
            code: 1012,
            reason: "this node no longer owns the conversation: reconnect".into(),
        }
    }

    pub fn idle_timeout() -> Self {
        CloseReason {
            code: 1001,
            reason: "no traffic from the client within the keepalive timeout".into(),
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The queue is at its frame or byte limit.
    Full,
    /// The socket is closed or closing.
    Closed,
}

/// What travels through the queue: frames, and at most one graceful close.
enum Item {
    Frame(Frame),
    Close(CloseReason),
}

struct Shared {
    /// Set by `finish`: no more frames are accepted.
    finished: std::sync::atomic::AtomicBool,
    queued_frames: AtomicUsize,
    queued_bytes: AtomicUsize,
    max_frames: usize,
    max_bytes: usize,
    close: watch::Sender<Option<CloseReason>>,
}

/// The pushing half, held by the session and the connection actor.
#[derive(Clone)]
pub struct OutboundSender {
    frames: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

/// The writing half, held by the socket's writer task at the edge.
pub struct OutboundReceiver {
    frames: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
    close: watch::Receiver<Option<CloseReason>>,
    /// A graceful close met while batching, returned by the next `next`.
    pending_close: Option<CloseReason>,
}

/// A new queue that holds at most `max_frames` frames and `max_bytes` bytes.
pub fn outbound_queue(max_frames: usize, max_bytes: usize) -> (OutboundSender, OutboundReceiver) {
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        finished: std::sync::atomic::AtomicBool::new(false),
        queued_frames: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
        max_frames: max_frames.max(1),
        max_bytes: max_bytes.max(1),
        close: close_tx,
    });
    (
        OutboundSender {
            frames: frames_tx,
            shared: shared.clone(),
        },
        OutboundReceiver {
            frames: frames_rx,
            shared,
            close: close_rx,
            pending_close: None,
        },
    )
}

impl OutboundSender {
    /// Queues a frame without waiting. A frame larger than the whole byte budget
    /// is still accepted into an empty queue, so no single frame can wedge a socket.
    pub fn try_send(&self, frame: Frame) -> Result<(), SendError> {
        if self.shared.close.borrow().is_some() || self.shared.finished.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let len = frame.len();
        let frames_before = self.shared.queued_frames.fetch_add(1, Ordering::AcqRel);
        let bytes_before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let over_frames = frames_before >= self.shared.max_frames;
        let over_bytes = frames_before > 0 && bytes_before + len > self.shared.max_bytes;
        if over_frames || over_bytes {
            self.unreserve(len);
            return Err(SendError::Full);
        }
        self.frames.send(Item::Frame(frame)).map_err(|_| {
            self.unreserve(len);
            SendError::Closed
        })
    }

    /// Closes with this reason once everything already queued is written.
    /// Frames offered afterwards are refused.
    pub fn finish(&self, reason: CloseReason) {
        if !self.shared.finished.swap(true, Ordering::AcqRel) {
            let _ = self.frames.send(Item::Close(reason));
        }
    }

    /// Asks the writer to send a close frame with this reason and stop, ahead of
    /// anything still queued. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        self.shared.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn unreserve(&self, len: usize) {
        self.shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
        self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Frame),
    /// Close the socket with this reason.
    Close(CloseReason),
    /// Every sender is gone without a reason: the session restarted; re-attach.
    Detached,
}

impl OutboundReceiver {
    /// Waits for the next frame or a close. A close outranks queued frames.
    pub async fn next(&mut self) -> Outgoing {
        if let Some(reason) = self.close.borrow_and_update().clone() {
            return Outgoing::Close(reason);
        }
        if let Some(reason) = self.pending_close.take() {
            return Outgoing::Close(reason);
        }
        tokio::select! {
            biased;
            changed = self.close.changed() => match (changed, self.close.borrow_and_update().clone()) {
                (Ok(()), Some(reason)) => Outgoing::Close(reason),
                // The watch sender lives in the queue's shared state, so it
                // cannot be gone while this receiver exists; treat it as detached.
                _ => Outgoing::Detached,
            },
            item = self.frames.recv() => match item {
                Some(Item::Frame(frame)) => {
                    self.release(&frame);
                    Outgoing::Frame(frame)
                }
                Some(Item::Close(reason)) => Outgoing::Close(reason),
                None => Outgoing::Detached,
            },
        }
    }

    /// A frame that is ready now, for batching several into one write. A
    /// graceful close stays queued for [`OutboundReceiver::next`].
    pub fn try_next_frame(&mut self) -> Option<Frame> {
        if self.close.borrow().is_some() || self.pending_close.is_some() {
            return None;
        }
        match self.frames.try_recv().ok()? {
            Item::Frame(frame) => {
                self.release(&frame);
                Some(frame)
            }
            Item::Close(reason) => {
                self.pending_close = Some(reason);
                None
            }
        }
    }

    /// The close reason, if one was set (checked once the writer stops).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.borrow().clone()
    }

    fn release(&self, frame: &Frame) {
        self.shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::protocol::ServerFrame;

    fn frame(text: &str) -> Frame {
        ServerFrame::System {
            content: text.into(),
        }
        .encode()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_recovers_as_the_writer_reads() {
        let (tx, mut rx) = outbound_queue(2, 1 << 20);
        tx.try_send(frame("a")).unwrap();
        tx.try_send(frame("b")).unwrap();
        assert_eq!(tx.try_send(frame("c")), Err(SendError::Full));
        assert!(matches!(rx.next().await, Outgoing::Frame(_)));
        tx.try_send(frame("c")).unwrap();
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_the_queue_but_admits_one_large_frame() {
        let big = frame(&"x".repeat(100));
        let (tx, _rx) = outbound_queue(100, 50);
        tx.try_send(big.clone()).unwrap();
        assert_eq!(tx.try_send(frame("y")), Err(SendError::Full));
    }

    #[tokio::test]
    async fn finish_closes_after_what_is_queued() {
        let (tx, mut rx) = outbound_queue(10, 1 << 20);
        tx.try_send(frame("a")).unwrap();
        tx.try_send(frame("b")).unwrap();
        tx.finish(CloseReason::session_deleted());
        assert_eq!(tx.try_send(frame("c")), Err(SendError::Closed));
        assert!(matches!(rx.next().await, Outgoing::Frame(_)));
        assert!(rx.try_next_frame().is_some());
        assert!(rx.try_next_frame().is_none());
        match rx.next().await {
            Outgoing::Close(reason) => assert_eq!(reason, CloseReason::session_deleted()),
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_outranks_queued_frames_and_dropped_senders_mean_detached() {
        let (tx, mut rx) = outbound_queue(10, 1 << 20);
        tx.try_send(frame("a")).unwrap();
        tx.close(CloseReason::slow_consumer());
        tx.close(CloseReason::shutting_down());
        match rx.next().await {
            Outgoing::Close(reason) => assert_eq!(reason, CloseReason::slow_consumer()),
            other => panic!("expected close, got {other:?}"),
        }
        assert_eq!(tx.try_send(frame("b")), Err(SendError::Closed));

        let (tx, mut rx) = outbound_queue(10, 1 << 20);
        drop(tx);
        assert!(matches!(rx.next().await, Outgoing::Detached));
    }
}
