//! The admin commands of the CLI (`tertulia tenant …`, `tertulia key …`,
//! `tertulia webhook …`, `tertulia erase …`, `tertulia backup`).
//! They are clients of a running server's admin API: the embedded database
//! belongs to the server process while it runs, so the CLI never opens it.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and how to prove we may administer it.
#[derive(Args, Clone, Debug)]
pub struct AdminConnection {
    /// The server's base URL.
    #[arg(long, env = "TERTULIA_URL", default_value = "http://127.0.0.1:2000")]
    pub url: String,
    /// The server's admin token (auth.admin_token).
    #[arg(long, env = "TERTULIA_AUTH__ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant (then make it a key with `tertulia key create`).
    Create {
        /// The tenant's id: a-z, 0-9, `-` or `_`.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        greeting: Option<String>,
        /// Which agent answers (`echo` built in).
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// List every tenant.
    List {
        #[command(flatten)]
        connection: AdminConnection,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make a key for a tenant. It is printed once and never shown again.
    Create {
        #[arg(long)]
        tenant: String,
        /// What the key is for: `api` (X-API-Key, the whole tenant), `widget`
        /// (a landing page's chat) or `staff` (one person, for /console).
        #[arg(long, default_value = "api")]
        kind: String,
        /// Whose staff key it is: the name visitors see when they answer.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// List a tenant's keys (prefixes, never secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Revoke a key: refused from the next request on.
    Revoke {
        /// The key's id (`key_…`), as `key create` or `key list` print it.
        key_id: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Send a tenant's events to a URL. The signing secret is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        /// Where the events go (`--url` is the server's own address).
        #[arg(long)]
        to: String,
        /// Event types (or `prefix.*`), comma-separated; none: every event.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// `json` or `slack`.
        #[arg(long, default_value = "json")]
        format: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// List a tenant's endpoints (secrets never shown).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Send a signed `webhook.test` event to an endpoint.
    Test(EndpointArgs),
    /// An endpoint's newest deliveries: status, attempts, last code and error.
    Deliveries {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// `pending`, `delivered` or `dead`.
        #[arg(long)]
        status: Option<String>,
    },
    /// Send every dead delivery of an endpoint again.
    ReplayDead(EndpointArgs),
    /// Stop sending to an endpoint, and forget its deliveries.
    Delete(EndpointArgs),
}

/// One endpoint of a tenant.
#[derive(Args, Debug)]
pub struct EndpointArgs {
    #[arg(long)]
    tenant: String,
    /// The endpoint's id (`ep_…`), as `webhook create` or `webhook list` print it.
    endpoint_id: String,
    #[command(flatten)]
    connection: AdminConnection,
}

impl EndpointArgs {
    async fn call(&self, method: reqwest::Method, suffix: &str) -> Result<Value, String> {
        let path = format!(
            "/admin/tenants/{}/webhooks/{}{suffix}",
            self.tenant, self.endpoint_id
        );
        request(&self.connection, method, &path, None).await
    }
}

impl WebhookCommand {
    pub async fn run(self) -> Result<Value, String> {
        use reqwest::Method;
        let base = |tenant: &str| format!("/admin/tenants/{tenant}/webhooks");
        match self {
            WebhookCommand::Create {
                tenant,
                to,
                events,
                format,
                connection,
            } => {
                let body = json!({"url": to, "events": events, "format": format});
                request(&connection, Method::POST, &base(&tenant), Some(body)).await
            }
            WebhookCommand::List { tenant, connection } => {
                request(&connection, Method::GET, &base(&tenant), None).await
            }
            WebhookCommand::Test(endpoint) => endpoint.call(Method::POST, "/test").await,
            WebhookCommand::Deliveries { endpoint, status } => {
                let query = status.map(|s| format!("?status={s}")).unwrap_or_default();
                endpoint
                    .call(Method::GET, &format!("/deliveries{query}"))
                    .await
            }
            WebhookCommand::ReplayDead(endpoint) => {
                endpoint.call(Method::POST, "/replay-dead").await
            }
            WebhookCommand::Delete(endpoint) => endpoint.call(Method::DELETE, "").await,
        }
    }
}

impl TenantCommand {
    pub async fn run(self) -> Result<Value, String> {
        match self {
            TenantCommand::Create {
                id,
                name,
                greeting,
                agent,
                connection,
            } => {
                let mut body = json!({"id": id});
                for (field, value) in [("name", name), ("greeting", greeting), ("agent", agent)] {
                    if let Some(value) = value {
                        body[field] = json!(value);
                    }
                }
                request(
                    &connection,
                    reqwest::Method::POST,
                    "/admin/tenants",
                    Some(body),
                )
                .await
            }
            TenantCommand::List { connection } => {
                request(&connection, reqwest::Method::GET, "/admin/tenants", None).await
            }
        }
    }
}

impl KeyCommand {
    pub async fn run(self) -> Result<Value, String> {
        match self {
            KeyCommand::Create {
                tenant,
                kind,
                name,
                connection,
            } => {
                let path = format!("/admin/tenants/{tenant}/keys");
                let mut body = json!({"kind": kind});
                if let Some(name) = name {
                    body["name"] = json!(name);
                }
                request(&connection, reqwest::Method::POST, &path, Some(body)).await
            }
            KeyCommand::List { tenant, connection } => {
                let path = format!("/admin/tenants/{tenant}/keys");
                request(&connection, reqwest::Method::GET, &path, None).await
            }
            KeyCommand::Revoke { key_id, connection } => {
                let path = format!("/admin/keys/{key_id}");
                request(&connection, reqwest::Method::DELETE, &path, None).await
            }
        }
    }
}

/// Forget a person: erase what a tenant's conversations hold about them
/// (named by exactly one of the identifiers).
#[derive(Args, Debug)]
pub struct EraseCommand {
    #[arg(long)]
    pub tenant: String,
    /// A conversation's id.
    #[arg(long, group = "person")]
    pub conversation_id: Option<String>,
    /// A webchat visitor's `session_id`.
    #[arg(long, group = "person")]
    pub session_id: Option<String>,
    #[arg(long, group = "person")]
    pub email: Option<String>,
    #[arg(long, group = "person")]
    pub phone: Option<String>,
    #[command(flatten)]
    pub connection: AdminConnection,
}

impl EraseCommand {
    pub async fn run(self) -> Result<Value, String> {
        let named = [
            ("conversation_id", self.conversation_id),
            ("session_id", self.session_id),
            ("email", self.email),
            ("phone", self.phone),
        ];
        let mut body = serde_json::Map::new();
        for (field, value) in named {
            if let Some(value) = value {
                body.insert(field.into(), json!(value));
            }
        }
        if body.is_empty() {
            return Err(
                "name the person with --conversation-id, --session-id, --email or --phone".into(),
            );
        }
        let path = format!("/admin/tenants/{}/erase", self.tenant);
        request(
            &self.connection,
            reqwest::Method::POST,
            &path,
            Some(Value::Object(body)),
        )
        .await
    }
}

/// One admin call; a non-2xx answer becomes the server's `error` text.
/// Save a consistent backup of a running server's database (its admin API).
#[derive(Args, Debug)]
pub struct BackupCommand {
    /// The file to write (SurrealQL); written beside it first, then renamed,
    /// so a failed backup never leaves a half file under this name.
    #[arg(long)]
    pub to: std::path::PathBuf,
    #[command(flatten)]
    pub connection: AdminConnection,
}

impl BackupCommand {
    pub async fn run(self) -> Result<Value, String> {
        let connection = &self.connection;
        let url = format!("{}/admin/backup", connection.url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&connection.admin_token)
            .send()
            .await
            .map_err(|error| format!("cannot reach {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let dump = response
            .bytes()
            .await
            .map_err(|error| format!("the backup was cut off: {error}"))?;
        let partial = self.to.with_extension("partial");
        std::fs::write(&partial, &dump)
            .and_then(|()| std::fs::rename(&partial, &self.to))
            .map_err(|error| format!("cannot write {}: {error}", self.to.display()))?;
        Ok(json!({"file": self.to.display().to_string(), "bytes": dump.len()}))
    }
}

async fn request(
    connection: &AdminConnection,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let url = format!("{}{path}", connection.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&connection.admin_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|error| format!("cannot reach {url}: {error}"))?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    Ok(response.json().await.unwrap_or(Value::Null))
}

/// What the server said when it refused: its status and `error`.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let reason = body["error"].as_str().unwrap_or("no reason given");
    format!("{status}: {reason}")
}
