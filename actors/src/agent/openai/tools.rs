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
    let mut text: String = text.chars().take(MAX_TOOL_ANSWER_BYTES).collect();
    if !status.is_success() {
        text.truncate(200);
        return Err(format!("the tool answered {status}: {}", text.trim()));
    }
    Ok(text)
}
