//! The session's part that owns the conversation's ordered log in memory:
//! the next `seq`, the newest stored messages (a window), the acks of the
//! `client_msg_id`s in that window, and the writes handed to storage and not
//! yet durable. Plain state with no actor and no I/O; the session decides
//! what to write and send from what this part answers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use ractor::RpcReplyPort;
use tokio::sync::oneshot;

use crate::agent::Turn;
use crate::conversation::connection::ConnId;
use crate::error::Result;
use crate::model::{Ack, MessageId, Role, StoredMessage};

/// Where the answer to an asked question arrives: the stored answer (whole,
/// `interrupted` or `failed`), or why it could not be stored. Dropped unfired
/// if the session stops first; the question is answered after its restart.
pub type AnswerReceiver = oneshot::Receiver<Result<StoredMessage>>;

/// Who is waiting for a user message to become durable.
pub enum Asker {
    Socket(ConnId),
    Rest(RpcReplyPort<Result<Ack>>),
    /// A back end that also waits for the answer.
    Ask(RpcReplyPort<Result<(Ack, AnswerReceiver)>>),
    /// The session itself (announcing a take-over): nobody to answer.
    Session,
}

/// A log write handed to persistence and not yet durable.
pub enum PendingWrite {
    User {
        message: StoredMessage,
        asker: Asker,
        /// Sockets that re-sent the same `client_msg_id` meanwhile.
        repeats: Vec<ConnId>,
    },
    Answer {
        message: StoredMessage,
        /// The user message it answers.
        question: MessageId,
    },
}

/// What the window can say about the messages after a `seq`.
#[derive(Debug, PartialEq)]
pub enum Missed {
    /// All of them, from memory.
    Cached(Vec<StoredMessage>),
    /// Some are older than the window: read them from storage.
    NotCached,
}

pub struct Log {
    next_seq: u64,
    /// The newest stored messages, oldest first, at most `keep`.
    recent: VecDeque<StoredMessage>,
    keep: usize,
    /// Whether `recent` holds the whole log (then lookups need no database read).
    complete: bool,
    /// `client_msg_id` → its ack, for messages in `recent`.
    acked: HashMap<String, Ack>,
    pending: BTreeMap<u64, PendingWrite>,
    /// `client_msg_id`s whose write was reported failed: the store may hold
    /// them all the same (a server that committed, then lost the answer),
    /// so a repeat is looked up there before it is written again.
    doubtful: HashSet<String>,
}

impl Log {
    /// The log as rehydrated: the newest stored messages (oldest first, at
    /// most `keep` were asked for) and the last `seq` the conversation record
    /// knows. The record's counters are written lazily, so the log's own
    /// newest message has the last word, and a window that came back short
    /// of `keep` is the whole log.
    pub fn new(recent: VecDeque<StoredMessage>, last_seq: u64, keep: usize) -> Log {
        let last_seq = recent.back().map_or(0, |message| message.seq).max(last_seq);
        let acked = recent
            .iter()
            .filter_map(|message| Some((message.client_msg_id.clone()?, ack_of(message))))
            .collect();
        Log {
            next_seq: last_seq + 1,
            doubtful: HashSet::new(),
            complete: recent.len() < keep.max(1),
            recent,
            keep: keep.max(1),
            acked,
            pending: BTreeMap::new(),
        }
    }

    /// The `seq` of the newest message handed to storage (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Takes the next `seq` for a message about to be stored.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Whether the window holds every message of the conversation.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn newest(&self) -> Option<&StoredMessage> {
        self.recent.back()
    }

    /// The message with this `client_msg_id`, if it is in the window.
    pub fn find_client(&self, client_msg_id: &str) -> Option<StoredMessage> {
        self.recent
            .iter()
            .find(|message| message.client_msg_id.as_deref() == Some(client_msg_id))
            .cloned()
    }

    /// A write of this `client_msg_id` was reported failed.
    pub fn doubt(&mut self, client_msg_id: String) {
        self.doubtful.insert(client_msg_id);
    }

    /// Whether a write of this `client_msg_id` was reported failed (and no
    /// repeat has been settled since).
    pub fn is_doubtful(&self, client_msg_id: &str) -> bool {
        self.doubtful.contains(client_msg_id)
    }

    pub fn settle_doubt(&mut self, client_msg_id: &str) {
        self.doubtful.remove(client_msg_id);
    }

    /// The ack already given for this `client_msg_id`, if it is in the window.
    pub fn ack_for(&self, client_msg_id: &str) -> Option<Ack> {
        self.acked.get(client_msg_id).cloned()
    }

    /// The sockets waiting on a write of this `client_msg_id` still in flight.
    pub fn repeats_of(&mut self, client_msg_id: &str) -> Option<&mut Vec<ConnId>> {
        self.pending.values_mut().find_map(|pending| match pending {
            PendingWrite::User {
                message, repeats, ..
            } if message.client_msg_id.as_deref() == Some(client_msg_id) => Some(repeats),
            _ => None,
        })
    }

    pub fn hand_over(&mut self, seq: u64, write: PendingWrite) {
        self.pending.insert(seq, write);
    }

    /// The write of `seq`, now durable or failed.
    pub fn settle(&mut self, seq: u64) -> Option<PendingWrite> {
        self.pending.remove(&seq)
    }

    pub fn has_pending_writes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Keeps a durable message in the window, dropping the oldest.
    pub fn remember(&mut self, message: StoredMessage) {
        if let Some(client_msg_id) = &message.client_msg_id {
            self.acked.insert(client_msg_id.clone(), ack_of(&message));
        }
        self.recent.push_back(message);
        while self.recent.len() > self.keep {
            if let Some(dropped) = self.recent.pop_front() {
                if let Some(client_msg_id) = dropped.client_msg_id {
                    self.acked.remove(&client_msg_id);
                }
                self.complete = false;
            }
        }
    }

    /// The stored messages after `after_seq`, if the window has them all.
    pub fn missed_since(&self, after_seq: u64) -> Missed {
        let cached_from = self
            .recent
            .front()
            .map_or(self.next_seq, |message| message.seq);
        if self.complete || cached_from <= after_seq + 1 {
            Missed::Cached(
                self.recent
                    .iter()
                    .filter(|message| message.seq > after_seq)
                    .cloned()
                    .collect(),
            )
        } else {
            Missed::NotCached
        }
    }

    /// The user messages at the end of the window that no answer follows.
    pub fn trailing_questions(&self) -> impl Iterator<Item = &StoredMessage> {
        let answered = self
            .recent
            .iter()
            .rev()
            .take_while(|message| message.role == Role::User)
            .count();
        self.recent.iter().skip(self.recent.len() - answered)
    }

    /// The turns an answer to `question` sees: at most `turns` messages,
    /// ending where the question sits in the log (a queued question never
    /// sees later ones), the question last.
    pub fn history_until(&self, question: &StoredMessage, turns: usize) -> Vec<Turn> {
        let end = self
            .recent
            .iter()
            .position(|message| message.seq == question.seq)
            .map_or(self.recent.len(), |index| index + 1);
        let start = end.saturating_sub(turns.max(1));
        let mut history: Vec<Turn> = self
            .recent
            .range(start..end)
            .map(|message| Turn {
                role: message.role,
                content: message.content.clone(),
            })
            .collect();
        if history
            .last()
            .is_none_or(|turn| turn.content != question.content)
        {
            history.push(Turn {
                role: Role::User,
                content: question.content.clone(),
            });
        }
        history
    }
}

/// The ack of a stored message.
pub fn ack_of(message: &StoredMessage) -> Ack {
    Ack {
        client_msg_id: message.client_msg_id.clone(),
        message_id: message.id,
        seq: message.seq,
        created_at: message.created_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::session::testing::stored;

    #[test]
    fn a_repeated_client_msg_id_finds_its_ack_until_it_leaves_the_window() {
        let mut log = Log::new(VecDeque::new(), 0, 2);
        let mut first = stored(log.take_seq(), Role::User, "hola");
        first.client_msg_id = Some("c-1".into());
        log.remember(first.clone());
        assert_eq!(log.ack_for("c-1").map(|ack| ack.message_id), Some(first.id));
        {
            let seq = log.take_seq();
            log.remember(stored(seq, Role::Assistant, "You said: hola"));
        }
        assert!(log.ack_for("c-1").is_some(), "still in the window");
        {
            let seq = log.take_seq();
            log.remember(stored(seq, Role::User, "adiós"));
        }
        assert_eq!(log.ack_for("c-1"), None, "dropped with its message");
        assert!(
            !log.is_complete(),
            "the window no longer holds the whole log"
        );
    }

    #[test]
    fn a_client_msg_id_in_flight_collects_the_sockets_that_repeat_it() {
        let mut log = Log::new(VecDeque::new(), 0, 10);
        let mut message = stored(log.take_seq(), Role::User, "hola");
        message.client_msg_id = Some("c-1".into());
        log.hand_over(
            message.seq,
            PendingWrite::User {
                message,
                asker: Asker::Socket(1),
                repeats: Vec::new(),
            },
        );
        log.repeats_of("c-1").expect("in flight").push(2);
        assert!(log.repeats_of("c-2").is_none());
        match log.settle(1) {
            Some(PendingWrite::User { repeats, .. }) => assert_eq!(repeats, vec![2]),
            _ => panic!("the user write was pending"),
        }
        assert!(!log.has_pending_writes());
    }

    #[test]
    fn missed_messages_come_from_the_window_only_when_it_reaches_back_far_enough() {
        let recent: VecDeque<StoredMessage> = (11..=15)
            .map(|seq| stored(seq, Role::User, &format!("m{seq}")))
            .collect();
        let log = Log::new(recent, 15, 5);
        assert_eq!(log.last_seq(), 15);
        match log.missed_since(12) {
            Missed::Cached(messages) => {
                let seqs: Vec<u64> = messages.iter().map(|message| message.seq).collect();
                assert_eq!(seqs, vec![13, 14, 15]);
            }
            Missed::NotCached => panic!("13 to 15 are in the window"),
        }
        assert_eq!(
            log.missed_since(10),
            Missed::Cached(log.recent.iter().cloned().collect())
        );
        assert_eq!(log.missed_since(3), Missed::NotCached);
    }

    #[test]
    fn an_answer_sees_the_history_up_to_its_question_and_no_later() {
        let mut log = Log::new(VecDeque::new(), 0, 10);
        for (role, text) in [
            (Role::User, "one"),
            (Role::Assistant, "1"),
            (Role::User, "two"),
            (Role::User, "three"),
        ] {
            {
                let seq = log.take_seq();
                log.remember(stored(seq, role, text));
            }
        }
        let two = stored(3, Role::User, "two");
        let turns: Vec<String> = log
            .history_until(&two, 2)
            .into_iter()
            .map(|turn| turn.content)
            .collect();
        assert_eq!(turns, vec!["1", "two"]);
        let questions: Vec<&str> = log
            .trailing_questions()
            .map(|message| message.content.as_str())
            .collect();
        assert_eq!(questions, vec!["two", "three"]);
    }
}
