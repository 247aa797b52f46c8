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

/// A reader's way through a conversation: where it is, and the items it
/// is owed, given what the store and the session's frames say in the
/// order they said it. The runtime's tail feeds it; nothing here waits.
#[derive(Debug, Clone)]
pub struct LogReader {
    position: LogPosition,
    /// The context at `version`, kept current as it changes.
    context: Map<String, Value>,
    version: u64,
    items: Vec<TailItem>,
    /// Answers read from the store while catching up: a snapshot of one
    /// (taken when the tail attached) is older than its stored message.
    caught_up: Vec<MessageId>,
}

impl LogReader {
    /// A reader at `position` of a conversation whose context is `context`
    /// at `version`.
    pub fn new(position: LogPosition, context: Map<String, Value>, version: u64) -> LogReader {
        LogReader {
            position,
            context,
            version,
            items: Vec::new(),
            caught_up: Vec::new(),
        }
    }

    pub fn position(&self) -> LogPosition {
        self.position
    }

    /// The items owed so far, as JSON text; the reader is then at `position`.
    pub fn take_items(&mut self) -> Vec<String> {
        self.items.drain(..).map(|item| item.encode()).collect()
    }

    pub fn has_items(&self) -> bool {
        !self.items.is_empty()
    }

    /// Forgets the items owed (`offset=now`: what is there is skipped).
    pub fn skip_items(&mut self) {
        self.items.clear();
    }

    /// The context, if the reader lacks its current version.
    pub fn catch_up_context(&mut self) {
        if self.position.context < Some(self.version) {
            self.position.context = Some(self.version);
            self.items.push(TailItem::Context {
                version: self.version,
                context: self.context.clone(),
            });
        }
    }

    /// A piece of the answer `message_id` (a snapshot: its whole text so far).
    pub fn chunk(&mut self, message_id: MessageId, content: String, snapshot: bool) {
        if snapshot && self.caught_up.contains(&message_id) {
            return;
        }
        let had = self
            .position
            .answer
            .filter(|part| part.message_id == message_id)
            .map(|part| part.bytes);
        let (content, bytes) = match (had, snapshot) {
            // The reader has `had` bytes of it: the rest of the text so far.
            (Some(had), true) => {
                let rest = content.get(had..).unwrap_or_default().to_owned();
                (rest, had.max(content.len()))
            }
            (Some(had), false) => {
                let bytes = had + content.len();
                (content, bytes)
            }
            (None, _) => {
                let bytes = content.len();
                (content, bytes)
            }
        };
        self.position.answer = Some(PartialAnswer { message_id, bytes });
        if !content.is_empty() {
            self.items.push(TailItem::Chunk {
                message_id,
                content,
            });
        }
    }

    /// A stored message (`catching_up`: read from the store, not announced
    /// by a frame): the rest of its text first if the reader had part of it
    /// as an answer being written, then the message. One it has is skipped.
    pub fn stored(&mut self, message: WireMessage, catching_up: bool) {
        if message.seq <= self.position.seq {
            return;
        }
        if catching_up {
            self.caught_up.push(message.id);
        }
        if let Some(part) = self.position.answer
            && part.message_id == message.id
        {
            let rest = message.content.get(part.bytes..).unwrap_or_default();
            if !rest.is_empty() {
                self.items.push(TailItem::Chunk {
                    message_id: message.id,
                    content: rest.to_owned(),
                });
            }
            self.position.answer = None;
        }
        self.position.seq = message.seq;
        self.items.push(TailItem::Message { message });
    }

    /// The context changed to `version`: its patch from the version before,
    /// or the whole of it. `false` if the patch does not apply to the copy
    /// kept here (the reader should start over from its offset).
    pub fn context_changed(
        &mut self,
        version: u64,
        patch: Option<Value>,
        whole: Option<Map<String, Value>>,
    ) -> bool {
        match (whole, patch) {
            (Some(whole), _) => self.context = whole,
            (None, Some(patch)) => {
                let mut document = Value::Object(std::mem::take(&mut self.context));
                let applied = serde_json::from_value::<json_patch::Patch>(patch)
                    .ok()
                    .is_some_and(|patch| json_patch::patch(&mut document, &patch).is_ok());
                let Value::Object(context) = document else {
                    return false;
                };
                self.context = context;
                if !applied {
                    return false;
                }
            }
            (None, None) => return true,
        }
        self.version = version;
        self.catch_up_context();
        true
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
            // The widest each field is written: 16 digits.
            position(
                9_999_999_999_999_999,
                Some(9_999_999_999_999_998),
                Some(1 << 40),
            ),
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

    fn message(seq: u64, id: MessageId, content: &str) -> WireMessage {
        WireMessage {
            id,
            session_id: crate::model::ids::SessionId::new(),
            seq,
            role: crate::model::message::Role::Assistant,
            content: content.into(),
            status: crate::model::message::MessageStatus::Complete,
            client_msg_id: None,
            created_at: "2026-12-06T00:00:00.000000Z".into(),
            author: None,
        }
    }

    fn chunks(items: &[String]) -> String {
        items
            .iter()
            .map(|item| serde_json::from_str::<Value>(item).unwrap())
            .filter(|item| item["type"] == "chunk")
            .map(|item| item["content"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_reader_resuming_mid_answer_gets_exactly_the_rest() {
        let answer = MessageId::new();
        let mut first = LogReader::new(LogPosition::default(), Map::new(), 0);
        first.chunk(answer, "Hola, ".into(), false);
        first.chunk(answer, "¿qué tal?".into(), false);
        let seen = chunks(&first.take_items());
        // Resumed while the answer is still being written: a snapshot.
        let mut live = LogReader::new(first.position(), Map::new(), 0);
        live.chunk(answer, "Hola, ¿qué tal? Bien".into(), true);
        live.chunk(answer, ".".into(), false);
        live.stored(message(1, answer, "Hola, ¿qué tal? Bien."), false);
        assert_eq!(
            format!("{seen}{}", chunks(&live.take_items())),
            "Hola, ¿qué tal? Bien."
        );
        // Resumed once it is stored: the rest, from the stored message.
        let mut late = LogReader::new(first.position(), Map::new(), 0);
        late.stored(message(1, answer, "Hola, ¿qué tal? Bien."), true);
        let items = late.take_items();
        assert_eq!(format!("{seen}{}", chunks(&items)), "Hola, ¿qué tal? Bien.");
        assert_eq!(items.len(), 2, "the rest, then the message");
        assert_eq!(late.position().answer, None);
    }

    #[test]
    fn a_snapshot_of_an_answer_already_read_from_the_store_is_not_sent_again() {
        // The tail attached while the answer was being stored; the store
        // had it by the time it was read, and the snapshot came after.
        let answer = MessageId::new();
        let mut reader = LogReader::new(LogPosition::default(), Map::new(), 0);
        reader.stored(message(1, answer, "Entero."), true);
        reader.chunk(answer, "Entero.".into(), true);
        let items = reader.take_items();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(reader.position().answer, None);
        // A new answer's snapshot still counts.
        reader.chunk(MessageId::new(), "Otra".into(), true);
        assert_eq!(chunks(&reader.take_items()), "Otra");
    }

    #[test]
    fn a_context_change_is_given_whole_once_per_version() {
        let mut context = Map::new();
        context.insert("plan".into(), "pro".into());
        let at_start = LogPosition::default();
        let mut reader = LogReader::new(at_start, context, 0);
        reader.catch_up_context();
        reader.catch_up_context();
        let patch = serde_json::json!([{"op": "add", "path": "/page", "value": "/precios"}]);
        assert!(reader.context_changed(1, Some(patch), None));
        let items: Vec<Value> = reader
            .take_items()
            .iter()
            .map(|item| serde_json::from_str(item).unwrap())
            .collect();
        assert_eq!(
            items,
            [
                serde_json::json!({"type": "context", "version": 0, "context": {"plan": "pro"}}),
                serde_json::json!({"type": "context", "version": 1, "context": {"plan": "pro", "page": "/precios"}}),
            ]
        );
        let broken = serde_json::json!([{"op": "remove", "path": "/nothing/here"}]);
        assert!(!reader.context_changed(2, Some(broken), None));
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
