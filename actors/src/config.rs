//! The process's settings (storage, sessions, limits, supervision, webhook
//! delivery, egress, built-in agents), deserialised from `config/default.toml` (and its
//! overrides) by the edge. Every field has a default, documented in that file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::TenantSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
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
    /// Tenants by id. Nothing assumes there is only one.
    pub tenants: BTreeMap<String, TenantSettings>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut tenants = BTreeMap::new();
        tenants.insert("default".to_string(), TenantSettings::development());
        RuntimeConfig {
            storage: StorageConfig::default(),
            sessions: SessionConfig::default(),
            limits: Limits::default(),
            supervision: SupervisionConfig::default(),
            agents: AgentsConfig::default(),
            webhooks: WebhooksConfig::default(),
            egress: EgressConfig::default(),
            insights: InsightsConfig::default(),
            retention: RetentionConfig::default(),
            cluster: ClusterConfig::default(),
            tenants,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the embedded surrealkv store lives (`<data_dir>/tertulia.db`).
    pub data_dir: String,
    /// Overrides `data_dir` with any SurrealDB endpoint: `mem://` in
    /// tests, or a SurrealDB server (`ws://host:8000`, `wss://…`,
    /// `http://…`) signed in to with `credentials`.
    pub endpoint: Option<String>,
    pub namespace: String,
    pub database: String,
    /// Writes are refused (503 `storage_unavailable`) while the data
    /// directory's filesystem has less free space than this, so the store
    /// never meets ENOSPC mid-commit. 0 turns the check off.
    pub min_free_mb: u64,
    /// The keys that seal secrets at rest: from the environment only
    /// (`TERTULIA_SECRET_KEY`, `TERTULIA_SECRET_KEY_PREVIOUS`), never from a
    /// file, so a copy of the data and the config does not hold them.
    #[serde(skip)]
    pub sealing: SealingKeys,
    /// The root user a SurrealDB server is signed in to with: from the
    /// environment only (`TERTULIA_DB_USER`, `TERTULIA_DB_PASSWORD`).
    #[serde(skip)]
    pub credentials: Option<DbCredentials>,
}

impl StorageConfig {
    /// What is wrong with these settings, if anything: the namespace and
    /// database are written into statements, so they are plain names.
    pub fn problem(&self) -> Option<String> {
        let plain = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        for (setting, name) in [("namespace", &self.namespace), ("database", &self.database)] {
            if !plain(name) {
                return Some(format!(
                    "storage.{setting} `{name}` must be 1 to 64 letters, digits or `_`, not starting with a digit"
                ));
            }
        }
        None
    }
}

/// A SurrealDB server's root user and password.
#[derive(Clone, PartialEq)]
pub struct DbCredentials {
    pub user: String,
    pub password: String,
}

impl DbCredentials {
    /// The variable that holds the user.
    pub const USER: &str = "TERTULIA_DB_USER";
    /// The variable that holds the password.
    pub const PASSWORD: &str = "TERTULIA_DB_PASSWORD";

    /// The credentials the environment gives, if it gives a user (`var`
    /// reads a variable).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<DbCredentials> {
        let user = var(Self::USER).filter(|user| !user.trim().is_empty())?;
        Some(DbCredentials {
            user,
            password: var(Self::PASSWORD).unwrap_or_default(),
        })
    }
}

// By hand, so the password never reaches a log line.
impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The key that seals stored secrets (base64 of 32 bytes) and the keys it
/// replaced, which still open what they sealed until start-up reseals it.
#[derive(Clone, Default, PartialEq)]
pub struct SealingKeys {
    pub current: Option<String>,
    pub previous: Vec<String>,
}

impl SealingKeys {
    /// The variable that holds the current key.
    pub const CURRENT: &str = "TERTULIA_SECRET_KEY";
    /// The variable that holds the previous keys, comma-separated.
    pub const PREVIOUS: &str = "TERTULIA_SECRET_KEY_PREVIOUS";

    /// The keys the environment gives (`var` reads a variable).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> SealingKeys {
        let present = |value: String| Some(value).filter(|value| !value.trim().is_empty());
        SealingKeys {
            current: var(Self::CURRENT).and_then(present),
            previous: var(Self::PREVIOUS)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

// By hand, so the keys never reach a log line.
impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKeys")
            .field("current", &self.current.is_some())
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: "./data".into(),
            endpoint: None,
            namespace: "tertulia".into(),
            database: "main".into(),
            min_free_mb: 64,
            sealing: SealingKeys::default(),
            credentials: None,
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

/// Delivery of events to webhook endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Waits before each retry (`"5s"`, `"5m"`, `"2h"`): after the first
    /// attempt fails, the second comes after the first wait, and so on; when
    /// the list is used up the delivery is dead.
    pub retry_schedule: Vec<String>,
    /// Each wait is spread by up to this fraction either way, so retries of
    /// many deliveries do not arrive at once.
    pub jitter: f64,
    /// How long one attempt may take, connection included.
    pub timeout_ms: u64,
    /// Attempts in flight at once per endpoint (never two for one conversation).
    pub max_in_flight: usize,
    /// After a secret is rotated, requests carry the old secret's signature
    /// too, for this long.
    pub rotation_overlap_secs: u64,
    /// Endpoints from the config file (the admin API makes more).
    pub endpoints: Vec<WebhookEndpointConfig>,
    /// Delivered deliveries, and then events no delivery needs, are removed
    /// this many days after they were made (fractions allowed).
    pub retention_days: f64,
    /// Dead deliveries (every attempt failed) are kept longer, to be replayed.
    pub dead_retention_days: f64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(String::from)
                .to_vec(),
            jitter: 0.2,
            timeout_ms: 15_000,
            max_in_flight: 4,
            rotation_overlap_secs: 86_400,
            endpoints: Vec::new(),
            retention_days: 7.0,
            dead_retention_days: 30.0,
        }
    }
}

impl WebhooksConfig {
    /// The waits of `retry_schedule`, or what is wrong with it.
    pub fn retry_delays(&self) -> Result<Vec<Duration>, String> {
        self.retry_schedule
            .iter()
            .map(|entry| {
                humantime::parse_duration(entry)
                    .map_err(|error| format!("`webhooks.retry_schedule` entry `{entry}`: {error}"))
            })
            .collect()
    }

    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if let Err(problem) = self.retry_delays() {
            return Some(problem);
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Some("`webhooks.jitter` must be at least 0 and below 1".into());
        }
        if self.max_in_flight == 0 || self.timeout_ms == 0 {
            return Some(
                "`webhooks.max_in_flight` and `webhooks.timeout_ms` must be above 0".into(),
            );
        }
        for (field, days) in [
            ("retention_days", self.retention_days),
            ("dead_retention_days", self.dead_retention_days),
        ] {
            if !(days.is_finite() && days > 0.0) {
                return Some(format!(
                    "`webhooks.{field}` is {days}; it must be more than 0"
                ));
            }
        }
        None
    }
}

/// How retention runs (`[retention]`): what it removes is set by
/// `webhooks.retention_days`, `webhooks.dead_retention_days` and each
/// tenant's `retention`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often a pass runs (`"1h"`); the first runs a minute after start.
    pub interval: String,
    /// Rows removed (or conversations archived) per transaction.
    pub batch: usize,
    /// The pause between two batches, so messages are never kept waiting
    /// behind a long prune.
    pub pause: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: "1h".into(),
            batch: 500,
            pause: "20ms".into(),
        }
    }
}

impl RetentionConfig {
    /// The interval and the pause, or what is wrong with them.
    pub fn timings(&self) -> Result<(Duration, Duration), String> {
        let parse = |field: &str, value: &str| {
            humantime::parse_duration(value)
                .map_err(|error| format!("`retention.{field}` = {value:?}: {error}"))
        };
        let interval = parse("interval", &self.interval)?;
        let pause = parse("pause", &self.pause)?;
        if interval.is_zero() || self.batch == 0 {
            return Err("`retention.interval` and `retention.batch` must be above 0".into());
        }
        Ok((interval, pause))
    }
}

/// A webhook endpoint written in the config file. It is stored like one made
/// through the admin API, under its `name`; the file wins at every start,
/// except that an endpoint its receiver disabled (`410 Gone`) stays disabled
/// until it is enabled through the admin API or its URL changes.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// Its id: unique within the tenant, 1 to 64 of `a-zA-Z0-9_-`.
    pub name: String,
    pub tenant: String,
    pub url: String,
    /// `whsec_` + base64; prefer `secret_env`. Changing it rotates the secret.
    pub secret: String,
    /// The environment variable holding the secret.
    pub secret_env: String,
    /// Event types, `prefix.*` or `*`; empty: every event.
    pub events: Vec<String>,
    /// `json` or `slack`.
    pub format: crate::model::WebhookFormat,
    pub enabled: Option<bool>,
    /// A static header for n8n's Header Auth.
    pub header_name: String,
    pub header_value: String,
    pub description: String,
}

// By hand, so the secrets never reach a log line.
impl std::fmt::Debug for WebhookEndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointConfig")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpointConfig {
    /// The secret, from `secret` or the environment.
    pub fn resolve_secret(&self) -> String {
        if self.secret.is_empty() && !self.secret_env.is_empty() {
            std::env::var(&self.secret_env).unwrap_or_default()
        } else {
            self.secret.clone()
        }
    }
}

/// Where requests made for tenants (webhooks, tools, agents) may go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Networks that are otherwise refused (loopback, private, link-local)
    /// but allowed here, e.g. `["10.0.5.0/24"]` for an n8n on the private
    /// network. Public addresses are always allowed.
    pub allow: Vec<String>,
}

/// How often the Analyst looks for conversations that went quiet (each
/// tenant's quiet time is `tenants.<id>.insights.quiet_after_secs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightsConfig {
    pub sweep_every_ms: u64,
    /// Waits before each retry of a failed analysis; then it is left until
    /// the conversation changes again.
    pub retry_schedule_ms: Vec<u64>,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        InsightsConfig {
            sweep_every_ms: 60_000,
            retry_schedule_ms: vec![30_000, 120_000, 600_000, 3_600_000],
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

/// Several nodes on one SurrealDB server (`[cluster]`). Off while `node` is
/// empty: one process, nothing leased, the default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (`node-1`).
    pub node: String,
    /// Where this node listens for the other nodes (ractor_cluster).
    pub listen: String,
    /// The other nodes' `listen` addresses. Each node dials every peer it
    /// is not connected to, every second, so a node that restarts or joins
    /// later is found without restarting the others.
    pub peers: Vec<String>,
    /// How long a node's lease lasts without renewal: a dead node's
    /// conversations are taken over this long after its last renewal.
    pub lease_ms: u64,
    /// The shared secret nodes authenticate each other with: from the
    /// environment only (`TERTULIA_CLUSTER_COOKIE`).
    #[serde(skip)]
    pub cookie: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            listen: "127.0.0.1:7100".into(),
            peers: Vec::new(),
            lease_ms: 5000,
            cookie: None,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.node.is_empty()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// What is wrong with these settings, if anything (that the store is a
    /// shared server is checked at start, where endpoints are known).
    pub fn problem(&self) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        let plain = self.node.len() <= 64
            && self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Some(format!(
                "cluster.node `{}` must be letters, digits, `-` and `_` (at most 64)",
                self.node
            ));
        }
        if self.cookie.as_deref().is_none_or(str::is_empty) {
            return Some("cluster needs TERTULIA_CLUSTER_COOKIE, the secret nodes share".into());
        }
        if self.lease_ms < 500 {
            return Some("cluster.lease_ms must be at least 500".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Some(format!(
                "cluster.listen `{}` is not an address:port",
                self.listen
            ));
        }
        None
    }
}
