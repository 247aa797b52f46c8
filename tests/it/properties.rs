//! Hostile input, generated (proptest): the parsers that take outside input
//! directly, 10,000 cases each. Socket client frames: never a panic, every
//! refusal has a code, and a message's content comes out byte for byte
//! (NUL, any Unicode, huge numbers and deep nesting around it). Client
//! tokens: never a panic, garbage never verifies, and a minted token for any
//! valid client id verifies to that id. Config files: never a panic, only a
//! parse result.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tertulia::auth::tokens::{MAX_CLIENT_ID_LEN, mint_client_token, verify_client_token};
use tertulia_actors::model::message::ClientCommand;
use tertulia_actors::model::protocol::parse_client_frame;

const CASES: u32 = 10_000;
const MAX_CONTENT: usize = 16 * 1024;
const SECRET: &str = "properties-client-token-secret-0123456789";

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested up to a few levels, numbers of any size.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A frame: one of the known types (or another), with arbitrary fields.
fn any_frame() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("message".to_owned()),
        Just("cancel".to_owned()),
        Just("typing".to_owned()),
        Just("resume".to_owned()),
        Just("context".to_owned()),
        Just("ping".to_owned()),
        any::<String>(),
    ];
    let fields = prop::collection::btree_map(
        prop_oneof![
            Just("content".to_owned()),
            Just("after_seq".to_owned()),
            Just("context".to_owned()),
            Just("client_msg_id".to_owned()),
            Just("author".to_owned()),
            any::<String>(),
        ],
        any_json(),
        0..5,
    );
    (kind, fields).prop_map(|(kind, fields)| {
        let mut frame: serde_json::Map<String, Value> = fields.into_iter().collect();
        frame.insert("type".into(), kind.into());
        Value::Object(frame).to_string()
    })
}

fn known_code(code: &str) -> bool {
    !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_text_frame_is_parsed_or_refused_with_a_code(text in any::<String>()) {
        if let Err(error) = parse_client_frame(&text, MAX_CONTENT) {
            prop_assert!(known_code(error.code), "{}", error.code);
        }
    }

    #[test]
    fn any_json_frame_is_parsed_or_refused_with_a_code(text in any_frame()) {
        if let Err(error) = parse_client_frame(&text, MAX_CONTENT) {
            prop_assert!(known_code(error.code), "{}", error.code);
        }
    }

    #[test]
    fn a_message_keeps_its_content_byte_for_byte(
        content in "(?s).{1,300}",
        extra in any_json(),
    ) {
        prop_assume!(!content.trim().is_empty());
        let frame = json!({"type": "message", "content": content, "x-extra": extra}).to_string();
        match parse_client_frame(&frame, MAX_CONTENT) {
            Ok(ClientCommand::Message(message)) => prop_assert_eq!(message.content, content),
            Ok(_) => prop_assert!(false, "a message frame is a message"),
            Err(error) => prop_assert!(known_code(error.code), "{}", error.code),
        }
    }

    #[test]
    fn garbage_never_verifies_as_a_client_token(token in any::<String>()) {
        prop_assert_eq!(verify_client_token(SECRET, &token), None);
    }

    #[test]
    fn a_minted_token_verifies_to_its_client(client in "[^\u{0}]{1,64}") {
        prop_assume!(client.len() <= MAX_CLIENT_ID_LEN);
        let (token, _) = mint_client_token(SECRET, &client, Duration::from_secs(60));
        prop_assert_eq!(verify_client_token(SECRET, &token), Some(client.clone()));
        prop_assert_eq!(verify_client_token("another-secret-of-enough-length-0123", &token), None);
    }
}

/// Deep nesting far past serde_json's recursion limit: a refusal, not a
/// stack overflow.
#[test]
fn deeply_nested_frames_are_refused() {
    for depth in [128, 1_000, 100_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let error = parse_client_frame(&text, MAX_CONTENT).unwrap_err();
        assert!(known_code(error.code));
        let nested = format!(
            r#"{{"type":"message","content":"hola","context":{}{}}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        );
        assert!(parse_client_frame(&nested, MAX_CONTENT).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Config files: any text, or TOML-shaped text with any keys and values,
    /// loads or is refused; nothing panics.
    #[test]
    fn any_config_file_loads_or_is_refused(
        section in prop_oneof![Just("server"), Just("storage"), Just("limits"), Just("webhooks"), Just("tenants.x"), Just("zzz")],
        key in "[a-z_]{1,20}",
        value in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), any::<String>().prop_map(|s| format!("{s:?}")), any::<String>()],
    ) {
        let dir = std::env::temp_dir().join(format!("tertulia-properties-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, format!("[{section}]\n{key} = {value}\n")).unwrap();
        let _ = tertulia::config::Config::load_noting(Some(&file));
    }
}

/// One REST surface that takes a body: where it is, and the fields it knows.
struct Surface {
    method: &'static str,
    /// `{id}` is the conversation the test made.
    path: &'static str,
    fields: &'static [&'static str],
}

/// Bodies for `surface`: any bytes, any JSON, objects of its own fields
/// (and others) with any values, and well-formed ones with any text.
fn any_body(surface: &'static Surface) -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    let field = prop_oneof![
        4 => prop::sample::select(surface.fields).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    let shaped = prop::collection::btree_map(field, any_json(), 0..5)
        .prop_map(|map| serde_json::to_vec(&map).unwrap());
    let text = prop_oneof![
        any::<String>(),
        "(?s)[\\u{0}-\\u{10ffff}]{1,64}",
        Just("\u{0}".to_owned()),
        Just("ñandú 🦤 \u{200d}\u{fe0f}".to_owned()),
    ];
    let well_formed = text.prop_map(|text| {
        let body = json!({
            "role": "user", "content": text, "respond": false, "title": text,
            "context": {"k": text}, "version": 1, "session_id": "visitante-1", "author": "Ana",
            "id": "chat-1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        });
        let mut object = body.as_object().unwrap().clone();
        object.retain(|key, _| surface.fields.contains(&key.as_str()));
        (serde_json::to_vec(&object).unwrap(), Some(text))
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..128).prop_map(|bytes| (bytes, None)),
        1 => any_json().prop_map(|value| (serde_json::to_vec(&value).unwrap(), None)),
        3 => shaped.prop_map(|bytes| (bytes, None)),
        3 => well_formed,
    ]
}

/// Sends every generated body to `surface` of a real server: never a 5xx,
/// every refusal `{error, code}`; a stored message's content, read back, is
/// the text sent. Returns how many were accepted.
fn hammer(surface: &'static Surface, cases: u32) -> u32 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = crate::support::server::config();
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.rate_limits.api_key_per_minute = 10_000_000;
    acme.rate_limits.ip_per_minute = 10_000_000;
    acme.rate_limits.session_messages_per_minute = 10_000_000;
    acme.rate_limits.webchat_session_per_minute = 10_000_000;
    acme.rate_limits.webchat_ip_per_minute = 10_000_000;
    let server = runtime.block_on(crate::support::server::TestServer::start(config));
    let (session, _) = runtime.block_on(server.create_session());
    let url = server.url(&surface.path.replace("{id}", &session));
    let accepted = std::cell::Cell::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&any_body(surface), |(body, text)| {
            let (status, answer) = runtime.block_on(async {
                let response = server
                    .http
                    .request(surface.method.parse().unwrap(), &url)
                    .header("X-API-Key", crate::support::server::KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap())
            });
            prop_assert!(
                status < 500,
                "{status} for {:?}",
                String::from_utf8_lossy(&body)
            );
            if status >= 400 {
                let error: Value = serde_json::from_slice(&answer).unwrap();
                prop_assert!(error["error"].is_string(), "{error}");
                prop_assert!(known_code(error["code"].as_str().unwrap_or("")), "{error}");
                return Ok(());
            }
            accepted.set(accepted.get() + 1);
            if let (Some(text), true) = (text, surface.fields.contains(&"role")) {
                let (_, stored) = runtime.block_on(server.get(
                    &format!("/chat/{session}/messages?limit=1"),
                    Some(crate::support::server::KEY),
                ));
                prop_assert_eq!(stored[0]["content"].as_str(), Some(text.as_str()));
            }
            Ok(())
        })
        .unwrap();
    runtime.block_on(server.stop());
    accepted.get()
}

/// Cases per REST surface: every case is a real request to a real server
/// that may store a message, open a conversation or wait for an answer
/// (5 to 15 ms each in the dev build), so the suite sends `FEWER` per
/// surface; `TERTULIA_PROPERTY_CASES=10000` makes the long run by hand.
fn rest_cases(default: u32) -> u32 {
    std::env::var("TERTULIA_PROPERTY_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

macro_rules! rest_surface {
    ($name:ident, $cases:expr, $method:literal, $path:literal, $fields:expr) => {
        #[test]
        fn $name() {
            static SURFACE: Surface = Surface {
                method: $method,
                path: $path,
                fields: $fields,
            };
            let accepted = hammer(&SURFACE, rest_cases($cases));
            assert!(accepted > 0, "some well-formed bodies are accepted");
        }
    };
}

const FEWER: u32 = 2_000;

rest_surface!(
    any_body_to_post_messages_is_stored_as_sent_or_refused,
    FEWER,
    "POST",
    "/chat/{id}/messages",
    &["role", "content", "respond", "client_msg_id", "author"]
);
rest_surface!(
    any_body_to_create_a_conversation_is_served_or_refused,
    FEWER,
    "POST",
    "/chat/conversation",
    &["title", "client_id", "context"]
);
rest_surface!(
    any_body_to_patch_a_conversation_is_served_or_refused,
    FEWER,
    "PATCH",
    "/chat/{id}",
    &["title", "status", "version"]
);
rest_surface!(
    any_body_to_create_a_session_is_served_or_refused,
    FEWER,
    "POST",
    "/chat/sessions",
    &["context"]
);
rest_surface!(
    any_body_to_set_a_context_is_served_or_refused,
    FEWER,
    "POST",
    "/chat/sessions/{id}/context",
    &["context", "k"]
);
rest_surface!(
    any_body_to_webchat_is_answered_or_refused,
    FEWER,
    "POST",
    "/api/webchat/messages",
    &["session_id", "author", "content", "locale"]
);
rest_surface!(
    any_body_to_the_ai_sdk_is_answered_or_refused,
    FEWER,
    "POST",
    "/ai-sdk/chat",
    &["id", "messages", "trigger"]
);
