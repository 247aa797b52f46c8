//! One analysis (insights) from an OpenAI-compatible model: a single,
//! non-streamed chat completion in the provider's structured-output mode
//! (`response_format: json_schema`, strict). A server that refuses that mode
//! (a 400, as some OpenAI-compatible servers answer) is asked again in plain
//! JSON mode (`json_object`), with the schema in the instructions; the
//! caller validates whatever comes back either way.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionRequest;
use serde_json::{Value, json};

use super::request::describe;
use crate::agent::{AgentError, AnalysisReply, AnalysisRequest};

/// The request body in one of the two modes.
fn body(request: &AnalysisRequest, structured: bool) -> Value {
    let (format, instructions) = if structured {
        let format = json!({"type": "json_schema", "json_schema": {
            "name": "conversation_insights", "strict": true, "schema": request.schema}});
        (format, request.instructions.clone())
    } else {
        let instructions = format!(
            "{}\n\nAnswer with one JSON object, and nothing else, that fits this JSON Schema:\n{}",
            request.instructions, request.schema
        );
        (json!({"type": "json_object"}), instructions)
    };
    json!({
        "model": request.model,
        "temperature": 0,
        "response_format": format,
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": request.transcript},
        ],
    })
}

/// Whether the server refused the structured-output mode itself.
fn refused_the_mode(error: &OpenAIError) -> bool {
    matches!(error, OpenAIError::ApiError(response) if response.status_code.as_u16() == 400)
}

async fn ask(
    client: &Client<OpenAIConfig>,
    body: Value,
    wait: Duration,
) -> Result<Result<AnalysisReply, OpenAIError>, AgentError> {
    let request: CreateChatCompletionRequest = serde_json::from_value(body)
        .map_err(|error| AgentError(format!("cannot build the analysis request: {error}")))?;
    let answered = tokio::time::timeout(wait, client.chat().create(request))
        .await
        .map_err(|_| AgentError("the model did not answer the analysis in time".into()))?;
    Ok(answered.map(|response| {
        let usage = response.usage.as_ref();
        AnalysisReply {
            model: response.model.clone(),
            prompt_tokens: usage.map(|usage| usage.prompt_tokens),
            completion_tokens: usage.map(|usage| usage.completion_tokens),
            content: response
                .choices
                .into_iter()
                .next()
                .and_then(|choice| choice.message.content)
                .unwrap_or_default(),
        }
    }))
}

/// Asks in structured mode, then, if the server refuses it, in JSON mode.
pub(super) async fn analyze(
    client: Client<OpenAIConfig>,
    request: AnalysisRequest,
    key: String,
    wait: Duration,
) -> Result<AnalysisReply, AgentError> {
    let reply = match ask(&client, body(&request, true), wait).await? {
        Err(error) if refused_the_mode(&error) => {
            tracing::info!(model = %request.model, "structured output refused; asking for plain JSON");
            ask(&client, body(&request, false), wait).await?
        }
        other => other,
    };
    let reply = reply.map_err(|error| describe(error, &key))?;
    if reply.content.trim().is_empty() {
        return Err(AgentError("the model's analysis is empty".into()));
    }
    Ok(reply)
}
