//! The runtime's settings, deserialised from `config/default.toml` (and its
//! overrides) by the edge. Every field has a default, documented in that file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::TenantId;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub storage: StorageConfig,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub supervision: SupervisionConfig,
    pub agents: AgentsConfig,
    /// Tenants by id. Nothing assumes there is only one.
    pub tenants: BTreeMap<String, TenantSettings>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut tenants = BTreeMap::new();
        tenants.insert("default".to_string(), TenantSettings::default());
        RuntimeConfig {
            storage: StorageConfig::default(),
            sessions: SessionConfig::default(),
            limits: Limits::default(),
            supervision: SupervisionConfig::default(),
            agents: AgentsConfig::default(),
            tenants,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the embedded surrealkv store lives (`<data_dir>/tertulia.db`).
    pub data_dir: String,
    /// Overrides `data_dir` with any SurrealDB endpoint (`mem://` in tests).
    pub endpoint: Option<String>,
    pub namespace: String,
    pub database: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: "./data".into(),
            endpoint: None,
            namespace: "tertulia".into(),
            database: "main".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session with no sockets and nothing in progress stops after this long;
    /// the next use rehydrates it from the database.
    pub idle_timeout_ms: u64,
    /// Stored messages a live session keeps in memory for replays and agent history.
    pub recent_messages: usize,
    /// Turns of history given to the agent.
    pub history_turns: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_ms: 300_000,
            recent_messages: 500,
            history_turns: 50,
        }
    }
}

impl SessionConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message `content`, in bytes (UTF-8).
    pub max_content_bytes: usize,
    /// Frames queued for one socket before it is closed as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Bytes queued for one socket before it is closed as a slow consumer.
    pub outbound_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_content_bytes: 16 * 1024,
            outbound_queue_frames: 4096,
            outbound_queue_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// First restart delay after a crash; doubles per crash up to the maximum.
    pub restart_min_ms: u64,
    pub restart_max_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            restart_min_ms: 50,
            restart_max_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    pub echo: EchoConfig,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            echo: EchoConfig { word_delay_ms: 40 },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Pause between words, so the stream is visible in a browser.
    pub word_delay_ms: u64,
}

impl Default for EchoConfig {
    fn default() -> Self {
        AgentsConfig::default().echo
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    pub name: String,
    /// Keys accepted in `X-API-Key` for this tenant. Several may be valid at once.
    pub api_keys: Vec<String>,
    /// The `system` frame sent when a socket connects.
    pub greeting: String,
    /// Which agent answers: a name from the agent registry (`echo` built in).
    pub agent: String,
    /// Signs the tenant's client tokens (HS256): `Authorization: Bearer` names
    /// the end user. Empty: client tokens are refused for this tenant.
    pub client_token_secret: String,
    /// Origins (`https://shop.example`) whose pages may use the tenant's
    /// widget keys. Empty: widget keys are refused everywhere.
    pub allowed_origins: Vec<String>,
    pub rate_limits: RateLimits,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            name: "Default".into(),
            api_keys: vec!["tk_dev_default_change_me".into()],
            greeting: "Hello! How can I help you today?".into(),
            agent: "echo".into(),
            client_token_secret: String::new(),
            allowed_origins: Vec::new(),
            rate_limits: RateLimits::default(),
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
