//! A conversation read as a Durable Stream in JSON mode: the items a reader
//! gets and the offsets between them. Plain data and pure decisions; the
//! runtime's tail (`runtime/tail.rs`) follows the session, and the edge
//! speaks the HTTP.
//!
//! The stream is the conversation's log as a reader meets it: each stored
//! message once (`message`), the answer being written as it streams
//! (`chunk`), and the context whenever the reader lacks its newest version
//! (`context`, whole, never a patch). A [`LogPosition`] says how far a reader
//! got in all three at once, so an offset resumes exactly:
//!
//! - `seq`: the last stored message it has;
//! - `context`: the context version it has (none yet, at the start);
//! - `answer`: how many bytes it has of the answer being written after
//!   `seq`, and which answer that is (answers are stored whole, and the
//!   chunks of one are never stored, so a reader resuming mid-answer gets
//!   the rest of that answer's text, then the stored message).
//!
//! Offsets write the four fields in fixed widths, so they sort as text in
//! the order readers meet them. An answer's id is a UUIDv7 (time-ordered),
//! so a second answer begun after the same `seq` (the first was lost in a
//! crash, never stored) sorts after the first.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ids::MessageId;
use super::protocol::WireMessage;

/// Where a reader is in a conversation's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    /// The last stored message the reader has (0: none).
    pub seq: u64,
    /// The context version the reader has (none: it has not seen it).
    pub context: Option<u64>,
    /// The part of the answer in progress the reader has.
    pub answer: Option<PartialAnswer>,
}

/// The first `bytes` of the answer `message_id`, which is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialAnswer {
    pub message_id: MessageId,
    pub bytes: usize,
}

impl LogPosition {
    /// The offset naming this position: four fixed-width fields.
    pub fn offset(&self) -> String {
        let context = self.context.map_or(0, |version| version + 1);
        let (answer, bytes) = self
            .answer
            .map_or((0, 0), |part| (part.message_id.0.as_u128(), part.bytes));
        format!("{:016}_{context:016}_{answer:032x}_{bytes:016}", self.seq)
    }

    /// The position an offset names, if it is one this server could give.
    pub fn parse(text: &str) -> Option<LogPosition> {
        let mut parts = text.split('_');
        let seq = decimal(parts.next()?)?;
        let context = decimal(parts.next()?)?;
        let answer = parts.next()?;
        let bytes = decimal(parts.next()?)?;
        let hex = |part: &str| part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if parts.next().is_some() || answer.len() != 32 || !hex(answer) {
            return None;
        }
        let answer = u128::from_str_radix(answer, 16).ok()?;
        let answer = match (answer, bytes) {
            (0, 0) => None,
            (0, _) => return None,
            (id, bytes) => Some(PartialAnswer {
                message_id: MessageId(Uuid::from_u128(id)),
                bytes: usize::try_from(bytes).ok()?,
            }),
        };
        Some(LogPosition {
            seq,
            context: context.checked_sub(1),
            answer,
        })
    }
}

/// A field of 16 decimal digits.
fn decimal(part: &str) -> Option<u64> {
    (part.len() == 16 && part.bytes().all(|b| b.is_ascii_digit()))
        .then(|| part.parse().ok())
        .flatten()
}

/// Where a read of a conversation's stream starts, as the client named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// `-1` or no offset: the context, then every stored message.
    Start,
    /// `now`: whatever the conversation is at when the read is served.
    Now,
    At(LogPosition),
}

impl TailFrom {
    /// Parses `offset`; `None` for anything that is not an offset of a
    /// conversation's stream.
    pub fn parse(offset: Option<&str>) -> Option<TailFrom> {
        match offset {
            None | Some("-1") => Some(TailFrom::Start),
            Some("now") => Some(TailFrom::Now),
            Some(text) => LogPosition::parse(text).map(TailFrom::At),
        }
    }
}

/// One item of a conversation's stream, as its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TailItem {
    /// A stored message, as sockets see it (`message` frames).
    Message { message: WireMessage },
    /// The next piece of the answer `message_id`, being written.
    Chunk {
        message_id: MessageId,
        content: String,
    },
    /// The conversation's context at `version`, whole.
    Context {
        version: u64,
        context: Map<String, Value>,
    },
}

impl TailItem {
    /// The item's JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("stream items always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(seq: u64, context: Option<u64>, bytes: Option<usize>) -> LogPosition {
        LogPosition {
            seq,
            context,
            answer: bytes.map(|bytes| PartialAnswer {
                message_id: MessageId::new(),
                bytes,
            }),
        }
    }

    #[test]
    fn every_position_reads_back_from_its_offset() {
        for case in [
            LogPosition::default(),
            position(7, Some(0), None),
            position(7, Some(3), Some(12)),
            position(u64::MAX / 10, Some(u64::MAX / 10), Some(1 << 40)),
        ] {
            assert_eq!(LogPosition::parse(&case.offset()), Some(case), "{case:?}");
        }
    }

    #[test]
    fn offsets_sort_in_the_order_a_reader_meets_them() {
        let first = MessageId::new();
        let second = MessageId::new();
        let at = |seq, context, answer: Option<(MessageId, usize)>| LogPosition {
            seq,
            context,
            answer: answer.map(|(message_id, bytes)| PartialAnswer { message_id, bytes }),
        };
        let walk = [
            at(0, None, None),
            at(0, Some(0), None),
            at(2, Some(0), None),
            at(2, Some(0), Some((first, 5))),
            at(2, Some(0), Some((first, 40))),
            at(2, Some(1), Some((first, 40))),
            at(3, Some(1), Some((first, 41))),
            // The first answer was lost in a crash; another began after seq 3.
            at(3, Some(1), Some((second, 2))),
            at(4, Some(1), None),
            at(10, Some(12), None),
        ];
        for pair in walk.windows(2) {
            assert!(
                pair[0].offset() < pair[1].offset(),
                "{:?} sorts before {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn anything_else_is_not_an_offset() {
        let good = position(1, Some(1), Some(3)).offset();
        let no_answer_but_bytes = format!("{:016}_{:016}_{:032x}_{:016}", 1, 1, 0, 5);
        for bad in [
            "",
            "0",
            "0000000000000000_0000000000000000",
            &good[..good.len() - 1],
            &format!("{good}_0000000000000000"),
            &good.replace('_', "-"),
            &good.to_uppercase(),
            &no_answer_but_bytes,
            &format!("+{}", &good[1..]),
        ] {
            if bad == good {
                continue;
            }
            assert_eq!(LogPosition::parse(bad), None, "{bad:?}");
        }
        assert_eq!(TailFrom::parse(Some("-1")), Some(TailFrom::Start));
        assert_eq!(TailFrom::parse(None), Some(TailFrom::Start));
        assert_eq!(TailFrom::parse(Some("now")), Some(TailFrom::Now));
        assert_eq!(TailFrom::parse(Some("-2")), None);
    }
}
