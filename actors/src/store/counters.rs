//! A conversation's counters (`last_seq`, `message_count`, `updated_at`),
//! written lazily by the persistence actor rather than with every message.
//!
//! Why: the conversation record carries three indexes on `updated_at`, so
//! bumping it with each message cost more than storing the message itself.
//! Instead, a batch's messages are inserted in bulk and the batch records one
//! small `pending_count` marker naming the conversations it touched, in the
//! same transaction. After the commit the actor merges the batch's
//! [`Touch`]es per conversation and writes them a little later (or at once
//! when a reader asks for a flush), deleting the markers in the same
//! transaction.
//!
//! Nothing acknowledged depends on the counters: the messages are durable,
//! sessions take their next `seq` from the log itself, and listings flush
//! first. If the process dies with touches pending, their markers survive,
//! and `repair` recomputes those conversations from their logs at the next
//! start, before anything is served (`Database::repair_counters`).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{StoredMessage, TenantId};

/// What one or more committed messages change in their conversation's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Touch {
    pub tenant: TenantId,
    #[serde(rename = "sid")]
    pub session: String,
    /// The highest `seq` committed.
    pub seq: u64,
    /// How many messages were committed.
    pub added: u64,
    /// The newest message's `created_at`.
    pub at: String,
}

impl Touch {
    fn merge(&mut self, newer: Touch) {
        self.seq = self.seq.max(newer.seq);
        self.added += newer.added;
        if newer.at > self.at {
            self.at = newer.at;
        }
    }
}

/// Counters owed to conversation records, and the markers that record the
/// debt on disk. Held by the persistence actor.
#[derive(Debug, Default)]
pub struct PendingCounters {
    touches: HashMap<(TenantId, String), Touch>,
    markers: Vec<String>,
}

/// The counters of a set of conversations, and the markers they settle.
#[derive(Debug, Clone)]
pub struct Counters {
    pub touches: Vec<Touch>,
    pub markers: Vec<String>,
}

impl PendingCounters {
    pub fn is_empty(&self) -> bool {
        self.touches.is_empty() && self.markers.is_empty()
    }

    /// Adds what a committed batch (or a failed counters write) owes.
    pub fn add(&mut self, counters: Counters) {
        for touch in counters.touches {
            let key = (touch.tenant.clone(), touch.session.clone());
            match self.touches.get_mut(&key) {
                Some(owed) => owed.merge(touch),
                None => {
                    self.touches.insert(key, touch);
                }
            }
        }
        self.markers.extend(counters.markers);
    }

    /// Everything owed (None if nothing is).
    pub fn take(&mut self) -> Option<Counters> {
        if self.is_empty() {
            return None;
        }
        Some(Counters {
            touches: self.touches.drain().map(|(_, touch)| touch).collect(),
            markers: std::mem::take(&mut self.markers),
        })
    }
}

/// The messages of a batch, merged per conversation.
pub fn touches_of<'a>(messages: impl Iterator<Item = &'a StoredMessage>) -> Vec<Touch> {
    let mut merged: HashMap<(TenantId, String), Touch> = HashMap::new();
    for message in messages {
        let touch = Touch {
            tenant: message.tenant.clone(),
            session: message.session_id.to_string(),
            seq: message.seq,
            added: 1,
            at: message.created_at.clone(),
        };
        let key = (touch.tenant.clone(), touch.session.clone());
        match merged.get_mut(&key) {
            Some(owed) => owed.merge(touch),
            None => {
                merged.insert(key, touch);
            }
        }
    }
    merged.into_values().collect()
}

/// The marker a batch with these touches writes: the conversations it owes.
pub fn marker(touches: &[Touch]) -> Value {
    let conversations: Vec<Value> = touches
        .iter()
        .map(|touch| json!([touch.tenant, touch.session]))
        .collect();
    json!({ "conversations": conversations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(session: &str, seq: u64, at: &str) -> Touch {
        Touch {
            tenant: TenantId("t".into()),
            session: session.into(),
            seq,
            added: 1,
            at: at.into(),
        }
    }

    #[test]
    fn touches_of_one_conversation_merge_into_one() {
        let mut pending = PendingCounters::default();
        pending.add(Counters {
            touches: vec![touch("a", 1, "2026-01-01T00:00:01Z")],
            markers: vec!["m1".into()],
        });
        pending.add(Counters {
            touches: vec![
                touch("a", 2, "2026-01-01T00:00:02Z"),
                touch("b", 1, "2026-01-01T00:00:03Z"),
            ],
            markers: vec!["m2".into()],
        });
        let Some(mut counters) = pending.take() else {
            panic!("counters are owed");
        };
        counters.touches.sort_by(|a, b| a.session.cmp(&b.session));
        assert_eq!(counters.touches.len(), 2);
        assert_eq!(counters.touches[0].seq, 2);
        assert_eq!(counters.touches[0].added, 2);
        assert_eq!(counters.touches[0].at, "2026-01-01T00:00:02Z");
        assert_eq!(counters.markers, vec!["m1".to_owned(), "m2".to_owned()]);
        assert!(pending.take().is_none(), "taking empties what is owed");
    }

    #[test]
    fn an_older_touch_never_moves_a_counter_back() {
        let mut newer = touch("a", 7, "2026-01-01T00:00:07Z");
        newer.merge(touch("a", 3, "2026-01-01T00:00:03Z"));
        assert_eq!((newer.seq, newer.added), (7, 2));
        assert_eq!(newer.at, "2026-01-01T00:00:07Z");
    }
}
