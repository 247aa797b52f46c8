//! Durable Streams (the open protocol's streams, kept per tenant): a
//! stream's record, its offsets, what an append carries and the rules an
//! idempotent producer is held to. Plain data and pure decisions; the
//! stream's actor applies them and the edge speaks the HTTP.
//!
//! A stream is a sequence of appended units: bytes for most content types,
//! one JSON value per message for `application/json`. Its position is a
//! count (bytes, or messages), and an offset is that count in fixed-width
//! decimal digits (`offset_text`), so offsets sort as strings in the order
//! of the stream.

use serde::{Deserialize, Serialize};

use super::ids::TenantId;

/// The most characters a stream's path may have.
pub const MAX_STREAM_PATH: usize = 512;

/// A stream as stored: where it is, how it was made, how far it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub tenant: TenantId,
    pub path: String,
    /// Unique per creation: a stream deleted and made again at the same
    /// path is another stream (ETags and readers must not mix them up).
    pub stream_id: String,
    pub config: StreamConfig,
    /// The position after the last unit (the tail).
    pub tail: u64,
    /// No more appends: readers reaching the tail are told the stream ended.
    pub closed: bool,
    /// The last `Stream-Seq` accepted, if any.
    pub last_seq: Option<String>,
    pub created_at: String,
    /// A fork: the streams whose units it reads below its fork point, each
    /// up to the position where that stream's part ends (oldest first).
    #[serde(default)]
    pub inherited: Vec<Segment>,
    /// A fork: the stream it was forked from (path and id), which keeps its
    /// units while this fork lives.
    #[serde(default)]
    pub forked_from: Option<(String, String)>,
    /// Live forks of this stream: while there are any, a delete only hides
    /// it (`deleted`), so their inherited units stay.
    #[serde(default)]
    pub forks: u64,
    #[serde(default)]
    pub deleted: bool,
    /// Bytes of its own units (what `max_stream_bytes` limits).
    #[serde(default)]
    pub size_bytes: u64,
}

/// A part of a fork's inherited data: `stream_id`'s units up to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub stream_id: String,
    pub end: u64,
}

impl StreamRecord {
    /// Which stream's units hold `position`, and where that part ends.
    pub fn part_at(&self, position: u64) -> (&str, u64) {
        self.inherited
            .iter()
            .find(|segment| segment.end > position)
            .map(|segment| (segment.stream_id.as_str(), segment.end))
            .unwrap_or((self.stream_id.as_str(), u64::MAX))
    }

    /// Where its own data starts (0, or a fork's fork point).
    pub fn fork_point(&self) -> u64 {
        self.inherited.last().map_or(0, |segment| segment.end)
    }

    /// The inherited parts a fork of this stream at `position` reads.
    pub fn parts_below(&self, position: u64) -> Vec<Segment> {
        let mut parts: Vec<Segment> = self
            .inherited
            .iter()
            .map(|segment| Segment {
                stream_id: segment.stream_id.clone(),
                end: segment.end.min(position),
            })
            .filter(|segment| segment.end > 0)
            .collect();
        parts.dedup_by(|later, earlier| later.end == earlier.end);
        if position > self.fork_point() {
            parts.push(Segment {
                stream_id: self.stream_id.clone(),
                end: position,
            });
        }
        parts
    }
}

/// A tenant's settings for its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamAccess {
    /// Anyone may use the tenant's streams namespace with no credential
    /// (for a public demo, or the protocol's conformance suite, which sends
    /// none). Off by default: anyone could then read, write and delete.
    pub anonymous: bool,
    /// Streams the tenant may have at once (a `PUT` past it: 403 `quota_exceeded`).
    pub max_streams: u64,
    /// Bytes one stream may hold (an append past it: 413).
    pub max_stream_bytes: u64,
}

impl Default for StreamAccess {
    fn default() -> Self {
        StreamAccess {
            anonymous: false,
            max_streams: 10_000,
            max_stream_bytes: 1 << 30,
        }
    }
}

/// One appended unit as stored: a JSON stream's message (its JSON text), or
/// one append's bytes (base64). It spans `[position, end)` of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamUnit {
    pub tenant: TenantId,
    pub stream_id: String,
    pub position: u64,
    pub end: u64,
    pub data: String,
    /// Where the append this unit came in ends (a JSON batch's last
    /// message; for bytes, `end`): how far a fork's sub-offset may reach.
    #[serde(default)]
    pub append_end: u64,
}

/// A producer's state as stored, with the stream and producer it is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerRecord {
    pub stream_id: String,
    pub producer: String,
    pub state: ProducerState,
}

/// What a `PUT` sets; a second `PUT` must ask for the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Lower-cased media type, parameters kept as sent (`text/plain; charset=utf-8`).
    pub content_type: String,
    pub ttl_secs: Option<u64>,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

impl StreamConfig {
    /// Whether the stream keeps one JSON value per message.
    pub fn is_json(&self) -> bool {
        media_type(&self.content_type) == "application/json"
    }

    /// Whether it may be read as Server-Sent Events (`text/*` or JSON).
    pub fn allows_sse(&self) -> bool {
        self.is_json() || media_type(&self.content_type).starts_with("text/")
    }
}

/// The media type of a `Content-Type`, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether two `Content-Type`s name the same type (case-insensitively;
/// parameters are not compared).
pub fn same_type(a: &str, b: &str) -> bool {
    media_type(a) == media_type(b)
}

/// A syntactically valid `type/subtype`.
pub fn valid_content_type(content_type: &str) -> bool {
    let media = media_type(content_type);
    let token = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    matches!(media.split_once('/'), Some((kind, sub)) if token(kind) && token(sub))
}

/// A position written as an offset: two 16-digit parts, so offsets sort as
/// strings. The first part is reserved (always zero); the second is the
/// position. (The protocol's reference server uses the same shape, and its
/// conformance suite builds the zero offset by hand.)
pub fn offset_text(position: u64) -> String {
    format!("{:016}_{position:016}", 0)
}

/// Where a read starts, as the client named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// `-1` or no offset: the first unit.
    Start,
    /// `now`: the tail, whatever it is when the read is served.
    Now,
    At(u64),
}

/// Parses `offset`; `None` for anything that is not an offset this server
/// could have given.
pub fn parse_offset(offset: Option<&str>) -> Option<ReadFrom> {
    match offset {
        None | Some("-1") => Some(ReadFrom::Start),
        Some("now") => Some(ReadFrom::Now),
        Some(text) => parse_position(text).map(ReadFrom::At),
    }
}

/// The position an offset names, if it is one.
pub fn parse_position(text: &str) -> Option<u64> {
    let (reserved, position) = text.split_once('_')?;
    let digits = |part: &str| part.len() == 16 && part.bytes().all(|b| b.is_ascii_digit());
    (digits(reserved) && digits(position) && reserved.bytes().all(|b| b == b'0'))
        .then(|| position.parse().ok())
        .flatten()
}

/// A whole number as the protocol's headers write it (`Stream-TTL`,
/// `Producer-Seq`, `Stream-Fork-Sub-Offset`): decimal digits, no sign, no
/// leading zero (but `0`).
pub fn parse_whole(text: &str) -> Option<u64> {
    let canonical = text == "0" || (!text.starts_with('0') && !text.is_empty());
    (canonical && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// A `Stream-Expires-At`: an RFC 3339 time, kept as UTC RFC 3339.
pub fn parse_expires_at(text: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| time.with_timezone(&chrono::Utc).to_rfc3339())
}

/// Why a JSON append body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonBodyError {
    Invalid(String),
    EmptyArray,
}

/// The messages a JSON body holds: an array's elements (one level
/// flattened), or the one value. Each comes back as compact JSON text.
/// `initial`: a `PUT`'s body, where `[]` is an empty stream, not an error.
pub fn json_messages(body: &[u8], initial: bool) -> Result<Vec<String>, JsonBodyError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| JsonBodyError::Invalid(error.to_string()))?;
    match value {
        serde_json::Value::Array(items) if items.is_empty() && !initial => {
            Err(JsonBodyError::EmptyArray)
        }
        serde_json::Value::Array(items) => Ok(items.iter().map(|item| item.to_string()).collect()),
        other => Ok(vec![other.to_string()]),
    }
}

/// The state of one idempotent producer on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
}

/// What an append from a producer (`Producer-Id`, `-Epoch`, `-Seq`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerDecision {
    /// New data: append, then the producer is at this state.
    Accept(ProducerState),
    /// Already appended: succeed without appending again.
    Duplicate(ProducerState),
    /// An older epoch: fenced off (403), told the current one.
    StaleEpoch { current: u64 },
    /// A new epoch must start at sequence 0 (400).
    EpochStartsAtZero,
    /// A gap in the sequence (409).
    Gap { expected: u64, received: u64 },
}

/// The largest epoch or sequence number a producer may send (2^53 - 1, so
/// JavaScript clients count exactly).
pub const MAX_PRODUCER_NUMBER: u64 = (1 << 53) - 1;

/// Decides an append from a producer at `epoch`/`seq`, given what the
/// stream remembers of it (`None`: never seen).
pub fn producer_decision(known: Option<ProducerState>, epoch: u64, seq: u64) -> ProducerDecision {
    let Some(known) = known else {
        return match seq {
            0 => ProducerDecision::Accept(ProducerState { epoch, last_seq: 0 }),
            // A producer never seen may only begin at 0.
            _ => ProducerDecision::Gap {
                expected: 0,
                received: seq,
            },
        };
    };
    if epoch < known.epoch {
        return ProducerDecision::StaleEpoch {
            current: known.epoch,
        };
    }
    if epoch > known.epoch {
        return match seq {
            0 => ProducerDecision::Accept(ProducerState { epoch, last_seq: 0 }),
            _ => ProducerDecision::EpochStartsAtZero,
        };
    }
    if seq <= known.last_seq {
        ProducerDecision::Duplicate(known)
    } else if seq == known.last_seq + 1 {
        ProducerDecision::Accept(ProducerState {
            epoch,
            last_seq: seq,
        })
    } else {
        ProducerDecision::Gap {
            expected: known.last_seq + 1,
            received: seq,
        }
    }
}

/// A stream path as it appears after `/v1/stream/`: 1 to `MAX_STREAM_PATH`
/// characters, no empty segment, no `.` or `..` segment, no control character.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.chars().count() <= MAX_STREAM_PATH
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_as_strings_in_stream_order() {
        let offsets: Vec<String> = [0, 9, 10, 99, 100, 9_999_999_999_999_999]
            .map(offset_text)
            .to_vec();
        let mut sorted = offsets.clone();
        sorted.sort();
        assert_eq!(offsets, sorted);
        assert_eq!(parse_offset(Some(&offset_text(42))), Some(ReadFrom::At(42)));
        assert_eq!(parse_offset(Some("-1")), Some(ReadFrom::Start));
        assert_eq!(parse_offset(None), Some(ReadFrom::Start));
        assert_eq!(parse_offset(Some("now")), Some(ReadFrom::Now));
        for bad in [
            "",
            "42",
            "-2",
            "abc",
            "0000000000000000004x",
            "000000000000000000042",
        ] {
            assert_eq!(parse_offset(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn a_ttl_is_plain_decimal() {
        assert_eq!(parse_whole("3600"), Some(3600));
        assert_eq!(parse_whole("0"), Some(0));
        for bad in ["+3600", "03600", "3600.0", "3.6e3", "", "-1", " 1"] {
            assert_eq!(parse_whole(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_compare_by_media_type_case_insensitively() {
        assert!(same_type("TEXT/PLAIN", "text/plain; charset=utf-8"));
        assert!(!same_type("text/plain", "application/json"));
        assert!(valid_content_type("application/vnd.api+json"));
        assert!(!valid_content_type("nonsense"));
        assert!(!valid_content_type("text/"));
        let json = StreamConfig {
            content_type: "Application/JSON; charset=utf-8".into(),
            ttl_secs: None,
            expires_at: None,
        };
        assert!(json.is_json() && json.allows_sse());
    }

    #[test]
    fn a_json_body_flattens_one_level() {
        assert_eq!(json_messages(br#"{"a":1}"#, false).unwrap(), [r#"{"a":1}"#]);
        assert_eq!(
            json_messages(b"[[1,2],[3,4]]", false).unwrap(),
            ["[1,2]", "[3,4]"]
        );
        assert_eq!(json_messages(b"[[[1,2,3]]]", false).unwrap(), ["[[1,2,3]]"]);
        assert_eq!(json_messages(b"[]", false), Err(JsonBodyError::EmptyArray));
        assert_eq!(json_messages(b"[]", true).unwrap(), Vec::<String>::new());
        assert!(matches!(
            json_messages(b"{", false),
            Err(JsonBodyError::Invalid(_))
        ));
    }

    #[test]
    fn producers_are_fenced_deduplicated_and_kept_in_sequence() {
        use ProducerDecision::*;
        let at = |epoch, last_seq| ProducerState { epoch, last_seq };
        assert_eq!(producer_decision(None, 0, 0), Accept(at(0, 0)));
        assert_eq!(producer_decision(None, 3, 0), Accept(at(3, 0)));
        assert_eq!(producer_decision(Some(at(0, 0)), 0, 1), Accept(at(0, 1)));
        assert_eq!(producer_decision(Some(at(0, 5)), 0, 3), Duplicate(at(0, 5)));
        assert_eq!(
            producer_decision(Some(at(0, 5)), 0, 7),
            Gap {
                expected: 6,
                received: 7
            }
        );
        assert_eq!(
            producer_decision(Some(at(2, 5)), 1, 0),
            StaleEpoch { current: 2 }
        );
        assert_eq!(producer_decision(Some(at(2, 5)), 3, 1), EpochStartsAtZero);
        assert_eq!(producer_decision(Some(at(2, 5)), 3, 0), Accept(at(3, 0)));
    }

    #[test]
    fn paths_have_no_empty_or_dot_segments() {
        assert!(valid_path("chat/abc-1"));
        for bad in ["", "a//b", "a/./b", "../x", "a/\u{0}"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }
}
