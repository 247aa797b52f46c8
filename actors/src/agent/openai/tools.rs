//! A tool call: the model's arguments POSTed, signed, to the tool's URL;
//! the tool's answer (or why there is none) is what the model is told.

use std::time::Duration;

use serde_json::{Value, json};

use crate::model::{ToolCallRecord, ToolSettings};
use crate::net::egress::EgressPolicy;
use crate::net::post::{AGENT_USER_AGENT, SignedPost, header_if_set};
use crate::net::signing::Signer;

/// The largest tool answer given back to the model, in bytes.
const MAX_TOOL_ANSWER_BYTES: usize = 64 * 1024;
/// How much of a failed tool's answer is quoted to the model, in bytes.
const QUOTED_FAILURE_BYTES: usize = 200;

/// POSTs a call's arguments to its tool; the answer's text, or why there is none.
pub(super) async fn call_tool(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    tool: &ToolSettings,
    call: &ToolCallRecord,
    identity: &Value,
) -> Result<String, String> {
    let url = policy
        .check_url(&tool.url)
        .map_err(|error| format!("the tool's URL is refused: {error}"))?;
    let arguments: Value = serde_json::from_str(&call.arguments)
        .map_err(|error| format!("the arguments are not valid JSON: {error}"))?;
    let mut payload = identity.clone();
    payload["type"] = json!("tool.call");
    payload["tool"] = json!(tool.name);
    payload["call_id"] = json!(call.call_id);
    payload["arguments"] = arguments;
    let message_id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let post = SignedPost {
        url,
        body: payload.to_string().into_bytes(),
        message_id: &message_id,
        signers: Signer::new(&tool.secret).into_iter().collect(),
        header: header_if_set(&tool.header_name, &tool.header_value),
        timeout: Some(Duration::from_millis(tool.timeout_ms.max(1))),
        accept: None,
        user_agent: AGENT_USER_AGENT,
    };
    let response = post.request(client).send().await.map_err(|error| {
        if error.is_timeout() {
            "the tool did not answer in time".to_owned()
        } else if crate::net::egress::refused_by_guard(&error) {
            "the tool's address is refused by the egress guard (`egress.allow`)".to_owned()
        } else {
            "cannot reach the tool".to_owned()
        }
    })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|_| "the tool's answer broke off".to_owned())?;
    tool_answer(status, text)
}

/// What the model is told of a tool's answer: its text, at most
/// `MAX_TOOL_ANSWER_BYTES`; or, for a failure, its status and the start of
/// its text. Cut on a character's boundary, whatever the tool sent.
fn tool_answer(status: reqwest::StatusCode, mut text: String) -> Result<String, String> {
    if !status.is_success() {
        cut(&mut text, QUOTED_FAILURE_BYTES);
        return Err(format!("the tool answered {status}: {}", text.trim()));
    }
    cut(&mut text, MAX_TOOL_ANSWER_BYTES);
    Ok(text)
}

/// Shortens `text` to at most `bytes`, never inside a character.
fn cut(text: &mut String, bytes: usize) {
    if text.len() > bytes {
        let boundary = (0..=bytes)
            .rev()
            .find(|at| text.is_char_boundary(*at))
            .unwrap_or(0);
        text.truncate(boundary);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use reqwest::StatusCode;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any status and any text (multi-byte characters at every cut
        /// point included): never a panic, and what the model is told is
        /// the start of the tool's text within its bound.
        #[test]
        fn any_tool_answer_is_bounded_and_whole_characters(
            status in 100u16..600,
            text in prop_oneof![
                any::<String>(),
                "[a-zé🦤\u{0}]{190,210}",
                (0usize..8, any::<String>()).prop_map(|(more, tail)| "🦤".repeat(16_382 + more) + &tail),
            ],
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            match tool_answer(status, text.clone()) {
                Ok(told) => {
                    prop_assert!(status.is_success());
                    prop_assert!(told.len() <= MAX_TOOL_ANSWER_BYTES);
                    prop_assert!(text.starts_with(&told));
                    prop_assert!(told.len() == text.len() || text.len() > MAX_TOOL_ANSWER_BYTES);
                }
                Err(why) => {
                    prop_assert!(!status.is_success());
                    prop_assert!(why.len() <= QUOTED_FAILURE_BYTES + 64);
                }
            }
        }
    }
}
