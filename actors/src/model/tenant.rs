//! A tenant's settings (stored in the database or given in the config
//! file) and their validation: greeting, agent and its provider settings,
//! tools, rate limits, allowed origins. Plain data; nothing here starts or
//! calls anything.

use serde::{Deserialize, Serialize};

use super::ids::TenantId;

/// The built-in tool a model calls to ask for a person. It goes to no URL:
/// the session flags the conversation (`handoff.requested`) and the model is
/// told a person was asked for.
pub const REQUEST_HUMAN: &str = "request_human";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    pub name: String,
    /// Keys accepted in `X-API-Key` for this tenant. Several may be valid at once.
    pub api_keys: Vec<String>,
    /// The `system` frame sent when a socket connects: one text, or a table
    /// by language (`{ es = "¡Hola!", en = "Hello!" }`) chosen by the
    /// socket's locale.
    pub greeting: Greeting,
    /// Which agent answers: a name from the agent registry (`echo` built in).
    pub agent: String,
    /// Signs the tenant's client tokens (HS256): `Authorization: Bearer` names
    /// the end user. Empty: client tokens are refused for this tenant.
    pub client_token_secret: String,
    /// Origins (`https://shop.example`) whose pages may use the tenant's
    /// widget keys. Empty: widget keys are refused everywhere.
    pub allowed_origins: Vec<String>,
    /// A page from one of `allowed_origins` may create a conversation with no
    /// key at all (the Frontend API seed's `fetch(…, {method: "POST"})`); it
    /// is then reachable only with its ticket, and the per-IP limit applies.
    /// Off unless a tenant opts in; on only for the shipped development tenant.
    pub keyless_sessions: bool,
    pub rate_limits: RateLimits,
    /// The `openai` agent: any OpenAI-compatible chat completions server.
    pub openai: OpenAiSettings,
    /// The `webhook` agent: an n8n workflow (or any HTTP endpoint) answers.
    pub webhook_agent: WebhookAgentSettings,
    /// Functions the `openai` agent's model may call; each is an HTTP endpoint.
    pub tools: Vec<ToolSettings>,
    /// Offer the `openai` agent's model the built-in `request_human` tool: a
    /// call flags the conversation for a person (`handoff.requested`).
    pub request_human_tool: bool,
    /// Insights: each conversation read by the tenant's model once quiet.
    pub insights: super::insight::InsightSettings,
    /// What a message written while an answer is in progress does.
    pub double_texting: super::policy::DoubleTextingSettings,
    /// How long its conversations are kept (for ever, unless set).
    pub retention: super::policy::RetentionSettings,
    /// Who may use its Durable Streams (`/ds/{tenant}/v1/stream/…`).
    pub streams: super::stream::StreamAccess,
}

/// A function tool: the model sees its name, description and argument
/// schema; a call POSTs the arguments (signed) to `url`, and the answer goes
/// back to the model.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolSettings {
    /// 1 to 64 of `a-zA-Z0-9_-`, as the OpenAI API requires.
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments (an object schema).
    pub parameters: serde_json::Value,
    /// An n8n workflow, a CRM…
    pub url: String,
    /// Standard Webhooks signing secret (`whsec_…`); empty: unsigned.
    pub secret: String,
    /// A static header for n8n's Header Auth; empty: none.
    pub header_name: String,
    pub header_value: String,
    pub timeout_ms: u64,
}

impl Default for ToolSettings {
    fn default() -> Self {
        ToolSettings {
            name: String::new(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
            url: String::new(),
            secret: String::new(),
            header_name: String::new(),
            header_value: String::new(),
            timeout_ms: 15_000,
        }
    }
}

// By hand, so the secrets never reach a log line.
impl std::fmt::Debug for ToolSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ToolSettings {
    fn invalid(&self, index: usize) -> Option<String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Some(format!(
                "`tools[{index}].name` must be 1 to 64 of a-z, A-Z, 0-9, `_`, `-`"
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Some(format!("`tools[{index}].url` must be an http(s) URL"));
        }
        if !self.parameters.is_object() {
            return Some(format!(
                "`tools[{index}].parameters` must be a JSON Schema object"
            ));
        }
        if !self.secret.is_empty() && super::webhook::signing_key(&self.secret).is_none() {
            return Some(format!(
                "`tools[{index}].secret` must be `whsec_` followed by base64"
            ));
        }
        None
    }
}

impl TenantSettings {
    /// What keeps the chosen agent from working, if anything (the text names the field).
    pub fn agent_problem(&self) -> Option<String> {
        if let Some(problem) = self.insights.invalid() {
            return Some(problem);
        }
        if let Some(problem) = self.double_texting.invalid() {
            return Some(problem);
        }
        if let Some(problem) = self.retention.invalid() {
            return Some(problem);
        }
        match self.agent.as_str() {
            "openai" => self.openai.invalid().or_else(|| {
                let mut names = std::collections::BTreeSet::new();
                self.tools.iter().enumerate().find_map(|(index, tool)| {
                    if self.request_human_tool && tool.name == REQUEST_HUMAN {
                        return Some(format!(
                            "`tools[{index}].name`: `{}` is built in; set `request_human_tool = false` to define your own",
                            tool.name
                        ));
                    }
                    tool.invalid(index).or_else(|| {
                        (!names.insert(tool.name.as_str())).then(|| {
                            format!("`tools[{index}].name`: `{}` is used twice", tool.name)
                        })
                    })
                })
            }),
            "webhook" => self.webhook_agent.invalid(),
            _ => None,
        }
    }
}

/// How the `webhook` agent reaches its workflow.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookAgentSettings {
    /// Where the question is POSTed (an n8n Webhook node's URL).
    pub url: String,
    /// Signs each request per Standard Webhooks (`whsec_` + base64). Empty: unsigned.
    pub secret: String,
    /// A static header for n8n's Header Auth (`header_name: header_value`), which
    /// n8n can check itself; empty: none.
    pub header_name: String,
    pub header_value: String,
    pub connect_timeout_ms: u64,
    /// Until the reply starts, and the longest silence inside a streamed reply.
    pub timeout_ms: u64,
    /// Recent messages sent with the question.
    pub history_messages: usize,
}

impl Default for WebhookAgentSettings {
    fn default() -> Self {
        WebhookAgentSettings {
            url: String::new(),
            secret: String::new(),
            header_name: String::new(),
            header_value: String::new(),
            connect_timeout_ms: 5_000,
            timeout_ms: 60_000,
            history_messages: 20,
        }
    }
}

// By hand, so the secrets never reach a log line.
impl std::fmt::Debug for WebhookAgentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAgentSettings")
            .field("url", &self.url)
            .field("header_name", &self.header_name)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl WebhookAgentSettings {
    /// The first field that cannot work when the agent is used; the text names it.
    pub fn invalid(&self) -> Option<String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Some(format!(
                "`webhook_agent.url` must be an http(s) URL, not `{}`",
                self.url
            ));
        }
        if !self.secret.is_empty() && super::webhook::signing_key(&self.secret).is_none() {
            return Some("`webhook_agent.secret` must be `whsec_` followed by base64".into());
        }
        None
    }
}

/// How the `openai` agent reaches its model. Every field can be overridden
/// per conversation except the URL, the key and the timeouts: see
/// [`OpenAiSettings::with_overrides`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiSettings {
    /// The API's base URL: OpenAI, or Ollama (`http://localhost:11434/v1`),
    /// vLLM, llama.cpp's server, LiteLLM…
    pub base_url: String,
    /// The key itself. Prefer `api_key_env`; never logged, never shown by the admin API.
    pub api_key: String,
    /// The environment variable that holds the key (read at each answer).
    pub api_key_env: String,
    pub model: String,
    /// The system message. `{{context}}` becomes the conversation's context,
    /// one `key: value` line each; `{{context.<key>}}` one value.
    pub system_prompt: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub connect_timeout_ms: u64,
    /// From the request to the first piece of text, retries included.
    pub first_token_timeout_ms: u64,
    /// Longest silence between two pieces once text is flowing.
    pub idle_timeout_ms: u64,
    /// Retries of a 429 or 5xx before the stream starts (`Retry-After` is honoured).
    pub max_retries: u32,
    /// Characters of history sent, newest first, whole messages only.
    pub history_budget_chars: usize,
    /// Rounds of tool calls one answer may make before it is stopped.
    pub max_tool_steps: u32,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            base_url: "https://api.openai.com/v1".into(),
            api_key: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            model: "gpt-4o-mini".into(),
            system_prompt: "You are a helpful assistant. Answer in the customer's language.\n\n\
                            What we know about this customer:\n{{context}}"
                .into(),
            temperature: None,
            max_tokens: None,
            connect_timeout_ms: 5_000,
            first_token_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            max_retries: 3,
            history_budget_chars: 24_000,
            max_tool_steps: 4,
        }
    }
}

// Written by hand so that the key never reaches a log line.
impl std::fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .field("api_key_env", &self.api_key_env)
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl OpenAiSettings {
    /// The key: `api_key`, else the variable `api_key_env` names, else none
    /// (local servers such as Ollama need none).
    pub fn resolve_key(&self) -> String {
        if !self.api_key.is_empty() {
            return self.api_key.clone();
        }
        if self.api_key_env.is_empty() {
            return String::new();
        }
        std::env::var(&self.api_key_env).unwrap_or_default()
    }

    /// These settings with a conversation's overrides: its context's `_agent`
    /// object may set `model`, `system_prompt`, `temperature` and `max_tokens`.
    pub fn with_overrides(&self, overrides: Option<&serde_json::Value>) -> OpenAiSettings {
        let mut settings = self.clone();
        let Some(overrides) = overrides.and_then(serde_json::Value::as_object) else {
            return settings;
        };
        if let Some(model) = overrides.get("model").and_then(|v| v.as_str()) {
            settings.model = model.to_owned();
        }
        if let Some(prompt) = overrides.get("system_prompt").and_then(|v| v.as_str()) {
            settings.system_prompt = prompt.to_owned();
        }
        if let Some(temperature) = overrides.get("temperature").and_then(|v| v.as_f64()) {
            settings.temperature = Some(temperature as f32);
        }
        if let Some(max_tokens) = overrides.get("max_tokens").and_then(|v| v.as_u64()) {
            settings.max_tokens = u32::try_from(max_tokens).ok();
        }
        settings
    }

    /// The first field that cannot work; the text names it.
    pub fn invalid(&self) -> Option<String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Some(format!(
                "`openai.base_url` must be an http(s) URL, not `{}`",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Some("`openai.model` must not be empty".into());
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Some("`openai.temperature` must be between 0 and 2".into());
        }
        None
    }
}

/// A tenant's greeting: one text for everyone, or one per language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Greeting {
    One(String),
    /// BCP 47 tags (`es`, `es-MX`, `en`) to texts.
    ByLanguage(std::collections::BTreeMap<String, String>),
}

impl From<&str> for Greeting {
    fn from(text: &str) -> Self {
        Greeting::One(text.to_owned())
    }
}

impl Greeting {
    /// The text for a socket with this locale: the exact tag, else its
    /// language (`es` for `es-MX`), else English, else the first entry.
    pub fn for_locale(&self, locale: Option<&str>) -> &str {
        let table = match self {
            Greeting::One(text) => return text,
            Greeting::ByLanguage(table) => table,
        };
        let find = |tag: &str| {
            table
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(tag))
                .map(|(_, text)| text.as_str())
        };
        let language = locale.and_then(|tag| tag.split(['-', '_']).next());
        locale
            .and_then(find)
            .or_else(|| language.and_then(find))
            .or_else(|| find("en"))
            .or_else(|| table.values().next().map(String::as_str))
            .unwrap_or_default()
    }

    /// Why it cannot be used, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        let texts: Vec<&String> = match self {
            Greeting::One(text) => vec![text],
            Greeting::ByLanguage(table) if table.is_empty() => {
                return Some("`greeting` as a table needs at least one language".into());
            }
            Greeting::ByLanguage(table) => table.values().collect(),
        };
        texts
            .iter()
            .any(|text| text.len() > 2000)
            .then(|| "`greeting` must be at most 2000 bytes (per language)".into())
    }
}

impl TenantSettings {
    /// The model that analyses this tenant's conversations, if it has one:
    /// `insights.model`, or the `openai` agent's own model.
    pub fn insight_model(&self) -> Option<&str> {
        if !self.insights.model.is_empty() {
            Some(&self.insights.model)
        } else if self.agent == "openai" {
            Some(&self.openai.model)
        } else {
            None
        }
    }

    /// The shipped development tenant: the defaults, plus keyless sessions
    /// from a local Next.js dev server (the Frontend API seed's setup).
    pub fn development() -> Self {
        TenantSettings {
            allowed_origins: vec![
                "http://localhost:3000".into(),
                "http://127.0.0.1:3000".into(),
            ],
            keyless_sessions: true,
            ..TenantSettings::default()
        }
    }
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            name: "Default".into(),
            api_keys: vec!["tk_dev_default_change_me".into()],
            greeting: Greeting::from("Hello! How can I help you today?"),
            agent: "echo".into(),
            client_token_secret: String::new(),
            allowed_origins: Vec::new(),
            keyless_sessions: false,
            rate_limits: RateLimits::default(),
            openai: OpenAiSettings::default(),
            webhook_agent: WebhookAgentSettings::default(),
            tools: Vec::new(),
            request_human_tool: true,
            insights: super::insight::InsightSettings::default(),
            double_texting: super::policy::DoubleTextingSettings::default(),
            retention: super::policy::RetentionSettings::default(),
            streams: super::stream::StreamAccess::default(),
        }
    }
}

/// A tenant's rate limits, each a number of requests per minute that may also
/// come as one burst. Over a limit: 429 with `Retry-After`, or an `error`
/// frame with code `rate_limited` on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// REST requests per API key.
    pub api_key_per_minute: u32,
    /// REST requests and socket connections per client IP address.
    pub ip_per_minute: u32,
    /// Messages posted into one conversation, from every socket and back end.
    pub session_messages_per_minute: u32,
    /// `POST /api/webchat/messages` per webchat `session_id`.
    pub webchat_session_per_minute: u32,
    /// `POST /api/webchat/messages` per client IP address.
    pub webchat_ip_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            api_key_per_minute: 600,
            ip_per_minute: 600,
            session_messages_per_minute: 60,
            webchat_session_per_minute: 20,
            webchat_ip_per_minute: 60,
        }
    }
}

impl RateLimits {
    /// The governor quota for `per_minute` (0 is refused by validation).
    pub fn quota(per_minute: u32) -> governor::Quota {
        governor::Quota::per_minute(
            std::num::NonZeroU32::new(per_minute.max(1)).expect("at least 1"),
        )
    }

    /// The name of the first limit that is not a positive number.
    pub fn invalid_field(&self) -> Option<&'static str> {
        [
            ("rate_limits.api_key_per_minute", self.api_key_per_minute),
            ("rate_limits.ip_per_minute", self.ip_per_minute),
            (
                "rate_limits.session_messages_per_minute",
                self.session_messages_per_minute,
            ),
            (
                "rate_limits.webchat_session_per_minute",
                self.webchat_session_per_minute,
            ),
            (
                "rate_limits.webchat_ip_per_minute",
                self.webchat_ip_per_minute,
            ),
        ]
        .into_iter()
        .find(|(_, value)| *value == 0)
        .map(|(field, _)| field)
    }
}

/// Whether `origin` is a bare web origin: `http` or `https`, a host, an
/// optional port, nothing else (no path, no trailing slash).
pub fn is_web_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => (host, Some(port)),
        _ => (rest, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

/// A configured tenant together with its id.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub settings: TenantSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_greeting_by_language_follows_the_locale() {
        let table: Greeting = serde_json::from_value(
            serde_json::json!({"es": "¡Hola!", "en": "Hello!", "pt-BR": "Olá!"}),
        )
        .unwrap();
        assert_eq!(table.for_locale(Some("es-MX")), "¡Hola!", "by language");
        assert_eq!(
            table.for_locale(Some("pt-br")),
            "Olá!",
            "exact tag, any case"
        );
        assert_eq!(table.for_locale(Some("fr")), "Hello!", "English otherwise");
        assert_eq!(table.for_locale(None), "Hello!");
        let one: Greeting = serde_json::from_value(serde_json::json!("Hi")).unwrap();
        assert_eq!(one.for_locale(Some("es")), "Hi", "one text for everyone");
        assert_eq!(serde_json::to_value(&one).unwrap(), serde_json::json!("Hi"));
        let empty: Greeting = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(empty.invalid().is_some());
        assert!(
            Greeting::from("x".repeat(2001).as_str())
                .invalid()
                .is_some()
        );
    }

    #[test]
    fn web_origins_are_scheme_host_and_port_only() {
        for good in [
            "https://shop.example",
            "http://127.0.0.1:8080",
            "https://a-b.example.co",
        ] {
            assert!(is_web_origin(good), "{good}");
        }
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "ftp://x",
            "https://x:99999",
            "https://x/y",
            "*",
        ] {
            assert!(!is_web_origin(bad), "{bad}");
        }
    }
}
