//! The model: plain data the whole runtime shares, with no actors, no I/O
//! and no clock but `now_timestamp`. Ids, messages, conversations, access,
//! tenant settings and their validation, webhook data and events, lead
//! extraction and the WebSocket wire protocol.
//!
//! Architecture Invariant: nothing here imports anything of this crate
//! outside `model/`; everything else may import the model.
//!
//! Inside the model, files import each other by their own paths (never
//! through these re-exports), so the folder has no import cycle.

pub mod access;
pub mod analytics;
pub mod conversation;
pub mod conversation_stream;
pub mod erasure;
pub mod events;
pub mod ids;
pub mod insight;
pub mod leads;
pub mod message;
pub mod policy;
pub mod protocol;
pub mod stream;
pub mod tenant;
pub mod webhook;

pub use access::{ApiKeyRecord, KeyKind, Scope, TenantRecord};
pub use conversation::{
    Attendant, Consent, Contact, Handoff, MetaChange, Participant, SessionRecord, merge_context,
};
pub use ids::{MessageId, SessionId, TenantId, now_timestamp, stored_time};
pub use message::{
    Ack, AnswerMeta, ClientCommand, Direction, MessageStatus, NewMessage, Origin, Role,
    StoredMessage, ToolCallRecord,
};
pub use policy::{DoubleTexting, DoubleTextingSettings, RetentionSettings};
pub use tenant::{
    Greeting, OpenAiSettings, REQUEST_HUMAN, RateLimits, Tenant, TenantSettings, ToolSettings,
    WebhookAgentSettings, is_web_origin,
};
pub use webhook::{
    ALWAYS_RECORDED, Delivery, DeliveryStatus, EVENT_TYPES, EventRecord, Subscriptions, TEST_EVENT,
    WebhookEndpoint, WebhookFormat, WebhookNudge, filter_wants, signing_key,
};
