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
//! - Tools: the tenant's tools go with each request. When the model calls
//!   some (their deltas are put together across chunks), each call is shown
//!   (`Tool` event), its arguments are POSTed, signed, to the tool's URL, the
//!   answer is shown and given back to the model, and the model continues; at
//!   most `max_tool_steps` rounds.

use std::collections::{BTreeMap, VecDeque};
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

use crate::agent::{
    AgentError, AgentEvent, AgentProvider, AgentRequest, AgentStream, REQUEST_HUMAN,
    REQUEST_HUMAN_RESULT, Turn, request_human_tool,
};
use crate::model::{AnswerMeta, Role, ToolCallRecord};
use crate::model::{OpenAiSettings, ToolSettings};
use crate::net::egress::EgressPolicy;
use crate::net::signing::Signer;

/// The largest tool answer given back to the model, in bytes.
const MAX_TOOL_ANSWER_BYTES: usize = 64 * 1024;

/// The `openai` provider. Keeps one HTTP client per base URL, key and
/// client settings, so connections are reused across answers.
pub struct OpenAiAgent {
    /// Where model and tool requests may go.
    policy: EgressPolicy,
    clients: DashMap<String, Client<OpenAIConfig>>,
    /// For tool calls; made once: building a TLS-capable client costs
    /// milliseconds of CPU, which every answer would otherwise pay.
    tool_client: std::sync::OnceLock<reqwest::Client>,
}

impl OpenAiAgent {
    fn tool_client(&self) -> Result<reqwest::Client, AgentError> {
        if let Some(client) = self.tool_client.get() {
            return Ok(client.clone());
        }
        // Follows no redirect: one would re-send the signed arguments elsewhere.
        let client = self
            .policy
            .client_builder()
            .build()
            .map_err(|error| AgentError(format!("cannot build the HTTP client: {error}")))?;
        Ok(self.tool_client.get_or_init(|| client).clone())
    }

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
        let http = self
            .policy
            .client_builder()
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

/// What the model is told when asked for a visitor's contact details.
const EXTRACT_PROMPT: &str = "You extract the contact details that the writer of one chat message gives \
about themselves. Answer only with a JSON object {\"name\": string or null, \"email\": string or null, \
\"phone\": string or null}. Use null for anything the writer does not clearly state about themselves. \
Never guess.";

impl AgentProvider for OpenAiAgent {
    fn extract_contact(
        &self,
        settings: &crate::model::TenantSettings,
        text: &str,
    ) -> Option<
        futures_util::future::BoxFuture<'static, Result<crate::model::leads::Found, AgentError>>,
    > {
        let openai = settings.openai.clone();
        let key = openai.resolve_key();
        let client = self.client(&openai, &key).ok()?;
        let body = json!({
            "model": openai.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": EXTRACT_PROMPT},
                {"role": "user", "content": text},
            ],
        });
        Some(Box::pin(async move {
            let request: CreateChatCompletionRequest =
                serde_json::from_value(body).map_err(|error| {
                    AgentError(format!("cannot build the extraction request: {error}"))
                })?;
            let wait = Duration::from_millis(openai.first_token_timeout_ms.max(1));
            let response = tokio::time::timeout(wait, client.chat().create(request))
                .await
                .map_err(|_| AgentError("the model did not answer the extraction in time".into()))?
                .map_err(|error| describe(error, &key))?;
            let content = response
                .choices
                .into_iter()
                .next()
                .and_then(|choice| choice.message.content)
                .ok_or_else(|| AgentError("the extraction answer is empty".into()))?;
            let value: Value = serde_json::from_str(content.trim()).map_err(|error| {
                AgentError(format!("the extraction answer is not JSON: {error}"))
            })?;
            let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
            Ok(crate::model::leads::Found {
                name: field("name"),
                author_name: None,
                email: field("email"),
                phone: field("phone"),
            })
        }))
    }

    fn answer(&self, request: AgentRequest) -> AgentStream {
        let settings = request
            .settings
            .openai
            .with_overrides(request.context.get("_agent"));
        let key = settings.resolve_key();
        let (template, messages) = chat_request(&settings, &request);
        if let Err(error) = self.policy.check_url(&settings.base_url) {
            let error = AgentError(format!("the model's URL is refused: {error}"));
            return stream::once(async { Err(error) }).boxed();
        }
        let client = match self.client(&settings, &key) {
            Ok(client) => client,
            Err(error) => return stream::once(async { Err(error) }).boxed(),
        };
        let tool_client = match self.tool_client() {
            Ok(client) => client,
            Err(error) => return stream::once(async { Err(error) }).boxed(),
        };
        let run = Run {
            client,
            template,
            messages,
            tools: request.settings.tools.clone(),
            request_human: request.settings.request_human_tool,
            tool_client,
            policy: self.policy.clone(),
            steps_left: settings.max_tool_steps,
            calls: BTreeMap::new(),
            to_run: Vec::new(),
            round_text: String::new(),
            identity: json!({"tenant": request.tenant, "conversation_id": request.session}),
            body: None,
            ready: true,
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
    /// The request without its messages.
    template: Value,
    /// The conversation as the model sees it, growing with each tool round.
    messages: Vec<Value>,
    tools: Vec<ToolSettings>,
    /// The built-in `request_human` tool is offered.
    request_human: bool,
    tool_client: reqwest::Client,
    policy: EgressPolicy,
    steps_left: u32,
    /// Tool calls of this round by index, put together from their deltas.
    calls: BTreeMap<u32, ToolCallRecord>,
    /// Calls shown and waiting to run.
    to_run: Vec<ToolCallRecord>,
    /// Text of this round (given back with the tool calls).
    round_text: String,
    /// Tenant and conversation, sent to tools.
    identity: Value,
    body: Option<CreateChatCompletionRequest>,
    /// A request is to be built from `messages` and sent.
    ready: bool,
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
            if !self.to_run.is_empty() {
                self.run_tools().await;
                continue;
            }
            if self.ready {
                self.ready = false;
                match self.request() {
                    Ok(body) => self.body = Some(body),
                    Err(error) => self.fail(error),
                }
                continue;
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
                Ok(None) if !self.calls.is_empty() => self.calls_made(),
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
            for delta in choice.delta.tool_calls.unwrap_or_default() {
                let call = self
                    .calls
                    .entry(delta.index)
                    .or_insert_with(|| ToolCallRecord {
                        call_id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                        result: None,
                        is_error: false,
                    });
                if let Some(id) = delta.id {
                    call.call_id = id;
                }
                if let Some(function) = delta.function {
                    if let Some(name) = function.name {
                        call.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                self.got_text = true;
                self.round_text.push_str(&text);
                self.pending.push_back(Ok(AgentEvent::Text(text)));
            }
        }
    }

    fn request(&self) -> Result<CreateChatCompletionRequest, AgentError> {
        let mut body = self.template.clone();
        body["messages"] = Value::Array(self.messages.clone());
        serde_json::from_value(body)
            .map_err(|error| AgentError(format!("cannot build the model request: {error}")))
    }

    /// The round ended with tool calls: show them, then run them.
    fn calls_made(&mut self) {
        self.upstream = None;
        if self.steps_left == 0 {
            return self.fail(AgentError(
                "the model kept calling tools past max_tool_steps".into(),
            ));
        }
        self.steps_left -= 1;
        let calls: Vec<ToolCallRecord> = std::mem::take(&mut self.calls).into_values().collect();
        let tool_calls: Vec<Value> = calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        let text = std::mem::take(&mut self.round_text);
        self.messages.push(json!({
            "role": "assistant",
            "content": if text.is_empty() { Value::Null } else { Value::String(text) },
            "tool_calls": tool_calls,
        }));
        for call in &calls {
            self.pending.push_back(Ok(AgentEvent::Tool(call.clone())));
        }
        self.to_run = calls;
    }

    /// Runs this round's calls in order, shows each answer, gives them to the model.
    async fn run_tools(&mut self) {
        for mut call in std::mem::take(&mut self.to_run) {
            let answer = match self.tools.iter().find(|tool| tool.name == call.name) {
                Some(tool) => {
                    call_tool(&self.tool_client, &self.policy, tool, &call, &self.identity).await
                }
                // Built in: the session opens the handoff when it sees this result.
                None if call.name == REQUEST_HUMAN && self.request_human => {
                    Ok(REQUEST_HUMAN_RESULT.to_owned())
                }
                None => Err(format!("there is no tool named `{}`", call.name)),
            };
            let (content, is_error) = match answer {
                Ok(content) => (content, false),
                Err(error) => (format!("error: {error}"), true),
            };
            self.messages.push(json!({
                "role": "tool",
                "tool_call_id": call.call_id,
                "content": content,
            }));
            call.result = Some(content);
            call.is_error = is_error;
            self.pending.push_back(Ok(AgentEvent::Tool(call)));
        }
        self.started = Instant::now();
        self.ready = true;
    }
}

/// POSTs a call's arguments to its tool; the answer's text, or why there is none.
async fn call_tool(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    tool: &ToolSettings,
    call: &ToolCallRecord,
    identity: &Value,
) -> Result<String, String> {
    policy
        .check_url(&tool.url)
        .map_err(|error| format!("the tool's URL is refused: {error}"))?;
    let arguments: Value = serde_json::from_str(&call.arguments)
        .map_err(|error| format!("the arguments are not valid JSON: {error}"))?;
    let mut payload = identity.clone();
    payload["type"] = json!("tool.call");
    payload["tool"] = json!(tool.name);
    payload["call_id"] = json!(call.call_id);
    payload["arguments"] = arguments;
    let body = payload.to_string();
    let mut post = client
        .post(&tool.url)
        .timeout(Duration::from_millis(tool.timeout_ms.max(1)))
        .header("content-type", "application/json");
    if let Some(signer) = Signer::new(&tool.secret) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let signed = signer.sign(&id, now, body.as_bytes());
        post = post
            .header("webhook-id", signed.id)
            .header("webhook-timestamp", signed.timestamp)
            .header("webhook-signature", signed.signature);
    }
    if !tool.header_name.is_empty() {
        post = post.header(&tool.header_name, &tool.header_value);
    }
    let response = post.body(body).send().await.map_err(|error| {
        if error.is_timeout() {
            "the tool did not answer in time".to_owned()
        } else if refused_by_guard(&error) {
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

/// The request without messages (model, streaming with usage, tools), and
/// the messages: the system prompt, then the history that fits.
fn chat_request(settings: &OpenAiSettings, request: &AgentRequest) -> (Value, Vec<Value>) {
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
pub fn provider(policy: EgressPolicy) -> Arc<dyn AgentProvider> {
    Arc::new(OpenAiAgent {
        policy,
        clients: DashMap::new(),
        tool_client: std::sync::OnceLock::new(),
    })
}

/// Whether a request failed because the egress guard refused its address.
pub(crate) fn refused_by_guard(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<crate::net::egress::EgressError>()
            .is_some()
        {
            return true;
        }
        source = cause.source();
    }
    false
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
