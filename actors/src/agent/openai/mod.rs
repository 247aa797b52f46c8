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

mod analysis;
mod request;
mod run;
#[cfg(test)]
mod stream_properties;
mod tools;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::OpenAIRetryLayer;
use async_openai::types::chat::CreateChatCompletionRequest;
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use tower::Layer;

use self::request::{chat_request, describe};
use self::run::Run;
use crate::agent::{
    AgentError, AgentFuture, AgentProvider, AgentRequest, AgentStream, AnalysisReply,
    AnalysisRequest,
};
use crate::model::AnswerMeta;
use crate::model::OpenAiSettings;
use crate::net::egress::EgressPolicy;

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

    fn analyze(
        &self,
        settings: &crate::model::TenantSettings,
        request: AnalysisRequest,
    ) -> Option<AgentFuture<AnalysisReply>> {
        let openai = settings.openai.clone();
        let key = openai.resolve_key();
        let checked = self
            .policy
            .check_url(&openai.base_url)
            .map_err(|error| AgentError(format!("the model's URL is refused: {error}")))
            .and_then(|_| self.client(&openai, &key));
        let wait = Duration::from_millis(openai.first_token_timeout_ms.max(1));
        Some(Box::pin(async move {
            analysis::analyze(checked?, request, key, wait).await
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

/// Used by the agent registry.
pub fn provider(policy: EgressPolicy) -> Arc<dyn AgentProvider> {
    Arc::new(OpenAiAgent {
        policy,
        clients: DashMap::new(),
        tool_client: std::sync::OnceLock::new(),
    })
}
