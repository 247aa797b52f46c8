//! Configuration: compiled-in defaults, then a TOML file, then `TERTULIA_…`
//! environment variables (`TERTULIA_SERVER__BIND=0.0.0.0:2000`: `__` separates
//! levels), then command-line flags. `config/default.toml` lists every key
//! with its default; a test keeps that file and [`Config::default`] equal.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tertulia_actors::config::{
    AgentsConfig, ClusterConfig, DbCredentials, EgressConfig, InsightsConfig, Limits,
    RetentionConfig, RuntimeConfig, SealingKeys, SessionConfig, StorageConfig, SupervisionConfig,
    WebhooksConfig,
};
use tertulia_actors::model::TenantSettings;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub websocket: WebSocketSettings,
    pub auth: AuthConfig,
    pub webchat: WebchatConfig,
    pub storage: StorageConfig,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub supervision: SupervisionConfig,
    pub agents: AgentsConfig,
    pub webhooks: WebhooksConfig,
    pub egress: EgressConfig,
    pub insights: InsightsConfig,
    pub retention: RetentionConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub tenants: std::collections::BTreeMap<String, TenantSettings>,
}

/// How the server writes its log lines (to stderr).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `GET /metrics`, the Prometheus scrape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Off: nothing is recorded and `/metrics` is 404.
    pub enabled: bool,
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub token: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the request's span (and its `request_id`).
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    /// Base URL clients reach this server at (behind a proxy); `websocket_url`
    /// is built from it. Empty: from the request's `Host` header.
    pub public_url: String,
    /// Pending connections the kernel queues before `accept` (tokio's default is 128).
    pub backlog: u32,
    /// Kernel send buffer of each connection (`SO_SNDBUF`), bytes; 0 leaves
    /// it to the kernel's autotuning (up to 4 MB a socket on Linux). A small
    /// one bounds what a reader that never reads holds in the kernel, and
    /// makes it reach its outbound queue limit (and be closed) sooner.
    pub send_buffer_bytes: u32,
    /// Largest REST request body, in bytes.
    pub max_body_bytes: u64,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the
    /// client. Anyone else's is ignored. Empty: the socket's peer is the client.
    pub trusted_proxies: Vec<String>,
    /// A connection that has not sent a whole request head (its request line
    /// and headers, a WebSocket handshake's too) this long after it opened,
    /// or after its previous request, is closed: slow clients cannot hold
    /// connections (slowloris).
    pub header_timeout_ms: u64,
    /// A request body that has not wholly arrived this long after its head
    /// is refused with 408 `body_timeout`, and its connection freed.
    pub body_timeout_ms: u64,
    /// 401s one client address may be answered per minute (also as one
    /// burst); past it, its requests are answered 429 until it refills.
    pub auth_failures_per_minute: u32,
    /// A PEM certificate chain (leaf first) to serve HTTPS and WSS with,
    /// and its PEM private key; both or neither. Re-read on SIGHUP.
    /// Empty: plain HTTP (behind a proxy that terminates TLS).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:2000".into(),
            public_url: String::new(),
            backlog: 1024,
            send_buffer_bytes: 0,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            auth_failures_per_minute: 60,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Largest inbound message (and frame); larger ones close the socket with 1009.
    pub max_message_bytes: usize,
    /// Bytes tungstenite reads at a time per socket. Its default of 128 KiB
    /// dominates the memory of an idle connection.
    pub read_buffer_bytes: usize,
    /// How often the server pings a quiet client.
    pub ping_interval_ms: u64,
    /// How long past a ping the server waits to hear anything before dropping the peer.
    pub pong_timeout_ms: u64,
    /// Sockets one client address may hold open at once; past it, an
    /// upgrade is answered 429 `too_many_sockets` (a flood from one address
    /// is refused before it is attached to anything).
    pub max_per_address: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4 * 1024,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 8_000,
            max_per_address: 200,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long the ticket in a `websocket_url` stays valid.
    pub ticket_ttl_secs: u64,
    /// `Authorization: Bearer <token>` for `/admin/...`. Empty: the admin API is off.
    pub admin_token: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            ticket_ttl_secs: 300,
            admin_token: String::new(),
        }
    }
}

/// The webchat channel (`/api/webchat/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebchatConfig {
    /// How long `POST /api/webchat/messages` waits for the agent's whole reply
    /// before answering 504 (the reply is still stored when it completes).
    pub reply_timeout_ms: u64,
    pub geolocation: GeolocationConfig,
}

impl Default for WebchatConfig {
    fn default() -> Self {
        WebchatConfig {
            reply_timeout_ms: 60_000,
            geolocation: GeolocationConfig::default(),
        }
    }
}

/// An optional IP geolocation provider. Lookups run beside the reply, never
/// before it; results are cached per address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeolocationConfig {
    /// The provider's URL with `{ip}` where the address goes
    /// (`https://ipinfo.io/{ip}/json`). Empty: no lookups.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when not empty.
    pub token: String,
    /// A lookup slower than this is abandoned (and tried again next time).
    pub timeout_ms: u64,
    /// How long an answer is reused for the same address.
    pub cache_ttl_secs: u64,
    /// Addresses remembered at most.
    pub cache_capacity: usize,
    /// Also look up loopback and private addresses (normally pointless).
    pub include_private: bool,
}

impl Default for GeolocationConfig {
    fn default() -> Self {
        GeolocationConfig {
            url: String::new(),
            token: String::new(),
            timeout_ms: 1_500,
            cache_ttl_secs: 86_400,
            cache_capacity: 10_000,
            include_private: false,
        }
    }
}

/// The keys (`server.bindd`, as the environment provider names them) of
/// every unknown field that came from a `TERTULIA_…` variable.
fn unknown_env_keys(error: &figment::Error) -> Vec<String> {
    let mut keys: Vec<String> = error
        .clone()
        .into_iter()
        .filter(|error| {
            let from_env = error.metadata.as_ref();
            from_env.is_some_and(|metadata| metadata.name.contains("environment"))
        })
        .filter_map(|error| match &error.kind {
            figment::error::Kind::UnknownField(field, _) => {
                let mut path = error.path.clone();
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                Some(path.join(".").to_lowercase())
            }
            _ => None,
        })
        .collect();
    keys.dedup();
    keys
}

impl Config {
    /// Defaults, then `file` (if given), then the environment. With no tenant
    /// configured anywhere, the development `default` tenant is used (and
    /// `main` warns): a configured tenant list replaces it entirely, so its
    /// well-known key never lingers in production.
    ///
    /// A `TERTULIA_…` variable that names no setting (`TERTULIA_URL`, which
    /// the CLI reads, or a misspelt key) is ignored with a warning naming it;
    /// a misspelt key in a config *file* stays an error.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let (config, ignored) = Config::load_noting(file)?;
        for variable in ignored {
            tracing::warn!(%variable, "ignoring an environment variable that names no setting");
        }
        Ok(config)
    }

    /// [`Config::load`], handing back the variables it ignored instead of
    /// warning: the server reads its log format from the config, so it
    /// warns only once its logger is set up.
    pub fn load_noting(file: Option<&Path>) -> Result<(Config, Vec<String>), Box<figment::Error>> {
        let mut ignored: Vec<String> = Vec::new();
        let mut variables = Vec::new();
        loop {
            match Config::figment(file, &ignored).extract::<Config>() {
                Ok(mut config) => {
                    config.storage.sealing = SealingKeys::from_env(|name| std::env::var(name).ok());
                    config.storage.credentials =
                        DbCredentials::from_env(|name| std::env::var(name).ok());
                    config.cluster.cookie = std::env::var("TERTULIA_CLUSTER_COOKIE").ok();
                    return Ok((Config::with_development_tenant(config), variables));
                }
                Err(error) => {
                    let unknown = unknown_env_keys(&error);
                    // Bounded: each round drops at least one variable.
                    if unknown.is_empty() || ignored.len() > 256 {
                        return Err(Box::new(error));
                    }
                    for key in unknown {
                        let variable =
                            format!("TERTULIA_{}", key.replace('.', "__")).to_uppercase();
                        variables.push(variable);
                        ignored.push(key);
                    }
                }
            }
        }
    }

    /// Defaults, the file, and the environment without the `ignored` keys.
    fn figment(file: Option<&Path>, ignored: &[String]) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let ignored = ignored.to_vec();
        // The sealing keys and the database's credentials are read apart
        // (`SealingKeys::from_env`, `DbCredentials::from_env`): they are no
        // setting, and may not come from a file.
        let env = Env::prefixed("TERTULIA_").split("__").filter(move |key| {
            let sealing = [
                "secret_key",
                "secret_key_previous",
                "db_user",
                "db_password",
                "cluster_cookie",
            ];
            !ignored
                .iter()
                .map(String::as_str)
                .chain(sealing)
                .any(|name| key.as_str().eq_ignore_ascii_case(name))
        });
        figment.merge(env)
    }

    /// With no tenant configured anywhere, the development one.
    fn with_development_tenant(mut config: Config) -> Config {
        if config.tenants.is_empty() {
            config.tenants = RuntimeConfig::default().tenants;
            if let Some(default) = config.tenants.get_mut("default") {
                use_openai_from_env(default, |name| std::env::var(name).ok());
                // A local model server (Ollama) named by the operator is
                // meant to be reached, whatever the egress guard says.
                if is_loopback_url(&default.openai.base_url) {
                    config
                        .egress
                        .allow
                        .extend(["127.0.0.0/8".to_owned(), "::1".to_owned()]);
                }
            }
        }
        config
    }

    /// The defaults, with the `default` tenant that `config/default.toml` declares.
    pub fn default_with_tenant() -> Config {
        Config {
            tenants: RuntimeConfig::default().tenants,
            ..Config::default()
        }
    }

    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            storage: self.storage.clone(),
            sessions: self.sessions.clone(),
            limits: self.limits.clone(),
            supervision: self.supervision.clone(),
            agents: self.agents.clone(),
            webhooks: self.webhooks.clone(),
            egress: self.egress.clone(),
            insights: self.insights.clone(),
            retention: self.retention.clone(),
            cluster: self.cluster.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

/// Whether a URL's host is `localhost` or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A newcomer with `OPENAI_API_KEY` (or a local server's `OPENAI_BASE_URL`)
/// gets a real model with no config file: the development tenant switches to
/// the `openai` agent. The key stays in the environment (`api_key_env`).
pub fn use_openai_from_env(tenant: &mut TenantSettings, var: impl Fn(&str) -> Option<String>) {
    let key = var("OPENAI_API_KEY").filter(|key| !key.is_empty());
    let base_url = var("OPENAI_BASE_URL").filter(|url| !url.is_empty());
    if key.is_none() && base_url.is_none() {
        return;
    }
    tenant.agent = "openai".into();
    if let Some(base_url) = base_url {
        tenant.openai.base_url = base_url;
    }
    if let Some(model) = var("OPENAI_MODEL").filter(|model| !model.is_empty()) {
        tenant.openai.model = model;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_lists_exactly_the_compiled_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file: Config = Figment::new()
            .merge(Toml::file_exact(&path))
            .extract()
            .unwrap();
        let from_file = serde_json::to_value(from_file).unwrap();
        let compiled = serde_json::to_value(Config::default_with_tenant()).unwrap();
        assert_eq!(
            from_file, compiled,
            "config/default.toml and Config::default() disagree"
        );
    }

    #[test]
    fn openai_variables_switch_the_development_tenant_to_a_model() {
        let mut tenant = TenantSettings::default();
        use_openai_from_env(&mut tenant, |_| None);
        assert_eq!(tenant.agent, "echo");
        use_openai_from_env(&mut tenant, |name| match name {
            "OPENAI_BASE_URL" => Some("http://localhost:11434/v1".into()),
            "OPENAI_MODEL" => Some("llama3.2".into()),
            _ => None,
        });
        assert_eq!(tenant.agent, "openai");
        assert_eq!(tenant.openai.base_url, "http://localhost:11434/v1");
        assert_eq!(tenant.openai.model, "llama3.2");
        assert_eq!(
            tenant.openai.api_key, "",
            "the key is never copied out of the environment"
        );
    }

    #[test]
    fn every_shipped_example_config_loads_and_its_tenants_can_work() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for dir in [root.clone(), root.join("examples")] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|extension| extension != "toml") {
                    continue;
                }
                let config = Config::load(Some(&path))
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                for (id, tenant) in &config.tenants {
                    assert_eq!(tenant.agent_problem(), None, "{}: {id}", path.display());
                }
                // Everything start-up checks (URLs against the egress guard,
                // webhook endpoints) holds too.
                if let Err(error) = tertulia_actors::runtime::check_config(&config.runtime()) {
                    panic!("{}: {error}", path.display());
                }
                checked += 1;
            }
        }
        assert!(checked >= 2, "default.toml and the examples");
    }
}
