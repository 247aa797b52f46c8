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
