//! One streamed answer of the `openai` agent, step by step: send the
//! request, relay text as it streams, put tool-call deltas together, run the
//! calls and send the next round, within the first-token and idle deadlines.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionResponseStream, CreateChatCompletionRequest, CreateChatCompletionStreamResponse,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::request::describe;
use super::tools::call_tool;
use crate::agent::{AgentError, AgentEvent, REQUEST_HUMAN, REQUEST_HUMAN_RESULT};
use crate::model::{AnswerMeta, ToolCallRecord, ToolSettings};
use crate::net::egress::EgressPolicy;

/// One streamed answer, step by step.
pub(super) struct Run {
    pub(super) client: Client<OpenAIConfig>,
    /// The request without its messages.
    pub(super) template: Value,
    /// The conversation as the model sees it, growing with each tool round.
    pub(super) messages: Vec<Value>,
    pub(super) tools: Vec<ToolSettings>,
    /// The built-in `request_human` tool is offered.
    pub(super) request_human: bool,
    pub(super) tool_client: reqwest::Client,
    pub(super) policy: EgressPolicy,
    pub(super) steps_left: u32,
    /// Tool calls of this round by index, put together from their deltas.
    pub(super) calls: BTreeMap<u32, ToolCallRecord>,
    /// Calls shown and waiting to run.
    pub(super) to_run: Vec<ToolCallRecord>,
    /// Text of this round (given back with the tool calls).
    pub(super) round_text: String,
    /// Tenant and conversation, sent to tools.
    pub(super) identity: Value,
    pub(super) body: Option<CreateChatCompletionRequest>,
    /// A request is to be built from `messages` and sent.
    pub(super) ready: bool,
    pub(super) key: String,
    pub(super) upstream: Option<ChatCompletionResponseStream>,
    pub(super) started: Instant,
    pub(super) first_token_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) got_text: bool,
    pub(super) meta: AnswerMeta,
    pub(super) pending: VecDeque<Result<AgentEvent, AgentError>>,
    pub(super) done: bool,
}

impl Run {
    pub(super) async fn next(mut self) -> Option<(Result<AgentEvent, AgentError>, Run)> {
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
