//! What the model is sent: the system prompt rendered from the tenant's
//! template and the conversation's context, then the newest whole messages
//! that fit the history budget (the question is always sent), and how a
//! failure is put in words that never contain the key.

use async_openai::error::OpenAIError;
use serde_json::{Map, Value, json};

use crate::agent::{AgentError, AgentRequest, Turn, request_human_tool};
use crate::model::{OpenAiSettings, Role};

/// The request without messages (model, streaming with usage, tools), and
/// the messages: the system prompt, then the history that fits.
pub(super) fn chat_request(
    settings: &OpenAiSettings,
    request: &AgentRequest,
) -> (Value, Vec<Value>) {
    let mut messages = vec![json!({
        "role": "system",
        "content": render_prompt(&settings.system_prompt, &request.context),
    })];
    for turn in fit_history(&request.history, settings.history_budget_chars) {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        messages.push(json!({"role": role, "content": turn.content}));
    }
    let mut template = json!({
        "model": settings.model,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(temperature) = settings.temperature {
        template["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = settings.max_tokens {
        template["max_tokens"] = json!(max_tokens);
    }
    let tools: Vec<Value> = request
        .settings
        .tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            })
        })
        .collect();
    let mut tools = tools;
    if request.settings.request_human_tool {
        tools.push(request_human_tool());
    }
    if !tools.is_empty() {
        template["tools"] = Value::Array(tools);
    }
    (template, messages)
}

/// The newest whole turns whose text fits `budget` characters, oldest first.
/// The last turn (the question) is always kept, whatever its size.
pub fn fit_history(history: &[Turn], budget: usize) -> &[Turn] {
    let mut used = 0;
    let mut start = history.len();
    for (index, turn) in history.iter().enumerate().rev() {
        let size = turn.content.chars().count();
        if start < history.len() && used + size > budget {
            break;
        }
        used += size;
        start = index;
    }
    &history[start..]
}

/// The system prompt with `{{context}}` and `{{context.<key>}}` filled in.
/// Keys starting with `_` are settings, not facts, and are left out.
pub fn render_prompt(template: &str, context: &Map<String, Value>) -> String {
    let value_text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = rest[start + 2..start + end].trim();
        if name == "context" {
            let mut keys: Vec<&String> =
                context.keys().filter(|key| !key.starts_with('_')).collect();
            keys.sort();
            if keys.is_empty() {
                out.push_str("(nothing yet)");
            }
            let lines: Vec<String> = keys
                .iter()
                .map(|key| format!("- {key}: {}", value_text(&context[key.as_str()])))
                .collect();
            out.push_str(&lines.join("\n"));
        } else if let Some(key) = name.strip_prefix("context.") {
            if let Some(value) = context.get(key) {
                out.push_str(&value_text(value));
            }
        } else {
            // Not ours: kept as written.
            out.push_str(&rest[start..start + end + 2]);
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// A provider error in words for the user: status and the provider's message,
/// never the key.
pub(super) fn describe(error: OpenAIError, key: &str) -> AgentError {
    let text = match error {
        OpenAIError::ApiError(response) if response.status_code.as_u16() == 401 => {
            "the model provider refused the API key (401)".to_owned()
        }
        OpenAIError::ApiError(response) => format!(
            "the model provider answered {}: {}",
            response.status_code, response.api_error.message
        ),
        OpenAIError::Reqwest(error) if error.is_connect() => {
            "cannot connect to the model provider".to_owned()
        }
        OpenAIError::Reqwest(error) if error.is_timeout() => {
            "the model provider timed out".to_owned()
        }
        OpenAIError::Reqwest(_) => "the connection to the model provider broke".to_owned(),
        OpenAIError::StreamError(error) => format!("the model's stream broke: {error}"),
        OpenAIError::JSONDeserialize(error, _) => {
            format!("the model provider sent something unexpected: {error}")
        }
        other => format!("the model provider failed: {other}"),
    };
    let text = if key.len() >= 8 {
        text.replace(key, "[redacted]")
    } else {
        text
    };
    AgentError(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, content: &str) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn history_keeps_whole_newest_messages_within_the_budget() {
        let history = vec![
            turn(Role::User, "aaaaaaaaaa"),
            turn(Role::Assistant, "bbbbbbbbbb"),
            turn(Role::User, "cccccccccc"),
        ];
        assert_eq!(fit_history(&history, 25).len(), 2);
        assert_eq!(fit_history(&history, 30).len(), 3);
        // The question always goes, even alone over budget.
        assert_eq!(fit_history(&history, 3).len(), 1);
        assert_eq!(fit_history(&history, 3)[0].content, "cccccccccc");
    }

    #[test]
    fn prompts_render_the_context() {
        let context: Map<String, Value> = serde_json::from_value(json!({
            "total_spent": 1520.5,
            "name": "Ana",
            "_agent": {"model": "x"},
        }))
        .unwrap();
        assert_eq!(
            render_prompt(
                "Facts:\n{{context}}\nHi {{ context.name }}{{context.missing}}. {{other}}",
                &context
            ),
            "Facts:\n- name: Ana\n- total_spent: 1520.5\nHi Ana. {{other}}"
        );
        assert_eq!(render_prompt("{{context}}", &Map::new()), "(nothing yet)");
    }
}
