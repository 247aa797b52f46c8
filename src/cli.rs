//! The admin commands of the CLI (`tertulia tenant …`, `tertulia key …`).
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
        /// What the key is for: `api` (X-API-Key, the whole tenant).
        #[arg(long, default_value = "api")]
        kind: String,
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
                connection,
            } => {
                let path = format!("/admin/tenants/{tenant}/keys");
                request(
                    &connection,
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"kind": kind})),
                )
                .await
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

/// One admin call; a non-2xx answer becomes the server's `error` text.
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
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        Err(format!("{status}: {reason}"))
    }
}
