//! The component schemas of the document: the error body, and the request
//! bodies as the handlers read them (bodies whose handler refuses unknown
//! fields say `additionalProperties: false`). Answers are objects or
//! arrays; their fields are in README.md and `schemas/`.

use serde_json::{Map, Value, json};

pub fn components() -> Value {
    let mut all = Map::new();
    for group in [
        basics(),
        conversation_bodies(),
        webchat_bodies(),
        admin_bodies(),
    ] {
        if let Value::Object(group) = group {
            all.extend(group);
        }
    }
    Value::Object(all)
}

/// The error body, health, and the shapes of answers.
fn basics() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string", "description": "What went wrong, for a person."},
                "code": {"type": "string", "description": "What went wrong, for a program: `session_not_found`, `rate_limited`…"},
            },
            "examples": [{"error": "no such session", "code": "session_not_found"}],
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
        },
        "Object": {"type": "object"},
        "Array": {"type": "array"},
    })
}

/// Bodies of the session and conversation APIs.
fn conversation_bodies() -> Value {
    let text = |max: u64| json!({"type": "string", "minLength": 1, "maxLength": max});
    json!({
        "NewSession": {
            "type": "object",
            "properties": {"context": {"type": "object", "description": "Facts about the visitor the agent may use."}},
            "examples": [{"context": {"plan": "pro"}}],
        },
        "SessionCreated": {
            "type": "object",
            "required": ["session_id", "websocket_url"],
            "properties": {
                "session_id": {"type": "string", "format": "uuid"},
                "websocket_url": {"type": "string", "description": "ws(s)://…/chat/ws/{id}?ticket=…"},
            },
        },
        "ContextPatch": {
            "type": "object",
            "description": "Keys merged into the context; a null removes its key.",
            "examples": [{"plan": "enterprise", "coupon": null}],
        },
        "NewConversation": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "context": {"type": "object"}},
        },
        "NewMessage": {
            "type": "object",
            "required": ["role", "content"],
            "additionalProperties": false,
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                "content": text(65_536),
                "respond": {"type": "boolean", "description": "Answer it (default true for a user message)."},
                "client_msg_id": {"type": "string", "description": "Makes a retry idempotent."},
                "author": {"type": "string"},
            },
            "examples": [{"role": "user", "content": "¿Cuándo llega mi pedido?"}],
        },
        "ConversationChange": {
            "type": "object",
            "required": ["version"],
            "additionalProperties": false,
            "properties": {
                "title": {"type": ["string", "null"]},
                "status": {"type": "string", "enum": ["active", "archived"]},
                "double_texting": {"type": ["string", "null"], "enum": ["queue", "interrupt", "reject", "merge", null]},
                "version": {"type": "integer", "minimum": 1, "description": "The version last read; stale: 409."},
            },
        },
        "Handoff": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"reason": {"type": "string"}},
        },
    })
}

/// Bodies of the webchat channel and the console.
fn webchat_bodies() -> Value {
    let text = |max: u64| json!({"type": "string", "minLength": 1, "maxLength": max});
    json!({
        "WebchatMessage": {
            "type": "object",
            "required": ["session_id", "content"],
            "additionalProperties": false,
            "properties": {
                "session_id": {"type": "string", "description": "The visitor's webchat id (chosen by the page)."},
                "author": {"type": "string"},
                "content": text(65_536),
                "locale": {"type": "string"},
            },
        },
        "Consent": {
            "type": "object",
            "required": ["session_id", "granted"],
            "additionalProperties": false,
            "properties": {
                "session_id": {"type": "string"},
                "granted": {"type": "boolean"},
                "text_version": {"type": "string"},
            },
        },
        "WebchatHandoff": {
            "type": "object",
            "required": ["session_id"],
            "additionalProperties": false,
            "properties": {"session_id": {"type": "string"}, "reason": {"type": "string"}},
        },
        "StaffMessage": {
            "type": "object",
            "required": ["content"],
            "properties": {"content": text(65_536), "client_msg_id": {"type": "string"}},
        },
    })
}

/// Bodies of the admin API.
fn admin_bodies() -> Value {
    json!({
        "TenantSettings": {
            "type": "object",
            "description": "A tenant's settings (config/default.toml lists every field); on create, `id` too.",
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
                "name": {"type": "string"},
                "agent": {"type": "string"},
                "allowed_origins": {"type": "array", "items": {"type": "string"}},
                "retention": {"type": "object", "properties": {
                    "archive_after_days": {"type": "number", "exclusiveMinimum": 0},
                    "delete_after_days": {"type": "number", "exclusiveMinimum": 0},
                }},
            },
        },
        "ErasureSubject": {
            "type": "object",
            "description": "Exactly one of the identifiers.",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": false,
            "properties": {
                "conversation_id": {"type": "string", "format": "uuid"},
                "session_id": {"type": "string"},
                "email": {"type": "string"},
                "phone": {"type": "string"},
            },
        },
        "NewKey": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["api", "widget", "staff"]},
                "name": {"type": "string"},
            },
        },
        "NewClientToken": {
            "type": "object",
            "required": ["client_id"],
            "properties": {"client_id": {"type": "string"}, "ttl_secs": {"type": "integer", "minimum": 1}},
        },
        "WebhookEndpoint": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "events": {"type": "array", "items": {"type": "string"}},
                "format": {"type": "string", "enum": ["json", "slack"]},
                "enabled": {"type": "boolean"},
                "description": {"type": "string"},
            },
        },
    })
}
