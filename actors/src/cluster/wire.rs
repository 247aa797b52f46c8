//! What crosses from one node to another: [`Wire`], the one message type
//! of the `Gateway` actors, serialised by hand as versioned JSON so a node
//! can tell a message it does not speak from a broken one.
//!
//! Every other message type of the runtime stays on its node (ractor's
//! `cluster` feature makes that an explicit `impl Message` on each).

use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use bytes::Bytes;

use crate::conversation::session::Joining;
use crate::error::Error;
use crate::model::stream::StreamConfig;
use crate::model::{
    Attendant, ClientCommand, Consent, Handoff, MetaChange, NewMessage, Participant, SessionId,
    TenantId, WebhookNudge,
};
use crate::streams::fork::ForkBase;
use crate::streams::{Append, ForkRequest};

// The protocol version a node speaks is in every variant name.
const CALL: &str = "v1.call";
const STREAM: &str = "v1.stream";
const CAST: &str = "v1.cast";

pub enum Wire {
    /// To the owner: a request to a conversation's session; answered with
    /// the JSON of a [`Reply`].
    Call {
        request: Request,
        reply: RpcReplyPort<Vec<u8>>,
    },
    /// To a stream's owner: a call to its stream actor; answered with the
    /// JSON of a [`Reply`] (see `cluster/streams.rs`).
    Stream {
        request: StreamRequest,
        reply: RpcReplyPort<Vec<u8>>,
    },
    /// Everything else, one way.
    Cast(Cast),
}

/// A request for the session of `tenant`'s conversation `session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub tenant: TenantId,
    pub session: SessionId,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Attaches a socket of node `from`, known there as `relay`: its frames
    /// come back as `Cast::Frames`.
    Attach {
        after_seq: Option<u64>,
        joining: Joining,
        participant: Participant,
        from: String,
        relay: u64,
    },
    Post {
        message: NewMessage,
    },
    /// A post that waits for its answer: answered with the ack and the
    /// stored answer together.
    Ask {
        message: NewMessage,
    },
    RecordConsent {
        consent: Consent,
    },
    UpdateMeta {
        change: MetaChange,
    },
    RequestHandoff {
        handoff: Handoff,
    },
    TakeOver {
        attendant: Attendant,
    },
    HandBack {
        by: String,
    },
    Summary,
    UpdateContext {
        patch: Map<String, Value>,
        if_match: Option<u64>,
    },
    AnswerAgain {
        client_msg_id: String,
    },
}

/// A call for `tenant`'s stream at `path`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRequest {
    pub tenant: TenantId,
    pub path: String,
    pub call: StreamCall,
}

/// The stream actor's calls, as they cross (`StreamMsg` without its reply
/// ports; a live tail is followed with `Head`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum StreamCall {
    Create {
        config: StreamConfig,
        closed: bool,
        #[serde(with = "crate::streams::append::base64_bytes")]
        body: Bytes,
        fork: Option<Box<ForkBase>>,
        may_make: bool,
        max_bytes: u64,
    },
    AddFork {
        request: ForkRequest,
    },
    ReleaseFork {
        stream_id: String,
    },
    Append {
        append: Box<Append>,
    },
    Head {
        touch: bool,
    },
    Delete,
}

/// What a call answers: the op's result as JSON, or the error.
pub type Reply = Result<Value, WireError>;

/// An [`Error`] as it crosses: its code and text (and the version a
/// conflict names), rebuilt on the other side by code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// The limit a `content_too_large` names (`current` is the size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        let (current, limit) = match error {
            Error::StaleContext { current } | Error::VersionConflict { current } => {
                (Some(*current), None)
            }
            Error::ContentTooLarge { actual, limit } => (Some(*actual as u64), Some(*limit as u64)),
            _ => (None, None),
        };
        WireError {
            code: error.code().to_owned(),
            message: error.to_string(),
            current,
            limit,
        }
    }
}

impl WireError {
    /// The error back, as close as its code allows: the caller maps it to
    /// the same status and code as on the owner.
    pub fn into_error(self, tenant: &TenantId, session: SessionId) -> Error {
        match self.code.as_str() {
            "session_not_found" => Error::SessionNotFound {
                tenant: tenant.clone(),
                session,
            },
            "tenant_not_found" => Error::TenantNotFound(tenant.clone()),
            _ => self.into_common_error(),
        }
    }

    /// As [`WireError::into_error`], for a call to the stream at `path`.
    pub fn into_stream_error(self, tenant: &TenantId, path: &str) -> Error {
        match self.code.as_str() {
            "stream_not_found" => Error::StreamNotFound(path.to_owned()),
            "stream_gone" => Error::StreamGone(path.to_owned()),
            "tenant_not_found" => Error::TenantNotFound(tenant.clone()),
            _ => self.into_common_error(),
        }
    }

    fn into_common_error(self) -> Error {
        let current = self.current.unwrap_or_default();
        match self.code.as_str() {
            "invalid_input" => Error::InvalidInput(self.message),
            "conflict" => Error::Conflict(self.message),
            "busy" => Error::Busy,
            "stale_context" => Error::StaleContext { current },
            "version_conflict" => Error::VersionConflict { current },
            "already_taken_over" => Error::AlreadyTakenOver { by: self.message },
            "not_taken_over" => Error::NotTakenOver,
            "nothing_to_cancel" => Error::NothingToCancel,
            "storage_unavailable" => Error::StorageUnavailable(self.message),
            "fenced" => Error::Fenced(self.message),
            "shutting_down" => Error::ShuttingDown,
            "content_too_large" => Error::ContentTooLarge {
                actual: current as usize,
                limit: self.limit.unwrap_or_default() as usize,
            },
            "quota_exceeded" => Error::QuotaExceeded(self.message),
            "owner_unreachable" | "unavailable" => Error::OwnerUnreachable(self.message),
            _ => Error::Storage(format!("{} ({})", self.message, self.code)),
        }
    }
}

/// One-way messages between gateways.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cast {
    /// Edge to owner: a command from a relayed socket.
    Command {
        from: String,
        relay: u64,
        command: ClientCommand,
    },
    /// Edge to owner: the relayed socket ended.
    Detach { from: String, relay: u64 },
    /// Owner to edge: frames for a relayed socket, in order.
    Frames { relay: u64, frames: Vec<WireFrame> },
    /// Owner to edge: close the relayed socket with this reason; without
    /// one, the session stopped and the socket re-attaches.
    Close {
        relay: u64,
        reason: Option<(u16, String)>,
    },
    /// Any node to any: for the webhook actor (see `webhooks/holding.rs`).
    Nudge { nudge: WebhookNudge },
    /// A frame of `tenant`'s console feed, for the consoles there.
    Feed { tenant: TenantId, text: String },
    /// Tenants or keys were changed through the admin API: read them again.
    AccessChanged,
    /// Any node to every peer, every third of the lease: it is alive.
    Heartbeat { from: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFrame {
    pub text: String,
    pub seq: Option<u64>,
}

impl ractor::Message for Wire {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Wire::Call { request, reply } => Ok(SerializedMessage::Call {
                variant: CALL.to_owned(),
                args: serde_json::to_vec(&request).map_err(|_| BoxedDowncastErr)?,
                reply,
                metadata: None,
            }),
            Wire::Stream { request, reply } => Ok(SerializedMessage::Call {
                variant: STREAM.to_owned(),
                args: serde_json::to_vec(&request).map_err(|_| BoxedDowncastErr)?,
                reply,
                metadata: None,
            }),
            Wire::Cast(cast) => Ok(SerializedMessage::Cast {
                variant: CAST.to_owned(),
                args: serde_json::to_vec(&cast).map_err(|_| BoxedDowncastErr)?,
                metadata: None,
            }),
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == CALL => match serde_json::from_slice(&args) {
                Ok(request) => Ok(Wire::Call { request, reply }),
                Err(error) => refuse(&error, reply),
            },
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == STREAM => match serde_json::from_slice(&args) {
                Ok(request) => Ok(Wire::Stream { request, reply }),
                Err(error) => refuse(&error, reply),
            },
            SerializedMessage::Cast { variant, args, .. } if variant == CAST => {
                serde_json::from_slice(&args)
                    .map(Wire::Cast)
                    .map_err(|_| BoxedDowncastErr)
            }
            other => {
                tracing::warn!(message = ?other, "a cluster message of another version; dropped");
                Err(BoxedDowncastErr)
            }
        }
    }
}

/// Answers a call that did not parse, so its caller is not left waiting.
fn refuse(
    error: &serde_json::Error,
    reply: RpcReplyPort<Vec<u8>>,
) -> Result<Wire, BoxedDowncastErr> {
    let refusal = WireError {
        code: "invalid_input".into(),
        message: format!("a cluster request did not parse: {error}"),
        current: None,
        limit: None,
    };
    let _ = reply.send(encode_reply(&Err(refusal)));
    Err(BoxedDowncastErr)
}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    serde_json::to_vec(reply).expect("replies are JSON values")
}

pub fn decode_reply(bytes: &[u8]) -> Reply {
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        Err(WireError {
            code: "unavailable".into(),
            message: format!("a cluster reply did not parse: {error}"),
            current: None,
            limit: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cast_crosses_as_versioned_json_and_back() {
        let cast = Cast::Frames {
            relay: 7,
            frames: vec![WireFrame {
                text: "{\"type\":\"chunk\"}".into(),
                seq: Some(3),
            }],
        };
        let serialized = ractor::Message::serialize(Wire::Cast(cast)).unwrap();
        let SerializedMessage::Cast { variant, .. } = &serialized else {
            panic!("a cast serialises as a cast");
        };
        assert_eq!(variant, "v1.cast");
        let Wire::Cast(Cast::Frames { relay, frames }) =
            <Wire as ractor::Message>::deserialize(serialized).unwrap()
        else {
            panic!("frames come back as frames");
        };
        assert_eq!((relay, frames[0].seq), (7, Some(3)));
    }

    #[test]
    fn another_version_is_refused_not_misread() {
        let foreign = SerializedMessage::Cast {
            variant: "v2.cast".into(),
            args: b"{}".to_vec(),
            metadata: None,
        };
        assert!(<Wire as ractor::Message>::deserialize(foreign).is_err());
    }

    #[test]
    fn errors_keep_their_code_and_version_across() {
        let tenant = TenantId("t".into());
        let session = SessionId::new();
        let wire = WireError::from(&Error::VersionConflict { current: 4 });
        let back: WireError = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        let error = back.into_error(&tenant, session);
        assert!(matches!(error, Error::VersionConflict { current: 4 }));
    }
}
