//! The WebSocket wire format, mirrored by `schemas/frames/*.json`.
//!
//! It lives in the runtime, not the edge, because the session serialises each
//! outbound frame once and hands the same bytes to every subscriber. The edge
//! owns the transport (upgrade, reading, writing); it parses inbound text with
//! [`parse_client_frame`] and writes [`Frame`]s as they are.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::{MessageId, SessionId};
use super::message::{Ack, ClientCommand, MessageStatus, NewMessage, Role, StoredMessage};

/// One encoded server frame: UTF-8 JSON text, cheap to clone (shared bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    text: Bytes,
    /// The log position this frame reports, if any: lets a socket that must
    /// re-attach ask for exactly what it has not yet seen.
    pub seq: Option<u64>,
}

impl Frame {
    /// A frame from JSON text that reports no log position (feed frames).
    pub(crate) fn from_json(text: Vec<u8>) -> Frame {
        Frame {
            text: Bytes::from(text),
            seq: None,
        }
    }

    /// A frame relayed from the node that owns its conversation: its text
    /// and log position as that node encoded them.
    pub fn relayed(text: String, seq: Option<u64>) -> Frame {
        Frame {
            text: Bytes::from(text),
            seq,
        }
    }

    /// The frame's JSON text as shared bytes (always valid UTF-8).
    pub fn bytes(&self) -> &Bytes {
        &self.text
    }

    pub fn as_str(&self) -> &str {
        // Frames are only built from serde_json output, which is UTF-8.
        std::str::from_utf8(&self.text).expect("frames are built from JSON text")
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A message as subscribers see it (`message` frames, history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub id: MessageId,
    pub session_id: SessionId,
    pub seq: u64,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    pub created_at: String,
    /// Who wrote it, as the sender named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl From<&StoredMessage> for WireMessage {
    fn from(message: &StoredMessage) -> Self {
        WireMessage {
            id: message.id,
            session_id: message.session_id,
            seq: message.seq,
            role: message.role,
            content: message.content.clone(),
            status: message.status,
            client_msg_id: message.client_msg_id.clone(),
            created_at: message.created_at.clone(),
            author: message.author.clone(),
        }
    }
}

/// Server → client frames. New fields are additive; clients ignore what they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Sent once on connect: the tenant's greeting.
    System { content: String },
    /// The sender's message is durable.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        message_id: MessageId,
        seq: u64,
    },
    /// A stored message: from another participant, or replayed on resume.
    Message { message: WireMessage },
    /// A piece of the answer being generated. With `snapshot: true` the content
    /// is the whole text so far (sent to a client joining mid-answer): replace,
    /// do not append.
    Chunk {
        content: String,
        message_id: MessageId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        snapshot: bool,
        /// The user message this answers, on an answer's first frame (and on
        /// a snapshot): how a client tells its own answer from one queued
        /// before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// Earlier questions this answer answers too (double texting: merge,
        /// interrupt), with `reply_to`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        merged: Vec<MessageId>,
    },
    /// The answer is stored. `status` says whether it is whole.
    Done {
        content: String,
        message_id: MessageId,
        seq: u64,
        status: MessageStatus,
        /// The user message this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        merged: Vec<MessageId>,
    },
    /// The agent called a tool while writing the answer `message_id`.
    ToolCall {
        message_id: MessageId,
        call_id: String,
        name: String,
        /// The arguments, as the JSON text the model wrote.
        arguments: String,
        /// The user message being answered, when this is the answer's first frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        merged: Vec<MessageId>,
    },
    /// The tool's answer, as given back to the model.
    ToolResult {
        message_id: MessageId,
        call_id: String,
        name: String,
        content: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    /// Something went wrong; the socket stays open unless a close follows.
    Error { content: String, code: String },
    /// Another participant is typing.
    Typing {},
    /// Who is in the conversation; sent on connect and whenever it changes.
    Presence {
        /// Visitors connected (a person may have several tabs open).
        visitors: usize,
        /// The names of the staff watching from the agent console.
        staff: Vec<String>,
        /// Who answers: the AI, or the person who took the conversation over.
        agent: AgentPresence,
        /// A person has been asked for and nobody has taken over yet.
        handoff_requested: bool,
    },
    /// Answer to a client `ping`.
    Pong {},
    /// The conversation's context changed: `version` is its new version, and
    /// `patch` the RFC 6902 JSON Patch from the version before. A client that
    /// missed versions (it said so on `resume`) gets `context`, the whole of
    /// it, instead.
    Context {
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patch: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Map<String, Value>>,
    },
}

impl ServerFrame {
    /// Serialise once; the bytes are shared by every subscriber.
    pub fn encode(&self) -> Frame {
        let seq = match self {
            ServerFrame::Ack { seq, .. } | ServerFrame::Done { seq, .. } => Some(*seq),
            ServerFrame::Message { message } => Some(message.seq),
            _ => None,
        };
        let text = serde_json::to_vec(self).expect("server frames always serialise");
        Frame {
            text: Bytes::from(text),
            seq,
        }
    }

    pub fn error(code: &str, content: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            content: content.into(),
            code: code.to_string(),
        }
    }

    pub fn ack(ack: &Ack) -> ServerFrame {
        ServerFrame::Ack {
            client_msg_id: ack.client_msg_id.clone(),
            message_id: ack.message_id,
            seq: ack.seq,
        }
    }

    /// The end of a stored answer to `question` (and to the `merged` ones
    /// before it), whole or cut short.
    pub fn done(
        answer: &StoredMessage,
        question: MessageId,
        merged: Vec<MessageId>,
    ) -> ServerFrame {
        ServerFrame::Done {
            content: answer.content.clone(),
            message_id: answer.id,
            seq: answer.seq,
            status: answer.status,
            reply_to: Some(question),
            merged,
        }
    }
}

/// Who answers a conversation, in `presence` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    /// `ai`, or `human` once a person took over.
    pub kind: String,
    /// The person's name, for `human`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Client → server frames, as they arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Message {
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Map<String, Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        /// The writer's name as they give it (a webchat visitor).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
    },
    Cancel {},
    Typing {},
    Resume {
        after_seq: u64,
        /// The context version the client has: if it is not the current
        /// one, the whole context is sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_version: Option<u64>,
    },
    Context {
        context: Map<String, Value>,
    },
    Ping {},
}

/// Why an inbound frame was refused: the `code` and `content` of the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
        }
    }

    pub fn to_frame(&self) -> Frame {
        ServerFrame::error(self.code, self.message.clone()).encode()
    }
}

/// The longest `client_msg_id` accepted: an id, not a payload.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;
/// The longest `author`, in bytes.
pub const MAX_AUTHOR_LEN: usize = 100;

const KNOWN_TYPES: [&str; 6] = ["message", "cancel", "typing", "resume", "context", "ping"];

/// Parses and checks one inbound text frame. Every refusal has its own code so
/// a client can tell a typo from a limit.
pub fn parse_client_frame(
    text: &str,
    max_content_bytes: usize,
) -> Result<ClientCommand, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        FrameError::new("invalid_json", format!("frame is not valid JSON: {error}"))
    })?;
    let kind = frame_type(&value)?;
    if kind == "message" {
        check_content(value.get("content"), max_content_bytes)?;
    }
    let frame: ClientFrame = serde_json::from_value(value).map_err(|error| {
        FrameError::new("invalid_frame", format!("bad `{kind}` frame: {error}"))
    })?;
    Ok(match frame {
        ClientFrame::Message {
            content,
            context,
            client_msg_id,
            author,
        } => {
            if let Some(author) = &author
                && (author.trim().is_empty() || author.len() > MAX_AUTHOR_LEN)
            {
                return Err(FrameError::new(
                    "invalid_frame",
                    format!("`author` must be 1 to {MAX_AUTHOR_LEN} bytes"),
                ));
            }
            if let Some(id) = &client_msg_id
                && (id.is_empty() || id.len() > MAX_CLIENT_MSG_ID_LEN)
            {
                return Err(FrameError::new(
                    "invalid_frame",
                    format!("`client_msg_id` must be 1 to {MAX_CLIENT_MSG_ID_LEN} bytes"),
                ));
            }
            ClientCommand::Message(NewMessage {
                context,
                client_msg_id,
                author: author.map(|author| author.trim().to_owned()),
                ..NewMessage::user(content)
            })
        }
        ClientFrame::Cancel {} => ClientCommand::Cancel,
        ClientFrame::Typing {} => ClientCommand::Typing,
        ClientFrame::Resume {
            after_seq,
            context_version,
        } => ClientCommand::Resume {
            after_seq,
            context_version,
        },
        ClientFrame::Context { context } => ClientCommand::Context(context),
        ClientFrame::Ping {} => ClientCommand::Ping,
    })
}

/// The frame's `type`, if it is an object with a known one.
fn frame_type(value: &Value) -> Result<String, FrameError> {
    let Some(object) = value.as_object() else {
        return Err(FrameError::new(
            "invalid_frame",
            "a frame must be a JSON object",
        ));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(FrameError::new("invalid_frame", "`type` must be a string")),
        None => return Err(FrameError::new("missing_type", "the frame has no `type`")),
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(FrameError::new(
            "unknown_type",
            format!(
                "unknown frame type `{kind}`; expected one of {}",
                KNOWN_TYPES.join(", ")
            ),
        ));
    }
    Ok(kind)
}

/// A message's `content`: present, not blank, within the limit.
fn check_content(content: Option<&Value>, max_content_bytes: usize) -> Result<(), FrameError> {
    match content {
        None | Some(Value::Null) => Err(FrameError::new(
            "missing_content",
            "a message needs `content`",
        )),
        Some(Value::String(content)) if content.trim().is_empty() => {
            Err(FrameError::new("empty_content", "`content` is empty"))
        }
        Some(Value::String(content)) if content.len() > max_content_bytes => Err(FrameError::new(
            "content_too_large",
            format!(
                "`content` is {} bytes; the limit is {max_content_bytes}",
                content.len()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> &'static str {
        parse_client_frame(text, 10).unwrap_err().code
    }

    #[test]
    fn every_bad_frame_has_its_own_code() {
        assert_eq!(code_of("{not json"), "invalid_json");
        assert_eq!(code_of("[1,2]"), "invalid_frame");
        assert_eq!(code_of(r#"{"content":"hi"}"#), "missing_type");
        assert_eq!(code_of(r#"{"type":"shout"}"#), "unknown_type");
        assert_eq!(code_of(r#"{"type":"message"}"#), "missing_content");
        assert_eq!(
            code_of(r#"{"type":"message","content":"  "}"#),
            "empty_content"
        );
        assert_eq!(
            code_of(r#"{"type":"message","content":"12345678901"}"#),
            "content_too_large"
        );
        assert_eq!(
            code_of(r#"{"type":"message","content":5}"#),
            "invalid_frame"
        );
        assert_eq!(
            code_of(r#"{"type":"resume","after_seq":-1}"#),
            "invalid_frame"
        );
        assert_eq!(
            code_of(r#"{"type":"message","content":"hi","client_msg_id":""}"#),
            "invalid_frame"
        );
    }

    #[test]
    fn a_message_frame_becomes_a_command() {
        let command = parse_client_frame(
            r#"{"type":"message","content":"hola","client_msg_id":"c1","context":{"plan":"pro"}}"#,
            100,
        )
        .unwrap();
        let ClientCommand::Message(message) = command else {
            panic!("not a message")
        };
        assert_eq!(message.content, "hola");
        assert_eq!(message.client_msg_id.as_deref(), Some("c1"));
        assert_eq!(message.context.unwrap()["plan"], "pro");
    }

    #[test]
    fn frames_carry_their_seq() {
        let frame = ServerFrame::Done {
            content: "x".into(),
            message_id: MessageId::new(),
            seq: 7,
            status: MessageStatus::Complete,
            reply_to: None,
            merged: Vec::new(),
        }
        .encode();
        assert_eq!(frame.seq, Some(7));
        assert!(frame.as_str().starts_with(r#"{"type":"done""#));
        assert_eq!(ServerFrame::Pong {}.encode().as_str(), r#"{"type":"pong"}"#);
    }
}
