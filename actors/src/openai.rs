//! The `openai` agent provider: streams chat completions from any
//! OpenAI-compatible server with async-openai. Not an actor: the `Agent`
//! actor consumes the stream this returns in its generation task, so
//! dropping it (on `cancel`) drops the HTTP request.
//!
//! - The system message is rendered from the tenant's template and the
//!   conversation's context; the history sent is the newest whole messages
//!   that fit `history_budget_chars` (the question is always sent).
//! - 429 and 5xx before the stream starts are retried by async-openai's retry
//!   layer, which honours `Retry-After`; the whole wait for the first piece
//!   of text is bounded by `first_token_timeout_ms`, and each silence after
//!   it by `idle_timeout_ms`. The connect timeout is the HTTP client's.
//! - Errors are put in words that never contain the key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::OpenAIRetryLayer;
use async_openai::types::chat::{
    ChatCompletionResponseStream, CreateChatCompletionRequest, CreateChatCompletionStreamResponse,
};
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Map, Value, json};
use tower::Layer;

use crate::agent::{AgentError, AgentEvent, AgentProvider, AgentRequest, AgentStream, Turn};
use crate::config::OpenAiSettings;
use crate::domain::{AnswerMeta, Role};

/// The `openai` provider. Keeps one HTTP client per base URL, key and
/// client settings, so connections are reused across answers.
#[derive(Default)]
pub struct OpenAiAgent {
    clients: DashMap<String, Client<OpenAIConfig>>,
}

impl OpenAiAgent {
    fn client(
        &self,
        settings: &OpenAiSettings,
        key: &str,
    ) -> Result<Client<OpenAIConfig>, AgentError> {
        use sha2::{Digest, Sha256};
        // The key is part of the identity, hashed so it is not kept twice in memory.
        let id = format!(
            "{}|{:x}|{}|{}",
            settings.base_url,
            Sha256::digest(key.as_bytes()),
            settings.connect_timeout_ms,
            settings.max_retries
        );
        if let Some(client) = self.clients.get(&id) {
            return Ok(client.clone());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1)))
            .build()
            .map_err(|error| AgentError(format!("cannot build the HTTP client: {error}")))?;
        let service =
            OpenAIRetryLayer::new(settings.max_retries as usize).layer(ReqwestService::new(http));
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.trim_end_matches('/'))
            .with_api_key(key);
        let client = Client::with_config(config).with_http_service(service);
        self.clients.insert(id, client.clone());
        Ok(client)
    }
}

impl AgentProvider for OpenAiAgent {
    fn answer(&self, request: AgentRequest) -> AgentStream {
        let settings = request
            .settings
            .openai
            .with_overrides(request.context.get("_agent"));
        let key = settings.resolve_key();
        let body = match chat_request(&settings, &request) {
            Ok(body) => body,
            Err(error) => return stream::once(async { Err(error) }).boxed(),
        };
        let client = match self.client(&settings, &key) {
            Ok(client) => client,
            Err(error) => return stream::once(async { Err(error) }).boxed(),
        };
        let run = Run {
            client,
            body: Some(body),
            key,
            upstream: None,
            started: Instant::now(),
            first_token_timeout: Duration::from_millis(settings.first_token_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms.max(1)),
            got_text: false,
            meta: AnswerMeta {
                agent: Some("openai".into()),
                model: Some(settings.model.clone()),
                ..AnswerMeta::default()
            },
            pending: VecDeque::new(),
            done: false,
        };
        stream::unfold(run, Run::next).boxed()
    }
}

/// One streamed answer, step by step.
struct Run {
    client: Client<OpenAIConfig>,
    body: Option<CreateChatCompletionRequest>,
    key: String,
    upstream: Option<ChatCompletionResponseStream>,
    started: Instant,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    got_text: bool,
    meta: AnswerMeta,
    pending: VecDeque<Result<AgentEvent, AgentError>>,
    done: bool,
}

impl Run {
    async fn next(mut self) -> Option<(Result<AgentEvent, AgentError>, Run)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            // Before the first text, everything shares one deadline; after it, each gap has its own.
            let wait = if self.got_text {
                self.idle_timeout
            } else {
                self.first_token_timeout
                    .saturating_sub(self.started.elapsed())
            };
            if let Some(body) = self.body.take() {
                let opened =
                    tokio::time::timeout(wait, self.client.chat().create_stream(body)).await;
                match opened {
                    Ok(Ok(upstream)) => self.upstream = Some(upstream),
                    Ok(Err(error)) => self.fail(describe(error, &self.key)),
                    Err(_) => self.fail(self.timed_out()),
                }
                continue;
            }
            let upstream = self.upstream.as_mut()?;
            match tokio::time::timeout(wait, upstream.next()).await {
                Err(_) => self.fail(self.timed_out()),
                Ok(None) => {
                    self.done = true;
                    self.pending
                        .push_back(Ok(AgentEvent::Meta(self.meta.clone())));
                }
                Ok(Some(Err(error))) => self.fail(describe(error, &self.key)),
                Ok(Some(Ok(chunk))) => self.take(chunk),
            }
        }
    }

    fn fail(&mut self, error: AgentError) {
        self.done = true;
        self.upstream = None;
        // What is known so far is still worth keeping with the partial answer.
        self.pending
            .push_back(Ok(AgentEvent::Meta(self.meta.clone())));
        self.pending.push_back(Err(error));
    }

    fn timed_out(&self) -> AgentError {
        if self.got_text {
            AgentError(format!(
                "the model sent nothing for {} s",
                self.idle_timeout.as_secs_f32()
            ))
        } else {
            AgentError(format!(
                "the model did not start answering within {} s",
                self.first_token_timeout.as_secs_f32()
            ))
        }
    }

    fn take(&mut self, chunk: CreateChatCompletionStreamResponse) {
        if !chunk.id.is_empty() {
            self.meta.response_id = Some(chunk.id);
        }
        if !chunk.model.is_empty() {
            self.meta.model = Some(chunk.model);
        }
        if let Some(usage) = chunk.usage {
            self.meta.prompt_tokens = Some(usage.prompt_tokens);
            self.meta.completion_tokens = Some(usage.completion_tokens);
        }
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            if let Some(reason) = choice.finish_reason {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_owned));
                self.meta.finish_reason = reason;
            }
            if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                self.got_text = true;
                self.pending.push_back(Ok(AgentEvent::Text(text)));
            }
        }
    }
}

/// The request body: system prompt, the history that fits, streaming with usage.
fn chat_request(
    settings: &OpenAiSettings,
    request: &AgentRequest,
) -> Result<CreateChatCompletionRequest, AgentError> {
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
    let mut body = json!({
        "model": settings.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(temperature) = settings.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = settings.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    serde_json::from_value(body)
        .map_err(|error| AgentError(format!("cannot build the model request: {error}")))
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
fn describe(error: OpenAIError, key: &str) -> AgentError {
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

/// Used by the agent registry.
pub fn provider() -> Arc<dyn AgentProvider> {
    Arc::new(OpenAiAgent::default())
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
